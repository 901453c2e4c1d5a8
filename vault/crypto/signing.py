"""Signatures, fingerprints, lookup tags and enrolment codes (docs/format.md §4.7, §5).

Every signed message is a labelled context, so a signature over one kind of record
can never be replayed as another. Verification failures raise ``UntrustedRecord``.
"""

from __future__ import annotations

import base64
import binascii
import functools

from vault.crypto import _primitives as p
from vault.crypto.labels import (
    LABEL_ENROLL_MAC,
    LABEL_FP_CLIENT_KEY,
    LABEL_FP_ENGINEER,
    LABEL_FP_ORG,
    LABEL_INVITE_AUTH,
    LABEL_ROOT_LOOKUP,
    LABEL_ROOT_RECOVERY,
)
from vault.errors import EnrolmentError, UntrustedRecord

ContextItem = p.ContextItem
INVITE_SECRET_SIZE = 16
_ORG_FP_SIZE = 8
_CHECK_SIZE = 4
CODE_PREFIX = "CV1-"


class SigningKey:
    """An Ed25519 signing key; ``repr`` never shows the seed."""

    __slots__ = ("public", "seed")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != p.KEY_SIZE:
            raise ValueError("Ed25519 seeds are 32 bytes")
        self.seed = seed
        self.public = p.ed25519_public_from_seed(seed)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(p.random_bytes(p.KEY_SIZE))

    def sign(self, label: bytes, *fields: ContextItem) -> bytes:
        return p.ed25519_sign(self.seed, p.ctx(label, *fields))

    def __repr__(self) -> str:
        return f"SigningKey(public={self.public[:4].hex()}…)"


def is_weak_signing_key(public: bytes) -> bool:
    """A non-canonical or small-order Ed25519 key (forged signatures verify under it)."""
    return p.ed25519_public_is_weak(public)


def verify(public: bytes, signature: bytes | None, label: bytes, *fields: ContextItem, what: str) -> None:
    if not signature:
        raise UntrustedRecord(f"{what} is not signed by an admin")
    if any(isinstance(item, bool) for item in fields):
        raise TypeError("booleans are not context items")  # True == 1 must not share a memo entry
    try:
        result = _remembered(public, signature, label, fields)
    except TypeError:  # an unhashable item (bytearray, memoryview): check without the memo
        result = _check(public, signature, p.ctx(label, *fields))
    if result == "weak":
        raise UntrustedRecord(f"{what} names a weak (small-order) signing key")
    if result != "valid":
        raise UntrustedRecord(f"{what} has an invalid signature")


@functools.lru_cache(maxsize=8192)
def _remembered(public: bytes, signature: bytes, label: bytes, fields: tuple[ContextItem, ...]) -> str:
    """``_check`` remembered by the exact key, signature, label and field values: the signed
    message is a pure function of them, so a hit is the same check (checkouts verify the same
    certificates and grants on every call; encoding their messages cost more than the lookup)."""
    return _check(public, signature, p.ctx(label, *fields))


def _check(public: bytes, signature: bytes, message: bytes) -> str:
    if p.ed25519_public_is_weak(public):
        return "weak"
    try:
        p.ed25519_verify(public, signature, message)
    except p.PrimitiveFailure:
        return "invalid"
    return "valid"


# -- fingerprints ---------------------------------------------------------------


def _groups(raw: bytes) -> str:
    text = raw.hex()
    return " ".join(text[i : i + 4] for i in range(0, len(text), 4))


def engineer_fingerprint(sealing_public: bytes, signing_public: bytes) -> str:
    return _groups(p.sha256(p.ctx(LABEL_FP_ENGINEER, sealing_public, signing_public))[:16])


def org_fingerprint(org_signing_public: bytes) -> bytes:
    return p.sha256(p.ctx(LABEL_FP_ORG, org_signing_public))


def client_key_fingerprint(client_key: bytes) -> bytes:
    return p.hmac_sha256(client_key, LABEL_FP_CLIENT_KEY)[:16]


# -- root secret derivations and lookup tags ------------------------------------


def recovery_private_from_root(root_secret: bytes) -> bytes:
    return p.hkdf(root_secret, LABEL_ROOT_RECOVERY)


def lookup_key_from_root(root_secret: bytes) -> bytes:
    return p.hkdf(root_secret, LABEL_ROOT_LOOKUP)


def lookup_tag(key: bytes, label: bytes, value: str) -> bytes:
    return p.hmac_sha256(key, p.ctx(label, value))


# -- enrolment ------------------------------------------------------------------


def enrolment_mac(invite_secret: bytes, *fields: ContextItem) -> bytes:
    return p.hmac_sha256(invite_secret, p.ctx(LABEL_ENROLL_MAC, *fields))


def check_enrolment_mac(invite_secret: bytes, mac: bytes | None, *fields: ContextItem) -> bool:
    return mac is not None and p.constant_time_equal(enrolment_mac(invite_secret, *fields), mac)


def invite_auth_key(invite_secret: bytes) -> SigningKey:
    """The Ed25519 key an enrolment code's secret derives (HKDF, labelled): the inviting admin
    stores its public half with the invitation, so that the team server can check an enrolling
    person's code without learning its secret; the secret itself still MACs the enrolled keys,
    which only the confirming admin checks (it is sealed to the recovery key)."""
    if len(invite_secret) != INVITE_SECRET_SIZE:
        raise ValueError("an invite secret is 16 bytes")
    return SigningKey(p.hkdf(invite_secret, LABEL_INVITE_AUTH))


def make_enrolment_code(invite_secret: bytes, org_signing_public: bytes) -> str:
    payload = invite_secret + org_fingerprint(org_signing_public)[:_ORG_FP_SIZE]
    raw = payload + p.sha256(payload)[:_CHECK_SIZE]
    text = base64.b32encode(raw).decode("ascii").rstrip("=")
    return CODE_PREFIX + "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def parse_enrolment_code(code: str) -> tuple[bytes, bytes]:
    """Return (invite secret, organisation fingerprint prefix); never echoes the code."""
    text = "".join(code.split()).upper()
    if not text.startswith(CODE_PREFIX):
        raise EnrolmentError("malformed enrolment code: it should start with CV1-")
    body = text[len(CODE_PREFIX) :].replace("-", "")
    if len(body) > 64:
        raise EnrolmentError("malformed enrolment code: too long")
    if not body:
        raise EnrolmentError("malformed enrolment code: empty")
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except (binascii.Error, ValueError):
        raise EnrolmentError("malformed enrolment code: unexpected characters") from None
    if base64.b32encode(raw).decode("ascii").rstrip("=") != body:
        raise EnrolmentError("malformed enrolment code: unexpected characters")  # non-canonical spelling
    if len(raw) != INVITE_SECRET_SIZE + _ORG_FP_SIZE + _CHECK_SIZE:
        raise EnrolmentError("malformed enrolment code: wrong length")
    payload, check = raw[:-_CHECK_SIZE], raw[-_CHECK_SIZE:]
    if not p.constant_time_equal(p.sha256(payload)[:_CHECK_SIZE], check):
        raise EnrolmentError("enrolment code has a typo: its checksum does not match")
    return payload[:INVITE_SECRET_SIZE], payload[INVITE_SECRET_SIZE:]


def org_matches(org_signing_public: bytes, fingerprint_prefix: bytes) -> bool:
    return p.constant_time_equal(org_fingerprint(org_signing_public)[:_ORG_FP_SIZE], fingerprint_prefix)
