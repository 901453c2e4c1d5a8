"""Root rotation: a new root bundle (recovery key and organisation signing key) at once.

``vault.keys.rotate_root`` (and an admin's removal, issue 12 items 8 and 9) runs as a request
to the root rotation's authority (``vault/authority/root_rotation.py``) through its keyholder
(``vault/keyholder/root_rotation.py``), joined by the in-process transport
(``vault/transport/root_rotation.py``): one unit of work re-seals every live client-key
version to a new recovery key and re-tags client slugs with the new lookup key (in pages of
clients), makes a new organisation key signed by the previous one (``org_keys``), re-issues
every certificate that verifies under the new key, seals the new bundle only to admins
certified under it, and issues new recovery shares when the vault uses them.

What stays here is the authority's in-process collaborators: the caller's checks (``Trust``),
the journal's append, and the roster the signed audit chain vouches for (``_Roster``: it
reads the chain with ``Signers``, in the authority's unit of work; the keyholder re-verifies
every certificate it is shown). The team-server issue moves the chain check to the keyholder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.authority.root_rotation import RootRotationAuthority
from vault.authority.server_keys import ServerKeyRow, stored_rows
from vault.crypto import signing
from vault.errors import UntrustedRecord
from vault.keyholder.root_rotation import RootRotationKeyholder
from vault.keyholder.serverkeys import verified_server_keys
from vault.service import auditverify, validation
from vault.service.audit import _details
from vault.service.core import ACTIVE, ROLE_ADMIN
from vault.service.records import RootRotation
from vault.service.rows import EngineerRecord, EngineerRow, GrantRecord
from vault.storage import models as m
from vault.transport.root_rotation import InProcessRootTransport

if TYPE_CHECKING:
    from vault.authority.journal import Journal
    from vault.keyholder.keys import Keys
    from vault.keyholder.signers import Signers
    from vault.keyholder.trust import Trust
    from vault.service.clients import Clients
    from vault.service.core import Core


_CERTIFYING = ("vault-init", "engineer-confirm")


def _fingerprint(sealing_public: bytes | None, signing_public: bytes | None) -> str | None:
    if sealing_public is None or signing_public is None:
        return None
    return signing.engineer_fingerprint(sealing_public, signing_public)


class _Roster:
    """The authority's checks made by the Vault's trust: the caller's (``CallerGate``) and the
    roster of certificates the signed audit chain vouches for (in-process: ``Signers``)."""

    def __init__(self, core: Core, trust: Trust, signers: Signers) -> None:
        self.core, self.trust, self.signers = core, trust, signers

    def organisation_key(self, s: Session, current: bytes) -> None:
        s.info["org_current"] = current  # the vault's current key as read in this unit: no second read

    def certificate(self, s: Session, row: EngineerRecord) -> None:
        self.trust.verify_certificate(s, row)

    def first_valid_grant(
        self, s: Session, grants: Sequence[GrantRecord], engineer: EngineerRecord, signers: Sequence[EngineerRow | None]
    ) -> int:
        return self.trust.first_valid_grant(s, grants, engineer, signers)

    def server_keys(self, s: Session) -> list[ServerKeyRow]:
        """Each stored server key whose ``server-key-certify`` (or ``-recover``) event (naming its version and public
        key) the signed chain holds and checks (hash, signature, link): a key row a database writer
        planted, even with a certificate made by the old organisation seed, is not re-certified."""
        vault_id = self.core.vid(s)
        lifetimes, problems, _admins = self.signers.key_lifetimes(s, self.signers.signing_keys(s))
        servers = verified_server_keys(stored_rows(s), vault_id, self.trust.org_public(s))
        events = s.execute(
            select(m.AuditEvent.seq, m.AuditEvent.details_json).where(
                m.AuditEvent.action.in_(("server-key-certify", "server-key-recover"))
            )
        ).all()
        vouched: list[ServerKeyRow] = []
        for row in stored_rows(s):
            named = {"version": row.version, "signing_public": row.signing_public.hex()}
            for seq, text in events:
                if (
                    _details(text) == named
                    and seq not in problems
                    and self.signers.anchor_problem(s, vault_id, lifetimes, problems, seq, servers) is None
                ):
                    vouched.append(row)
                    break
        return vouched

    def roster(self, s: Session) -> tuple[list[m.Engineer], list[m.EngineerKey], list[str]]:
        certified, keys, refused = self._verified_certificates(s)
        return certified, [key for key, _ in keys], refused

    def _verified_certificates(self, s: Session) -> tuple[list[m.Engineer], list[tuple[m.EngineerKey, str]], list[str]]:
        """Every engineer certificate and key-generation certificate that verifies under the
        current organisation key *and* that the signed audit chain vouches for; the names of
        the others (never re-issued).

        A holder of the organisation seed (a removed admin) can write a certificate no admin
        made; the chain says which key generations an admin certified (and which it retired)
        and whom it made admins (``Signers.key_lifetimes``), and the event that vouches is
        checked here (its hash, signature and link; and, when it names them, the keys it
        certified: a seed holder who swaps an admin's public keys gets no root seal). An
        active engineer's key generation must be certified and not retired, and an active
        admin must be one the chain made."""
        lifetimes, problems, chain_admins = self.signers.key_lifetimes(s, self.signers.signing_keys(s))
        vault_id = self.core.vid(s)
        # a confirmation made on the server's host or through the server is a format-3 event: the
        # server key signed it (certified under the organisation key), the admin's request inside
        servers = verified_server_keys(stored_rows(s), vault_id, self.trust.org_public(s))
        checked: dict[int, bool] = {}

        def vouched(engineer_id: int, generation: int, fingerprint: str | None) -> bool:
            start = lifetimes.get((engineer_id, generation), (b"", auditverify.NEVER, 0))[1]
            if start == auditverify.NEVER:
                return False
            seq = max(start - 1, 1)  # the confirmation that certified it (vault-init: event 1)
            if seq not in checked:
                anchor = self.signers.anchor_problem(s, vault_id, lifetimes, problems, seq, servers)
                bad = seq in problems or anchor is not None
                checked[seq] = not bad
            event = s.get(m.AuditEvent, seq)
            signed = _details(event.details_json) if event is not None else {}
            # the keys the event certified (events written before it named them carry no fingerprint)
            named = signed.get("fingerprint") if event is not None and event.action in _CERTIFYING else None
            return checked[seq] and named in (None, fingerprint)

        certified: list[m.Engineer] = []
        names: dict[int, str] = {}
        refused: list[str] = []
        for row in s.scalars(select(m.Engineer).where(m.Engineer.certificate.is_not(None)).order_by(m.Engineer.id)):
            names[row.id] = row.name
            try:
                self.trust.verify_certificate(s, row)
                if not vouched(row.id, row.key_generation, _fingerprint(row.sealing_public, row.signing_public)):
                    raise UntrustedRecord("no admin certified these keys")
                if row.status == ACTIVE:
                    end = lifetimes[(row.id, row.key_generation)][2]
                    if end != auditverify.NEVER or (row.role == ROLE_ADMIN and row.id not in chain_admins):
                        raise UntrustedRecord("the audit log does not make this engineer what the certificate says")
            except UntrustedRecord:
                refused.append(f"the certificate of engineer {validation.shown(row.name)}")
                continue
            certified.append(row)
        keys: list[tuple[m.EngineerKey, str]] = []
        for key in s.scalars(select(m.EngineerKey).order_by(m.EngineerKey.engineer_id, m.EngineerKey.generation)):
            name = names.get(key.engineer_id)
            if name is None:
                owner = s.get(m.Engineer, key.engineer_id)
                name = owner.name if owner is not None else ""
            try:
                self.trust.verified_key(s, key, name)
                if not vouched(key.engineer_id, key.generation, _fingerprint(key.sealing_public, key.signing_public)):
                    raise UntrustedRecord("no admin certified this key generation")
            except UntrustedRecord:
                refused.append(f"key generation {key.generation} of engineer {validation.shown(name)}")
                continue
            keys.append((key, name))
        return certified, keys, refused


class _Recorder:
    """The Journal's append (its signature: the acting admin's, lent in-process)."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    def append(self, s: Session, action: str, *, public: dict[str, Any]) -> int:
        return self._journal.append(s, action, public=public).seq


class RootRotator:
    """Rotating the root bundle and the organisation key (``vault.keys.rotate_root``)."""

    def __init__(
        self, core: Core, keys: Keys, trust: Trust, signers: Signers, journal: Journal, clients: Clients
    ) -> None:
        self.core = core
        self.keys = keys
        authority = RootRotationAuthority(core.store, _Roster(core, trust, signers), _Recorder(journal), core.clock)
        self.keyholder = RootRotationKeyholder(InProcessRootTransport(authority), keys, core.clock)

    def __repr__(self) -> str:
        return "RootRotator()"

    def rotate_root(self, s: Session | None = None, *, shares: tuple[int, int] | None = None) -> RootRotation:
        """The root rotation, in its own unit of work or inside the caller's ``s`` (an admin's removal)."""
        done = self.keyholder.rotate(shares=shares, unit=s)
        answer = done.answer
        self.core.adoption_skipped += [entry for entry in answer.refused if entry not in self.core.adoption_skipped]
        result = RootRotation(
            root_version=answer.root_version,
            org_version=answer.org_version,
            clients=answer.clients,
            admins=answer.admins,
            shares=done.shares,
            threshold=done.threshold,
            refused=answer.refused,
            warnings=done.warnings,
        )
        self.core.last_root_rotation = result
        return result
