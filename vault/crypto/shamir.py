"""Shamir secret sharing of the root bundle into k-of-n recovery shares.

Scheme (docs/format.md sections 4.6 and 6)
-------------------------------------------
Every byte ``s`` of the secret is shared independently.  For each byte a polynomial
``f(X) = s + a1*X + ... + a(k-1)*X^(k-1)`` is drawn over GF(2^8) (the AES field,
reduction polynomial x^8 + x^4 + x^3 + x + 1 = 0x11B), with ``a1 .. a(k-1)`` uniformly
random bytes from ``os.urandom`` (through :func:`secrets.token_bytes`).  Share number
``x`` (``x = 1 .. n``) holds ``f(x)`` for every byte position.  :func:`combine`
rebuilds ``s = f(0)`` by Lagrange interpolation at zero from any ``k`` shares.

Why it is safe
--------------
A polynomial of degree at most ``k - 1`` is fixed by ``k`` points, so any ``k``
distinct shares rebuild the secret.  With only ``k - 1`` points, for *every* candidate
value of ``f(0)`` there is exactly one polynomial through those points and that value,
and each is equally likely because the coefficients are uniform (a zero leading
coefficient is allowed on purpose: excluding it would bias the distribution).  So
``k - 1`` shares carry no information at all about the secret; this is
information-theoretic and needs no hardness assumption.  The bytes are shared with
independent coefficients, so this holds for the whole secret.

Shamir shares are not authenticated: a damaged share rebuilds a wrong secret without
any error.  The text form therefore carries a 4-byte SHA-256 checksum bound to the
vault, the threshold and the x-coordinate, so that typing mistakes and shares from
another vault are caught before combination.  The checksum is not a MAC; the caller
must still check the rebuilt bundle against the current root (format.md 4.6).

Field arithmetic uses log/exp tables (generator 3) built at import; the code does not
branch on secret bytes in the field operations.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence

from vault.crypto.labels import LABEL_SHARE
from vault.errors import RecoveryShareError

__all__ = [
    "BUNDLE_SIZE",
    "ShareError",
    "combine",
    "decode_share",
    "encode_share",
    "gf_inv",
    "gf_mul",
    "split",
]

BUNDLE_SIZE = 64
"""Length in bytes of the root bundle, and therefore of ``y`` in a share's text form."""

SHARE_PREFIX = "cvs1-"
CHECKSUM_SIZE = 4
MAX_SHARES = 16
_MAX_TEXT_K = 9  # the text form holds k as a single decimal digit

# --- GF(2^8) tables ---------------------------------------------------------------


def _build_tables() -> tuple[tuple[int, ...], tuple[int, ...]]:
    exp = [0] * 510
    log = [0] * 256  # log[0] is meaningless; gf_mul masks the zero case out
    value = 1
    for i in range(255):
        exp[i] = value
        log[value] = i
        # multiply by the generator 3 = x + 1: value * x xor value, reduced by 0x11B
        doubled = value << 1
        if doubled & 0x100:
            doubled ^= 0x11B
        value = doubled ^ value
    for i in range(255, 510):
        exp[i] = exp[i - 255]
    return tuple(exp), tuple(log)


_EXP, _LOG = _build_tables()


def gf_mul(a: int, b: int) -> int:
    """Multiply two elements of GF(2^8) (AES polynomial)."""
    mask = -((a != 0) & (b != 0)) & 0xFF
    return _EXP[_LOG[a] + _LOG[b]] & mask


def gf_inv(a: int) -> int:
    """Multiplicative inverse of a nonzero element of GF(2^8)."""
    if not 0 < a < 256:
        raise ValueError("gf_inv: argument must be in 1..255")
    return _EXP[255 - _LOG[a]]


# --- splitting and combining ------------------------------------------------------


class ShareError(RecoveryShareError, ValueError):
    """A recovery share, or a set of shares, cannot be used.

    Raised for malformed or corrupted share texts and for share sets that cannot be
    combined (too few, duplicate or zero x-coordinates, unequal lengths).  A share
    from another vault fails its checksum, so it is reported as corrupted.  Messages
    never contain share text or secret bytes.  It is both the project's
    ``RecoveryShareError`` and a ``ValueError``.
    """


def split(secret: bytes, k: int, n: int) -> list[tuple[int, bytes]]:
    """Split ``secret`` into ``n`` shares ``(x, y)``, any ``k`` of which rebuild it."""
    if not secret:
        raise ValueError("cannot split an empty secret")
    if not 2 <= k <= n <= MAX_SHARES:
        raise ValueError(f"invalid threshold: need 2 <= k <= n <= {MAX_SHARES}, got k={k}, n={n}")
    coefficients = secrets.token_bytes((k - 1) * len(secret))
    shares: list[tuple[int, bytes]] = []
    for x in range(1, n + 1):
        y = bytearray(len(secret))
        for pos, byte in enumerate(secret):
            coeffs = coefficients[pos * (k - 1) : (pos + 1) * (k - 1)]
            acc = 0
            for c in reversed(coeffs):  # Horner, highest degree first
                acc = gf_mul(acc, x) ^ c
            y[pos] = gf_mul(acc, x) ^ byte
        shares.append((x, bytes(y)))
    return shares


def combine(shares: Sequence[tuple[int, bytes]], k: int) -> bytes:
    """Rebuild the secret from at least ``k`` shares; the first ``k`` are used.

    Every supplied share is checked: x-coordinates must be distinct and in 1..255,
    and all ``y`` must have the same nonzero length.  Shares from splits with
    different thresholds must be refused by the caller (the threshold is not part of
    a raw share; :func:`decode_share` returns it).
    """
    if not 2 <= k <= 255:
        raise ValueError(f"invalid threshold: need 2 <= k <= 255, got k={k}")
    if len(shares) < k:
        raise ShareError(f"not enough shares: need {k}, got {len(shares)}")
    seen: set[int] = set()
    length = len(shares[0][1])
    for x, y in shares:
        if not 0 < x < 256:
            raise ShareError("invalid share: x-coordinate must be in 1..255")
        if x in seen:
            raise ShareError(f"duplicate share: x-coordinate {x} given twice")
        seen.add(x)
        if len(y) != length:
            raise ShareError("shares have different lengths")
    if length == 0:
        raise ShareError("shares are empty")
    used = shares[:k]
    xs = [x for x, _ in used]
    # Lagrange basis at 0: l_i = prod_{j != i} x_j / (x_j - x_i); minus is xor here.
    basis: list[int] = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                num = gf_mul(num, xj)
                den = gf_mul(den, xj ^ xi)
        basis.append(gf_mul(num, gf_inv(den)))
    out = bytearray(length)
    for li, (_, y) in zip(basis, used, strict=True):
        for pos, byte in enumerate(y):
            out[pos] ^= gf_mul(li, byte)
    return bytes(out)


# --- text form (format.md 4.6) ------------------------------------------------------


def _checksum(vault_id: bytes, k: int, x: int, y: bytes) -> bytes:
    digest = hashlib.sha256(LABEL_SHARE + vault_id + bytes([k, x]) + y).digest()
    return digest[:CHECKSUM_SIZE]


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=")


def encode_share(vault_id: bytes, k: int, x: int, y: bytes) -> str:
    """Text form ``cvs1-<k>-<x hex>-<BASE32(y || checksum)>`` of one share."""
    if not 2 <= k <= _MAX_TEXT_K:
        raise ValueError(f"threshold k={k} cannot be encoded: need 2 <= k <= 9")
    if not 1 <= x <= MAX_SHARES:
        raise ValueError(f"x-coordinate {x} cannot be encoded: need 1 <= x <= 16")
    if len(y) != BUNDLE_SIZE:
        raise ValueError(f"share value must be {BUNDLE_SIZE} bytes, got {len(y)}")
    body = _b32(y + _checksum(vault_id, k, x, y))
    return f"{SHARE_PREFIX}{k}-{x:02x}-{body}"


def decode_share(vault_id: bytes, text: str) -> tuple[int, int, bytes]:
    """Parse and verify a share text; return ``(k, x, y)``.

    Surrounding whitespace, letter case and whitespace inside the base32 part are
    tolerated.  Raises :class:`ShareError` ("malformed share" or "corrupted share").
    """
    parts = text.strip().split("-", 3)
    if len(parts) != 4 or parts[0].lower() + "-" != SHARE_PREFIX:
        raise ShareError("malformed share: expected cvs1-<k>-<x>-<data>")
    k_text, x_text = parts[1], parts[2]
    if len(k_text) != 1 or k_text not in "23456789":
        raise ShareError("malformed share: threshold must be a digit 2..9")
    if len(x_text) != 2 or any(c not in "0123456789abcdefABCDEF" for c in x_text):
        raise ShareError("malformed share: x-coordinate must be two hex digits")
    k, x = int(k_text), int(x_text, 16)
    if not 1 <= x <= MAX_SHARES:
        raise ShareError(f"malformed share: x-coordinate must be in 1..{MAX_SHARES}")
    body = "".join(parts[3].split()).upper()
    expected_chars = _b32(bytes(BUNDLE_SIZE + CHECKSUM_SIZE))
    if len(body) != len(expected_chars):
        raise ShareError("malformed share: data part has the wrong length")
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except (binascii.Error, ValueError):
        raise ShareError("malformed share: data part is not valid base32") from None
    if len(raw) != BUNDLE_SIZE + CHECKSUM_SIZE or _b32(raw) != body:
        raise ShareError("malformed share: data part is not valid base32")
    y, check = raw[:BUNDLE_SIZE], raw[BUNDLE_SIZE:]
    if not hmac.compare_digest(check, _checksum(vault_id, k, x, y)):
        raise ShareError("corrupted share: checksum mismatch")
    return k, x, y
