"""Limits on failed authentication at the team server (docs/server.md §3).

Two limits, both checked before any signature check and both fed only by refusals:

* **per address**, in process memory: a token bucket of ``ADDRESS_LIMIT`` failures that
  refills evenly over ``PERIOD`` seconds (30 per 10 min). The address is the socket peer's,
  or the one ``X-Forwarded-For`` names when the peer is a ``--trusted-proxy``
  (``ClientAddresses``); an IPv6 address counts for its /64, which one machine usually holds
  whole. A bucket refilled to the brim is forgotten.
* **per engineer**, in ``auth_failures``, shared by every server process: ``ENGINEER_LIMIT``
  failures per fixed window of ``PERIOD`` seconds (20 per 10 min), counted by an upsert
  so that no concurrent failure is lost. A keyid that names no engineer counts for the
  address only (the caller passes ``None``).

Over a limit, ``check`` raises ``RateLimited`` with ``retry_after`` (the server's 429 and
``Retry-After``). ``record_failure`` returns the limits the failure *tripped*: each is reported
once per window (per address: until its bucket refills). The engineer's trip is also handed,
inside the unit that counted it, to the caller's ``on_engineer_trip``: the server's signed
``auth-refused`` event (``vault/server/auth_refusals.py``). Requests refused over a limit
are not counted again, so a client that stops is let in again after ``retry_after``.
Nothing here holds a secret: ids, counts, addresses and times.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from vault.errors import ConfigurationError, RateLimited, VaultError
from vault.storage.engine import Store
from vault.storage.repositories import authentication
from vault.storage.rows import connection

ADDRESS_LIMIT = 30
ENGINEER_LIMIT = 20
PERIOD = 600
MAX_ADDRESSES = 100_000  # buckets kept; beyond, the longest untouched is dropped
ADDRESS, ENGINEER = "address", "engineer"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# What runs in the unit of the failure that trips an engineer's limit: (unit, engineer id, count,
# window start in unix seconds): the server appends its ``auth-refused`` event.
OnTrip = Callable[[Session, int, int, int], None]
LOGGER = logging.getLogger("credvault.server")


@dataclass(frozen=True)
class Trip:
    """A limit reached for the first time in its window: what ``auth-refused`` records."""

    limit: str  # ADDRESS or ENGINEER
    engineer_id: int | None
    count: int  # failures counted when it tripped


class ClientAddresses:
    """Which address a request's failures count against: the socket peer, unless the peer
    is a trusted proxy; then ``X-Forwarded-For`` is read from the right, hop by hop, while
    the hop that wrote an entry is itself trusted. Entries a client wrote further left
    are never reached; an entry that is not an address stops the walk at the hop before."""

    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        try:
            self._trusted = tuple(ipaddress.ip_network(cidr.strip(), strict=False) for cidr in trusted_proxies)
        except ValueError:
            raise ConfigurationError(
                "a --trusted-proxy is not an address or CIDR", hint="pass e.g. --trusted-proxy 10.0.0.0/24"
            ) from None

    def resolve(self, peer: str, forwarded_for: str | None = None) -> str:
        """The client address of a request from ``peer``. ``forwarded_for``: every
        X-Forwarded-For field line, in order, joined by commas (None: there was none)."""
        current = _parse(peer)
        if current is None:
            return peer  # not an IP peer (a Unix socket): counted as it is named
        if forwarded_for:
            for entry in reversed(forwarded_for.split(",")):
                if not self._is_trusted(current):
                    break
                parsed = _parse(entry)
                if parsed is None:
                    break
                current = parsed
        return str(current)

    def _is_trusted(self, address: Address) -> bool:
        return any(address.version == net.version and address in net for net in self._trusted)


def _parse(text: str) -> Address | None:
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def bucket_key(address: str) -> str:
    """An IPv6 address counts for its /64; any other address as it is."""
    parsed = _parse(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return address if parsed is None else str(parsed)


@dataclass
class _Bucket:
    due: float  # when the bucket is full again (GCRA's "theoretical arrival time")
    failures: int = 0  # since it was last full
    tripped: bool = False


class AddressLimit:
    """Token buckets of failed authentications per client address, in process memory.

    Kept as the time each bucket is full again (GCRA): a failure moves it ``period / limit``
    seconds later, and an address is over its limit while that time is more than
    ``period - period / limit`` ahead. Whole seconds, no drifting token fractions."""

    def __init__(self, limit: int = ADDRESS_LIMIT, period: float = PERIOD, max_addresses: int = MAX_ADDRESSES) -> None:
        if limit < 1 or period <= 0 or max_addresses < 1:
            raise ValueError("the limit, period and size are positive")
        self._step = period / limit
        self._slack = period - self._step  # how far ahead ``due`` may be for one more try
        self._max = max_addresses
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def retry_after(self, address: str, now: float) -> int | None:
        """None if the address may try again; else the whole seconds until it may."""
        with self._lock:
            bucket = self._current(bucket_key(address), now)
            if bucket is None or bucket.due - now <= self._slack:
                return None
            return max(1, math.ceil(bucket.due - now - self._slack))

    def fail(self, address: str, now: float) -> int | None:
        """Count one failure; the failures since the bucket was full if this one tripped the
        limit (the first time since then), else None."""
        key = bucket_key(address)
        with self._lock:
            bucket = self._current(key, now)
            if bucket is None:
                self._make_room(now)
                bucket = _Bucket(now)
            else:
                del self._buckets[key]  # re-inserted last: the dict is in order of last failure
            self._buckets[key] = bucket
            bucket.due = max(bucket.due, now) + self._step
            bucket.failures += 1
            if bucket.due - now > self._slack and not bucket.tripped:
                bucket.tripped = True
                return bucket.failures
            return None

    def prune(self, now: float) -> int:
        """Forget the buckets refilled to the brim; how many went."""
        with self._lock:
            return sum(self._current(key, now) is None for key in list(self._buckets))

    def __len__(self) -> int:
        return len(self._buckets)

    def _current(self, key: str, now: float) -> _Bucket | None:
        """The address's bucket; None (and forgotten) once it is full again."""
        bucket = self._buckets.get(key)
        if bucket is not None and bucket.due <= now:
            del self._buckets[key]
            return None
        return bucket

    def _make_room(self, now: float) -> None:
        if len(self._buckets) < self._max:
            return
        for key in list(self._buckets):
            self._current(key, now)
        while len(self._buckets) >= self._max:
            del self._buckets[next(iter(self._buckets))]


class EngineerLimit:
    """Failed authentications per engineer in fixed windows, in ``auth_failures``."""

    def __init__(self, store: Store, limit: int = ENGINEER_LIMIT, period: int = PERIOD) -> None:
        if limit < 1 or period < 1:
            raise ValueError("the limit and period are positive")
        self._store = store
        self._limit = limit
        self._period = period

    def window_start(self, now: float) -> int:
        return int(now // self._period) * self._period

    def retry_after(self, engineer_id: int, now: float, unit: Session | Connection | None = None) -> int | None:
        """None if the engineer's window has room; else the whole seconds to its end. Read in
        ``unit`` when given (the server's read of the signer's key), else in a read of its own."""
        start = self.window_start(now)
        if unit is not None:
            conn = unit if isinstance(unit, Connection) else connection(unit)
            count = authentication.failures_in(conn, engineer_id, start)
        else:
            with self._store.read() as session:
                count = authentication.failures_in(connection(session), engineer_id, start)
        if count < self._limit:
            return None
        return max(1, math.ceil(start + self._period - now))

    def fail(self, engineer_id: int, now: float, on_trip: OnTrip | None = None) -> int | None:
        """Count one failure (committed before this returns); the count if it just reached
        the limit (once per window, whatever the concurrency), else None. ``on_trip`` runs in
        the unit that counts the failure reaching the limit (the server appends its
        ``auth-refused`` event there: committed with the count, or neither). If it fails, the
        failure is counted all the same in a unit of its own (logged): a trip is never lost
        to a missing event, and the limit never depends on the journal."""
        start = self.window_start(now)
        if on_trip is not None:
            try:
                with self._store.unit() as session:
                    count = authentication.add_failure(connection(session), engineer_id, start)
                    if count == self._limit:
                        on_trip(session, engineer_id, count, start)
                return count if count == self._limit else None
            except VaultError as error:
                LOGGER.error("engineer %s: auth-refused not appended (%s)", engineer_id, type(error).__name__)
        with self._store.unit() as session:
            count = authentication.add_failure(connection(session), engineer_id, start)
        return count if count == self._limit else None

    def prune(self, now: float) -> int:
        """Delete the counts of past windows; how many went."""
        with self._store.unit() as session:
            return authentication.delete_failures_before(connection(session), self.window_start(now))


class AuthenticationLimits:
    """Both limits, as the server's request path uses them: ``check`` before the signature
    check, ``record_failure`` after a refusal, ``prune`` on the minute timer."""

    def __init__(
        self, addresses: AddressLimit, engineers: EngineerLimit, clock: Callable[[], float] = time.time
    ) -> None:
        self._addresses = addresses
        self._engineers = engineers
        self._clock = clock

    def check(self, engineer_id: int | None, address: str, unit: Session | Connection | None = None) -> None:
        """Raise ``RateLimited`` if the address, or the engineer (None: the keyid names none),
        is over its limit. The engineer's count is read in ``unit`` if given (no transaction
        of its own on the hot path), and only when the address is under its limit."""
        now = self._clock()
        wait = self._addresses.retry_after(address, now)
        if wait is not None:
            raise _limited("from this address", wait)
        if engineer_id is not None:
            wait = self._engineers.retry_after(engineer_id, now, unit)
            if wait is not None:
                raise _limited("for this engineer", wait)

    def record_failure(
        self, engineer_id: int | None, address: str, on_engineer_trip: OnTrip | None = None
    ) -> tuple[Trip, ...]:
        """Count a refused authentication against the address and the engineer (if the
        keyid named one); the limits it tripped, each once per window. ``on_engineer_trip``:
        run in the unit of the failure that trips the engineer's limit (``EngineerLimit.fail``)."""
        now = self._clock()
        trips = []
        count = self._addresses.fail(address, now)
        if count is not None:
            trips.append(Trip(ADDRESS, engineer_id, count))
        if engineer_id is not None:
            count = self._engineers.fail(engineer_id, now, on_engineer_trip)
            if count is not None:
                trips.append(Trip(ENGINEER, engineer_id, count))
        return tuple(trips)

    def prune(self, now: float) -> None:
        self._addresses.prune(now)
        self._engineers.prune(now)


def _limited(where: str, wait: int) -> RateLimited:
    return RateLimited(
        f"too many failed authentications {where}: refused for {wait} s",
        hint=f"wait {wait} s (Retry-After), and check that this machine signs with the engineer's current key",
        retry_after=wait,
    )
