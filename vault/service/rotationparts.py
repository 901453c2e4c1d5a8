"""The in-process collaborators of the client-key rotation's two halves.

Adapters over the Vault object's trust, grant ledger, journal, keys and clients, handed to
the rotation's authority (``vault/authority/rotation.py``) and keyholder
(``vault/keyholder/rotation.py``), which are joined by the in-process transport
(``vault/transport/rotation.py``): ``rotation_keyholder(rotation)`` builds the three.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.authority.policies import engineer_row
from vault.authority.rotation import RotationAuthority
from vault.authority.rotation_requests import Grantee
from vault.errors import VaultError
from vault.keyholder.rotation import RotationKeyholder, RotationKeys
from vault.service.core import ACTIVE
from vault.service.hostlayer import HostRotationTransport
from vault.service.rows import GRANT_ORDER, EngineerRecord, EngineerRow, GrantRecord, GrantRow
from vault.storage import models as m
from vault.transport.https_rotation import HttpsRotationTransport

if TYPE_CHECKING:
    from vault.service.rotation import KeyRotation
    from vault.transport.https import HttpsTransport


def grant_row(row: m.Grant) -> GrantRow:
    return GrantRow(*(getattr(row, name) for name in GrantRow._fields))


class _Checks:
    """The authority's checks (signatures and public keys only), made by the Vault's trust,
    and the grant ledger's verdict on who a new client-key version is sealed to."""

    def __init__(self, rotation: KeyRotation) -> None:
        self._trust, self._ledger, self._journal = rotation.trust, rotation.ledger, rotation.journal

    def organisation_key(self, s: Session, current: bytes) -> None:
        s.info["org_current"] = current  # the vault's current key as read in this unit: no second read

    def certificate(self, s: Session, row: EngineerRecord) -> None:
        self._trust.verify_certificate(s, row)

    def current_key_version(self, s: Session, client: m.Client) -> int:
        return self._trust.current_key_version(s, client)

    def client_key_record(self, s: Session, record: m.ClientKey) -> None:
        self._trust.verify_client_key_record(s, record)

    def first_valid_grant(
        self, s: Session, grants: Sequence[GrantRecord], engineer: EngineerRecord, signers: Sequence[EngineerRow | None]
    ) -> int:
        return self._trust.first_valid_grant(s, grants, engineer, signers)

    def grantees(self, s: Session, client_id: int) -> list[Grantee]:
        """For each (engineer, client) ledger, its newest verified entry, unrevoked and
        unexpired, of an active certified engineer, *and* the last word of the verified
        audit log about them and the client (so a revocation cleared, or a newer grant
        deleted, in the database gives nothing). Anything else is reported (a
        ``grant-refused`` event), its key copies for the client are deleted, and the
        rotation goes on without them."""
        ledger = self._ledger
        ledgers: dict[int, list[m.Grant]] = {}
        for grant in s.scalars(select(m.Grant).where(m.Grant.client_id == client_id).order_by(*GRANT_ORDER)):
            ledgers.setdefault(grant.engineer_id, []).append(grant)
        history = ledger.grant_history(s, [client_id]) if ledgers else None
        out = []
        for engineer_id, grants in sorted(ledgers.items()):
            engineer = s.get(m.Engineer, engineer_id)
            if engineer is None:
                continue
            try:
                self._trust.verify_certificate(s, engineer)
            except VaultError as exc:
                ledger.refuse_grants(s, client_id, engineer, [(grants[0], str(exc))])
                continue
            head, bad = ledger.ledger_head(s, grants, engineer)
            refused: list[tuple[m.Grant | None, str]] = list(bad)
            live = engineer.status == ACTIVE and ledger.is_live(head)
            if live and head is not None and history is not None:
                problem = history.confirms(engineer.name, client_id, head)
                if problem is not None:
                    refused.append((head, problem))
                    live = False
            if live and head is not None:
                signer = s.get(m.Engineer, head.granted_by)
                out.append(
                    Grantee(engineer_row(engineer), grant_row(head), None if signer is None else engineer_row(signer))
                )
                for grant, problem in bad:  # reported; the verified entry still counts
                    self._journal.append(
                        s,
                        "grant-refused",
                        client_id=client_id,
                        details={"engineer": engineer.name, "grant": grant.id, "problem": problem[:200]},
                    )
            elif refused:
                ledger.refuse_grants(s, client_id, engineer, refused)
            else:
                ledger.delete_seals(s, client_id, engineer.id)
        return out


class _Recorder:
    """The Journal's append (its signature and sealed details: the keyholder's, in-process)."""

    def __init__(self, rotation: KeyRotation) -> None:
        self._journal = rotation.journal

    def append(self, s: Session, action: str, *, client_id: int | None, details: dict[str, Any] | None) -> int:
        return self._journal.append(s, action, client_id=client_id, details=details).seq


class _Lookup:
    """Clients by slug and slugs by id, through the Vault's checked client lookup, and the
    admin's recovery key opened (in a read unit of its own, or the caller's ``unit``)."""

    def __init__(self, rotation: KeyRotation) -> None:
        self._rotation = rotation

    def client_id(self, slug: str, unit: Session | None = None) -> int:
        if unit is None:
            with self._rotation.core.store.read() as s:
                return self.client_id(slug, s)
        return self._rotation.clients.client(unit, slug).id

    def open_recovery(self, unit: Session | None = None) -> None:
        if unit is None:
            with self._rotation.core.store.read() as s:
                self.open_recovery(s)
                return
        self._rotation.keys.root_bundle(unit)

    def slugs(self, client_ids: Iterable[int]) -> dict[int, str]:
        out = {}
        with self._rotation.core.store.read() as s:
            for client_id in client_ids:
                client = s.get(m.Client, client_id)
                out[client_id] = self._rotation.clients.slug(s, client) if client is not None else f"#{client_id}"
        return out


def rotation_keyholder(rotation: KeyRotation) -> RotationKeyholder:
    """The rotation's keyholder of this Vault object, over an in-process transport to its authority."""
    authority = RotationAuthority(rotation.core.store, _Checks(rotation), _Recorder(rotation), rotation.core.clock)
    return RotationKeyholder(
        HostRotationTransport(authority, rotation.core),  # in-process; the host's layer handled (hostlayer.py)
        RotationKeys(rotation.keys, rotation.core.store),
        _Lookup(rotation),
        rotation.keys.client_keys,
        rotation.core.clock,
    )


def https_rotation_keyholder(rotation: KeyRotation, https: HttpsTransport) -> RotationKeyholder:
    """The rotation's keyholder of this Vault object over a team server (``https``): ``list`` and
    ``versions`` through the server; the lookup (a client's id by its slug) still reads the
    local database, as the checkout's does (docs/server.md §8 step 7)."""
    return RotationKeyholder(
        HttpsRotationTransport(https),
        RotationKeys(rotation.keys, rotation.core.store),
        _Lookup(rotation),
        rotation.keys.client_keys,
        rotation.core.clock,
    )
