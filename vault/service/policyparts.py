"""The in-process collaborators of the policies' and the purges' two halves.

Adapters over the Vault object's trust, journal, keys and client lookup, handed to the
authorities (``vault/authority/policies.py``, ``purge.py``) and the keyholders
(``vault/keyholder/policies.py``, ``purge.py``), which the in-process transports join
(``vault/transport/policies.py``, ``purge.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from vault.crypto import signing
from vault.errors import VaultError
from vault.service.rows import EngineerRecord, EngineerRow, GrantRecord
from vault.service.sessions import UnlockedSession
from vault.storage import models as m

if TYPE_CHECKING:
    from vault.authority.journal import Journal
    from vault.keyholder.keys import Keys
    from vault.keyholder.trust import Trust
    from vault.service.clients import Clients
    from vault.service.core import Core


class CallerTrust:
    """The authority's checks on its caller (signatures and public keys only), by the Vault's trust."""

    def __init__(self, trust: Trust) -> None:
        self._trust = trust

    def organisation_key(self, s: Session, current: bytes) -> None:
        s.info["org_current"] = current  # the vault's current key as read in this unit: no second read

    def certificate(self, s: Session, row: EngineerRecord) -> None:
        self._trust.verify_certificate(s, row)

    def first_valid_grant(
        self, s: Session, grants: Sequence[GrantRecord], engineer: EngineerRecord, signers: Sequence[EngineerRow | None]
    ) -> int:
        return self._trust.first_valid_grant(s, grants, engineer, signers)


class Recorder:
    """The Journal's append (its signature and sealed details: the keyholder's, in-process)."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    def append(
        self,
        s: Session,
        action: str,
        *,
        client_id: int | None,
        secret_id: int | None,
        details: dict[str, Any] | None = None,
        public: dict[str, Any] | None = None,
    ) -> int:
        return self._journal.append(
            s, action, client_id=client_id, secret_id=secret_id, details=details, public=public
        ).seq


class SigningKeys:
    """The acting engineer's unlocked keys as the policies' and purges' keyholders ask for them."""

    def __init__(self, keys: Keys) -> None:
        self._keys = keys

    def session(self) -> UnlockedSession:
        return self._keys.me()

    def sealing_public(self) -> bytes:
        return self._keys.session_sealing_public(self._keys.me())

    def sign(self, label: bytes, *fields: signing.ContextItem) -> bytes:
        return self._keys.my_signing_key().sign(label, *fields)


class ClientLookup:
    """A client's id and slug blob through the Vault's checked lookup (grant, slug tag, slug),
    and the slugs of clients opened under their verified keys; in read units of their own."""

    def __init__(self, core: Core, clients: Clients) -> None:
        self._core, self._clients = core, clients

    def client(self, slug: str) -> tuple[int, bytes]:
        with self._core.store.read() as s:
            row = self._clients.client(s, slug)
            return row.id, row.slug_blob

    def slugs(self, clients: Sequence[tuple[int, bytes]]) -> dict[int, str]:
        out: dict[int, str] = {}
        if not clients:
            return out
        with self._core.store.read() as s:
            for client_id, slug_blob in clients:
                row = s.get(m.Client, client_id)
                if row is None or row.slug_blob != slug_blob:
                    continue
                try:
                    out[client_id] = self._clients.slug(s, row)
                except (VaultError, UnicodeDecodeError):
                    continue
        return out
