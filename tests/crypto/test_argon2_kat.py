"""Argon2id known answers.

- RFC 9106 §5.3 (Argon2id, version 0x13) uses a secret key K and associated data X, which
  our wrapper ``_primitives.argon2id`` never passes. It runs through argon2-cffi's
  low-level binding to ``argon2_ctx`` (``argon2.low_level.core`` over a CFFI
  ``argon2_context``), showing that the library we use computes RFC 9106 correctly.
- The reference implementation's own test suite (P-H-C/phc-winner-argon2, src/test.c, the
  "Test Argon2id version number" block, version 0x13, 32-byte output; its ``m`` is log2 of
  the memory in KiB) has no secret or associated data, so those answers run through OUR
  wrapper, which also pins the order of its (memory_kib, time_cost, parallelism) arguments.
"""

from __future__ import annotations

from typing import Any

import pytest
from argon2.low_level import ARGON2_VERSION, Type, core, error_to_str, ffi, lib  # type: ignore[attr-defined]

from vault.crypto import _primitives as p

H = bytes.fromhex


def _buffer(data: bytes) -> Any:
    return ffi.new("uint8_t[]", data) if data else ffi.NULL


def argon2_ctx(
    password: bytes,
    salt: bytes,
    secret: bytes,
    ad: bytes,
    *,
    time_cost: int,
    memory_kib: int,
    lanes: int,
    tag_length: int,
    variant: Type = Type.ID,
    version: int = 0x13,
) -> bytes:
    """Raw Argon2 through ``argon2_ctx``, with the secret and associated data inputs."""
    out = ffi.new("uint8_t[]", tag_length)
    buffers = [_buffer(password), _buffer(salt), _buffer(secret), _buffer(ad)]  # kept alive
    context = ffi.new(
        "argon2_context *",
        {
            "out": out,
            "outlen": tag_length,
            "pwd": buffers[0],
            "pwdlen": len(password),
            "salt": buffers[1],
            "saltlen": len(salt),
            "secret": buffers[2],
            "secretlen": len(secret),
            "ad": buffers[3],
            "adlen": len(ad),
            "t_cost": time_cost,
            "m_cost": memory_kib,
            "lanes": lanes,
            "threads": lanes,
            "version": version,
            "allocate_cbk": ffi.NULL,
            "free_cbk": ffi.NULL,
            "flags": lib.ARGON2_DEFAULT_FLAGS,
        },
    )
    result = core(context, variant.value)
    assert result == lib.ARGON2_OK, error_to_str(result)
    return bytes(ffi.buffer(out, tag_length))


# -- RFC 9106 §5.3 -----------------------------------------------------------------------------

RFC9106_ARGON2ID_TAG = "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"


def test_rfc9106_argon2id_test_vector() -> None:
    tag = argon2_ctx(
        b"\x01" * 32,  # password P
        b"\x02" * 16,  # salt S
        b"\x03" * 8,  # secret K
        b"\x04" * 12,  # associated data X
        time_cost=3,
        memory_kib=32,
        lanes=4,
        tag_length=32,
    )
    assert tag == H(RFC9106_ARGON2ID_TAG)


def test_rfc9106_inputs_all_matter() -> None:
    """The secret and associated data really reach the computation (not silently dropped)."""

    def rfc_tag(secret: bytes, ad: bytes) -> bytes:
        return argon2_ctx(b"\x01" * 32, b"\x02" * 16, secret, ad, time_cost=3, memory_kib=32, lanes=4, tag_length=32)

    without_secret = rfc_tag(b"", b"\x04" * 12)
    without_ad = rfc_tag(b"\x03" * 8, b"")
    assert H(RFC9106_ARGON2ID_TAG) not in (without_secret, without_ad)
    assert without_secret != without_ad


# -- phc-winner-argon2 src/test.c, Argon2id v0x13, through our wrapper ---------------------------

# (time_cost, log2 memory KiB, parallelism, password, salt, expected tag)
Reference = tuple[int, int, int, bytes, bytes, str]
REFERENCE: list[Reference] = [
    (2, 16, 1, b"password", b"somesalt", "09316115d5cf24ed5a15a31a3ba326e5cf32edc24702987c02b6566f61913cf7"),
    (2, 8, 1, b"password", b"somesalt", "9dfeb910e80bad0311fee20f9c0e2b12c17987b4cac90c2ef54d5b3021c68bfe"),
    (2, 8, 2, b"password", b"somesalt", "6d093c501fd5999645e0ea3bf620d7b8be7fd2db59c20d9fff9539da2bf57037"),
    (1, 16, 1, b"password", b"somesalt", "f6a5adc1ba723dddef9b5ac1d464e180fcd9dffc9d1cbf76cca2fed795d9ca98"),
    (4, 16, 1, b"password", b"somesalt", "9025d48e68ef7395cca9079da4c4ec3affb3c8911fe4f86d1a2520856f63172c"),
    (2, 16, 1, b"differentpassword", b"somesalt", "0b84d652cf6b0c4beaef0dfe278ba6a80df6696281d7e0d2891b817d8c458fde"),
    (2, 16, 1, b"password", b"diffsalt", "bdf32b05ccc42eb15d58fd19b1f856b113da1e9a5874fdcc544308565aa8141c"),
]
REFERENCE_256MIB: Reference = (
    2,
    18,
    1,
    b"password",
    b"somesalt",
    "78fe1ec91fb3aa5657d72e710854e4c3d9b9198c742f9616c2f085bed95b2e8c",
)


def test_library_defaults_to_argon2_version_0x13() -> None:
    assert ARGON2_VERSION == 0x13  # our wrapper relies on the default version


@pytest.mark.parametrize(
    ("time_cost", "log2_memory", "parallelism", "password", "salt", "expected"),
    [*REFERENCE, pytest.param(*REFERENCE_256MIB, marks=pytest.mark.slow, id="t2-m18-p1-256MiB")],
)
def test_reference_argon2id_vector_through_our_wrapper(
    time_cost: int, log2_memory: int, parallelism: int, password: bytes, salt: bytes, expected: str
) -> None:
    tag = p.argon2id(password, salt, 1 << log2_memory, time_cost, parallelism)
    assert tag == H(expected)


def test_low_level_path_agrees_with_our_wrapper_without_secret_or_ad() -> None:
    time_cost, log2_memory, parallelism, password, salt, expected = REFERENCE[2]
    raw = argon2_ctx(
        password, salt, b"", b"", time_cost=time_cost, memory_kib=1 << log2_memory, lanes=parallelism, tag_length=32
    )
    assert raw == p.argon2id(password, salt, 1 << log2_memory, time_cost, parallelism) == H(expected)
