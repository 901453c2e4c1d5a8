"""What ``/readyz`` checks of the server's keys, beside the schema (``app._not_ready``).

A server whose key file and database disagree would answer, and then fail: a signing key that is
not the vault's active certified server key writes events no verifier believes (every append is
refused by ``ServerSeal.check_active``); a master key that does not open the stored server client
keys would record a checkout and then fail to remove the layer (the hold stays, no value). So
``/readyz`` reports, before a proxy sends engineers there:

* ``server-key-not-certified``: none of the key file's signing keys is the vault's active certified
  version. During a rotation (``credvault serve rotate-key``) the file holds the certified version
  and the next one; until an admin certifies the next, the server signs with the one before it and
  is ready: a restart between the rotation and the certification takes no server out of service;
* ``master-key-mismatch``: a stored server client key does not open under the key file's master
  keys (the current one or a ``previous_master_keys`` one it names).

One row each, read in one short read; a server without a key file (no checkout served) or without
a master key (no layer) skips that check.
"""

from __future__ import annotations

from sqlalchemy import select

from vault.authority.serverjournal import active_key
from vault.crypto.serverkey import SigningKeys, keyring_of
from vault.errors import VaultError
from vault.server.layer import ServerLayer
from vault.storage import models as m
from vault.storage.engine import Store


def key_problems(store: Store, server_key: SigningKeys | None, layer: ServerLayer | None) -> list[str]:
    """The readiness reasons of the server's keys (module docstring); empty when both agree."""
    found: list[str] = []
    with store.read() as s:
        if server_key is not None:
            ring = keyring_of(server_key)
            if active_key(s, ring) is None:
                found.append("server-key-not-certified")
        if layer is not None:
            info = s.get(m.VaultInfo, 1)
            client_id = s.scalar(select(m.ServerClientKey.client_id).limit(1))
            if info is not None and client_id is not None:
                try:
                    layer.client_key(s, bytes(info.vault_id), client_id)
                except VaultError:
                    found.append("master-key-mismatch")
    return found
