"""``chain.EventCodec``, the verifier's unrolled encoder, against the reference recipes.

The codec re-implements ``event_hash`` and ``event_signature_message`` for speed (bench
W6); a divergence would make every verification of a long chain wrong. Hypothesis drives
both with the item types an audit row can hold, edge values and non-ASCII text included.
"""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.crypto import _primitives as p
from vault.crypto import chain

VAULT_ID = b"\x11" * 16
ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
maybe_int = st.none() | ints
text = st.text(max_size=40) | st.sampled_from(["checkout", "é", unicodedata.normalize("NFD", "é"), "\u200b"])
blob = st.none() | st.binary(max_size=80)


@settings(max_examples=400, deadline=None)
@given(
    seq=ints,
    at_us=ints,
    engineer_id=maybe_int,
    key_generation=ints,
    action=text,
    client_id=maybe_int,
    secret_id=maybe_int,
    key_version=maybe_int,
    details_blob=blob,
    details_json=st.none() | text,
    prev_hash=st.binary(min_size=32, max_size=32),
)
def test_audit_event_hash_is_event_hash(
    seq: int,
    at_us: int,
    engineer_id: int | None,
    key_generation: int,
    action: str,
    client_id: int | None,
    secret_id: int | None,
    key_version: int | None,
    details_blob: bytes | None,
    details_json: str | None,
    prev_hash: bytes,
) -> None:
    fields = (at_us, engineer_id, key_generation, action, client_id, secret_id, key_version, details_blob, details_json)
    expected = chain.event_hash(VAULT_ID, seq, *fields, prev_hash=prev_hash)
    assert chain.EventCodec(VAULT_ID).audit_event_hash(seq, *fields, prev_hash) == expected


def test_audit_event_hash_refuses_what_ctx_refuses() -> None:
    codec = chain.EventCodec(VAULT_ID)
    with pytest.raises(ValueError):
        codec.audit_event_hash(2**63, 0, None, 0, "a", None, None, None, None, None, bytes(32))
    with pytest.raises(TypeError):
        codec.audit_event_hash(1, 0, None, 0, 3.5, None, None, None, None, None, bytes(32))  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(seq=st.integers(min_value=1, max_value=2**62), digest=st.binary(min_size=32, max_size=32))
def test_signature_valid_accepts_sign_event_and_nothing_else(seq: int, digest: bytes) -> None:
    seed, public = p.ed25519_generate()
    codec = chain.EventCodec(VAULT_ID)
    signature = chain.sign_event(seed, VAULT_ID, seq, digest)
    assert codec.signature_valid(public, signature, seq, digest)
    assert not codec.signature_valid(public, signature, seq + 1, digest)
    assert not codec.signature_valid(public, signature, seq, bytes(32) if digest != bytes(32) else b"\x01" * 32)
    assert not chain.EventCodec(b"\x22" * 16).signature_valid(public, signature, seq, digest)
