"""A server signing key certified by an admin, composed from its two halves (in-process).

docs/format.md §5 ("Server signing keys"). ``certify_server_key(vault, version, public)``
builds what the admin's keyholder (``keyholder/serverkeys.py``: the organisation key from the
admin's root bundle signs the certificate) and the authority (``authority/server_keys.py``:
the caller authorised as an admin, the certificate checked under the organisation key, the
row stored, one ``server-key-certify`` event) need, over the in-process transport. ``init
--server`` (issue 14, step 7) calls it for the first server key; a key rotation (step 8) for
the next one.

``ServerKeysRead(core, trust)`` is what ``audit verify`` and ``audit log`` believe of the
``server_keys`` rows (``keyholder/serverkeys.verified_server_keys``), read in a unit of its own.

``server_journal(vault, key)`` is the format-3 journal of a process holding the server key
(``authority/serverjournal.py``): the team server's, and in-process the tests' and the
benchmark's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vault.authority.server_keys import ServerKeyAuthority, ServerKeyRow, stored_rows
from vault.authority.serverjournal import ServerJournal, ServerSeal
from vault.crypto.serverkey import ServerSigningKey
from vault.keyholder.auditchain import ServerKeys
from vault.keyholder.serverkeys import ServerKeyCertifier, verified_server_keys
from vault.service.policyparts import CallerTrust, Recorder
from vault.transport.server_keys import InProcessServerKeyTransport

if TYPE_CHECKING:
    from vault.keyholder.trust import Trust
    from vault.service.core import Core
    from vault.service.vault import Vault


def certify_server_key(vault: Vault, version: int, signing_public: bytes, *, recover: bool = False) -> ServerKeyRow:
    """Certify ``signing_public`` as server key ``version`` (the vault's unlocked admin) and store it;
    ``recover``: after the key file was lost (docs/deployment.md §8)."""
    authority = ServerKeyAuthority(vault.core.store, CallerTrust(vault.trust), Recorder(vault.journal))
    certifier = ServerKeyCertifier(
        vault.core, vault.keyholder, InProcessServerKeyTransport(authority), vault.core.clock
    )
    return certifier.certify(version, signing_public, recover=recover)


def server_journal(vault: Vault, key: ServerSigningKey) -> ServerJournal:
    """The journal that appends format-3 events signed by ``key``."""
    return ServerJournal(vault.core, ServerSeal(key))


class ServerKeysRead:
    """The server keys whose certificates verify under the organisation key this engineer's pin
    leads to, each with the time from which it signs; read in a read unit of its own."""

    def __init__(self, core: Core, trust: Trust) -> None:
        self.core, self.trust = core, trust

    def __repr__(self) -> str:
        return "ServerKeysRead()"

    def __call__(self) -> ServerKeys:
        with self.core.store.read() as s:
            return verified_server_keys(stored_rows(s), self.core.vid(s), self.trust.org_public(s))
