"""Failed-authentication limits (vault/wire/authlimits.py, docs/server.md §3).

The attacker is an insider guessing or forging: an engineer with a certified key who tries
requests under a colleague's keyid, from one machine or spoofing ``X-Forwarded-For``, or
who spreads the attempts over both server processes. Each test plays the attempts through
``record_failure`` (what the server calls after a refusal) and asks ``check`` (what it
calls before any signature check), with a fake clock: nothing sleeps.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from vault.errors import ConfigurationError, RateLimited, VaultError
from vault.storage import engine as storage
from vault.storage.repositories.authentication import FAILURES
from vault.wire.authlimits import (
    ADDRESS,
    ENGINEER,
    AddressLimit,
    AuthenticationLimits,
    ClientAddresses,
    EngineerLimit,
    Trip,
    bucket_key,
)

NOW = 1_733_400_000  # the start of a 10-minute window
MALLORY, ALICE, BOB = "203.0.113.66", 7, 8
PROXY = "10.0.0.2"


class FakeClock:
    def __init__(self) -> None:
        self.now: float = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:  # this module's clock is in seconds, unlike tests/conftest.py's
    return FakeClock()


@pytest.fixture
def limits(db_store: storage.Store, clock: FakeClock) -> AuthenticationLimits:
    return AuthenticationLimits(AddressLimit(), EngineerLimit(db_store), clock)


@pytest.fixture
def other_process(db_url: str, clock: FakeClock) -> Iterator[AuthenticationLimits]:
    """The limits of a second server process: its own memory, the same database."""
    store = storage.Store(db_url)
    yield AuthenticationLimits(AddressLimit(), EngineerLimit(store), clock)
    store.close()


def _refusal(limits: AuthenticationLimits, engineer_id: int | None, address: str) -> RateLimited:
    with pytest.raises(RateLimited) as caught:
        limits.check(engineer_id, address)
    return caught.value


def _counts(store: storage.Store) -> list[tuple[int, int, int]]:
    with store.read() as session:
        query = select(FAILURES.c.engineer_id, FAILURES.c.window_start, FAILURES.c["count"]).order_by(
            FAILURES.c.engineer_id, FAILURES.c.window_start
        )
        return [tuple(row) for row in session.execute(query)]  # type: ignore[misc]


# --- per address -------------------------------------------------------------------------------


def test_the_address_limit_trips_at_the_30th_failure_and_refuses_the_31st_try(limits: AuthenticationLimits) -> None:
    trips = [limits.record_failure(None, MALLORY) for _ in range(29)]
    assert trips == [()] * 29
    limits.check(None, MALLORY)  # 29 failures: the 30th try is still heard
    assert limits.record_failure(None, MALLORY) == (Trip(ADDRESS, None, 30),)
    error = _refusal(limits, None, MALLORY)
    assert error.retry_after == 20  # one failure's worth refills in 600 s / 30
    assert "from this address" in str(error) and "20 s" in error.hint
    limits.check(None, "198.51.100.7")  # another address is not refused


def test_the_address_bucket_refills_one_try_at_a_time_and_trips_once(
    limits: AuthenticationLimits, clock: FakeClock
) -> None:
    for _ in range(30):
        limits.record_failure(None, MALLORY)
    clock.now += 19
    assert _refusal(limits, None, MALLORY).retry_after == 1
    clock.now += 1
    limits.check(None, MALLORY)  # one try earned back …
    assert limits.record_failure(None, MALLORY) == ()  # … spent: refused again, not reported again
    assert _refusal(limits, None, MALLORY).retry_after == 20


def test_a_full_bucket_is_forgotten_and_a_new_attack_is_reported_again(
    limits: AuthenticationLimits, clock: FakeClock
) -> None:
    addresses = AddressLimit()
    for _ in range(30):
        addresses.fail(MALLORY, clock.now)
    addresses.fail("198.51.100.7", clock.now)
    clock.now += 599
    assert addresses.prune(clock.now) == 1  # the one failure of 198.51.100.7 has refilled
    assert len(addresses) == 1
    clock.now += 1
    assert addresses.prune(clock.now) == 1 and len(addresses) == 0
    assert [addresses.fail(MALLORY, clock.now) for _ in range(30)][-1] == 30  # a new trip, reported


def test_the_address_limit_holds_in_process_memory_only(
    limits: AuthenticationLimits, other_process: AuthenticationLimits, db_store: storage.Store
) -> None:
    # Documented: 30 per process; the engineer limit is the shared one.
    for _ in range(30):
        limits.record_failure(None, MALLORY)
    _refusal(limits, None, MALLORY)
    other_process.check(None, MALLORY)
    assert _counts(db_store) == []


def test_the_bucket_table_is_bounded_and_drops_the_longest_untouched_address() -> None:
    addresses = AddressLimit(limit=1, max_addresses=2)  # one failure: refused for 10 min
    for address in ("192.0.2.1", "192.0.2.2", "192.0.2.1", "192.0.2.3"):
        addresses.fail(address, NOW)
    assert len(addresses) == 2
    assert addresses.retry_after("192.0.2.1", NOW) == 1200  # failed last but one: kept
    assert addresses.retry_after("192.0.2.3", NOW) == 600
    assert addresses.retry_after("192.0.2.2", NOW) is None  # untouched longest: dropped


@pytest.mark.parametrize(
    ("kwargs"), [{"limit": 0}, {"period": 0}, {"max_addresses": 0}], ids=["limit", "period", "size"]
)
def test_the_address_limit_refuses_a_setting_that_is_not_positive(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        AddressLimit(**kwargs)  # type: ignore[arg-type]


def test_every_address_of_an_ipv6_slash_64_shares_one_bucket(limits: AuthenticationLimits) -> None:
    # One machine holds a whole /64: rotating the low bits must not earn new tries.
    for host in range(30):
        limits.record_failure(None, f"2001:db8:1:2::{host + 1:x}")
    _refusal(limits, None, "2001:db8:1:2:ffff::9")
    limits.check(None, "2001:db8:1:3::1")
    assert bucket_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert bucket_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"


# --- which address: the peer, or X-Forwarded-For from a trusted proxy only ----------------------


def test_forwarded_for_from_an_untrusted_peer_counts_against_the_real_peer(limits: AuthenticationLimits) -> None:
    addresses = ClientAddresses(["10.0.0.0/24"])
    # Mallory connects directly and names a fresh address in every request.
    for n in range(30):
        client = addresses.resolve(MALLORY, f"198.51.100.{n}")
        assert client == MALLORY
        limits.record_failure(None, client)
    _refusal(limits, None, addresses.resolve(MALLORY, "198.51.100.200"))
    limits.check(None, "198.51.100.0")  # the address she named is not blamed


def test_a_trusted_proxys_forwarded_address_is_used(limits: AuthenticationLimits) -> None:
    addresses = ClientAddresses(["10.0.0.0/24"])
    for _ in range(30):
        limits.record_failure(None, addresses.resolve(PROXY, MALLORY))
    _refusal(limits, None, addresses.resolve(PROXY, MALLORY))
    limits.check(None, addresses.resolve(PROXY, "198.51.100.7"))  # the proxy's other clients go on


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        (PROXY, f"198.51.100.1, {MALLORY}", MALLORY),  # her own entry on the left is never reached
        (PROXY, f"{MALLORY}, 10.0.0.3", MALLORY),  # through two trusted proxies
        (PROXY, "10.0.0.4, 10.0.0.3", "10.0.0.4"),  # every hop trusted: the leftmost
        (PROXY, "not-an-address", PROXY),  # the proxy wrote nothing usable: its own address
        (PROXY, f"{MALLORY}, garbage", PROXY),
        (PROXY, "garbage, 10.0.0.3", "10.0.0.3"),
        (PROXY, "", PROXY),
        (PROXY, None, PROXY),
        (PROXY, f" [2001:db8::1] , {MALLORY}", MALLORY),
        (PROXY, "[2001:db8::1]", "2001:db8::1"),
        ("::ffff:10.0.0.2", MALLORY, MALLORY),  # an IPv4 peer on a dual-stack socket
        ("2001:db8::7", MALLORY, "2001:db8::7"),  # another family than the trusted network
        ("unix:/run/credvault.sock", MALLORY, "unix:/run/credvault.sock"),
    ],
)
def test_the_client_address_is_read_right_to_left_through_trusted_hops_only(
    peer: str, forwarded: str | None, client: str
) -> None:
    assert ClientAddresses(["10.0.0.0/24"]).resolve(peer, forwarded) == client


def test_no_trusted_proxy_means_the_peer_always(limits: AuthenticationLimits) -> None:
    assert ClientAddresses().resolve(PROXY, MALLORY) == PROXY


@pytest.mark.parametrize("cidr", ["10.0.0.0/33", "a proxy", ""])
def test_a_trusted_proxy_that_is_not_an_address_is_refused_at_start(cidr: str) -> None:
    with pytest.raises(ConfigurationError):
        ClientAddresses([cidr])


# --- per engineer, shared by every server process ----------------------------------------------


def test_the_engineer_limit_trips_at_the_20th_failure_from_any_address(
    limits: AuthenticationLimits, db_store: storage.Store, clock: FakeClock
) -> None:
    # Mallory tries Alice's keyid from 20 addresses: no address limit is near.
    for n in range(19):
        assert limits.record_failure(ALICE, f"198.51.100.{n}") == ()
    limits.check(ALICE, "198.51.100.99")
    clock.now += 100
    assert limits.record_failure(ALICE, "198.51.100.19") == (Trip(ENGINEER, ALICE, 20),)
    error = _refusal(limits, ALICE, "192.0.2.50")  # from a fresh address too
    assert error.retry_after == 500  # to the end of the fixed window
    assert "for this engineer" in str(error)
    limits.check(BOB, "192.0.2.50")
    assert _counts(db_store) == [(ALICE, NOW, 20)]


def test_the_engineer_limit_is_shared_by_the_server_processes(
    limits: AuthenticationLimits, other_process: AuthenticationLimits
) -> None:
    for n in range(10):
        assert limits.record_failure(ALICE, f"198.51.100.{n}") == ()
    for n in range(9):
        assert other_process.record_failure(ALICE, f"192.0.2.{n}") == ()
    assert other_process.record_failure(ALICE, "192.0.2.9") == (Trip(ENGINEER, ALICE, 20),)
    _refusal(limits, ALICE, "192.0.2.200")
    _refusal(other_process, ALICE, "192.0.2.200")


def test_concurrent_failures_are_all_counted_and_the_trip_reported_once(db_url: str, clock: FakeClock) -> None:
    stores = [storage.Store(db_url) for _ in range(4)]
    results: list[tuple[Trip, ...] | BaseException] = []
    lock = threading.Lock()

    def attempts(store: storage.Store, worker: int) -> None:
        server = AuthenticationLimits(AddressLimit(), EngineerLimit(store), clock)
        for n in range(6):
            try:
                outcome: tuple[Trip, ...] | BaseException = server.record_failure(ALICE, f"192.0.2.{worker * 10 + n}")
            except VaultError as error:
                outcome = error
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=attempts, args=(store, i)) for i, store in enumerate(stores)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(results) == 24 and not [r for r in results if isinstance(r, BaseException)]
        assert [trip for r in results for trip in r] == [Trip(ENGINEER, ALICE, 20)]  # type: ignore[union-attr]
        assert _counts(stores[0]) == [(ALICE, NOW, 24)]
    finally:
        for store in stores:
            store.close()


def test_an_unknown_keyid_counts_for_the_address_only(limits: AuthenticationLimits, db_store: storage.Store) -> None:
    for n in range(30):
        limits.record_failure(None, MALLORY)  # the server found no engineer for the keyid
    assert _counts(db_store) == []
    limits.check(ALICE, "192.0.2.1")  # no engineer was charged
    _refusal(limits, None, MALLORY)


def test_counts_reset_in_the_next_window_and_old_windows_are_pruned(
    limits: AuthenticationLimits, db_store: storage.Store, clock: FakeClock
) -> None:
    for n in range(20):
        limits.record_failure(ALICE, f"198.51.100.{n}")
    clock.now += 599
    assert _refusal(limits, ALICE, "192.0.2.1").retry_after == 1
    clock.now += 1  # the next window
    limits.check(ALICE, "192.0.2.1")
    assert limits.record_failure(ALICE, "192.0.2.1") == ()
    limits.prune(clock.now)
    assert _counts(db_store) == [(ALICE, NOW + 600, 1)]
    limits.prune(clock.now)  # idempotent
    assert _counts(db_store) == [(ALICE, NOW + 600, 1)]
    for n in range(19):
        trips = limits.record_failure(ALICE, f"192.0.2.{n + 10}")
    assert trips == (Trip(ENGINEER, ALICE, 20),)  # reported again: a new window


def test_the_address_is_checked_before_the_database_is_read(
    db_store: storage.Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    engineers = EngineerLimit(db_store)
    limits = AuthenticationLimits(AddressLimit(limit=1), engineers, clock)
    limits.record_failure(None, MALLORY)
    monkeypatch.setattr(engineers, "retry_after", lambda *args: pytest.fail("the database was read"))
    assert "from this address" in str(_refusal(limits, ALICE, MALLORY))


def test_both_limits_trip_on_one_failure_and_each_is_reported(db_store: storage.Store, clock: FakeClock) -> None:
    limits = AuthenticationLimits(AddressLimit(limit=2), EngineerLimit(db_store, limit=2), clock)
    assert limits.record_failure(ALICE, MALLORY) == ()
    assert limits.record_failure(ALICE, MALLORY) == (Trip(ADDRESS, ALICE, 2), Trip(ENGINEER, ALICE, 2))


@pytest.mark.parametrize(("kwargs"), [{"limit": 0}, {"period": 0}], ids=["limit", "period"])
def test_the_engineer_limit_refuses_a_setting_that_is_not_positive(
    db_store: storage.Store, kwargs: dict[str, int]
) -> None:
    with pytest.raises(ValueError):
        EngineerLimit(db_store, **kwargs)


def test_a_refusal_is_the_429_error_and_names_no_key_or_address(limits: AuthenticationLimits) -> None:
    for _ in range(30):
        limits.record_failure(ALICE, MALLORY)
    error = _refusal(limits, ALICE, MALLORY)
    assert type(error) is RateLimited and isinstance(error, VaultError)
    for text in (str(error), error.hint):
        assert MALLORY not in text and "e:7" not in text


def test_the_engineers_count_is_read_in_the_servers_own_unit_when_given(
    limits: AuthenticationLimits, db_store: storage.Store
) -> None:
    for n in range(20):
        limits.record_failure(ALICE, f"198.51.100.{n}")
    with db_store.read() as session:
        assert "for this engineer" in str(_refusal_in(limits, ALICE, "192.0.2.1", session))
        limits.check(BOB, "192.0.2.1", session)
    with db_store.engine.connect() as conn:
        assert _refusal_in(limits, ALICE, "192.0.2.1", conn).retry_after == 600


def _refusal_in(limits: AuthenticationLimits, engineer_id: int, address: str, unit: object) -> RateLimited:
    with pytest.raises(RateLimited) as caught:
        limits.check(engineer_id, address, unit)  # type: ignore[arg-type]
    return caught.value


# --- the hook of the engineer's trip (the server's auth-refused event) -----------------------------


class _Hook:
    """Records each call, in its unit (a row written there shows it committed with the count)."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[int, int, int]] = []
        self.fail = fail

    def __call__(self, session: object, engineer_id: int, count: int, window_start: int) -> None:
        self.calls.append((engineer_id, count, window_start))
        if self.fail:
            raise ConfigurationError("the server key is not the vault's active key")


def test_the_hook_runs_once_at_the_trip_in_the_unit_that_counts_it(
    limits: AuthenticationLimits, db_store: storage.Store, clock: FakeClock
) -> None:
    hook = _Hook()
    for n in range(25):
        limits.record_failure(ALICE, f"198.51.100.{n}", hook)
    assert hook.calls == [(ALICE, 20, NOW)]
    clock.now += 600
    for n in range(20):
        limits.record_failure(ALICE, f"192.0.2.{n}", hook)
    assert hook.calls == [(ALICE, 20, NOW), (ALICE, 20, NOW + 600)]  # once per window
    assert _counts(db_store) == [(ALICE, NOW, 25), (ALICE, NOW + 600, 20)]


def test_a_hook_that_fails_leaves_the_failure_counted_and_the_trip_reported(
    limits: AuthenticationLimits, db_store: storage.Store
) -> None:
    """The event could not be appended: the limit holds all the same (never lost to the journal)."""
    hook = _Hook(fail=True)
    for n in range(19):
        assert limits.record_failure(ALICE, f"198.51.100.{n}", hook) == ()
    assert limits.record_failure(ALICE, "198.51.100.19", hook) == (Trip(ENGINEER, ALICE, 20),)
    assert hook.calls == [(ALICE, 20, NOW)]
    assert _counts(db_store) == [(ALICE, NOW, 20)]  # counted once, though its first unit rolled back
    _refusal(limits, ALICE, "192.0.2.1")


def test_concurrent_failures_call_the_hook_once(db_url: str, clock: FakeClock) -> None:
    stores = [storage.Store(db_url) for _ in range(4)]
    hook, lock, errors = _Hook(), threading.Lock(), []

    def locked(session: object, engineer_id: int, count: int, window_start: int) -> None:
        with lock:
            hook(session, engineer_id, count, window_start)

    def attempts(store: storage.Store, worker: int) -> None:
        server = AuthenticationLimits(AddressLimit(), EngineerLimit(store), clock)
        for n in range(6):
            try:
                server.record_failure(ALICE, f"192.0.2.{worker * 10 + n}", locked)
            except VaultError as error:
                errors.append(error)

    threads = [threading.Thread(target=attempts, args=(store, i)) for i, store in enumerate(stores)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == [] and hook.calls == [(ALICE, 20, NOW)]
        assert _counts(stores[0]) == [(ALICE, NOW, 24)]
    finally:
        for store in stores:
            store.close()
