"""The team server's layer over wrapped data keys: "no log, no key" (docs/server.md §5).

Layouts (docs/format.md §4.8–4.9), both ``version || type || key_version || nonce ||
AES-256-GCM`` as every blob of ``blobs.py``:

* **Server client key** (type ``0x08``): a client's 32-byte server client key ``SCK[c, w]``
  under the server master key ``SMK[v]`` (which lives outside the database);
  ``key_version`` = ``v``; associated data ``ctx(LABEL_SERVER_CLIENT_KEY, header6, vault_id,
  client_id, w)``. Rotating the SMK re-wraps one such blob per client; a purge deletes a
  client's, which destroys its layer.
* **Server-layered data key** (type ``0x09``): a §4.2 wrapped data key (type ``0x02``, as
  it is) under ``SCK[c, w]``; ``key_version`` = ``w``; associated data
  ``ctx(LABEL_SERVER_LAYER, header6, vault_id, client_id, secret_id, version,
  inner_key_version)``, ``inner_key_version`` being the client-key version of the row
  (``secret_versions.key_version``) that the inner blob's own header must name.

The layer is the outermost: removing it gives the §4.2 blob, which only the client key
opens, so the server that removes it never sees a data key. Every failure is the one
opaque ``DecryptionFailed``. Only ``vault/server/`` may import this module (a layering test
in tests/authority/test_imports.py).
"""

from __future__ import annotations

from vault.crypto import _primitives as p
from vault.crypto import blobs
from vault.crypto.labels import BLOB_DATA_KEY, BLOB_SERVER_CLIENT_KEY, BLOB_SERVER_LAYER
from vault.errors import DecryptionFailed

WRAPPED_DATA_KEY_SIZE = blobs.HEADER_SIZE + p.NONCE_SIZE + p.KEY_SIZE + p.TAG_SIZE  # a §4.2 blob: 66 bytes


def new_server_key() -> bytes:
    """A fresh 32-byte server master key or server client key."""
    return blobs.new_key()


def wrap_client_key(
    smk: bytes, smk_version: int, sck: bytes, *, vault_id: bytes, client_id: int, sck_version: int
) -> bytes:
    """``SCK[client_id, sck_version]`` under ``SMK[smk_version]`` (§4.8)."""
    if len(sck) != p.KEY_SIZE:
        raise ValueError("server client keys are 32 bytes")
    return blobs.encrypt_blob(smk, BLOB_SERVER_CLIENT_KEY, smk_version, sck, (vault_id, client_id, sck_version))


def unwrap_client_key(
    smk: bytes, smk_version: int, blob: bytes, *, vault_id: bytes, client_id: int, sck_version: int
) -> bytes:
    """The server client key of a §4.8 blob stored for ``(client_id, sck_version)``."""
    key = blobs.decrypt_blob(smk, BLOB_SERVER_CLIENT_KEY, smk_version, blob, (vault_id, client_id, sck_version))
    if len(key) != p.KEY_SIZE:
        raise DecryptionFailed()
    return key


def rewrap_client_key(
    old: tuple[bytes, int], new: tuple[bytes, int], blob: bytes, *, vault_id: bytes, client_id: int, sck_version: int
) -> bytes:
    """A §4.8 blob moved from ``SMK[old]`` to ``SMK[new]`` (a server master key rotation)."""
    sck = unwrap_client_key(*old, blob, vault_id=vault_id, client_id=client_id, sck_version=sck_version)
    return wrap_client_key(*new, sck, vault_id=vault_id, client_id=client_id, sck_version=sck_version)


def smk_version(blob: bytes) -> int:
    """The server master key version a §4.8 blob names (unauthenticated until unwrapped)."""
    return _version_of(blob, BLOB_SERVER_CLIENT_KEY)


def layer(
    sck: bytes,
    sck_version: int,
    inner: bytes,
    *,
    vault_id: bytes,
    client_id: int,
    secret_id: int,
    version: int,
    key_version: int,
) -> bytes:
    """``inner`` (a §4.2 wrapped data key of client-key version ``key_version``) under
    ``SCK[client_id, sck_version]`` (§4.9). Anything else than such a blob is refused: the
    server layers only what a keyholder wrapped, never a key of its own making."""
    if not is_wrapped_data_key(inner) or blobs.blob_key_version(inner) != key_version:
        raise DecryptionFailed()
    context = (vault_id, client_id, secret_id, version, key_version)
    return blobs.encrypt_blob(sck, BLOB_SERVER_LAYER, sck_version, inner, context)


def unlayer(
    sck: bytes,
    sck_version: int,
    blob: bytes,
    *,
    vault_id: bytes,
    client_id: int,
    secret_id: int,
    version: int,
    key_version: int,
) -> bytes:
    """The §4.2 wrapped data key inside a §4.9 blob stored for that row (``key_version``: the
    row's client-key version, which the inner blob's header must name too)."""
    context = (vault_id, client_id, secret_id, version, key_version)
    inner = blobs.decrypt_blob(sck, BLOB_SERVER_LAYER, sck_version, blob, context)
    if not is_wrapped_data_key(inner) or blobs.blob_key_version(inner) != key_version:
        raise DecryptionFailed()
    return inner


def sck_version(blob: bytes) -> int:
    """The server client key version a §4.9 blob names (unauthenticated until removed)."""
    return _version_of(blob, BLOB_SERVER_LAYER)


def is_layered(blob: bytes) -> bool:
    """Whether ``blob`` has the §4.9 header (the server's layer on)."""
    return blobs.has_type(blob, BLOB_SERVER_LAYER)


def is_wrapped_data_key(blob: bytes) -> bool:
    """Whether ``blob`` has the size and header of a §4.2 wrapped data key (the layer off)."""
    return len(blob) == WRAPPED_DATA_KEY_SIZE and blob[0] == 1 and blob[1] == BLOB_DATA_KEY


def _version_of(blob: bytes, blob_type: int) -> int:
    if len(blob) < blobs.HEADER_SIZE or blob[1] != blob_type:
        raise DecryptionFailed()
    return blobs.blob_key_version(blob)
