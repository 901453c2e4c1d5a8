"""Tests for Shamir recovery shares (docs/format.md sections 4.6 and 6)."""

from __future__ import annotations

import base64
import hashlib
import itertools
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.crypto.shamir import (
    BUNDLE_SIZE,
    ShareError,
    combine,
    decode_share,
    encode_share,
    gf_inv,
    gf_mul,
    split,
)
from vault.errors import RecoveryShareError

VAULT_ID = bytes.fromhex("00112233445566778899aabbccddeeff")
OTHER_VAULT_ID = bytes.fromhex("ffeeddccbbaa99887766554433221100")
BASE32_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def _slow_mul(a: int, b: int) -> int:
    """Reference GF(2^8) multiplication by shift-and-add, independent of the tables."""
    result = 0
    while b:
        if b & 1:
            result ^= a
        a <<= 1
        if a & 0x100:
            a ^= 0x11B
        b >>= 1
    return result


# --- field arithmetic -------------------------------------------------------------


def test_gf_mul_fips197_example() -> None:
    assert gf_mul(0x57, 0x83) == 0xC1
    assert gf_mul(0x57, 0x13) == 0xFE


def test_gf_mul_matches_reference_and_zero() -> None:
    for a in range(256):
        assert gf_mul(a, 0) == 0
        assert gf_mul(0, a) == 0
        assert gf_mul(a, 1) == a
        for b in range(256):
            assert gf_mul(a, b) == _slow_mul(a, b)


def test_gf_inverse_for_all_nonzero() -> None:
    for a in range(1, 256):
        assert gf_mul(a, gf_inv(a)) == 1
    with pytest.raises(ValueError):
        gf_inv(0)


# --- split / combine ----------------------------------------------------------------


@pytest.mark.parametrize(("k", "n"), [(2, 2), (2, 3), (3, 5), (5, 5), (4, 7), (2, 16)])
def test_every_k_subset_reconstructs(k: int, n: int) -> None:
    secret = os.urandom(BUNDLE_SIZE)
    shares = split(secret, k, n)
    assert [x for x, _ in shares] == list(range(1, n + 1))
    assert all(len(y) == len(secret) for _, y in shares)
    for subset in itertools.combinations(shares, k):
        assert combine(subset, k) == secret
        assert combine(list(reversed(subset)), k) == secret


def test_more_than_k_shares_uses_first_k() -> None:
    secret = os.urandom(BUNDLE_SIZE)
    shares = split(secret, 3, 6)
    assert combine(shares, 3) == secret
    # a damaged share after the first k is not used
    damaged = [*shares[:3], (shares[3][0], bytes(BUNDLE_SIZE))]
    assert combine(damaged, 3) == secret


@pytest.mark.parametrize(("k", "n"), [(2, 3), (3, 5), (5, 5), (2, 16)])
def test_k_minus_one_shares_do_not_reconstruct(k: int, n: int) -> None:
    secret = os.urandom(BUNDLE_SIZE)
    shares = split(secret, k, n)
    for subset in itertools.combinations(shares, k - 1):
        with pytest.raises(ShareError, match="not enough shares"):
            combine(subset, k)
        if k - 1 >= 2:
            # interpolating as if the threshold were k-1 yields a different value
            # (equal only with probability 2^-512)
            assert combine(subset, k - 1) != secret


def test_split_is_randomised() -> None:
    secret = os.urandom(BUNDLE_SIZE)
    assert split(secret, 2, 3) != split(secret, 2, 3)


def test_altered_share_gives_different_secret() -> None:
    secret = os.urandom(BUNDLE_SIZE)
    shares = split(secret, 3, 5)
    x, y = shares[1]
    bad_y = bytearray(y)
    bad_y[17] ^= 0x01
    altered = [shares[0], (x, bytes(bad_y)), shares[2]]
    rebuilt = combine(altered, 3)
    assert rebuilt != secret
    # only the altered byte position changes (sharing is byte by byte)
    assert [i for i in range(BUNDLE_SIZE) if rebuilt[i] != secret[i]] == [17]


def test_combine_refuses_duplicate_x() -> None:
    shares = split(os.urandom(BUNDLE_SIZE), 2, 3)
    with pytest.raises(ShareError, match="duplicate"):
        combine([shares[0], shares[0]], 2)
    with pytest.raises(ShareError, match="duplicate"):
        combine([shares[0], shares[1], shares[0]], 2)


def test_combine_refuses_x_zero_and_out_of_range() -> None:
    shares = split(os.urandom(BUNDLE_SIZE), 2, 3)
    for bad_x in (0, 256, -1):
        with pytest.raises(ShareError, match="x-coordinate"):
            combine([(bad_x, shares[0][1]), shares[1]], 2)


def test_combine_refuses_mismatched_or_empty_lengths() -> None:
    shares = split(os.urandom(BUNDLE_SIZE), 2, 3)
    with pytest.raises(ShareError, match="lengths"):
        combine([shares[0], (shares[1][0], shares[1][1][:-1])], 2)
    with pytest.raises(ShareError, match="empty"):
        combine([(1, b""), (2, b"")], 2)


@pytest.mark.parametrize("k", [0, 1, -3])
def test_combine_refuses_bad_threshold(k: int) -> None:
    shares = split(os.urandom(BUNDLE_SIZE), 2, 3)
    with pytest.raises(ValueError, match="threshold"):
        combine(shares, k)


@pytest.mark.parametrize(("k", "n"), [(1, 3), (0, 3), (-1, 3), (4, 3), (2, 17), (17, 17), (2, 1), (2, 0)])
def test_split_refuses_bad_k_n(k: int, n: int) -> None:
    with pytest.raises(ValueError, match="threshold"):
        split(b"secret", k, n)


def test_split_refuses_empty_secret() -> None:
    with pytest.raises(ValueError, match="empty"):
        split(b"", 2, 3)


def test_split_errors_do_not_leak_secret() -> None:
    secret = b"very-secret-bytes"
    with pytest.raises(ValueError) as info:
        split(secret, 5, 3)
    assert "very-secret" not in str(info.value)


@settings(max_examples=200, deadline=None)
@given(
    secret=st.binary(min_size=1, max_size=64),
    kn=st.integers(min_value=2, max_value=8).flatmap(
        lambda n: st.tuples(st.integers(min_value=2, max_value=n), st.just(n))
    ),
    data=st.data(),
)
def test_property_any_k_shares_reconstruct(secret: bytes, kn: tuple[int, int], data: st.DataObject) -> None:
    k, n = kn
    shares = split(secret, k, n)
    chosen = data.draw(st.permutations(shares).map(lambda p: p[:k]))
    assert combine(chosen, k) == secret


# --- text encoding ----------------------------------------------------------------


def _share_text(k: int = 3, n: int = 5, index: int = 0) -> tuple[str, int, int, bytes]:
    shares = split(os.urandom(BUNDLE_SIZE), k, n)
    x, y = shares[index]
    return encode_share(VAULT_ID, k, x, y), k, x, y


def test_encode_layout_matches_format() -> None:
    y = bytes(range(BUNDLE_SIZE))
    text = encode_share(VAULT_ID, 3, 12, y)
    prefix, k_text, x_text, body = text.split("-")
    assert (prefix, k_text, x_text) == ("cvs1", "3", "0c")
    assert set(body) <= set(BASE32_ALPHABET)
    assert "=" not in body
    assert len(body) == 109  # ceil(68 * 8 / 5)
    check = hashlib.sha256(b"credvault/v1/share" + VAULT_ID + bytes([3, 12]) + y).digest()[:4]
    assert base64.b32decode(body + "===") == y + check


def test_encode_decode_round_trip_all_shares() -> None:
    secret = os.urandom(BUNDLE_SIZE)
    shares = split(secret, 4, 16)
    texts = [encode_share(VAULT_ID, 4, x, y) for x, y in shares]
    decoded = [decode_share(VAULT_ID, t) for t in texts]
    assert [(x, y) for _, x, y in decoded] == shares
    assert all(k == 4 for k, _, _ in decoded)
    assert combine([(x, y) for _, x, y in decoded[5:9]], 4) == secret


def test_decode_tolerates_whitespace_and_case() -> None:
    text, k, x, y = _share_text()
    prefix, body = text[:10], text[10:]
    spaced = " ".join(body[i : i + 4] for i in range(0, len(body), 4))
    variants = [
        f"  {text}\n",
        text.lower(),
        text.upper(),
        prefix + spaced,
        "\t" + (prefix + spaced).lower() + " \r\n",
    ]
    for variant in variants:
        assert decode_share(VAULT_ID, variant) == (k, x, y)


def test_corrupted_character_is_rejected_with_checksum_error() -> None:
    text, _, _, _ = _share_text()
    pos = 10 + 30  # inside the base32 part
    replacement = "A" if text[pos] != "A" else "B"
    corrupted = text[:pos] + replacement + text[pos + 1 :]
    with pytest.raises(ShareError, match="corrupted share: checksum mismatch") as info:
        decode_share(VAULT_ID, corrupted)
    assert corrupted not in str(info.value)
    assert text[10:] not in str(info.value)


def test_every_single_character_change_is_rejected() -> None:
    text, _, _, _ = _share_text()
    for pos in range(10, len(text)):
        for replacement in "A7":
            if text[pos] == replacement:
                continue
            corrupted = text[:pos] + replacement + text[pos + 1 :]
            with pytest.raises(ShareError):
                decode_share(VAULT_ID, corrupted)


def test_changed_k_or_x_is_rejected() -> None:
    text, _, _, _ = _share_text(k=3, n=5, index=0)  # "cvs1-3-01-..."
    with pytest.raises(ShareError, match="checksum"):
        decode_share(VAULT_ID, text[:5] + "4" + text[6:])
    with pytest.raises(ShareError, match="checksum"):
        decode_share(VAULT_ID, text[:7] + "02" + text[9:])


def test_share_from_other_vault_is_rejected() -> None:
    text, _, _, _ = _share_text()
    with pytest.raises(ShareError, match="checksum mismatch"):
        decode_share(OTHER_VAULT_ID, text)


def _malformed_texts() -> list[str]:
    good, _, _, _ = _share_text()
    body = good[10:]
    return [
        "",
        "   ",
        "cvs1",
        "cvs1-",
        "cvs1-3",
        "cvs1-3-01",
        "cvs1-3-01-",
        "cvs2-3-01-" + body,
        "xcvs1-3-01-" + body,
        "cvs13-01-" + body,
        "cvs1-3-zz-" + body,
        "cvs1-3-1-" + body,
        "cvs1-3-001-" + body,
        "cvs1-3-00-" + body,  # x == 0
        "cvs1-3-11-" + body,  # x == 17 > 16
        "cvs1-3-ff-" + body,
        "cvs1-1-01-" + body,  # k out of range
        "cvs1-0-01-" + body,
        "cvs1-x-01-" + body,
        "cvs1-10-01-" + body,
        "cvs1-٣-01-" + body,  # non-ASCII digit
        "cvs1-3-01-" + body[:-1],  # wrong length
        "cvs1-3-01-" + body + "A",
        "cvs1-3-01-" + body[:-8],
        "cvs1-3-01-" + body[:-1] + "1",  # '1' is not base32
        "cvs1-3-01-" + body[:-1] + "=",
        "cvs1-3-01-" + body[:50] + "-" + body[50:],
        "cvs1-3-01-" + body[:-1] + "é",
        "cvs1-3-01-" + "8" * len(body),
    ]


@pytest.mark.parametrize("index", range(len(_malformed_texts())))
def test_malformed_texts_are_rejected(index: int) -> None:
    text = _malformed_texts()[index]
    with pytest.raises(ShareError, match=r"^malformed share") as info:
        decode_share(VAULT_ID, text)
    message = str(info.value)
    if len(text.strip()) > len("cvs1-3-01-"):  # shorter texts carry no share data
        assert text.strip() not in message
    if len(text) > 10:
        assert text[10:20] not in message
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ or info.value.__context__ is None


def test_non_canonical_trailing_bits_are_rejected() -> None:
    text, _, _, _ = _share_text()
    last = text[-1]
    # the last character carries 4 data bits and 1 padding bit; flip the padding bit
    flipped = BASE32_ALPHABET[BASE32_ALPHABET.index(last) ^ 1]
    with pytest.raises(ShareError, match="malformed share"):
        decode_share(VAULT_ID, text[:-1] + flipped)


def test_share_error_is_value_error_and_project_error() -> None:
    assert issubclass(ShareError, ValueError)
    assert issubclass(ShareError, RecoveryShareError)
    assert ShareError.__doc__


@pytest.mark.parametrize("k", [0, 1, 10, 16])
def test_encode_refuses_k_out_of_range(k: int) -> None:
    with pytest.raises(ValueError, match="threshold"):
        encode_share(VAULT_ID, k, 1, bytes(BUNDLE_SIZE))


@pytest.mark.parametrize("x", [0, 17, 255, -1])
def test_encode_refuses_x_out_of_range(x: int) -> None:
    with pytest.raises(ValueError, match="x-coordinate"):
        encode_share(VAULT_ID, 3, x, bytes(BUNDLE_SIZE))


@pytest.mark.parametrize("size", [0, 1, BUNDLE_SIZE - 1, BUNDLE_SIZE + 1])
def test_encode_refuses_wrong_length(size: int) -> None:
    with pytest.raises(ValueError, match="bytes"):
        encode_share(VAULT_ID, 3, 1, bytes(size))


def test_encode_accepts_k_9_and_x_16() -> None:
    shares = split(os.urandom(BUNDLE_SIZE), 9, 16)
    x, y = shares[15]
    text = encode_share(VAULT_ID, 9, x, y)
    assert text.startswith("cvs1-9-10-")
    assert decode_share(VAULT_ID, text) == (9, 16, y)
