"""Shared checks for the crypto recipe tests.

``rejects`` runs a call that must fail with the opaque ``DecryptionFailed`` (or its
subclass ``WrongPassphrase``) and checks that nothing was revealed: the message is the
fixed text, no secret appears in the message, the arguments, the hint or the printed
traceback, and no library exception is chained as the cause.
``argon2_calls`` replaces Argon2id with a counting fake; ``cached_argon2`` keeps the real
one but derives each distinct input only once, so tamper tests stay fast.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from vault.crypto import _primitives
from vault.errors import DecryptionFailed

OPAQUE_MESSAGE = "cannot decrypt: the data is corrupted, was moved, or the key is wrong"
_LIBRARY_WORDS = ("InvalidTag", "InvalidSignature", "cryptography", "PrimitiveFailure", "OpenSSL")


def _spellings(secret: bytes) -> list[str]:
    """The ways a secret could show up in text: raw, hex, and as a bytes repr."""
    out = [secret.hex(), repr(secret)[2:-1]]
    if len(secret) >= 4:
        out.append(secret.decode("latin-1"))
    return [s for s in out if s]


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo += [item.__cause__, item.__context__]


def assert_reveals_nothing(exc: BaseException, secrets: tuple[bytes, ...] = ()) -> None:
    """No secret in any text the exception (or anything chained to it) can show."""
    assert exc.__cause__ is None, "library detail chained as the cause (use `raise ... from None`)"
    assert exc.__context__ is None or exc.__suppress_context__, "library exception shown as context"
    shown = "".join(traceback.format_exception(exc))
    for word in _LIBRARY_WORDS:
        assert word not in shown
    texts = [shown, repr(exc), str(getattr(exc, "hint", ""))]
    for item in _chain(exc):
        texts += [str(item), repr(item.args)]
    for secret in secrets:
        for spelling in _spellings(secret):
            for text in texts:
                assert spelling not in text


@dataclass
class Rejects:
    """``rejects(call, *secrets)``: the call fails opaquely and reveals none of ``secrets``."""

    messages: set[str] = field(default_factory=set)

    def __call__(
        self, call: Callable[[], object], *secrets: bytes, error: type[DecryptionFailed] = DecryptionFailed
    ) -> DecryptionFailed:
        with pytest.raises(DecryptionFailed) as info:
            call()
        exc = info.value
        assert type(exc) is error, f"expected {error.__name__}, got {type(exc).__name__}"
        if error is DecryptionFailed:
            assert str(exc) == OPAQUE_MESSAGE
            assert exc.args == (OPAQUE_MESSAGE,)
        assert_reveals_nothing(exc, secrets)
        self.messages.add(str(exc))
        return exc


@pytest.fixture(scope="session")
def rejects() -> Rejects:
    return Rejects()


@dataclass
class Argon2Calls:
    """A fake Argon2id that records its parameters and returns a fixed 32-byte key."""

    calls: list[tuple[int, int, int]] = field(default_factory=list)

    def __call__(self, secret: bytes, salt: bytes, memory_kib: int, time_cost: int, parallelism: int) -> bytes:
        self.calls.append((memory_kib, time_cost, parallelism))
        return bytes(32)


@pytest.fixture
def argon2_calls(monkeypatch: pytest.MonkeyPatch) -> Argon2Calls:
    fake = Argon2Calls()
    monkeypatch.setattr(_primitives, "argon2id", fake)
    return fake


_REAL_ARGON2ID = _primitives.argon2id
_DERIVED: dict[tuple[bytes, bytes, int, int, int], bytes] = {}


def _cached_argon2id(secret: bytes, salt: bytes, memory_kib: int, time_cost: int, parallelism: int) -> bytes:
    args = (secret, salt, memory_kib, time_cost, parallelism)
    if args not in _DERIVED:
        _DERIVED[args] = _REAL_ARGON2ID(*args)
    return _DERIVED[args]


@pytest.fixture
def cached_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real Argon2id, each distinct input derived once per test session."""
    monkeypatch.setattr(_primitives, "argon2id", _cached_argon2id)
