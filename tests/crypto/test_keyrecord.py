"""Engineer key records (docs/format.md §4.5): passphrases, Argon2 bounds, tampering.

Layout: ``0x01 || 0x05 || memory (4) || time (4) || parallelism (4) || salt (16) ||
nonce (12) || ct (96) || tag (16)``; the first 30 bytes are authenticated. Records use
the FLOOR parameters (OWASP's minimum) so that each real derivation takes a few tens of
milliseconds; tamper tests use ``cached_argon2`` so each distinct input derives once.
"""

from __future__ import annotations

import struct
import time
import unicodedata
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from argon2.low_level import Type, hash_secret_raw
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.crypto import _primitives
from vault.crypto.keyrecord import (
    CEILING,
    DEFAULT_PARAMS,
    FLOOR,
    Argon2Params,
    PrivateBundle,
    lock_record,
    normalise_passphrase,
    open_record,
    record_params,
)
from vault.crypto.labels import LABEL_KEY_RECORD
from vault.errors import DecryptionFailed, InvalidInput, KeyRecordRejected, VaultError, WrongPassphrase

VAULT_ID = bytes.fromhex("c0ffee00c0ffee00c0ffee00c0ffee00")
ENGINEER_ID, GENERATION = 4, 2
PASSPHRASE = "tr0ub4dor & 3 horses ✓"
BUNDLE = PrivateBundle(
    sealing_private=bytes.fromhex("11" * 16 + "a1" * 16),
    signing_seed=bytes.fromhex("22" * 16 + "b2" * 16),
    org_signing_public=bytes.fromhex("33" * 16 + "c3" * 16),
)
SECRETS = (BUNDLE.sealing_private, BUNDLE.signing_seed, PASSPHRASE.encode())
STRONGER = Argon2Params(memory_kib=32768, time_cost=3, parallelism=2)

HEADER, SALT, NONCE, TAG = 30, 16, 12, 16
SALT_START, NONCE_START, CT_START = 14, HEADER, HEADER + NONCE
RECORD_SIZE = CT_START + 96 + TAG
MIN_SIZE = HEADER + NONCE + TAG


@pytest.fixture(scope="module")
def record() -> bytes:
    return lock_record(BUNDLE, PASSPHRASE, VAULT_ID, ENGINEER_ID, GENERATION, FLOOR)


@pytest.fixture(scope="module")
def stronger_record() -> bytes:
    return lock_record(BUNDLE, PASSPHRASE, VAULT_ID, ENGINEER_ID, GENERATION, STRONGER)


def _open(
    record: bytes,
    passphrase: str = PASSPHRASE,
    vault_id: bytes = VAULT_ID,
    engineer_id: int = ENGINEER_ID,
    key_generation: int = GENERATION,
) -> PrivateBundle:
    return open_record(record, passphrase, vault_id, engineer_id, key_generation)


def _rewrite(record: bytes, **changes: int) -> bytes:
    """The record with some of its header's Argon2 parameters replaced."""
    version, kind, memory, time_cost, parallelism, salt = struct.unpack(">BBIII16s", record[:HEADER])
    params = {"memory_kib": memory, "time_cost": time_cost, "parallelism": parallelism, **changes}
    header = struct.pack(
        ">BBIII16s", version, kind, params["memory_kib"], params["time_cost"], params["parallelism"], salt
    )
    return header + record[HEADER:]


def _flip(blob: bytes, offset: int, bit: int = 0x01) -> bytes:
    offset %= len(blob)
    return blob[:offset] + bytes([blob[offset] ^ bit]) + blob[offset + 1 :]


def _in_bounds(memory: int, time_cost: int, parallelism: int) -> bool:
    return (
        FLOOR.memory_kib <= memory <= CEILING.memory_kib
        and FLOOR.time_cost <= time_cost <= CEILING.time_cost
        and FLOOR.parallelism <= parallelism <= CEILING.parallelism
    )


# -- positive -------------------------------------------------------------------------------


def test_parameter_bounds_are_those_of_the_format_spec() -> None:
    assert Argon2Params(65536, 3, 4) == DEFAULT_PARAMS
    assert Argon2Params(19456, 2, 1) == FLOOR
    assert Argon2Params(1048576, 10, 16) == CEILING


def test_key_record_opens_with_its_passphrase(record: bytes) -> None:
    assert _open(record) == BUNDLE
    assert len(record) == RECORD_SIZE
    assert record[:2] == b"\x01\x05"
    assert record_params(record) == FLOOR
    for secret in SECRETS:
        assert secret not in record


def test_key_record_matches_the_format_spec(record: bytes) -> None:
    """Derive with argon2-cffi and decrypt with AES-GCM directly, per docs/format.md §4.5."""
    memory, time_cost, parallelism = struct.unpack(">III", record[2:14])
    key = hash_secret_raw(
        PASSPHRASE.encode(), record[SALT_START:HEADER], time_cost, memory, parallelism, 32, Type.ID, version=0x13
    )
    aad = _primitives.ctx(LABEL_KEY_RECORD, record[:HEADER], VAULT_ID, ENGINEER_ID, GENERATION)
    assert AESGCM(key).decrypt(record[NONCE_START:CT_START], record[CT_START:], aad) == BUNDLE.to_bytes()


def test_two_records_of_the_same_bundle_use_fresh_salts_and_nonces(argon2_calls: Any) -> None:
    first = lock_record(BUNDLE, PASSPHRASE, VAULT_ID, ENGINEER_ID, GENERATION, FLOOR)
    second = lock_record(BUNDLE, PASSPHRASE, VAULT_ID, ENGINEER_ID, GENERATION, FLOOR)
    assert first[SALT_START:HEADER] != second[SALT_START:HEADER]
    assert first[NONCE_START:CT_START] != second[NONCE_START:CT_START]


@pytest.mark.parametrize(
    ("locked_with", "opened_with"),
    [("caf\u00e9 cr\u00e8me", "cafe\u0301 cre\u0300me"), ("cafe\u0301 cre\u0300me", "caf\u00e9 cr\u00e8me")],
    ids=["nfc-locked-nfd-opens", "nfd-locked-nfc-opens"],
)
def test_nfc_and_nfd_forms_of_a_passphrase_open_the_same_record(locked_with: str, opened_with: str) -> None:
    assert locked_with != opened_with
    assert normalise_passphrase(locked_with) == normalise_passphrase(opened_with)
    locked = lock_record(BUNDLE, locked_with, VAULT_ID, ENGINEER_ID, GENERATION, FLOOR)
    assert _open(locked, passphrase=opened_with) == BUNDLE


def test_passphrase_of_1024_characters_after_normalisation_is_accepted() -> None:
    decomposed = "e\u0301" * 1024  # 2048 code points, 1024 once NFC-normalised
    locked = lock_record(BUNDLE, decomposed, VAULT_ID, ENGINEER_ID, GENERATION, FLOOR)
    assert _open(locked, passphrase=unicodedata.normalize("NFC", decomposed)) == BUNDLE


# -- passphrases ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wrong",
    ["not-my-passphrase-9", PASSPHRASE.upper(), PASSPHRASE + " ", PASSPHRASE[:-1], " " + PASSPHRASE],
    ids=["other", "upper-case", "trailing-space", "truncated", "leading-space"],
)
def test_wrong_passphrase_is_rejected(record: bytes, wrong: str, rejects: Callable[..., DecryptionFailed]) -> None:
    exc = rejects(lambda: _open(record, passphrase=wrong), *SECRETS, wrong.encode(), error=WrongPassphrase)
    assert isinstance(exc, DecryptionFailed)
    assert exc.hint


BAD_PASSPHRASES = ["", "x" * 1025, "\u00e9" * 1025, "e\u0301" * 1025]
BAD_IDS = ["empty", "1025-ascii", "1025-nfc", "1025-after-nfc"]


@pytest.mark.parametrize("passphrase", BAD_PASSPHRASES, ids=BAD_IDS)
def test_passphrase_out_of_bounds_is_invalid_input_when_locking(passphrase: str, argon2_calls: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        lock_record(BUNDLE, passphrase, VAULT_ID, ENGINEER_ID, GENERATION, FLOOR)
    assert argon2_calls.calls == []
    if passphrase:
        assert passphrase[:16] not in str(info.value)


@pytest.mark.parametrize("passphrase", BAD_PASSPHRASES, ids=BAD_IDS)
def test_passphrase_out_of_bounds_is_invalid_input_when_opening(
    record: bytes, passphrase: str, argon2_calls: Any
) -> None:
    with pytest.raises(InvalidInput):
        _open(record, passphrase=passphrase)
    assert argon2_calls.calls == []


@pytest.mark.parametrize("passphrase", ["a" * 2**20, "e\u0301" * 2**19], ids=["ascii", "decomposed"])
def test_megabyte_passphrase_is_refused_quickly_without_derivation(
    record: bytes, passphrase: str, argon2_calls: Any
) -> None:
    started = time.perf_counter()
    with pytest.raises(InvalidInput) as info:
        _open(record, passphrase=passphrase)
    with pytest.raises(InvalidInput):
        lock_record(BUNDLE, passphrase, VAULT_ID, ENGINEER_ID, GENERATION, FLOOR)
    assert time.perf_counter() - started < 1.0
    assert argon2_calls.calls == []
    assert len(str(info.value)) < 200


def test_passphrase_that_is_not_text_is_a_type_error(record: bytes, argon2_calls: Any) -> None:
    with pytest.raises(TypeError):
        _open(record, passphrase=PASSPHRASE.encode())  # type: ignore[arg-type]
    assert argon2_calls.calls == []


# -- Argon2 floor and ceiling ----------------------------------------------------------------------

OUT_OF_BOUNDS = [
    ("memory-below-floor", {"memory_kib": 19455}),
    ("memory-zero", {"memory_kib": 0}),
    ("memory-above-ceiling", {"memory_kib": 1048577}),
    ("memory-max-u32", {"memory_kib": 2**32 - 1}),
    ("time-below-floor", {"time_cost": 1}),
    ("time-zero", {"time_cost": 0}),
    ("time-above-ceiling", {"time_cost": 11}),
    ("time-max-u32", {"time_cost": 2**32 - 1}),
    ("parallelism-zero", {"parallelism": 0}),
    ("parallelism-above-ceiling", {"parallelism": 17}),
    ("parallelism-max-u32", {"parallelism": 2**32 - 1}),
    ("all-below-floor", {"memory_kib": 8, "time_cost": 1, "parallelism": 1}),
]


@pytest.mark.parametrize("changes", [c for _, c in OUT_OF_BOUNDS], ids=[n for n, _ in OUT_OF_BOUNDS])
def test_record_with_parameters_out_of_bounds_is_refused_before_any_derivation(
    record: bytes, changes: dict[str, int], argon2_calls: Any
) -> None:
    with pytest.raises(KeyRecordRejected) as info:
        _open(_rewrite(record, **changes))
    assert argon2_calls.calls == []
    assert type(info.value) is KeyRecordRejected
    forbidden = [s.hex() for s in SECRETS] + [PASSPHRASE]
    assert not any(text in str(info.value) for text in forbidden)


@pytest.mark.parametrize("changes", [c for _, c in OUT_OF_BOUNDS], ids=[n for n, _ in OUT_OF_BOUNDS])
def test_locking_with_parameters_out_of_bounds_is_refused_before_any_derivation(
    changes: dict[str, int], argon2_calls: Any
) -> None:
    params = Argon2Params(**{**FLOOR.__dict__, **changes})
    with pytest.raises(KeyRecordRejected):
        lock_record(BUNDLE, PASSPHRASE, VAULT_ID, ENGINEER_ID, GENERATION, params)
    assert argon2_calls.calls == []


@pytest.mark.parametrize("params", [FLOOR, CEILING, DEFAULT_PARAMS], ids=["floor", "ceiling", "default"])
def test_record_with_parameters_at_the_bounds_reaches_derivation(
    record: bytes, params: Argon2Params, argon2_calls: Any, rejects: Callable[..., DecryptionFailed]
) -> None:
    """In-bounds parameters are derived with (the fake gives a wrong key) and then authenticated."""
    rewritten = _rewrite(record, **params.__dict__)
    rejects(lambda: _open(rewritten), *SECRETS, error=WrongPassphrase)
    assert argon2_calls.calls == [(params.memory_kib, params.time_cost, params.parallelism)]


DOWNGRADES = [
    ("memory-lowered-to-floor", {"memory_kib": 19456}),
    ("time-lowered-to-floor", {"time_cost": 2}),
    ("parallelism-lowered-to-floor", {"parallelism": 1}),
    ("memory-raised", {"memory_kib": 65536}),
    ("time-raised", {"time_cost": 4}),
]


@pytest.mark.parametrize("changes", [c for _, c in DOWNGRADES], ids=[n for n, _ in DOWNGRADES])
def test_record_with_parameters_changed_within_bounds_does_not_open(
    stronger_record: bytes, changes: dict[str, int], cached_argon2: None, rejects: Callable[..., DecryptionFailed]
) -> None:
    """The parameters are authenticated: a downgraded record is just a wrong passphrase."""
    assert _open(stronger_record) == BUNDLE
    rejects(lambda: _open(_rewrite(stronger_record, **changes)), *SECRETS, error=WrongPassphrase)


# -- tampering -----------------------------------------------------------------------------------

REGIONS = [
    ("salt-first", SALT_START),
    ("salt-last", HEADER - 1),
    ("nonce-first", NONCE_START),
    ("nonce-last", CT_START - 1),
    ("ciphertext-first", CT_START),
    ("ciphertext-middle", CT_START + 48),
    ("ciphertext-last", -TAG - 1),
    ("tag-first", -TAG),
    ("tag-last", -1),
]


@pytest.mark.parametrize("offset", [o for _, o in REGIONS], ids=[r for r, _ in REGIONS])
def test_record_with_a_changed_byte_does_not_open(
    record: bytes, offset: int, cached_argon2: None, rejects: Callable[..., DecryptionFailed]
) -> None:
    rejects(lambda: _open(_flip(record, offset)), *SECRETS, error=WrongPassphrase)


@pytest.mark.parametrize(
    "owner",
    [{"vault_id": bytes(16)}, {"engineer_id": ENGINEER_ID + 1}, {"key_generation": GENERATION + 1}],
    ids=["another-vault", "another-engineer", "another-key-generation"],
)
def test_record_of_another_owner_does_not_open(
    record: bytes, owner: dict[str, object], cached_argon2: None, rejects: Callable[..., DecryptionFailed]
) -> None:
    rejects(lambda: _open(record, **owner), *SECRETS, error=WrongPassphrase)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("offset", "value"), [(0, 0x02), (0, 0x00), (1, 0x04), (1, 0x01)], ids=["v2", "v0", "sealed", "field"]
)
def test_record_with_another_version_or_type_is_rejected_without_derivation(
    record: bytes, offset: int, value: int, argon2_calls: Any, rejects: Callable[..., DecryptionFailed]
) -> None:
    changed = record[:offset] + bytes([value]) + record[offset + 1 :]
    rejects(lambda: _open(changed), *SECRETS)
    assert argon2_calls.calls == []


def test_record_truncated_to_any_length_is_rejected(
    record: bytes, cached_argon2: None, rejects: Callable[..., DecryptionFailed]
) -> None:
    for length in range(len(record)):
        error = DecryptionFailed if length < MIN_SIZE else WrongPassphrase
        rejects(lambda n=length: _open(record[:n]), *SECRETS, error=error)


@pytest.mark.parametrize("extra", [b"\x00", bytes(16)], ids=["1-byte", "16-bytes"])
def test_record_with_bytes_appended_is_rejected(
    record: bytes, extra: bytes, cached_argon2: None, rejects: Callable[..., DecryptionFailed]
) -> None:
    rejects(lambda: _open(record + extra), *SECRETS, error=WrongPassphrase)


def test_record_too_short_to_hold_its_parameters_is_rejected(rejects: Callable[..., DecryptionFailed]) -> None:
    rejects(lambda: record_params(b"\x01\x05"))


# -- the private bundle ---------------------------------------------------------------------------


def test_private_bundle_repr_is_redacted() -> None:
    for text in (repr(BUNDLE), str(BUNDLE), f"{BUNDLE!r}", repr([BUNDLE])):
        assert "redacted" in text
        for part in (BUNDLE.sealing_private, BUNDLE.signing_seed, BUNDLE.org_signing_public):
            assert part.hex() not in text
            assert part.hex()[:8] not in text
            assert repr(part)[2:-1] not in text


@pytest.mark.parametrize("size", [0, 95, 97])
def test_private_bundle_of_wrong_size_is_rejected(size: int, rejects: Callable[..., DecryptionFailed]) -> None:
    rejects(lambda: PrivateBundle.from_bytes(bytes(size)))


def test_private_bundle_round_trips_through_bytes() -> None:
    assert PrivateBundle.from_bytes(BUNDLE.to_bytes()) == BUNDLE


# -- properties ------------------------------------------------------------------------------------

u32 = st.integers(min_value=0, max_value=2**32 - 1)
memory_st = st.one_of(st.sampled_from([0, 19455, 19456, 65536, 1048576, 1048577, 2**32 - 1]), u32)
time_st = st.one_of(st.sampled_from([0, 1, 2, 3, 10, 11, 2**32 - 1]), u32)
parallelism_st = st.one_of(st.sampled_from([0, 1, 4, 16, 17, 2**32 - 1]), u32)


@settings(max_examples=300, deadline=None)
@given(
    version=st.one_of(st.just(1), st.integers(0, 255)),
    kind=st.one_of(st.just(5), st.integers(0, 255)),
    memory=memory_st,
    time_cost=time_st,
    parallelism=parallelism_st,
    salt=st.binary(min_size=16, max_size=16),
)
def test_any_header_raises_only_vault_errors_and_derives_only_in_bounds(
    record: bytes, version: int, kind: int, memory: int, time_cost: int, parallelism: int, salt: bytes
) -> None:
    header = struct.pack(">BBIII16s", version, kind, memory, time_cost, parallelism, salt)
    calls: list[tuple[int, int, int]] = []

    def fake_argon2id(secret: bytes, salt: bytes, memory_kib: int, time_cost: int, parallelism: int) -> bytes:
        assert _in_bounds(memory_kib, time_cost, parallelism)
        calls.append((memory_kib, time_cost, parallelism))
        return bytes(32)

    with mock.patch.object(_primitives, "argon2id", fake_argon2id), pytest.raises(VaultError) as info:
        _open(header + record[HEADER:])
    if (version, kind) != (1, 5):
        assert type(info.value) is DecryptionFailed
        assert calls == []
    elif not _in_bounds(memory, time_cost, parallelism):
        assert type(info.value) is KeyRecordRejected
        assert calls == []
    else:
        assert type(info.value) is WrongPassphrase
        assert calls == [(memory, time_cost, parallelism)]


@settings(max_examples=200, deadline=None)
@given(blob=st.binary(max_size=2 * RECORD_SIZE))
def test_any_bytes_as_a_record_raise_only_vault_errors(blob: bytes) -> None:
    def fake_argon2id(secret: bytes, salt: bytes, memory_kib: int, time_cost: int, parallelism: int) -> bytes:
        assert _in_bounds(memory_kib, time_cost, parallelism)
        return bytes(32)

    with mock.patch.object(_primitives, "argon2id", fake_argon2id), pytest.raises(VaultError) as info:
        _open(blob)
    assert isinstance(info.value, (DecryptionFailed, KeyRecordRejected))
