"""The sealed form of an unlocked session kept in the OS keyring (docs/format.md).

An unlocked session holds an engineer's long-term private keys. In the keyring they
are sealed under a key derived from a per-session random secret that never enters the
keyring (it lives in a 0600 file in the user's private runtime directory, which
``lock`` deletes), and the session's expiry and identity are the associated data: a
copy of the keyring entry opens nothing without that file, and an edited expiry
fails as any tampered ciphertext does.
"""

from __future__ import annotations

from vault.crypto import _primitives as p
from vault.crypto.labels import LABEL_SESSION
from vault.errors import DecryptionFailed

SECRET_SIZE = 32
SESSION_ID_SIZE = 16


def new_secret() -> bytes:
    """A fresh per-session wrapping secret (the content of the session key file)."""
    return p.random_bytes(SECRET_SIZE)


def new_session_id() -> bytes:
    return p.random_bytes(SESSION_ID_SIZE)


def _key(secret: bytes, session_id: bytes) -> bytes:
    if len(secret) != SECRET_SIZE or len(session_id) != SESSION_ID_SIZE:
        raise DecryptionFailed()
    return p.hkdf(secret, p.ctx(LABEL_SESSION, session_id))


def seal_session(secret: bytes, session_id: bytes, plaintext: bytes, context: tuple[p.ContextItem, ...]) -> bytes:
    """``nonce || AES-256-GCM(HKDF(secret, label || session id), plaintext, label || context)``."""
    nonce = p.new_nonce()
    return nonce + p.aead_encrypt(_key(secret, session_id), nonce, plaintext, p.ctx(LABEL_SESSION, *context))


def open_session(secret: bytes, session_id: bytes, blob: bytes, context: tuple[p.ContextItem, ...]) -> bytes:
    """The plaintext, or ``DecryptionFailed`` for any wrong secret, edited field or blob."""
    if len(blob) < p.NONCE_SIZE + p.TAG_SIZE:
        raise DecryptionFailed()
    key = _key(secret, session_id)
    try:
        return p.aead_decrypt(key, blob[: p.NONCE_SIZE], blob[p.NONCE_SIZE :], p.ctx(LABEL_SESSION, *context))
    except p.PrimitiveFailure:
        raise DecryptionFailed() from None
