"""Sealed keys (docs/format.md §4.4): round trips, recipients, tampering, low-order points.

Layout: ``0x01 || 0x04 || key_version (4) || E (32) || nonce (12) || ct || tag (16)``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.crypto import _primitives as p
from vault.crypto.labels import LABEL_CLIENT_KEY_SEAL, LABEL_INVITE, LABEL_ROOT_BUNDLE, LABEL_SEAL
from vault.crypto.sealing import KeyPair, open_sealed, seal
from vault.errors import DecryptionFailed

VAULT_ID = bytes.fromhex("5a17c0ffee00112233445566778899aa")
RECIPIENT = KeyPair(bytes.fromhex("a8abababababababababababababababababababababababababababababab6b"))
STRANGER = KeyPair(bytes.fromhex("c8cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd4d"))
CLIENT_KEY = bytes.fromhex("6b1f9e0c2d3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9001122334")
ROOT_BUNDLE = bytes(range(64))
INVITE_SECRET = bytes.fromhex("0badc0de0badc0de0badc0de0badc0de")

# The four contexts of docs/format.md §4.4: (name, key_version, message, context).
CONTEXTS = [
    ("client-key-to-recovery", 3, CLIENT_KEY, (LABEL_CLIENT_KEY_SEAL, VAULT_ID, 11, 3, "recovery", 2)),
    ("client-key-to-engineer", 3, CLIENT_KEY, (LABEL_CLIENT_KEY_SEAL, VAULT_ID, 11, 3, "engineer", 5)),
    ("root-bundle-to-admin", 2, ROOT_BUNDLE, (LABEL_ROOT_BUNDLE, VAULT_ID, 2, 5)),
    ("invite-to-recovery", 2, INVITE_SECRET, (LABEL_INVITE, VAULT_ID, 5, 2)),
]
by_context = pytest.mark.parametrize(
    ("name", "key_version", "message", "context"), CONTEXTS, ids=[c[0] for c in CONTEXTS]
)
NAME, KEY_VERSION, MESSAGE, CONTEXT = CONTEXTS[1]

HEADER, PUBLIC, NONCE, TAG = 6, 32, 12, 16
E_START, NONCE_START, CT_START = HEADER, HEADER + PUBLIC, HEADER + PUBLIC + NONCE

# Low-order points of Curve25519 (and their non-canonical and high-bit twins), all of
# which make X25519 output zero: the list libsodium and the X25519 literature refuse.
LOW_ORDER_POINTS = [
    bytes(32),
    bytes([1]) + bytes(31),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ec" + "ff" * 30 + "7f"),  # p - 1
    bytes.fromhex("ed" + "ff" * 30 + "7f"),  # p (non-canonical 0)
    bytes.fromhex("ee" + "ff" * 30 + "7f"),  # p + 1 (non-canonical 1)
    bytes(31) + b"\x80",
    bytes([1]) + bytes(30) + b"\x80",
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f11d7"),
    bytes.fromhex("ec" + "ff" * 31),
    bytes.fromhex("ed" + "ff" * 31),
    bytes.fromhex("ee" + "ff" * 31),
]
LOW_ORDER_IDS = [
    "zero", "one", "order-8-a", "order-8-b", "p-1", "p", "p+1",
    "zero-high-bit", "one-high-bit", "order-8-a-high-bit", "order-8-b-high-bit",
    "p-1-high-bit", "p-high-bit", "p+1-high-bit",
]  # fmt: skip

REGIONS = [
    ("version", 0),
    ("type", 1),
    ("key-version", 5),
    ("ephemeral-first", E_START),
    ("ephemeral-middle", E_START + 16),
    ("ephemeral-last", E_START + PUBLIC - 1),
    ("nonce-first", NONCE_START),
    ("nonce-last", CT_START - 1),
    ("ciphertext-first", CT_START),
    ("ciphertext-last", -TAG - 1),
    ("tag-first", -TAG),
    ("tag-last", -1),
]


def _flip(blob: bytes, offset: int, bit: int = 0x01) -> bytes:
    offset %= len(blob)
    return blob[:offset] + bytes([blob[offset] ^ bit]) + blob[offset + 1 :]


def _sealed() -> bytes:
    return seal(RECIPIENT.public, KEY_VERSION, MESSAGE, CONTEXT)


def _open(
    blob: bytes, recipient: KeyPair = RECIPIENT, key_version: int = KEY_VERSION, context: tuple = CONTEXT
) -> bytes:
    return open_sealed(recipient, key_version, blob, context)


# -- positive -------------------------------------------------------------------------


@by_context
def test_sealed_key_opens_for_its_recipient(name: str, key_version: int, message: bytes, context: tuple) -> None:
    blob = seal(RECIPIENT.public, key_version, message, context)
    assert open_sealed(RECIPIENT, key_version, blob, context) == message
    assert blob[:2] == b"\x01\x04"
    assert struct.unpack(">I", blob[2:6])[0] == key_version
    assert len(blob) == CT_START + len(message) + TAG
    assert message not in blob


@pytest.mark.parametrize("message", [b"", b"k", bytes(range(256))], ids=["empty", "one-byte", "256-bytes"])
def test_message_of_any_length_round_trips(message: bytes) -> None:
    assert _open(seal(RECIPIENT.public, KEY_VERSION, message, CONTEXT)) == message


def test_generated_key_pair_round_trips() -> None:
    pair = KeyPair.generate()
    assert KeyPair(pair.private).public == pair.public
    assert open_sealed(pair, 1, seal(pair.public, 1, MESSAGE, ()), ()) == MESSAGE


def test_sealed_key_matches_the_format_spec() -> None:
    """Open with X25519 + HKDF + AES-GCM directly, following docs/format.md §4.4."""
    blob = _sealed()
    e_public = blob[E_START:NONCE_START]
    shared = X25519PrivateKey.from_private_bytes(RECIPIENT.private).exchange(
        X25519PublicKey.from_public_bytes(e_public)
    )
    key = HKDF(hashes.SHA256(), 32, salt=e_public + RECIPIENT.public, info=LABEL_SEAL).derive(shared)
    aad = p.ctx(LABEL_SEAL, blob[:HEADER], e_public, RECIPIENT.public, *CONTEXT)
    assert AESGCM(key).decrypt(blob[NONCE_START:CT_START], blob[CT_START:], aad) == MESSAGE


def test_two_seals_of_the_same_message_use_fresh_ephemeral_keys_and_nonces() -> None:
    seals = [_sealed() for _ in range(8)]
    assert len({s[E_START:NONCE_START] for s in seals}) == 8
    assert len({s[NONCE_START:CT_START] for s in seals}) == 8
    assert len({s[CT_START:] for s in seals}) == 8
    assert all(_open(s) == MESSAGE for s in seals)


def test_key_pair_repr_does_not_show_the_private_key() -> None:
    pair = KeyPair.generate()
    for text in (repr(pair), str(pair), f"{pair!r}"):
        assert pair.private.hex() not in text
        assert pair.private.hex()[:8] not in text
        assert repr(pair.private)[2:-1] not in text
    assert pair.public.hex()[:8] in repr(pair)


@pytest.mark.parametrize("private", [b"", bytes(31), bytes(33)], ids=["0", "31", "33"])
def test_key_pair_of_wrong_size_is_a_value_error(private: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        KeyPair(private)


# -- recipients and low-order points ---------------------------------------------------


def test_sealed_key_does_not_open_for_another_recipient(rejects: Callable[..., DecryptionFailed]) -> None:
    rejects(lambda: _open(_sealed(), recipient=STRANGER), MESSAGE, STRANGER.private)


def test_sealed_key_does_not_open_with_a_mismatched_public_half(rejects: Callable[..., DecryptionFailed]) -> None:
    """Opening binds the recipient public key: a key pair claiming another public half fails."""
    lying = KeyPair(RECIPIENT.private, STRANGER.public)
    rejects(lambda: _open(_sealed(), recipient=lying), MESSAGE, RECIPIENT.private)


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=LOW_ORDER_IDS)
def test_sealing_to_a_low_order_public_key_is_a_value_error(point: bytes) -> None:
    with pytest.raises(ValueError, match="low-order") as info:
        seal(point, KEY_VERSION, MESSAGE, CONTEXT)
    assert not isinstance(info.value, DecryptionFailed)
    assert MESSAGE.hex() not in str(info.value)
    assert info.value.__cause__ is None


@pytest.mark.parametrize("public", [b"", bytes(31), bytes(33)], ids=["0", "31", "33"])
def test_sealing_to_a_public_key_of_wrong_size_is_a_value_error(public: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        seal(public, KEY_VERSION, MESSAGE, CONTEXT)


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=LOW_ORDER_IDS)
def test_sealed_key_whose_ephemeral_key_is_low_order_is_rejected(
    point: bytes, rejects: Callable[..., DecryptionFailed]
) -> None:
    blob = _sealed()
    replaced = blob[:E_START] + point + blob[NONCE_START:]
    rejects(lambda: _open(replaced), MESSAGE, RECIPIENT.private)


def test_sealed_key_whose_ephemeral_key_is_all_zero_is_rejected(rejects: Callable[..., DecryptionFailed]) -> None:
    blob = _sealed()
    rejects(lambda: _open(blob[:E_START] + bytes(32) + blob[NONCE_START:]), MESSAGE, RECIPIENT.private)


def test_ephemeral_key_with_its_ignored_high_bit_flipped_is_rejected(rejects: Callable[..., DecryptionFailed]) -> None:
    """X25519 ignores the top bit, so the shared secret is unchanged: E in the salt and AAD catches it."""
    blob = _sealed()
    tampered = _flip(blob, NONCE_START - 1, 0x80)
    e_public, twin = blob[E_START:NONCE_START], tampered[E_START:NONCE_START]
    assert p.x25519_exchange(RECIPIENT.private, e_public) == p.x25519_exchange(RECIPIENT.private, twin)
    rejects(lambda: _open(tampered), MESSAGE, RECIPIENT.private)


def test_sealed_key_with_ephemeral_key_of_another_seal_is_rejected(rejects: Callable[..., DecryptionFailed]) -> None:
    first, second = _sealed(), _sealed()
    spliced = first[:E_START] + second[E_START:NONCE_START] + first[NONCE_START:]
    rejects(lambda: _open(spliced), MESSAGE, RECIPIENT.private)


# -- tampering ------------------------------------------------------------------------------


@pytest.mark.parametrize("bit", [0x01, 0x40])
@pytest.mark.parametrize(("region", "offset"), REGIONS, ids=[r for r, _ in REGIONS])
def test_sealed_key_with_a_flipped_bit_is_rejected(
    region: str, offset: int, bit: int, rejects: Callable[..., DecryptionFailed]
) -> None:
    rejects(lambda: _open(_flip(_sealed(), offset, bit)), MESSAGE, RECIPIENT.private)


def test_sealed_key_truncated_to_any_length_is_rejected(rejects: Callable[..., DecryptionFailed]) -> None:
    blob = _sealed()
    for length in range(len(blob)):
        rejects(lambda n=length: _open(blob[:n]), MESSAGE, RECIPIENT.private)


@pytest.mark.parametrize("extra", [b"\x00", bytes(16)], ids=["1-byte", "16-bytes"])
def test_sealed_key_with_bytes_appended_is_rejected(extra: bytes, rejects: Callable[..., DecryptionFailed]) -> None:
    rejects(lambda: _open(_sealed() + extra), MESSAGE, RECIPIENT.private)


def test_sealed_key_under_another_key_version_is_rejected(rejects: Callable[..., DecryptionFailed]) -> None:
    blob = _sealed()
    rejects(lambda: _open(blob, key_version=KEY_VERSION + 1), MESSAGE, RECIPIENT.private)
    rewritten = blob[:2] + struct.pack(">I", KEY_VERSION + 1) + blob[6:]
    rejects(lambda: _open(rewritten, key_version=KEY_VERSION + 1), MESSAGE, RECIPIENT.private)


def _swapped(context: tuple, index: int) -> tuple:
    item = context[index]
    if isinstance(item, int):
        new: object = item + 1
    elif isinstance(item, str):
        new = "recovery" if item == "engineer" else "engineer"
    else:
        new = item[:-1] + bytes([item[-1] ^ 1])
    return (*context[:index], new, *context[index + 1 :])


SWAPS = [
    (name, key_version, message, context, index)
    for name, key_version, message, context in CONTEXTS
    for index in range(len(context))
]


@pytest.mark.parametrize(
    ("name", "key_version", "message", "context", "index"), SWAPS, ids=[f"{s[0]}-item{s[4]}" for s in SWAPS]
)
def test_sealed_key_opened_in_another_context_is_rejected(
    name: str, key_version: int, message: bytes, context: tuple, index: int, rejects: Callable[..., DecryptionFailed]
) -> None:
    blob = seal(RECIPIENT.public, key_version, message, context)
    rejects(lambda: open_sealed(RECIPIENT, key_version, blob, _swapped(context, index)), message, RECIPIENT.private)


def test_sealed_key_with_a_context_item_dropped_or_added_is_rejected(rejects: Callable[..., DecryptionFailed]) -> None:
    blob = _sealed()
    rejects(lambda: _open(blob, context=CONTEXT[:-1]), MESSAGE, RECIPIENT.private)
    rejects(lambda: _open(blob, context=(*CONTEXT, None)), MESSAGE, RECIPIENT.private)
    rejects(lambda: _open(blob, context=()), MESSAGE, RECIPIENT.private)


def test_client_key_sealed_to_recovery_does_not_open_as_a_grant(rejects: Callable[..., DecryptionFailed]) -> None:
    recovery_blob = seal(RECIPIENT.public, 3, CLIENT_KEY, CONTEXTS[0][3])
    rejects(lambda: open_sealed(RECIPIENT, 3, recovery_blob, CONTEXTS[1][3]), CLIENT_KEY, RECIPIENT.private)


# -- programming errors -------------------------------------------------------------------------


@pytest.mark.parametrize("key_version", [-1, 2**32])
def test_sealing_with_a_key_version_out_of_range_is_a_value_error(key_version: int) -> None:
    with pytest.raises(ValueError):
        seal(RECIPIENT.public, key_version, MESSAGE, CONTEXT)


# -- properties ----------------------------------------------------------------------------------

items_st = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=20),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.none(),
)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    message=st.binary(max_size=128),
    key_version=st.integers(min_value=0, max_value=2**32 - 1),
    context=st.tuples(st.just(LABEL_ROOT_BUNDLE), items_st, items_st),
)
def test_open_inverts_seal_and_any_single_bit_flip_fails(
    data: st.DataObject, message: bytes, key_version: int, context: tuple, rejects: Callable[..., DecryptionFailed]
) -> None:
    blob = seal(RECIPIENT.public, key_version, message, context)
    assert open_sealed(RECIPIENT, key_version, blob, context) == message
    bit = data.draw(st.integers(min_value=0, max_value=len(blob) * 8 - 1), label="bit")
    tampered = _flip(blob, bit // 8, 1 << (bit % 8))
    rejects(lambda: open_sealed(RECIPIENT, key_version, tampered, context), RECIPIENT.private)
