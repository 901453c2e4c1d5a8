"""What an enrolment over HTTPS proves with the enrolment code (docs/server.md §3, §4).

The team server never holds an invitation's secret (it is sealed to the recovery key, for the
confirming admin). The inviting admin stores instead the public half of the Ed25519 key the
secret derives (``signing.invite_auth_key``; ``engineers.invite_auth_public``). An enrolling
keyholder signs its draft request with that key (keyid ``i:<public key, base64url>``) and, in
its commit, signs the keys it enrols with it (``invite_proof``, over ``proof_fields``); the
commit itself is signed by the new signing key. A captured commit therefore replays neither
with other keys (the proof covers them) nor as it is (its nonce, then the invitation is no
longer open). The enrolment MAC the confirming admin checks is unchanged: the server's check
is a gate (and its failures are rate limited), not the proof a person relies on.

The fields are defined once, here, for the keyholder that signs and the server that checks.
"""

from __future__ import annotations

import base64
import hashlib
import re

from vault.authority.engineer_requests import NewKeys
from vault.crypto import signing
from vault.crypto.labels import LABEL_SIG_ENROLL_REQUEST

KEYID_PREFIX = "i:"
INVITE_KEYID = re.compile(r"i:([A-Za-z0-9_-]{43})")


def invite_keyid(auth_public: bytes) -> str:
    """The ``keyid`` of a request signed with an invitation's derived key."""
    return KEYID_PREFIX + base64.urlsafe_b64encode(auth_public).rstrip(b"=").decode("ascii")


def invite_key_of(keyid: str) -> bytes | None:
    """The public key an ``i:`` keyid names (32 bytes, canonical base64url), else None."""
    match = INVITE_KEYID.fullmatch(keyid)
    if match is None:
        return None
    text = match.group(1)
    raw = base64.urlsafe_b64decode(text + "=")
    if len(raw) != 32 or invite_keyid(raw) != keyid:
        return None
    return raw


def proof_fields(vault_id: bytes, engineer_id: int, name: str, keys: NewKeys) -> tuple[bytes | int | str, ...]:
    """What ``invite_proof`` signs: the vault, the engineer and every value the enrolment stores."""
    return (
        vault_id,
        engineer_id,
        name,
        keys.key_generation,
        keys.sealing_public,
        keys.signing_public,
        hashlib.sha256(keys.key_record).digest(),
        keys.enroll_mac,
    )


def sign_proof(invite_secret: bytes, vault_id: bytes, engineer_id: int, name: str, keys: NewKeys) -> bytes:
    """The code's derived key's signature over the enrolment (the enrolling keyholder's part)."""
    key = signing.invite_auth_key(invite_secret)
    return key.sign(LABEL_SIG_ENROLL_REQUEST, *proof_fields(vault_id, engineer_id, name, keys))


def check_proof(auth_public: bytes, proof: bytes, vault_id: bytes, engineer_id: int, name: str, keys: NewKeys) -> None:
    """``UntrustedRecord`` unless ``proof`` is the invitation's key's signature over these keys."""
    signing.verify(
        auth_public,
        proof,
        LABEL_SIG_ENROLL_REQUEST,
        *proof_fields(vault_id, engineer_id, name, keys),
        what="the enrolment's proof of its code",
    )
