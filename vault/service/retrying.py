"""Running a unit of work again when the database aborted it for a concurrent one.

``Store.transaction`` turns a PostgreSQL serialization failure, deadlock or unique
violation into ``ConcurrentChange``: the transaction was rolled back, nothing of it was
committed or revealed, so running the same unit of work again is safe and usually
succeeds. Two places do that:

* ``retried`` wraps every public operation of the nouns (``vault.secrets.add``, ...; the
  table in ``vault/authority/permissions.py``, applied in ``vault.py``): the whole call runs
  again, and only the outermost public call retries, so an operation that calls another
  does not multiply the attempts (the counters are the ``Core``'s, shared by every noun);
* a method made of several transactions retries each one on its own where running the
  whole method again would not be the same (a client-key rotation: its start commits
  the new key version, so a lost re-wrap batch is run again, not the rotation).

Each retry is counted in ``Core.retries`` and logged (without arguments: they may
hold a secret).
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from vault.errors import ConcurrentChange

RETRIES = 6  # attempts in all
BACKOFF_SECONDS = 0.005  # doubled on each attempt, times a random factor in [0.5, 1.5)
log = logging.getLogger("vault")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class Retrying(Protocol):
    retries: int
    _retry_depth: int


def again_on_conflict(owner: Retrying, what: str, unit: Callable[[], T]) -> T:
    """``unit()``, run again while its transaction loses to a concurrent one, up to
    ``RETRIES`` attempts in all; then the last ``ConcurrentChange`` goes through."""
    for attempt in range(RETRIES):
        try:
            return unit()
        except ConcurrentChange:
            if attempt == RETRIES - 1:
                raise
            owner.retries += 1
            log.info("%s lost to a concurrent change; retrying (attempt %d)", what, attempt + 2)
            time.sleep(BACKOFF_SECONDS * 2**attempt * (0.5 + random.random()))  # noqa: S311 - jitter
    raise AssertionError("unreachable")


def retried(method: F, first: Callable[[Any], None] | None = None) -> F:
    """``method`` run by ``again_on_conflict`` when it is the outermost public call, after
    ``first(self)`` (the permission check) in the same attempt. The counters are those of
    ``self.core`` where the method belongs to a noun, else of ``self``."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        owner: Retrying = getattr(self, "core", self)
        if owner._retry_depth:
            return method(self, *args, **kwargs)

        def unit() -> Any:
            if first is not None:
                first(self)
            return method(self, *args, **kwargs)

        owner._retry_depth += 1
        try:
            return again_on_conflict(owner, method.__name__, unit)
        finally:
            owner._retry_depth -= 1

    return wrapper  # type: ignore[return-value]
