"""The team server's signing keys, where the organisation key is: certify one, verify them all.

docs/format.md §5 ("Server signing keys"). ``ServerKeyCertifier.certify`` is an admin's: it
opens the admin's root bundle (the organisation signing key in it, as for engineer
certificates), signs ``ctx(LABEL_SIG_SERVER_KEY, vault_id, version, signing public,
certified_at)`` and sends the row to the authority (``authority/server_keys.py``), which
stores it and records a ``server-key-certify`` event.

``verified_server_keys`` is what ``audit verify`` believes of the ``server_keys`` rows: the
keys whose certificate verifies under the organisation key the verifier reached from its own
pin (the current one), each with the time from which it may sign (its ``certified_at``). A
row rewritten (its public key swapped, its version or time changed, its certificate moved to
another row) or certified by a retired organisation key is left out, so every event it
signed is refused; a row marked ``revoked`` is left out too (the state is unsigned: marking
it can only make verification fail, as deleting the row would).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from vault.authority.requests import Caller
from vault.authority.server_keys import ACTIVE, REVOKED, ServerKeyRequest, ServerKeyRow
from vault.crypto import serverkey
from vault.errors import UntrustedRecord
from vault.keyholder.auditchain import ServerKeys

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from vault.keyholder.keys import Keys
    from vault.storage.engine import Store


class ServerKeyTransport(Protocol):
    def certify(self, request: ServerKeyRequest) -> int: ...


class Core(Protocol):
    """What the certifier uses of the service core: the store (a read unit) and the vault id."""

    store: Store

    def vid(self, s: Session) -> bytes: ...


def verified_server_keys(rows: Iterable[ServerKeyRow], vault_id: bytes, org_public: bytes) -> ServerKeys:
    """Version -> (public key, µs from which it signs) of every row whose certificate verifies."""
    keys: dict[int, tuple[bytes, int]] = {}
    for row in rows:
        if row.state == REVOKED:
            continue
        try:
            serverkey.verify_certificate(
                org_public, row.certificate, vault_id, row.version, row.signing_public, row.certified_at
            )
        except (UntrustedRecord, TypeError, ValueError):
            continue
        keys[row.version] = (row.signing_public, row.certified_at * 1_000_000)
    return keys


class ServerKeyCertifier:
    """An admin's certification of a server signing key (module docstring)."""

    def __init__(self, core: Core, keys: Keys, transport: ServerKeyTransport, clock: Callable[[], dt.datetime]) -> None:
        self.core, self.keys, self.transport, self.clock = core, keys, transport, clock

    def __repr__(self) -> str:
        return "ServerKeyCertifier()"

    def certify(self, version: int, signing_public: bytes, *, recover: bool = False) -> ServerKeyRow:
        """Certify ``signing_public`` as server key ``version`` and have it stored; the row.
        ``recover``: the key file was lost (a ``server-key-recover`` event, in format 2)."""
        with self.core.store.read() as s:
            bundle = self.keys.root_bundle(s)  # the caller's admin row verified, their root seal opened
            vault_id = self.core.vid(s)
        certified_at = int(self.clock().timestamp())
        certificate = serverkey.certify(bundle.org, vault_id, version, signing_public, certified_at)
        row = ServerKeyRow(version, signing_public, certified_at, certificate, ACTIVE)
        me = self.keys.me()
        self.transport.certify(ServerKeyRequest(Caller(me.engineer_id, me.key_generation), row, recover))
        return row
