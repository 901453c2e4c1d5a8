"""Sealing a key to an X25519 public key (docs/format.md §4.4).

An ephemeral X25519 key pair per seal, HKDF-SHA256 over the shared secret (salted
with both public keys), AES-256-GCM with the recipient, the ephemeral key and the
caller's context as associated data. All-zero shared secrets are refused.
"""

from __future__ import annotations

import struct

from vault.crypto import _primitives as p
from vault.crypto.labels import BLOB_SEALED, FORMAT_VERSION, LABEL_SEAL
from vault.errors import DecryptionFailed

_HEADER = 6
_MIN_SIZE = _HEADER + p.PUBLIC_SIZE + p.NONCE_SIZE + p.TAG_SIZE


class KeyPair:
    """An X25519 key pair; ``repr`` never shows the private half."""

    __slots__ = ("private", "public")

    def __init__(self, private: bytes, public: bytes | None = None) -> None:
        if len(private) != p.KEY_SIZE:
            raise ValueError("X25519 private keys are 32 bytes")
        self.private = private
        self.public = public if public is not None else p.x25519_public_from_private(private)

    @classmethod
    def generate(cls) -> KeyPair:
        private, public = p.x25519_generate()
        return cls(private, public)

    def __repr__(self) -> str:
        return f"KeyPair(public={self.public[:4].hex()}…)"


def is_weak_public(public: bytes) -> bool:
    """A low-order X25519 key: every seal to it would be readable by anyone."""
    if len(public) != p.PUBLIC_SIZE:
        return True
    try:
        p.x25519_exchange(p.x25519_generate()[0], public)
    except p.PrimitiveFailure:
        return True
    return False


def seal(recipient_public: bytes, key_version: int, message: bytes, context: tuple[p.ContextItem, ...]) -> bytes:
    if len(recipient_public) != p.PUBLIC_SIZE:
        raise ValueError("X25519 public keys are 32 bytes")
    if not 0 <= key_version < 2**32:
        raise ValueError("key version out of range")
    eph_private, eph_public = p.x25519_generate()
    try:
        shared = p.x25519_exchange(eph_private, recipient_public)
    except p.PrimitiveFailure:
        raise ValueError("refusing to seal to a low-order public key") from None
    key = p.hkdf(shared, LABEL_SEAL, salt=eph_public + recipient_public)
    header = struct.pack(">BBI", FORMAT_VERSION, BLOB_SEALED, key_version)
    nonce = p.new_nonce()
    aad = p.ctx(LABEL_SEAL, header, eph_public, recipient_public, *context)
    return header + eph_public + nonce + p.aead_encrypt(key, nonce, message, aad)


def open_sealed(recipient: KeyPair, key_version: int, blob: bytes, context: tuple[p.ContextItem, ...]) -> bytes:
    if len(blob) < _MIN_SIZE:
        raise DecryptionFailed()
    header = blob[:_HEADER]
    version, blob_type, found_version = struct.unpack(">BBI", header)
    if version != FORMAT_VERSION or blob_type != BLOB_SEALED or found_version != key_version:
        raise DecryptionFailed()
    eph_public = blob[_HEADER : _HEADER + p.PUBLIC_SIZE]
    nonce = blob[_HEADER + p.PUBLIC_SIZE : _HEADER + p.PUBLIC_SIZE + p.NONCE_SIZE]
    try:
        shared = p.x25519_exchange(recipient.private, eph_public)
        key = p.hkdf(shared, LABEL_SEAL, salt=eph_public + recipient.public)
        aad = p.ctx(LABEL_SEAL, header, eph_public, recipient.public, *context)
        return p.aead_decrypt(key, nonce, blob[_HEADER + p.PUBLIC_SIZE + p.NONCE_SIZE :], aad)
    except p.PrimitiveFailure:
        raise DecryptionFailed() from None
