"""The private primitives: context encoding, and known-answer tests from the standards.

Vectors (hex, as printed in their sources):
- AES-256-GCM: McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)", Appendix B,
  test cases 13-16 (the 256-bit-key cases; also NIST's gcmEncryptExtIV256 set);
- HKDF-SHA256: RFC 5869 Appendix A, test cases 1 and 3;
- Ed25519: RFC 8032 §7.1, TEST 1 and TEST 2;
- X25519: RFC 7748 §6.1 (Alice and Bob).
"""

from __future__ import annotations

import struct

import pytest

from vault.crypto import _primitives as p

H = bytes.fromhex

# -- ctx ------------------------------------------------------------------------------------------


def test_ctx_length_prefixes_every_item() -> None:
    assert p.ctx(b"ab", "c") == b"\x00\x00\x00\x02ab" + b"\x00\x00\x00\x01c"
    assert p.ctx() == b""
    assert p.ctx(b"") == bytes(4)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (("ab", "c"), ("a", "bc")),
        ((b"ab", b"c"), (b"a", b"bc")),
        (("abc",), ("ab", "c")),
        (("a", ""), ("a",)),
        (("a", None), ("a",)),
        ((b"\x00\x00\x00\x01a",), (b"", b"a")),
        ((1,), (b"\x01",)),
        ((1, 2), (struct.pack(">q", 1) + struct.pack(">q", 2),)),
        ((0,), (None,)),
        ((-1,), (2**63 - 1,)),
    ],
    ids=[
        "str-regrouped", "bytes-regrouped", "split", "trailing-empty", "trailing-none",
        "embedded-prefix", "int-vs-short-bytes", "two-ints-vs-one-blob", "zero-vs-none", "signed",
    ],
)  # fmt: skip
def test_ctx_of_different_item_sequences_differs(left: tuple, right: tuple) -> None:
    assert p.ctx(*left) != p.ctx(*right)


def test_ctx_encodes_int_as_eight_byte_twos_complement() -> None:
    """Not type-tagged: an int is its 8-byte encoding, so each position must have one fixed type."""
    assert p.ctx(1) == p.ctx(struct.pack(">q", 1)) == b"\x00\x00\x00\x08" + bytes(7) + b"\x01"
    assert p.ctx(-1) == b"\x00\x00\x00\x08" + b"\xff" * 8
    assert p.ctx(2**63 - 1) == b"\x00\x00\x00\x08\x7f" + b"\xff" * 7


def test_ctx_encodes_none_empty_bytes_and_empty_text_alike() -> None:
    assert p.ctx(None) == p.ctx(b"") == p.ctx("") == bytes(4)


def test_ctx_normalises_text_to_nfc_utf8() -> None:
    assert p.ctx("caf\u00e9") == p.ctx("cafe\u0301") == p.ctx("caf\u00e9".encode())
    assert p.ctx("\u2713") == b"\x00\x00\x00\x03\xe2\x9c\x93"


def test_ctx_accepts_bytearray_and_memoryview_as_bytes() -> None:
    assert p.ctx(bytearray(b"ab"), memoryview(b"c")) == p.ctx(b"ab", b"c")


@pytest.mark.parametrize(
    "item", [True, False, 1.0, [1], {"a": 1}, object()], ids=["true", "false", "float", "list", "dict", "object"]
)
def test_ctx_refuses_booleans_and_other_types(item: object) -> None:
    with pytest.raises(TypeError):
        p.ctx(b"label", item)  # type: ignore[arg-type]


@pytest.mark.parametrize("item", [2**63, -(2**63) - 1, 2**64])
def test_ctx_refuses_ints_outside_64_bits_with_a_value_error(item: int) -> None:
    with pytest.raises(ValueError):
        p.ctx(item)


# -- AES-256-GCM ---------------------------------------------------------------------------------

GCM_KEY = H("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
GCM_IV = H("cafebabefacedbaddecaf888")
GCM_P64 = H(
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
)
GCM_C64 = H(
    "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
    "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad"
)
GCM_VECTORS = [
    # (name, key, iv, plaintext, aad, ciphertext, tag)
    ("test-case-13", bytes(32), bytes(12), b"", b"", b"", H("530f8afbc74536b9a963b4f1c4cb738b")),
    (
        "test-case-14",
        bytes(32),
        bytes(12),
        bytes(16),
        b"",
        H("cea7403d4d606b6e074ec5d3baf39d18"),
        H("d0d1c8a799996bf0265b98b5d48ab919"),
    ),
    ("test-case-15", GCM_KEY, GCM_IV, GCM_P64, b"", GCM_C64, H("b094dac5d93471bdec1a502270e3cc6c")),
    (
        "test-case-16",
        GCM_KEY,
        GCM_IV,
        GCM_P64[:60],
        H("feedfacedeadbeeffeedfacedeadbeefabaddad2"),
        GCM_C64[:60],
        H("76fc6ece0f4e1768cddf8853bb2d551b"),
    ),
]
by_gcm_vector = pytest.mark.parametrize(
    ("name", "key", "iv", "plaintext", "aad", "ciphertext", "tag"), GCM_VECTORS, ids=[v[0] for v in GCM_VECTORS]
)


@by_gcm_vector
def test_aes_gcm_encrypts_the_known_answer(
    name: str, key: bytes, iv: bytes, plaintext: bytes, aad: bytes, ciphertext: bytes, tag: bytes
) -> None:
    assert p.aead_encrypt(key, iv, plaintext, aad) == ciphertext + tag


@by_gcm_vector
def test_aes_gcm_decrypts_the_known_answer(
    name: str, key: bytes, iv: bytes, plaintext: bytes, aad: bytes, ciphertext: bytes, tag: bytes
) -> None:
    assert p.aead_decrypt(key, iv, ciphertext + tag, aad) == plaintext


@by_gcm_vector
def test_aes_gcm_refuses_the_known_answer_with_a_changed_tag_or_aad(
    name: str, key: bytes, iv: bytes, plaintext: bytes, aad: bytes, ciphertext: bytes, tag: bytes
) -> None:
    bad_tag = tag[:-1] + bytes([tag[-1] ^ 1])
    for sealed, associated in (
        (ciphertext + bad_tag, aad),
        (ciphertext + tag, aad + b"\x00"),
        ((ciphertext + tag)[:-1], aad),
    ):
        with pytest.raises(p.PrimitiveFailure) as info:
            p.aead_decrypt(key, iv, sealed, associated)
        assert str(info.value) == ""
        if plaintext:
            assert plaintext.hex() not in repr(info.value.args)


# -- HKDF-SHA256 ----------------------------------------------------------------------------------


def test_hkdf_matches_rfc5869_test_case_1() -> None:
    okm = p.hkdf(b"\x0b" * 22, H("f0f1f2f3f4f5f6f7f8f9"), H("000102030405060708090a0b0c"), 42)
    assert okm == H("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")


@pytest.mark.parametrize("salt", [None, b""], ids=["none", "empty"])
def test_hkdf_matches_rfc5869_test_case_3_with_empty_salt(salt: bytes | None) -> None:
    """Format §2 says "empty salt unless stated": None and b"" must agree (RFC 5869 §2.2)."""
    okm = p.hkdf(b"\x0b" * 22, b"", salt, 42)
    assert okm == H("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8")


def test_hkdf_defaults_to_a_32_byte_key() -> None:
    assert len(p.hkdf(b"ikm", b"info")) == 32
    assert p.hkdf(b"ikm", b"info") != p.hkdf(b"ikm", b"info2")


# -- Ed25519 --------------------------------------------------------------------------------------

ED25519_VECTORS = [
    (
        "rfc8032-test-1",
        H("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"),
        H("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"),
        b"",
        H(
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
            "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        ),
    ),
    (
        "rfc8032-test-2",
        H("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"),
        H("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"),
        H("72"),
        H(
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
            "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
        ),
    ),
]
by_ed25519_vector = pytest.mark.parametrize(
    ("name", "seed", "public", "message", "signature"), ED25519_VECTORS, ids=[v[0] for v in ED25519_VECTORS]
)


@by_ed25519_vector
def test_ed25519_matches_the_rfc8032_vector(
    name: str, seed: bytes, public: bytes, message: bytes, signature: bytes
) -> None:
    assert p.ed25519_public_from_seed(seed) == public
    assert p.ed25519_sign(seed, message) == signature
    p.ed25519_verify(public, signature, message)


@by_ed25519_vector
def test_ed25519_refuses_the_rfc8032_vector_changed(
    name: str, seed: bytes, public: bytes, message: bytes, signature: bytes
) -> None:
    for pub, sig, msg in (
        (public, signature, message + b"\x00"),
        (public, signature[:-1] + bytes([signature[-1] ^ 1]), message),
        (public[:-1] + bytes([public[-1] ^ 1]), signature, message),
        (public, signature[:63], message),
    ):
        with pytest.raises(p.PrimitiveFailure):
            p.ed25519_verify(pub, sig, msg)


def test_ed25519_generate_gives_a_matching_public_key() -> None:
    seed, public = p.ed25519_generate()
    assert len(seed) == 32 and p.ed25519_public_from_seed(seed) == public


# -- X25519 ---------------------------------------------------------------------------------------

ALICE_PRIVATE = H("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUBLIC = H("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
BOB_PRIVATE = H("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
BOB_PUBLIC = H("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
X25519_SHARED = H("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")


def test_x25519_public_keys_match_rfc7748() -> None:
    assert p.x25519_public_from_private(ALICE_PRIVATE) == ALICE_PUBLIC
    assert p.x25519_public_from_private(BOB_PRIVATE) == BOB_PUBLIC


def test_x25519_shared_secret_matches_rfc7748_both_ways() -> None:
    assert p.x25519_exchange(ALICE_PRIVATE, BOB_PUBLIC) == X25519_SHARED
    assert p.x25519_exchange(BOB_PRIVATE, ALICE_PUBLIC) == X25519_SHARED


@pytest.mark.parametrize(
    "peer",
    [
        bytes(32),
        bytes([1]) + bytes(31),
        H("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
        H("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
        H("ec" + "ff" * 30 + "7f"),
        H("ed" + "ff" * 30 + "7f"),
    ],
    ids=["zero", "one", "order-8-a", "order-8-b", "p-1", "p"],
)
def test_x25519_refuses_an_all_zero_shared_secret(peer: bytes) -> None:
    with pytest.raises(p.PrimitiveFailure) as info:
        p.x25519_exchange(ALICE_PRIVATE, peer)
    assert ALICE_PRIVATE.hex() not in repr(info.value.args)


@pytest.mark.parametrize("peer", [b"", bytes(31), bytes(33)], ids=["0", "31", "33"])
def test_x25519_refuses_a_public_key_of_wrong_size(peer: bytes) -> None:
    with pytest.raises(p.PrimitiveFailure):
        p.x25519_exchange(ALICE_PRIVATE, peer)


def test_x25519_generate_gives_a_matching_public_key() -> None:
    private, public = p.x25519_generate()
    assert p.x25519_public_from_private(private) == public
    assert p.x25519_exchange(ALICE_PRIVATE, public) == p.x25519_exchange(private, ALICE_PUBLIC)


# -- randomness, HMAC, comparison ----------------------------------------------------------------------


def test_nonces_are_twelve_fresh_bytes() -> None:
    nonces = {p.new_nonce() for _ in range(256)}
    assert len(nonces) == 256 and {len(n) for n in nonces} == {12}


def test_hmac_sha256_matches_rfc4231_test_case_2() -> None:
    mac = p.hmac_sha256(b"Jefe", b"what do ya want for nothing?")
    assert mac == H("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")


def test_constant_time_equal_compares_contents() -> None:
    assert p.constant_time_equal(b"abc", b"abc")
    assert not p.constant_time_equal(b"abc", b"abd")
    assert not p.constant_time_equal(b"abc", b"ab")
