"""Symmetric blob recipes: encrypt a value under a key, bound to its row.

``encrypt_blob`` / ``decrypt_blob`` implement the layouts of docs/format.md §4.1–4.3:
``version || type || key_version || nonce || ciphertext``. The associated data is the
blob's label, its six-byte header and the context that names its row, so a blob moved
to another row, client, version or purpose fails with ``DecryptionFailed``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping

from vault.crypto import _primitives as p
from vault.crypto.labels import (
    BLOB_AUDIT_DETAIL,
    BLOB_BACKUP_SECTION,
    BLOB_CLIENT_FIELD,
    BLOB_DATA_KEY,
    BLOB_SECRET_FIELD,
    BLOB_SERVER_CLIENT_KEY,
    BLOB_SERVER_LAYER,
    FORMAT_VERSION,
    LABEL_AUDIT_DETAIL,
    LABEL_AUDIT_DETAIL_V3,
    LABEL_BACKUP_SECTION,
    LABEL_CLIENT_FIELD,
    LABEL_DATA_KEY,
    LABEL_SECRET_FIELD,
    LABEL_SERVER_CLIENT_KEY,
    LABEL_SERVER_LAYER,
)
from vault.errors import DecryptionFailed

HEADER_SIZE = 6
_LABELS = {
    BLOB_SECRET_FIELD: LABEL_SECRET_FIELD,
    BLOB_DATA_KEY: LABEL_DATA_KEY,
    BLOB_CLIENT_FIELD: LABEL_CLIENT_FIELD,
    BLOB_AUDIT_DETAIL: LABEL_AUDIT_DETAIL,
    BLOB_BACKUP_SECTION: LABEL_BACKUP_SECTION,
    BLOB_SERVER_CLIENT_KEY: LABEL_SERVER_CLIENT_KEY,  # recipes in serverlayer.py
    BLOB_SERVER_LAYER: LABEL_SERVER_LAYER,
}


def new_key() -> bytes:
    """A fresh random 256-bit key (a data key or a client key)."""
    return p.random_bytes(p.KEY_SIZE)


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != p.KEY_SIZE:
        raise ValueError("keys are 32 bytes")


def encrypt_blob(
    key: bytes,
    blob_type: int,
    key_version: int,
    plaintext: bytes,
    context: tuple[p.ContextItem, ...],
    label: bytes | None = None,
) -> bytes:
    _check_key(key)
    if not 0 <= key_version < 2**32:
        raise ValueError("key version out of range")
    header = struct.pack(">BBI", FORMAT_VERSION, blob_type, key_version)
    nonce = p.new_nonce()
    aad = p.ctx(label or _LABELS[blob_type], header, *context)
    return header + nonce + p.aead_encrypt(key, nonce, plaintext, aad)


def has_type(blob: bytes, blob_type: int) -> bool:
    """Whether ``blob``'s header (format 1) names ``blob_type`` (unauthenticated: a header only)."""
    return len(blob) >= HEADER_SIZE and blob[0] == 1 and blob[1] == blob_type


def blob_key_version(blob: bytes) -> int:
    """The key version named in a blob's header (unauthenticated until decrypted)."""
    if len(blob) < HEADER_SIZE:
        raise DecryptionFailed()
    return int(struct.unpack(">I", blob[2:6])[0])


def decrypt_blob(
    key: bytes,
    blob_type: int,
    key_version: int,
    blob: bytes,
    context: tuple[p.ContextItem, ...],
    label: bytes | None = None,
) -> bytes:
    _check_key(key)
    if len(blob) < HEADER_SIZE + p.NONCE_SIZE + p.TAG_SIZE:
        raise DecryptionFailed()
    header = blob[:HEADER_SIZE]
    version, found_type, found_key_version = struct.unpack(">BBI", header)
    if version != FORMAT_VERSION or found_type != blob_type or found_key_version != key_version:
        raise DecryptionFailed()
    nonce = blob[HEADER_SIZE : HEADER_SIZE + p.NONCE_SIZE]
    aad = p.ctx(label or _LABELS[blob_type], header, *context)
    try:
        return p.aead_decrypt(key, nonce, blob[HEADER_SIZE + p.NONCE_SIZE :], aad)
    except p.PrimitiveFailure:
        raise DecryptionFailed() from None


# -- named recipes (one per row kind) ------------------------------------------


def secret_field_context(client_id: int, secret_id: int, version: int, purpose: str) -> tuple[p.ContextItem, ...]:
    return (client_id, secret_id, version, purpose)


def wrap_data_key(
    client_key: bytes, ck_version: int, data_key: bytes, client_id: int, secret_id: int, version: int
) -> bytes:
    _check_key(data_key)
    return encrypt_blob(client_key, BLOB_DATA_KEY, ck_version, data_key, (client_id, secret_id, version))


def unwrap_data_key(
    client_key: bytes, ck_version: int, wrapped: bytes, client_id: int, secret_id: int, version: int
) -> bytes:
    key = decrypt_blob(client_key, BLOB_DATA_KEY, ck_version, wrapped, (client_id, secret_id, version))
    if len(key) != p.KEY_SIZE:
        raise DecryptionFailed()
    return key


_ROW_CONTEXT = struct.Struct(">IqIq")  # ctx items secret_id, version: 8-byte ints, length-prefixed (§1)


def rewrap_data_keys(
    old_keys: Mapping[int, bytes],
    new_key: bytes,
    new_version: int,
    client_id: int,
    rows: Iterable[tuple[int, int, int, bytes]],
) -> list[bytes]:
    """Re-wrap many data keys of one client: for each ``(secret_id, version, key_version,
    wrapped)`` the blob ``wrap_data_key(new_key, new_version, unwrap_data_key(old_keys[key_version],
    key_version, wrapped, client_id, secret_id, version), client_id, secret_id, version)`` would
    give, with the same checks and errors; each key's cipher and the constant part of the
    associated data (label, header, client id) are made once, not once per row."""
    _check_key(new_key)
    if not 0 <= new_version < 2**32:
        raise ValueError("key version out of range")
    label = _LABELS[BLOB_DATA_KEY]
    new_header = struct.pack(">BBI", FORMAT_VERSION, BLOB_DATA_KEY, new_version)
    new_aead, new_prefix = p.KeyedAead(new_key), p.ctx(label, new_header, client_id)
    opened: dict[int, tuple[p.KeyedAead, bytes, bytes]] = {}
    body = HEADER_SIZE + p.NONCE_SIZE  # where the ciphertext starts
    out = []
    for secret_id, version, key_version, wrapped in rows:
        entry = opened.get(key_version)
        if entry is None:
            if not 0 <= key_version < 2**32:
                raise DecryptionFailed()
            old_key = old_keys[key_version]
            _check_key(old_key)
            header = struct.pack(">BBI", FORMAT_VERSION, BLOB_DATA_KEY, key_version)
            entry = opened[key_version] = (p.KeyedAead(old_key), header, p.ctx(label, header, client_id))
        aead, header, prefix = entry
        if len(wrapped) < body + p.TAG_SIZE or wrapped[:HEADER_SIZE] != header:
            raise DecryptionFailed()
        row = _ROW_CONTEXT.pack(8, secret_id, 8, version)
        try:
            data_key = aead.decrypt(wrapped[HEADER_SIZE:body], wrapped[body:], prefix + row)
        except p.PrimitiveFailure:
            raise DecryptionFailed() from None
        if len(data_key) != p.KEY_SIZE:
            raise DecryptionFailed()
        nonce = p.new_nonce()
        out.append(new_header + nonce + new_aead.encrypt(nonce, data_key, new_prefix + row))
    return out


class SecretOpener:
    """Many secrets of one client under one client-key version, opened as a listing opens them:
    ``data_key`` gives what ``unwrap_data_key(client_key, ck_version, wrapped, client_id,
    secret_id, version)`` gives, and ``field`` what ``decrypt_secret_field(data_key,
    blob_key_version(blob), blob, client_id, secret_id, version, purpose)`` gives, with the same
    checks and the one error; the client key's cipher and the constant part of each associated
    data (label, header, client id) are made once, not once per secret (docs/format.md §4)."""

    __slots__ = ("_aead", "_client", "_field_label", "_header", "_prefix")

    def __init__(self, client_key: bytes, ck_version: int, client_id: int) -> None:
        _check_key(client_key)
        if not 0 <= ck_version < 2**32:
            raise DecryptionFailed()  # no blob names such a version
        self._aead = p.KeyedAead(client_key)
        self._header = struct.pack(">BBI", FORMAT_VERSION, BLOB_DATA_KEY, ck_version)
        self._prefix = p.ctx(_LABELS[BLOB_DATA_KEY], self._header, client_id)
        self._field_label = p.ctx(_LABELS[BLOB_SECRET_FIELD])
        self._client = p.ctx(client_id)

    def __repr__(self) -> str:
        return "SecretOpener(<redacted>)"

    def data_key(self, wrapped: bytes, secret_id: int, version: int) -> bytes:
        body = HEADER_SIZE + p.NONCE_SIZE
        if len(wrapped) < body + p.TAG_SIZE or wrapped[:HEADER_SIZE] != self._header:
            raise DecryptionFailed()
        try:
            key = self._aead.decrypt(wrapped[HEADER_SIZE:body], wrapped[body:], self._prefix + _row(secret_id, version))
        except p.PrimitiveFailure:
            raise DecryptionFailed() from None
        if len(key) != p.KEY_SIZE:
            raise DecryptionFailed()
        return key

    def field(self, data_key: bytes, blob: bytes, secret_id: int, version: int, purpose: str) -> bytes:
        _check_key(data_key)
        body = HEADER_SIZE + p.NONCE_SIZE
        if len(blob) < body + p.TAG_SIZE or blob[0] != FORMAT_VERSION or blob[1] != BLOB_SECRET_FIELD:
            raise DecryptionFailed()
        header = blob[:HEADER_SIZE]
        label = _PURPOSES.get(purpose) or p.ctx(purpose)
        aad = b"".join((self._field_label, _HEADER_ITEM, header, self._client, _row(secret_id, version), label))
        try:
            return p.aead_decrypt(data_key, blob[HEADER_SIZE:body], blob[body:], aad)
        except p.PrimitiveFailure:
            raise DecryptionFailed() from None


_HEADER_ITEM = struct.pack(">I", HEADER_SIZE)  # the length prefix of the header in a ctx (§1)
_PURPOSES = {purpose: p.ctx(purpose) for purpose in ("metadata", "password")}


def _row(secret_id: int, version: int) -> bytes:
    """``ctx(secret_id, version)``, as ``p.ctx`` encodes two ints (a bool is not one)."""
    if type(secret_id) is not int or type(version) is not int:
        raise TypeError("a secret id and a version are ints")
    try:
        return _ROW_CONTEXT.pack(8, secret_id, 8, version)
    except struct.error:
        raise ValueError("context integers are 64-bit") from None


def encrypt_secret_field(
    data_key: bytes, ck_version: int, value: bytes, client_id: int, secret_id: int, version: int, purpose: str
) -> bytes:
    return encrypt_blob(
        data_key, BLOB_SECRET_FIELD, ck_version, value, secret_field_context(client_id, secret_id, version, purpose)
    )


def decrypt_secret_field(
    data_key: bytes, ck_version: int, blob: bytes, client_id: int, secret_id: int, version: int, purpose: str
) -> bytes:
    return decrypt_blob(
        data_key, BLOB_SECRET_FIELD, ck_version, blob, secret_field_context(client_id, secret_id, version, purpose)
    )


def encrypt_client_field(client_key: bytes, ck_version: int, value: bytes, client_id: int, purpose: str) -> bytes:
    return encrypt_blob(client_key, BLOB_CLIENT_FIELD, ck_version, value, (client_id, purpose))


def decrypt_client_field(client_key: bytes, ck_version: int, blob: bytes, client_id: int, purpose: str) -> bytes:
    return decrypt_blob(client_key, BLOB_CLIENT_FIELD, ck_version, blob, (client_id, purpose))


def encrypt_audit_detail(
    client_key: bytes, ck_version: int, value: bytes, client_id: int, seq: int, action: str
) -> bytes:
    return encrypt_blob(client_key, BLOB_AUDIT_DETAIL, ck_version, value, (client_id, seq, action))


def decrypt_audit_detail(
    client_key: bytes, ck_version: int, blob: bytes, client_id: int, seq: int, action: str
) -> bytes:
    return decrypt_blob(client_key, BLOB_AUDIT_DETAIL, ck_version, blob, (client_id, seq, action))


def encrypt_audit_detail_v3(
    audit_key: bytes, generation: int, value: bytes, client_id: int, request_id: bytes, action: str
) -> bytes:
    """The details of a format-3 event, sealed before its request is sent (docs/format.md §4.3a)."""
    return encrypt_blob(
        audit_key, BLOB_AUDIT_DETAIL, generation, value, (client_id, request_id, action), LABEL_AUDIT_DETAIL_V3
    )


def decrypt_audit_detail_v3(
    audit_key: bytes, generation: int, blob: bytes, client_id: int, request_id: bytes, action: str
) -> bytes:
    return decrypt_blob(
        audit_key, BLOB_AUDIT_DETAIL, generation, blob, (client_id, request_id, action), LABEL_AUDIT_DETAIL_V3
    )


def encrypt_backup_section(key: bytes, value: bytes, vault_id: bytes, backup_id: bytes, section: str) -> bytes:
    return encrypt_blob(key, BLOB_BACKUP_SECTION, 0, value, (vault_id, backup_id, section))


def decrypt_backup_section(key: bytes, blob: bytes, vault_id: bytes, backup_id: bytes, section: str) -> bytes:
    return decrypt_blob(key, BLOB_BACKUP_SECTION, 0, blob, (vault_id, backup_id, section))
