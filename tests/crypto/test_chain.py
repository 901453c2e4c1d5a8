"""``chain.EventCodec``, the verifier's unrolled encoder, against the reference recipes.

The codec re-implements ``event_hash`` (format 2), ``event_hash_v1`` and
``event_signature_message`` for speed (bench W6); a divergence would make every
verification of a long chain wrong. Hypothesis drives both with the item types an audit
row can hold, edge values and non-ASCII text included. Format 2's ``typed_ctx`` is also
checked against a fixed vector and for the collisions of ``ctx`` it removes (issue 12).
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
    codec = chain.EventCodec(VAULT_ID)
    assert codec.audit_event_hash(seq, *fields, prev_hash) == expected
    expected_v1 = chain.event_hash_v1(VAULT_ID, seq, *fields, prev_hash=prev_hash)
    assert codec.audit_event_hash_v1(seq, *fields, prev_hash) == expected_v1
    assert expected != expected_v1  # the two formats are separate domains (labels and encodings differ)


def test_typed_ctx_vector() -> None:
    assert chain.typed_ctx(None, 1, "é", b"\x00") == bytes.fromhex(
        "00" + "01" + "0000000000000001" + "02" + "00000002" + "c3a9" + "03" + "00000001" + "00"
    )
    assert chain.typed_ctx(unicodedata.normalize("NFD", "é")) == chain.typed_ctx("é")  # NFC, as ctx


def test_typed_ctx_tells_none_empty_text_empty_bytes_and_zero_apart() -> None:
    values: list[p.ContextItem] = [None, "", b"", 0, bytes(8), "\x00" * 8]
    assert len({chain.typed_ctx("x", v, "y") for v in values}) == len(values)
    assert len({p.ctx("x", v, "y") for v in (None, "", b"")}) == 1  # why format 1 needed a canonical-form check
    # and no shift of a boundary makes two different tuples meet
    assert chain.typed_ctx("ab", "") != chain.typed_ctx("a", "b")
    assert chain.typed_ctx(None, "") != chain.typed_ctx("", None)


def test_event_hashes_differ_when_a_null_becomes_empty() -> None:
    base = (1, 7, 1, "engineer-list", None, None, None, None, None)
    emptied = (1, 7, 1, "engineer-list", None, None, None, b"", "")
    assert chain.event_hash_v1(VAULT_ID, 3, *base, prev_hash=bytes(32)) == chain.event_hash_v1(
        VAULT_ID, 3, *emptied, prev_hash=bytes(32)
    )  # format 1: the collision the verifier's canonical-form check refuses
    assert chain.event_hash(VAULT_ID, 3, *base, prev_hash=bytes(32)) != chain.event_hash(
        VAULT_ID, 3, *emptied, prev_hash=bytes(32)
    )


def test_audit_event_hash_refuses_what_ctx_refuses() -> None:
    codec = chain.EventCodec(VAULT_ID)
    for encode in (codec.audit_event_hash, codec.audit_event_hash_v1):
        with pytest.raises(ValueError):
            encode(2**63, 0, None, 0, "a", None, None, None, None, None, bytes(32))
        with pytest.raises(TypeError):
            encode(1, 0, None, 0, 3.5, None, None, None, None, None, bytes(32))  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            encode(1, 0, True, 0, "a", None, None, None, None, None, bytes(32))


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
