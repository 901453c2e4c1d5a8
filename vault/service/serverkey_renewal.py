"""An engineer's machine takes a newer server key (docs/server.md §5 and §6, a server key rotation).

After ``credvault serve rotate-key`` and an admin's certification, the server signs its answers
with the next version. ``HttpsTransport`` hands an answer signed by a version newer than the
pinned one to ``ServerKeyRenewal``, which takes it only this way:

1. ``/v1/identity`` is read over TLS checked against the pinned CA copy;
2. it must name the pinned vault and the pinned organisation key, and exactly the version the
   answer named, newer than the pinned one; its certificate verifies under that organisation
   key (``https_identity.parse_identity``), so a key the organisation key did not certify, or
   certified for another vault, is never believed;
3. the answer that named it is checked under it (the status, body and request it binds);
4. only then is it pinned (``server-pins.json``: the vault id and the CA copy kept as they were).

Anything else is ``UntrustedRecord`` with a hint, and the pins stay as they were. An older
version than the pinned one is refused by the transport before this is asked (no rollback). Inside
``HttpsTransport.within`` (an agent's request) the identity's read has what is left of the budget,
and a server that does not answer it in time is ``StoreUnavailable`` (session 17), as any request.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import httpx

from vault.errors import StoreUnavailable, UntrustedRecord, VaultError
from vault.service.serverpins import ServerPin, ServerPins
from vault.transport.https_identity import read_identity
from vault.wire.httpsig_response import PinnedServerKey

IDENTITY_TIMEOUT = 10.0  # seconds for reading ``/v1/identity`` when no budget is set (read_identity's own)
HINT = (
    "the server's key changed without a certificate this machine can check: compare the fingerprints with "
    "your admin, then `credvault server trust URL --replace`"
)


class ServerKeyRenewal:
    """Re-pins a newer server key of one pinned server (module docstring); ``pin`` is the pin now."""

    def __init__(self, pin: ServerPin, transport: httpx.BaseTransport | None = None) -> None:
        self.pin, self.transport = pin, transport

    def __repr__(self) -> str:
        return f"ServerKeyRenewal(server={self.pin.url!r})"

    def __call__(
        self, version: int, check: Callable[[PinnedServerKey], None], left: float | None = None
    ) -> PinnedServerKey:
        """The newer key, re-pinned (module docstring); the identity read within ``left`` seconds if a
        budget is set (``HttpsTransport.within``): past it, ``StoreUnavailable`` and nothing pinned."""
        pinned = self.pin.server_key
        if pinned is None or version <= pinned[0]:
            raise _refused(f"the server named server key version {version}, not newer than the pinned one")
        timeout = IDENTITY_TIMEOUT if left is None else min(IDENTITY_TIMEOUT, left)
        try:
            identity = read_identity(self.pin.url, ca_file=self.pin.ca_file, transport=self.transport, timeout=timeout)
        except UntrustedRecord:
            raise _refused(
                f"the server's key version {version} has no valid certificate under the organisation key"
            ) from None
        except StoreUnavailable:
            raise  # not reached, or not in time: nothing is believed and nothing pinned; said as unavailable
        except VaultError:
            raise _refused(f"the server's identity could not be read to check key version {version}") from None
        if identity.vault_id != self.pin.vault_id or identity.org_key[1] != self.pin.org_key:
            raise _refused("the server names another vault or organisation key than this machine pinned")
        if identity.server_key is None or identity.server_key[0] != version:
            raise _refused(f"the server's identity does not certify the key version {version} it signed with")
        check(identity.server_key)  # the answer under the new key, before anything is kept
        renewed = dataclasses.replace(self.pin, server_key=identity.server_key)
        pins = ServerPins.load()
        if pins.pins.get(self.pin.url) not in (self.pin, renewed):
            raise _refused("this machine's pin of the server changed meanwhile: nothing was re-pinned")
        pins.pin(renewed, replace=True)
        self.pin = renewed
        return identity.server_key


def _refused(why: str) -> UntrustedRecord:
    return UntrustedRecord(why, hint=HINT)
