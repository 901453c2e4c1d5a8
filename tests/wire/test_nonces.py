"""The server's shared request nonces (vault/wire/nonces.py, docs/server.md §3), on each engine.

The attacker is an insider who captured a signed request (a proxy log, a packet dump, a
colleague's shell history of a curl call) and plays it again: to the same server process,
to another process behind the same proxy (another ``Store`` on the same database), or while
the original is still in flight. Each replay must be refused as ``replayed`` (or, once its
nonce is pruned, as ``stale``), never let through twice and never end in a driver error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.pool import NullPool

from vault.crypto.signing import SigningKey
from vault.errors import InvalidInput, StoreUnavailable, Unauthenticated
from vault.storage import engine as storage
from vault.storage.repositories.authentication import NONCES
from vault.wire.httpsig import REPLAYED, STALE, Verified, sign_request, verify_request
from vault.wire.nonces import DbNonceStore, Pruner

NOW = 1_733_400_000
ALICE = SigningKey(bytes(range(32)))
KEYS = {"e:1:1": ALICE.public}
HOST, PATH = "vault.example.net", "/v1/checkouts/checkout"
BODY = b'{"body":{"client":7},"request_id":"r-1","type":"checkouts.checkout","v":1}'
NONCE = "AAECAwQFBgcICQoLDA0ODw"
OTHER_NONCE = "BBECAwQFBgcICQoLDA0ODw"


@pytest.fixture
def nonces(db_store: storage.Store) -> DbNonceStore:
    return DbNonceStore(db_store)


@pytest.fixture
def other_process(db_url: str) -> Iterator[DbNonceStore]:
    """The nonce store of a second server process: its own engine and connections."""
    store = storage.Store(db_url)
    yield DbNonceStore(store)
    store.close()


def _signed(created: int = NOW, nonce: str = NONCE) -> dict[str, str]:
    headers = sign_request("POST", HOST, PATH, "application/json", BODY, ALICE, "e:1:1", created, nonce)
    return {"Content-Type": "application/json", **headers}


def _verify(headers: dict[str, str], store: object, now: float = NOW) -> Verified:
    return verify_request("POST", HOST, PATH, headers, BODY, KEYS.get, now, nonces=store)  # type: ignore[arg-type]


def _rows(store: storage.Store) -> list[tuple[str, str, int]]:
    with store.read() as session:
        result = session.execute(select(NONCES.c.keyid, NONCES.c.nonce, NONCES.c.created_at).order_by(NONCES.c.nonce))
        return [tuple(row) for row in result]  # type: ignore[misc]


# --- remembered once ---------------------------------------------------------------------------


def test_a_nonce_is_remembered_once_and_its_second_copy_is_a_replay(nonces: DbNonceStore, db_store) -> None:  # type: ignore[no-untyped-def]
    assert nonces.remember("e:1:1", NONCE, NOW)
    assert not nonces.remember("e:1:1", NONCE, NOW)
    assert not nonces.remember("e:1:1", NONCE, NOW + 30)  # another `created` does not make it new
    assert _rows(db_store) == [("e:1:1", NONCE, NOW)]


def test_nonces_are_per_keyid(nonces: DbNonceStore) -> None:
    assert nonces.remember("e:1:1", NONCE, NOW)
    assert nonces.remember("e:2:1", NONCE, NOW)  # another engineer's request that drew the same nonce
    assert nonces.remember("e:1:2", NONCE, NOW)  # the same engineer's next key generation


def test_a_request_replayed_to_the_same_process_is_refused(nonces: DbNonceStore) -> None:
    headers = _signed()
    assert _verify(headers, nonces).nonce == NONCE
    with pytest.raises(Unauthenticated) as caught:
        _verify(headers, nonces, now=NOW + 30)
    assert str(caught.value) == REPLAYED


def test_a_request_replayed_to_the_other_server_process_is_refused(
    nonces: DbNonceStore, other_process: DbNonceStore
) -> None:
    headers = _signed()
    _verify(headers, nonces)
    with pytest.raises(Unauthenticated) as caught:
        _verify(headers, other_process, now=NOW + 1)
    assert str(caught.value) == REPLAYED


@pytest.mark.parametrize("keyid, nonce", [("e:1:1", "N" * 65), ("e:" + "1" * 63, NONCE)], ids=["nonce", "keyid"])
def test_a_value_longer_than_its_column_is_refused_alike_on_each_engine(
    nonces: DbNonceStore, db_store: storage.Store, keyid: str, nonce: str
) -> None:
    with pytest.raises(InvalidInput):
        nonces.remember(keyid, nonce, NOW)
    with db_store.unit() as session, pytest.raises(InvalidInput):
        nonces.remember_in(session, keyid, nonce, NOW)
    assert _rows(db_store) == []


# --- inside the operation's own unit of work ---------------------------------------------------


def test_a_nonce_remembered_in_the_operations_unit_is_committed_with_it(
    nonces: DbNonceStore, other_process: DbNonceStore, db_store: storage.Store
) -> None:
    headers = _signed()
    with db_store.unit() as session:
        assert _verify(headers, nonces.within(session)).nonce == NONCE
        with pytest.raises(Unauthenticated) as caught:  # the same copy again, in the same unit
            _verify(headers, nonces.within(session))
        assert str(caught.value) == REPLAYED
    with pytest.raises(Unauthenticated) as caught:
        _verify(headers, other_process, now=NOW + 1)
    assert str(caught.value) == REPLAYED


def test_a_nonce_of_an_operation_that_rolled_back_is_not_spent(nonces: DbNonceStore, db_store: storage.Store) -> None:
    with pytest.raises(RuntimeError), db_store.unit() as session:
        assert nonces.remember_in(session, "e:1:1", NONCE, NOW)
        raise RuntimeError("the operation failed after the nonce was inserted")
    assert _rows(db_store) == []
    assert nonces.remember("e:1:1", NONCE, NOW)


def test_a_core_connection_is_taken_as_the_unit(nonces: DbNonceStore, db_store: storage.Store) -> None:
    with db_store.engine.begin() as conn:
        assert nonces.remember_in(conn, "e:1:1", NONCE, NOW)
        assert not nonces.remember_in(conn, "e:1:1", NONCE, NOW)
    assert not nonces.remember("e:1:1", NONCE, NOW)


# --- two copies in flight at once (PostgreSQL: row locks; SQLite has one writer at a time) ------


def _blocked_on_a_lock(url: str, deadline: float = 5.0) -> bool:
    """Whether another session of this database waits for a lock (polled every 5 ms)."""
    watcher = create_engine(url, poolclass=NullPool)
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND query ILIKE '%request_nonces%'"
    )
    try:
        with watcher.connect() as conn:
            end = time.monotonic() + deadline
            while time.monotonic() < end:
                if conn.execute(query).scalar():
                    return True
                conn.rollback()
                time.sleep(0.005)
            return False
    finally:
        watcher.dispose()


def _second_copy_while_the_first_is_in_flight(
    url: str, nonces: DbNonceStore, other_process: DbNonceStore, db_store: storage.Store, *, commit: bool
) -> bool:
    answers: list[bool | BaseException] = []

    def second() -> None:
        try:
            answers.append(other_process.remember("e:1:1", NONCE, NOW))
        except BaseException as error:
            answers.append(error)

    thread = threading.Thread(target=second)
    try:
        with db_store.unit() as session:
            assert nonces.remember_in(session, "e:1:1", NONCE, NOW)
            thread.start()
            assert _blocked_on_a_lock(url), "the second copy did not wait for the first"
            assert not answers
            if not commit:
                raise RuntimeError("the first operation fails")
    except RuntimeError:
        pass
    thread.join(10)
    assert len(answers) == 1
    assert isinstance(answers[0], bool), repr(answers[0])
    return answers[0]


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_copy_in_flight_waits_for_the_first_and_is_a_replay_once_it_commits(
    db_url: str, nonces: DbNonceStore, other_process: DbNonceStore, db_store: storage.Store
) -> None:
    assert not _second_copy_while_the_first_is_in_flight(db_url, nonces, other_process, db_store, commit=True)
    assert _rows(db_store) == [("e:1:1", NONCE, NOW)]


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_copy_in_flight_goes_through_if_the_first_rolls_back(
    db_url: str, nonces: DbNonceStore, other_process: DbNonceStore, db_store: storage.Store
) -> None:
    assert _second_copy_while_the_first_is_in_flight(db_url, nonces, other_process, db_store, commit=False)
    assert _rows(db_store) == [("e:1:1", NONCE, NOW)]  # the second's row: exactly one, committed
    assert not nonces.remember("e:1:1", NONCE, NOW)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_on_sqlite_a_copy_in_flight_waits_for_the_writer_and_is_a_replay(
    db_url: str, nonces: DbNonceStore, db_store: storage.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite lets one writer in at a time: the second copy's transaction cannot begin until
    # the first ends; with a short lock time-out it gives up (StoreBusy), never answers True.
    monkeypatch.setenv("CREDVAULT_LOCK_TIMEOUT", "0.05")
    impatient = storage.Store(db_url)
    try:
        with db_store.unit() as session:
            assert nonces.remember_in(session, "e:1:1", NONCE, NOW)
            with pytest.raises(StoreUnavailable):
                DbNonceStore(impatient).remember("e:1:1", NONCE, NOW)
        assert not DbNonceStore(impatient).remember("e:1:1", NONCE, NOW)
    finally:
        impatient.close()


# --- pruning -----------------------------------------------------------------------------------


def test_prune_deletes_only_nonces_older_than_twice_the_window(nonces: DbNonceStore, db_store: storage.Store) -> None:
    for age, nonce in [(121, "A" * 22), (120, "B" * 22), (0, "C" * 22), (-60, "D" * 22)]:
        assert nonces.remember("e:1:1", nonce, NOW - age)
    assert nonces.prune(NOW) == 1
    assert [row[1] for row in _rows(db_store)] == ["B" * 22, "C" * 22, "D" * 22]
    assert nonces.prune(NOW) == 0  # idempotent
    assert nonces.prune(NOW + 0.5) == 1  # created 120.5 s before: a fraction of a second counts
    assert [row[1] for row in _rows(db_store)] == ["C" * 22, "D" * 22]


def test_every_server_process_prunes_and_the_second_finds_nothing_left(
    nonces: DbNonceStore, other_process: DbNonceStore
) -> None:
    nonces.remember("e:1:1", NONCE, NOW - 500)
    assert nonces.prune(NOW) + other_process.prune(NOW) == 1


def test_a_pruned_nonces_request_is_refused_as_stale(nonces: DbNonceStore, db_store: storage.Store) -> None:
    # A request signed at the edge of the future is the longest-lived: kept until 120 s after
    # it was created, refused as stale once it is 61 s old whatever the store holds.
    headers = _signed(created=NOW + 60)
    _verify(headers, nonces)
    clock = NOW + 120
    nonces.prune(clock)
    with pytest.raises(Unauthenticated) as caught:
        _verify(headers, nonces, now=clock)
    assert str(caught.value) == REPLAYED  # still kept: it is still fresh
    clock = NOW + 181
    assert nonces.prune(clock) == 1
    assert _rows(db_store) == []
    with pytest.raises(Unauthenticated) as caught:
        _verify(headers, nonces, now=clock)
    assert str(caught.value) == STALE
    assert _rows(db_store) == []  # a stale request spends no nonce


def test_the_window_is_positive(db_store: storage.Store) -> None:
    with pytest.raises(ValueError):
        DbNonceStore(db_store, window=0)


# --- the minute timer --------------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_pruner_runs_at_start_then_once_a_minute_of_its_clock() -> None:
    clock, seen = FakeClock(), []
    pruner = Pruner([seen.append], clock=clock)
    assert pruner.tick() and seen == [NOW]
    clock.now += 59.9
    assert not pruner.tick() and seen == [NOW]
    clock.now += 0.1
    assert pruner.tick() and seen == [NOW, NOW + 60]
    clock.now += 600  # a long pause (a suspended host): one turn, not ten
    assert pruner.tick() and not pruner.tick()
    assert seen == [NOW, NOW + 60, NOW + 660]


def test_a_failing_task_is_logged_by_class_and_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    clock, seen = FakeClock(), []

    def failing(now: float) -> None:
        raise StoreUnavailable("e:1:1 AAECAwQFBgcICQoLDA0ODw could not be deleted")

    pruner = Pruner([failing, seen.append], clock=clock)
    with caplog.at_level(logging.WARNING, logger="vault"):
        pruner.tick()
        clock.now += 60
        pruner.tick()
    assert seen == [NOW, NOW + 60]
    assert [record.getMessage() for record in caplog.records] == [
        "pruning failed (StoreUnavailable); it is tried again in 60 s"
    ] * 2


def test_the_pruner_prunes_the_database_from_its_thread_and_stops(nonces: DbNonceStore, db_store) -> None:  # type: ignore[no-untyped-def]
    nonces.remember("e:1:1", NONCE, NOW - 500)
    clock, done = FakeClock(), threading.Event()

    def prune(now: float) -> None:
        nonces.prune(now)
        done.set()

    pruner = Pruner([prune], clock=clock, poll=0.01)
    pruner.start()
    try:
        assert pruner.running
        with pytest.raises(RuntimeError):
            pruner.start()
        assert done.wait(5)
    finally:
        pruner.stop()
    assert not pruner.running
    assert _rows(db_store) == []
    pruner.stop()  # stopping twice is harmless


@pytest.mark.parametrize("kwargs", [{"interval": 0}, {"poll": -1}])
def test_the_pruner_refuses_a_period_that_is_not_positive(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Pruner([], **kwargs)
