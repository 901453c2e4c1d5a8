"""Raw primitives. Private: only the recipes in this package call these.

Each function says in one line why it is safe to use the way we use it. Nothing here
knows about clients, secrets or rows; the recipes add labels and associated data.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import struct
import unicodedata

import nacl.bindings as nacl_bindings
import nacl.exceptions as nacl_exceptions
from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
PUBLIC_SIZE = 32
SIGNATURE_SIZE = 64

ContextItem = bytes | str | int | None


class PrimitiveFailure(Exception):
    """An AEAD tag, a signature or a key agreement did not check out (no detail kept)."""


def random_bytes(n: int) -> bytes:
    """Safe: the operating system's CSPRNG, the only randomness source we use."""
    return os.urandom(n)


def new_nonce() -> bytes:
    """Safe: 96-bit random nonces; each key's use count is bounded far below 2^32."""
    return os.urandom(NONCE_SIZE)


def encode_item(item: ContextItem) -> bytes:
    if item is None:
        return b""
    if isinstance(item, bool):
        raise TypeError("booleans are not context items")
    if isinstance(item, int):
        if not -(2**63) <= item < 2**63:
            raise ValueError("context integers are 64-bit")
        return struct.pack(">q", item)
    if isinstance(item, str):
        return unicodedata.normalize("NFC", item).encode("utf-8")
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    raise TypeError(f"unsupported context item type: {type(item).__name__}")


def ctx(*items: ContextItem) -> bytes:
    """Safe: every item is length-prefixed, so distinct contexts never collide."""
    out = bytearray()
    for item in items:
        raw = encode_item(item)
        out += struct.pack(">I", len(raw))
        out += raw
    return bytes(out)


def aead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Safe: AES-256-GCM with a caller-checked unique nonce and authenticated AAD."""
    return AESGCM(key).encrypt(nonce, plaintext, aad)


def aead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """Safe: the tag is verified before any plaintext is returned."""
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except (InvalidTag, ValueError) as exc:
        raise PrimitiveFailure from exc


class KeyedAead:
    """``aead_encrypt``/``aead_decrypt`` under one key, its cipher set up once (a batch
    re-wrap uses the same few keys for thousands of blobs). Same safety notes as those."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "KeyedAead(<redacted>)"

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        return self._aead.encrypt(nonce, plaintext, aad)

    def decrypt(self, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        try:
            return self._aead.decrypt(nonce, ciphertext, aad)
        except (InvalidTag, ValueError) as exc:
            raise PrimitiveFailure from exc


def hkdf(ikm: bytes, info: bytes, salt: bytes | None = None, length: int = KEY_SIZE) -> bytes:
    """Safe: HKDF-SHA256 with a per-purpose label as info (RFC 5869)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """Safe: HMAC-SHA256 with a 256-bit random key."""
    return hmac.new(key, message, hashlib.sha256).digest()


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """Safe: comparison time does not depend on where the inputs differ."""
    return hmac.compare_digest(a, b)


def argon2id(secret: bytes, salt: bytes, memory_kib: int, time_cost: int, parallelism: int) -> bytes:
    """Safe: Argon2id (RFC 9106), bounds checked by the caller before this runs."""
    return hash_secret_raw(
        secret=secret,
        salt=salt,
        time_cost=time_cost,
        memory_cost=memory_kib,
        parallelism=parallelism,
        hash_len=KEY_SIZE,
        type=Type.ID,
    )


# -- X25519 -----------------------------------------------------------------


def x25519_generate() -> tuple[bytes, bytes]:
    """Safe: a fresh key pair from the CSPRNG; returns (private, public) raw bytes."""
    private = X25519PrivateKey.generate()
    return _x_private_bytes(private), _x_public_bytes(private.public_key())


def x25519_public_from_private(private: bytes) -> bytes:
    return _x_public_bytes(X25519PrivateKey.from_private_bytes(private).public_key())


def x25519_exchange(private: bytes, peer_public: bytes) -> bytes:
    """Safe: all-zero shared secrets (low-order points) are refused."""
    try:
        shared = X25519PrivateKey.from_private_bytes(private).exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:  # cryptography refuses all-zero output and bad points
        raise PrimitiveFailure from exc
    if constant_time_equal(shared, bytes(len(shared))):
        raise PrimitiveFailure
    return shared


def _x_private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def _x_public_bytes(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# -- Ed25519 ----------------------------------------------------------------


def ed25519_generate() -> tuple[bytes, bytes]:
    """Safe: a fresh signing key; returns (seed, public) raw bytes."""
    seed = os.urandom(KEY_SIZE)
    return seed, ed25519_public_from_seed(seed)


def ed25519_public_from_seed(seed: bytes) -> bytes:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def ed25519_sign(seed: bytes, message: bytes) -> bytes:
    """Safe: deterministic Ed25519 (RFC 8032); no per-signature randomness to get wrong."""
    return _signing_key(bytes(seed)).sign(message)


@functools.lru_cache(maxsize=8)
def _signing_key(seed: bytes) -> Ed25519PrivateKey:
    # Expanding the seed costs about half a signature; an unlocked session signs every audit
    # event with the same seed. The cache holds what the session already holds in memory.
    return Ed25519PrivateKey.from_private_bytes(seed)


def ed25519_verify(public: bytes, signature: bytes, message: bytes) -> None:
    """Safe: strict verification by libsodium (PyNaCl), which also refuses small-order and
    non-canonical keys and R values and a non-reduced S; raises PrimitiveFailure on any
    mismatch. libsodium verifies about twice as fast as OpenSSL here, which matters when an
    audit chain of a million signed events is checked (bench W6); the Wycheproof vectors
    run through this function (tests/crypto/test_wycheproof.py)."""
    if len(public) != PUBLIC_SIZE or len(signature) != SIGNATURE_SIZE:
        raise PrimitiveFailure
    try:
        nacl_bindings.crypto_sign_open(bytes(signature) + bytes(message), bytes(public))
    except (nacl_exceptions.CryptoError, ValueError, TypeError) as exc:
        raise PrimitiveFailure from exc


_P = 2**255 - 19
_D = (-121665 * pow(121666, _P - 2, _P)) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _ed_add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    # The unified twisted Edwards addition (a = -1): complete, so no special cases.
    (x1, y1), (x2, y2) = a, b
    k = _D * x1 * x2 * y1 * y2 % _P
    x3 = (x1 * y2 + y1 * x2) * pow(1 + k, _P - 2, _P) % _P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - k, _P - 2, _P) % _P
    return x3, y3


@functools.lru_cache(maxsize=4096)
def ed25519_public_is_weak(public: bytes) -> bool:
    """Safe: refuses non-canonical or small-order keys, under which forged signatures verify."""
    if len(public) != PUBLIC_SIZE:
        return True
    y = int.from_bytes(public, "little") & ((1 << 255) - 1)
    sign = public[31] >> 7
    if y >= _P:
        return True
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    if v * x * x % _P != u:
        x = x * _SQRT_M1 % _P
        if v * x * x % _P != u:
            return True  # not on the curve
    if x == 0 and sign:
        return True
    if x & 1 != sign:
        x = _P - x
    point = (x, y)
    for _ in range(3):
        point = _ed_add(point, point)
    return point == (0, 1)
