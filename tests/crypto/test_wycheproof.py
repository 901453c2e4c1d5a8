"""Project Wycheproof vectors through our own wrappers (``vault/crypto/_primitives.py``).

The vectors are vendored under tests/vectors/wycheproof (upstream C2SP/wycheproof,
Apache-2.0; provenance, commits and licence in its README.md) and pinned by
MANIFEST.sha256, which the first test checks. Each family runs every vector of every group
inside our wrapper's domain; the summary tests pin how many ran, so a filter that silently
matched nothing (or a truncated file) fails instead of passing vacuously.

Where our policy is stricter than Wycheproof's verdict, the test says so:
- X25519: ``x25519_exchange`` refuses an all-zero shared secret, which Wycheproof rates
  "acceptable" (low-order public keys); ``sealing.is_weak_public`` flags those keys.
- Ed25519: ``signing.verify`` also refuses small-order / non-canonical public keys
  (``ed25519_public_is_weak``) before verifying. It signs ``ctx(label, *fields)``, not a raw
  message, so Wycheproof's messages cannot be fed to it directly; instead every Wycheproof
  key is checked against that extra refusal (none is weak, so it rejects no vector
  Wycheproof accepts), and the signatures themselves go through ``ed25519_verify``, which
  ``signing.verify`` calls.
- AES-GCM: we only ever use 256-bit keys, 96-bit nonces and 128-bit tags; other groups
  are outside the domain, and the blob recipes refuse other key sizes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from vault.crypto import _primitives as p
from vault.crypto import blobs, sealing, signing
from vault.crypto.labels import BLOB_SECRET_FIELD

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "wycheproof"
H = bytes.fromhex

Vector = tuple[dict[str, Any], dict[str, Any]]  # (group, test)


@cache
def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return data


def vectors(name: str) -> list[Vector]:
    return [(group, test) for group in load(name)["testGroups"] for test in group["tests"]]


def params(name: str, keep: Any = lambda group, test: True) -> list[Any]:
    prefix = name.removesuffix("_test.json")
    return [
        pytest.param(group, test, id=f"{prefix}-tc{test['tcId']}-{test['result']}")
        for group, test in vectors(name)
        if keep(group, test)
    ]


# -- the vendored files ------------------------------------------------------------------------


def test_manifest_checksums_match() -> None:
    lines = (VECTORS / "MANIFEST.sha256").read_text(encoding="ascii").splitlines()
    listed = {}
    for line in lines:
        digest, name = line.split("  ", 1)
        listed[name] = digest
    assert set(listed) == {
        "aes_gcm_test.json",
        "x25519_test.json",
        "ed25519_test.json",
        "hkdf_sha256_test.json",
        "LICENSE",
        "APACHE-2.0.txt",
    }
    for name, digest in listed.items():
        assert hashlib.sha256((VECTORS / name).read_bytes()).hexdigest() == digest, name


@pytest.mark.parametrize(
    ("name", "algorithm", "schema"),
    [
        ("aes_gcm_test.json", "AES-GCM", "aead_test_schema_v1.json"),
        ("x25519_test.json", "XDH", "xdh_comp_schema_v1.json"),
        ("ed25519_test.json", "EDDSA", "eddsa_verify_schema_v1.json"),
        ("hkdf_sha256_test.json", "HKDF-SHA-256", "hkdf_test_schema.json"),
    ],
)
def test_vector_file_is_complete(name: str, algorithm: str, schema: str) -> None:
    data = load(name)
    assert data["algorithm"] == algorithm
    assert data["schema"] == schema
    assert data["numberOfTests"] == len(vectors(name))
    assert len({test["tcId"] for _, test in vectors(name)}) == data["numberOfTests"]


# -- AES-GCM -----------------------------------------------------------------------------------

AES = "aes_gcm_test.json"


def in_aead_domain(group: dict[str, Any], test: dict[str, Any] | None = None) -> bool:
    """AES-256-GCM with a 96-bit nonce and a 128-bit tag: the only shape we use."""
    return (group["keySize"], group["ivSize"], group["tagSize"]) == (256, 96, 128)


@pytest.mark.parametrize(("group", "test"), params(AES, in_aead_domain))
def test_aes_gcm_vector(group: dict[str, Any], test: dict[str, Any]) -> None:
    key, iv, aad, msg = H(test["key"]), H(test["iv"]), H(test["aad"]), H(test["msg"])
    sealed = H(test["ct"]) + H(test["tag"])
    if test["result"] == "valid":
        assert p.aead_encrypt(key, iv, msg, aad) == sealed
        assert p.aead_decrypt(key, iv, sealed, aad) == msg
    elif test["result"] == "invalid":
        # Only the decryption side applies: a forged or altered tag must not open.
        with pytest.raises(p.PrimitiveFailure):
            p.aead_decrypt(key, iv, sealed, aad)
    else:  # "acceptable": either answer, but only PrimitiveFailure may escape
        with contextlib.suppress(p.PrimitiveFailure):
            assert p.aead_decrypt(key, iv, sealed, aad) == msg


def test_aes_gcm_outside_our_domain_is_refused_by_the_recipes() -> None:
    """Keys that are not 256-bit never reach AES-GCM; nonces are always 96-bit."""
    context = blobs.secret_field_context(1, 1, 1, "password")
    key_sizes = {group["keySize"] for group, _ in vectors(AES) if group["keySize"] != 256}
    assert key_sizes == {128, 192}
    for group, test in vectors(AES):
        if group["keySize"] == 256:
            continue
        key = H(test["key"])
        assert len(key) * 8 == group["keySize"]
        with pytest.raises(ValueError, match="32 bytes"):
            blobs.encrypt_blob(key, BLOB_SECRET_FIELD, 1, H(test["msg"]), context)
        with pytest.raises(ValueError, match="32 bytes"):
            blobs.decrypt_blob(key, BLOB_SECRET_FIELD, 1, bytes(64), context)
    # IV sizes other than 96 bits cannot be expressed: the recipes draw a 12-byte nonce
    # and read exactly 12 bytes back. (Tags are always 128 bits in this file.)
    assert p.NONCE_SIZE == len(p.new_nonce()) == 12
    assert {group["tagSize"] for group, _ in vectors(AES)} == {128}
    blob = blobs.encrypt_blob(bytes(32), BLOB_SECRET_FIELD, 1, b"x", context)
    assert len(blob) == blobs.HEADER_SIZE + 12 + 1 + p.TAG_SIZE


def test_aes_gcm_summary() -> None:
    ran = Counter(test["result"] for group, test in vectors(AES) if in_aead_domain(group))
    skipped = sum(1 for group, _ in vectors(AES) if not in_aead_domain(group))
    assert ran == {"valid": 39, "invalid": 27}
    assert sum(ran.values()) + skipped == load(AES)["numberOfTests"] == 316
    assert sum(ran.values()) > 60


# -- X25519 ------------------------------------------------------------------------------------

XDH = "x25519_test.json"
ZERO = bytes(32)


def zero_shared(test: dict[str, Any]) -> bool:
    return H(test["shared"]) == ZERO


@pytest.mark.parametrize(("group", "test"), params(XDH))
def test_x25519_vector(group: dict[str, Any], test: dict[str, Any]) -> None:
    assert group["curve"] == "curve25519"
    private, public, shared = H(test["private"]), H(test["public"]), H(test["shared"])
    if zero_shared(test):
        # Stricter than Wycheproof ("acceptable"): we refuse low-order peers outright.
        assert "ZeroSharedSecret" in test["flags"]
        with pytest.raises(p.PrimitiveFailure):
            p.x25519_exchange(private, public)
        assert sealing.is_weak_public(public)
        return
    if test["result"] == "valid":
        assert p.x25519_exchange(private, public) == shared
    elif test["result"] == "invalid":
        with pytest.raises(p.PrimitiveFailure):
            p.x25519_exchange(private, public)
    else:  # "acceptable" (twist points, non-canonical encodings): agree or refuse
        with contextlib.suppress(p.PrimitiveFailure):
            assert p.x25519_exchange(private, public) == shared
    # A public key that gives a non-zero secret here is not low-order.
    assert not sealing.is_weak_public(public)


def test_x25519_summary() -> None:
    ran = Counter(test["result"] for _, test in vectors(XDH))
    zero = Counter(test["result"] for _, test in vectors(XDH) if zero_shared(test))
    assert ran == {"valid": 264, "acceptable": 254}
    assert zero == {"acceptable": 31}
    assert all("LowOrderPublic" in test["flags"] for _, test in vectors(XDH) if zero_shared(test))


# -- Ed25519 -----------------------------------------------------------------------------------

EDDSA = "ed25519_test.json"


@pytest.mark.parametrize(("group", "test"), params(EDDSA))
def test_ed25519_vector(group: dict[str, Any], test: dict[str, Any]) -> None:
    assert group["publicKey"]["curve"] == "edwards25519"
    public, signature, message = H(group["publicKey"]["pk"]), H(test["sig"]), H(test["msg"])
    if test["result"] == "valid":
        p.ed25519_verify(public, signature, message)
    elif test["result"] == "invalid":
        with pytest.raises(p.PrimitiveFailure):
            p.ed25519_verify(public, signature, message)
    else:  # "acceptable": either answer, but only PrimitiveFailure may escape
        with contextlib.suppress(p.PrimitiveFailure):
            p.ed25519_verify(public, signature, message)


def test_ed25519_keys_pass_the_small_order_refusal_of_signing_verify() -> None:
    """``signing.verify`` refuses weak keys first; no Wycheproof key is weak, so that
    stricter check rejects none of the vectors (valid or not) Wycheproof uses."""
    keys = {group["publicKey"]["pk"] for group, _ in vectors(EDDSA)}
    assert len(keys) > 50
    weak = sorted(pk for pk in keys if signing.is_weak_signing_key(H(pk)))
    assert weak == []


def test_ed25519_summary() -> None:
    ran = Counter(test["result"] for _, test in vectors(EDDSA))
    assert ran == {"valid": 88, "invalid": 63}


# -- HKDF-SHA256 -------------------------------------------------------------------------------

HKDF = "hkdf_sha256_test.json"


@pytest.mark.parametrize(("group", "test"), params(HKDF))
def test_hkdf_sha256_vector(group: dict[str, Any], test: dict[str, Any]) -> None:
    ikm, salt, info, size = H(test["ikm"]), H(test["salt"]), H(test["info"]), test["size"]
    if test["result"] == "valid":
        assert size <= 255 * 32
        assert p.hkdf(ikm, info, salt, size) == H(test["okm"])
    else:
        # Too long an output (> 255 * HashLen); any refusal from cryptography will do.
        assert size > 255 * 32
        with pytest.raises(Exception):
            p.hkdf(ikm, info, salt, size)


def test_hkdf_sha256_summary() -> None:
    ran = Counter(test["result"] for _, test in vectors(HKDF))
    assert ran == {"valid": 83, "invalid": 3}
    assert any(test["salt"] == "" for _, test in vectors(HKDF))  # the empty-salt path runs
