"""Retries of a unit of work that lost to a concurrent one (``ConcurrentChange``), deterministically.

* On PostgreSQL, a real serialization failure (SQLSTATE 40001) in ``Store.transaction``
  becomes ``ConcurrentChange`` (a lock timeout does not), and a real deadlock (40P01),
  provoked by the test around a checkout, is retried: the checkout succeeds once, with
  one audit event.
* On both engines, ``losing`` makes chosen commits fail the way PostgreSQL aborts a
  transaction that lost (a driver error with SQLSTATE 40001, raised where the COMMIT
  would run, so everything the attempt wrote is rolled back). A write that loses k times
  is written once with one event; after ``RETRIES`` losses ``ConcurrentChange`` gets
  through and nothing was written; a nested public call does not multiply the attempts;
  a checkout that loses is retried (never ``AuditUnavailable``) and reveals nothing of
  the attempt that lost.
* Two races on PostgreSQL that retries alone did not cover (library bugs found here,
  fixed: a unique violation is a ``ConcurrentChange``; grant and revoke lock the
  engineer's row): two updates of one secret, and a revoke racing a re-grant.
* A SQLite "database is locked" is ``StoreBusy`` (a ``StoreUnavailable``) and is not retried.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import traceback
import types
from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import Engine, make_url

import vault.service.retrying as retrying
from vault import Vault
from vault.authority.checkouts import CheckoutAuthority
from vault.authority.journal import Journal
from vault.authority.secrets import SecretAuthority
from vault.crypto.keyrecord import FLOOR
from vault.errors import ConcurrentChange, StoreBusy, StoreUnavailable, VaultError
from vault.keyholder import grants as grant_keyholder
from vault.keyholder.secrets import SecretKeyholder
from vault.service.checkouts import Checkouts
from vault.service.rotation import KeyRotation
from vault.service.vault import BACKOFF_SECONDS, RETRIES
from vault.storage import engine as storage
from vault.storage import models as m

ADMIN, ADMIN_PASS = "root-admin", "admin passphrase ✓"
# Secrets are named constants, so that a traceback's source lines never quote their values.
FIRST, LOCKED, NEVER, DEADLOCKED = "first value ✓", "locked pw ✓", "never stored ✓", "deadlock pw ✓"
REASON = "T-1 retry test"
DRIVER_WORDS = ("Traceback", "psycopg", "sqlite3", "errno", "Background on this error", "sqlalche.me", "[SQL:")
ALWAYS = 10**6

postgres_only = pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def assert_clean(error: VaultError, *never: str) -> None:
    """No driver text, no secret, no chained driver exception."""
    shown = "\n".join([str(error), error.hint, repr(error), *map(str, error.args), *traceback.format_exception(error)])
    for word in DRIVER_WORDS:
        assert word.lower() not in (str(error) + error.hint).lower(), f"driver text {word!r} in {error!r}"
    for secret in never:
        assert secret not in shown, "a secret is in the exception"
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


# -- commits that lose ------------------------------------------------------------------------------


class Losing:
    """Make chosen commits on an engine fail as a transaction PostgreSQL aborted would.

    ``lose(k)`` fails the next k commits; ``lose(k, action="grant")`` fails the next k
    commits of transactions that appended a ``grant`` event. The error is the driver's
    own (psycopg's SerializationFailure, or sqlite3's OperationalError carrying SQLSTATE
    40001), raised where the COMMIT would run: SQLAlchemy wraps it and rolls back, and
    ``Store.transaction`` maps it, exactly as for a real one.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, engine: Engine) -> None:
        self.remaining = 0
        self.action: str | None = None
        self.failed = 0
        self.commits = 0
        self.pending: list[str] = []  # actions appended since the last commit or rollback
        self.postgres = engine.dialect.name == "postgresql"
        dialect = engine.dialect
        real_commit, real_rollback, real_append = dialect.do_commit, dialect.do_rollback, Journal.append

        def do_commit(dbapi_connection: Any) -> None:
            actions, self.pending = self.pending, []
            self.commits += 1
            if self.remaining and (self.action is None or self.action in actions):
                self.remaining -= 1
                self.failed += 1
                raise self._error()
            real_commit(dbapi_connection)

        def do_rollback(dbapi_connection: Any) -> None:
            self.pending = []
            real_rollback(dbapi_connection)

        def append(vault: Any, s: Any, action: str, **kwargs: Any) -> Any:
            self.pending.append(action)
            return real_append(vault, s, action, **kwargs)

        monkeypatch.setattr(dialect, "do_commit", do_commit)
        monkeypatch.setattr(dialect, "do_rollback", do_rollback)
        monkeypatch.setattr(Journal, "append", append)
        real_authority_append = CheckoutAuthority._append

        def authority_append(authority: Any, conn: Any, sqlite: bool, caller: Any, request: Any, *rest: Any) -> Any:
            self.pending.append(request.action)  # a checkout's event is appended by its authority
            return real_authority_append(authority, conn, sqlite, caller, request, *rest)

        monkeypatch.setattr(CheckoutAuthority, "_append", authority_append)

    def lose(self, times: int, *, action: str | None = None) -> None:
        self.remaining, self.action, self.failed = times, action, 0

    def _error(self) -> Exception:
        message = "could not serialize access due to concurrent update"
        if self.postgres:
            return psycopg.errors.SerializationFailure(message)
        error = sqlite3.OperationalError(message)
        error.sqlstate = "40001"  # type: ignore[attr-defined]
        return error


@pytest.fixture
def losing(shared, monkeypatch) -> Losing:  # type: ignore[no-untyped-def]
    return Losing(monkeypatch, shared.admin.store.engine)


class Backoff:
    """Records the back-off sleeps of ``retried`` (without sleeping) and runs a hook in them."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.hook: Callable[[], None] | None = None

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.hook is not None:
            hook, self.hook = self.hook, None
            hook()

    def assert_jittered_doubling(self) -> None:
        for attempt, slept in enumerate(self.sleeps):
            base = BACKOFF_SECONDS * 2**attempt
            assert 0.5 * base <= slept < 1.5 * base, (attempt, slept)


@pytest.fixture
def backoff(monkeypatch) -> Backoff:  # type: ignore[no-untyped-def]
    recorder = Backoff()
    monkeypatch.setattr(retrying, "time", types.SimpleNamespace(sleep=recorder.sleep))
    return recorder


def _admin(shared) -> Vault:  # type: ignore[no-untyped-def]
    """A new Vault object (its own retry count and caches) on the shared admin's session."""
    return Vault(
        shared.admin.store, engineer=ADMIN, sessions=shared.admin.sessions, clock=shared.clock, kdf_params=FLOOR
    )


def _events_since(shared, seq: int) -> Counter[str]:  # type: ignore[no-untyped-def]
    return Counter(r[0] for r in shared.db.all(select(m.AuditEvent.action).where(m.AuditEvent.seq > seq)))


def _encryptions(shared, client_id: int) -> int:  # type: ignore[no-untyped-def]
    return int(shared.db.scalar(select(func.sum(m.ClientKey.encryptions)).where(m.ClientKey.client_id == client_id)))


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before[name] for name in after if after[name] != before.get(name)}


# -- the writes under test: each on a fresh client, so two runs of one can be compared ------------------


class Case:
    """A fresh client with a secret (and, to grant it to, an engineer) and one write to run on them."""

    def __init__(self, shared, op: str) -> None:  # type: ignore[no-untyped-def]
        self.shared, self.op = shared, op
        self.client = shared.client()
        self.client_id = shared.db.newest_client_id()
        self.ref = f"{self.client}/fw01"
        shared.admin.secrets.add(self.ref, password=FIRST)
        self.engineer = shared.engineer("eng").engineer_name if op == "grant" else ""
        self.value = f"new value for {self.client} ✓"

    @property
    def action(self) -> str:
        return {"add": "secret-create", "update": "secret-update", "grant": "grant", "checkout": "checkout"}[self.op]

    def run(self, vault: Vault) -> Any:
        if self.op == "add":
            return vault.secrets.add(f"{self.client}/new", password=self.value)
        if self.op == "update":
            return vault.secrets.update(self.ref, password=self.value)
        if self.op == "grant":
            return vault.grants.grant(self.engineer, self.client, reason="T-2 grant")
        return vault.checkouts.checkout(self.ref, reason=REASON)

    def assert_written_once(self) -> None:
        admin = self.shared.admin
        if self.op == "add":
            assert admin.checkouts.reveal(f"{self.client}/new", reason=REASON) == self.value
            assert [v.version for v in admin.secrets.history(f"{self.client}/new")] == [1]
        elif self.op == "update":
            assert admin.checkouts.reveal(self.ref, reason=REASON) == self.value
            assert [v.version for v in admin.secrets.history(self.ref)] == [1, 2]
        elif self.op == "grant":
            grants = admin.grants.list(engineer=self.engineer)
            assert [(g.client, g.state) for g in grants] == [(self.client, "active")]
        else:
            held = [(c.engineer, c.secret) for c in admin.checkouts.list() if c.client == self.client]
            assert held == [(ADMIN, "fw01")]


# -- PostgreSQL: real serialization failures and deadlocks ------------------------------------------------


@postgres_only
def test_a_real_serialization_failure_is_a_concurrent_change_and_a_lock_timeout_is_not(db_url):
    other = create_engine(db_url, isolation_level="AUTOCOMMIT")
    store = storage.Store(db_url, guarded=False)  # the scratch table is one credvault did not create
    try:
        with other.connect() as conn:
            conn.execute(text("CREATE TABLE scratch (id integer PRIMARY KEY, n integer)"))
            conn.execute(text("INSERT INTO scratch VALUES (1, 0)"))
        # REPEATABLE READ: a row changed by a transaction committed after ours began cannot be updated
        with pytest.raises(ConcurrentChange) as caught, store.transaction() as s:
            s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            assert s.execute(text("SELECT n FROM scratch WHERE id = 1")).scalar() == 0
            with other.connect() as conn:
                conn.execute(text("UPDATE scratch SET n = 1 WHERE id = 1"))
            s.execute(text("UPDATE scratch SET n = 2 WHERE id = 1"))
        assert_clean(caught.value)
        assert "concurrent change" in str(caught.value)
        with other.connect() as conn:
            assert conn.execute(text("SELECT n FROM scratch")).scalar() == 1  # ours was rolled back

        # a lock timeout (55P03) is an operational error too, but not one a retry is for
        with store.engine.connect() as holder, holder.begin():  # not autocommit: the lock is held
            holder.execute(text("SELECT n FROM scratch WHERE id = 1 FOR UPDATE"))
            with pytest.raises(StoreUnavailable) as refused, store.transaction() as s:
                s.execute(text("SET LOCAL lock_timeout = '50ms'"))
                s.execute(text("UPDATE scratch SET n = 3 WHERE id = 1"))
        assert type(refused.value) is StoreBusy  # a lock held elsewhere: said so, not retried
        assert_clean(refused.value)
    finally:
        store.close()
        other.dispose()


@postgres_only
def test_a_real_deadlock_is_retried_and_the_checkout_recorded_once(db_url, monkeypatch):
    """The test holds the audit head's row lock; the checkout locks the secret's row and
    then waits for the head; the test then asks for the secret's row: a deadlock. The
    checkout's server process detects it (its deadlock_timeout is 50 ms, the test's 60 s)
    and aborts the checkout's transaction with 40P01; the checkout is run again and wins."""
    database = make_url(db_url).database
    other = create_engine(db_url, isolation_level="AUTOCOMMIT")
    with other.connect() as conn:
        conn.execute(text(f"ALTER DATABASE \"{database}\" SET deadlock_timeout = '50ms'"))
    admin, _ = Vault.create(db_url, admin=ADMIN, passphrase=ADMIN_PASS, kdf_params=FLOOR)
    try:
        admin.engineers.unlock(ADMIN, ADMIN_PASS)
        admin.clients.add("acme", "Acme Ltd")
        admin.secrets.add("acme/fw01", password=DEADLOCKED)
        reader = Vault.open(db_url, engineer=ADMIN, sessions=admin.sessions, kdf_params=FLOOR)
        reader.checkouts.reveal("acme/fw01", reason=REASON)  # warm: the checkout below goes straight to its locks
        with other.connect() as conn:
            secret_id = conn.execute(text("SELECT id FROM secrets")).scalar_one()
        before = admin.audit.head()[0]

        states: list[str | None] = []
        real_state = storage._sqlstate
        monkeypatch.setattr(storage, "_sqlstate", lambda error: states.append(real_state(error)) or states[-1])
        holding = threading.Event()
        real_lock = CheckoutAuthority._lock_and_find_holds  # the checkout's authority locks the secret

        def lock_then_linger(conn, secret_id, now):  # type: ignore[no-untyped-def]
            held = real_lock(conn, secret_id, now)
            if not holding.is_set():  # first attempt only: give the test time to queue behind us
                holding.set()
                time.sleep(0.5)
            return held

        monkeypatch.setattr(CheckoutAuthority, "_lock_and_find_holds", staticmethod(lock_then_linger))
        outcome: dict[str, Any] = {}

        def checkout() -> None:
            try:
                outcome["value"] = reader.checkouts.checkout("acme/fw01", reason=REASON).value
            except BaseException as error:  # reported below
                outcome["error"] = error

        with admin.store.engine.connect() as test_conn:  # a transaction of the test's own
            test_conn.execute(text("SET deadlock_timeout = '60s'"))
            test_conn.commit()
            with test_conn.begin():
                test_conn.execute(text("SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE"))
                thread = threading.Thread(target=checkout)
                thread.start()
                assert holding.wait(30), "the checkout never locked the secret"
                # blocks until the checkout's transaction is aborted as the deadlock victim
                test_conn.execute(text("SELECT id FROM secrets WHERE id = :id FOR UPDATE"), {"id": secret_id})
            thread.join(60)
        assert "error" not in outcome, repr(outcome.get("error"))
        assert outcome["value"] == DEADLOCKED
        assert storage.DEADLOCK_DETECTED in states, f"no deadlock was detected: {states}"
        assert reader.retries == 1
        events = [e for e in admin.audit.log() if e.seq > before]
        assert [e.action for e in events] == ["checkout"]
        assert [c.engineer for c in admin.checkouts.list()] == [ADMIN]
        result = admin.audit.verify()
        assert result.ok, result.problem
        reader.close()
    finally:
        admin.close()
        other.dispose()


# -- both engines: commits that lose ----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["first transactions", "the writing transaction"])
@pytest.mark.parametrize("times", [1, RETRIES - 1])
@pytest.mark.parametrize("op", ["add", "update", "grant"])
def test_a_write_that_loses_k_times_is_written_once_with_one_event(shared, losing, backoff, op, times, where):
    lossy, clean = Case(shared, op), Case(shared, op)
    vault = _admin(shared)

    # the same write without losing, for comparison
    counts, head = shared.db.counts(), shared.admin.audit.head()[0]
    clean.run(vault)
    clean_delta, clean_events = _delta(counts, shared.db.counts()), _events_since(shared, head)
    assert clean_events == Counter({clean.action: 1})

    counts, head, retries = shared.db.counts(), shared.admin.audit.head()[0], vault.retries
    encryptions = _encryptions(shared, lossy.client_id)
    losing.lose(times, action=lossy.action if where == "the writing transaction" else None)
    lossy.run(vault)
    assert losing.failed == times and losing.remaining == 0
    assert vault.retries - retries == times
    assert len(backoff.sleeps) == times
    backoff.assert_jittered_doubling()
    assert _events_since(shared, head) == Counter({lossy.action: 1}), "not exactly one event"
    assert _delta(counts, shared.db.counts()) == clean_delta, "rows written differ from one clean write"
    if op in ("add", "update"):
        assert _encryptions(shared, lossy.client_id) == encryptions + 1  # the lost attempts' counts rolled back
    lossy.assert_written_once()
    result = shared.admin.audit.verify()
    assert result.ok, result.problem


@pytest.mark.parametrize("op", ["add", "update", "grant", "checkout"])
def test_after_retries_losses_the_concurrent_change_gets_through_and_nothing_was_written(shared, losing, backoff, op):
    case = Case(shared, op)
    vault = _admin(shared)
    counts, head, retries = shared.db.counts(), shared.admin.audit.head(), vault.retries
    losing.lose(ALWAYS, action=case.action)
    with pytest.raises(VaultError) as caught:
        case.run(vault)
    assert type(caught.value) is ConcurrentChange  # for a checkout too: not AuditUnavailable
    assert_clean(caught.value, case.value, FIRST)
    assert losing.failed == RETRIES, "the write was not attempted exactly RETRIES times"
    assert vault.retries - retries == RETRIES - 1
    assert len(backoff.sleeps) == RETRIES - 1
    backoff.assert_jittered_doubling()
    assert vault.core._retry_depth == 0
    assert shared.admin.audit.head() == head, "an event of a lost attempt was kept"
    assert shared.db.counts() == counts, "a row of a lost attempt was kept"

    losing.lose(0)
    case.run(vault)  # nothing is stuck: the next call goes through
    case.assert_written_once()


def test_nested_public_calls_do_not_multiply_the_attempts(shared, losing, backoff, monkeypatch):
    case = Case(shared, "checkout")
    vault = _admin(shared)
    vault.checkouts.checkout(case.ref, reason=REASON)
    counts, head = shared.db.counts(), shared.admin.audit.head()

    # reveal -> checkout: both public, both wrapped; only reveal retries
    attempts = []
    real_checkout = Checkouts._checkout
    monkeypatch.setattr(Checkouts, "_checkout", lambda *a, **k: attempts.append(1) or real_checkout(*a, **k))
    losing.lose(ALWAYS)
    retries = vault.retries
    with pytest.raises(ConcurrentChange):
        vault.checkouts.reveal(case.ref, reason=REASON)
    assert len(attempts) == RETRIES
    assert vault.retries - retries == RETRIES - 1

    # checkin with a new password -> update_secret: the first commit of each attempt loses
    losing.lose(ALWAYS)
    retries = vault.retries
    with pytest.raises(ConcurrentChange):
        vault.checkouts.checkin(case.ref, new_password=case.value)
    assert losing.failed == RETRIES, f"{losing.failed} attempts (nested retries multiply them)"
    assert vault.retries - retries == RETRIES - 1
    assert len(backoff.sleeps) == 2 * (RETRIES - 1)
    assert vault.core._retry_depth == 0
    losing.lose(0)
    assert shared.admin.audit.head() == head and shared.db.counts() == counts


def test_a_checkout_that_loses_is_retried_and_reveals_what_the_winning_attempt_read(shared, losing, backoff):
    """Between the lost attempt and the retry another admin stores a new password: the
    retried checkout reads and records the new version; the lost attempt's value (which
    it had decrypted) is never handed out."""
    case = Case(shared, "checkout")
    vault = _admin(shared)
    head, retries = shared.admin.audit.head()[0], vault.retries
    backoff.hook = lambda: shared.admin.secrets.update(case.ref, password=case.value)
    losing.lose(1, action="checkout")
    revealed = vault.checkouts.checkout(case.ref, reason=REASON)
    assert losing.failed == 1 and vault.retries - retries == 1
    assert (revealed.value, revealed.version) == (case.value, 2)
    events = [e for e in shared.admin.audit.log(client=case.client) if e.seq > head]
    assert [e.action for e in events] == ["secret-update", "checkout"]
    assert events[1].details is not None and events[1].details["version"] == 2
    assert [(c.engineer, c.secret) for c in shared.admin.checkouts.list() if c.client == case.client] == [
        (ADMIN, "fw01")
    ]


def test_a_checkout_that_keeps_losing_reveals_nothing(shared, losing, backoff, caplog):
    case = Case(shared, "checkout")
    vault = _admin(shared)
    head = shared.admin.audit.head()
    caplog.set_level("DEBUG")
    losing.lose(ALWAYS, action="checkout")
    with pytest.raises(VaultError) as caught:
        vault.checkouts.checkout(case.ref, reason=REASON)
    assert type(caught.value) is ConcurrentChange, "a lost checkout must be retried, not refused as unaudited"
    assert_clean(caught.value, FIRST)
    assert FIRST not in caplog.text
    assert losing.failed == RETRIES
    assert shared.admin.audit.head() == head
    assert [c for c in shared.admin.checkouts.list() if c.client == case.client] == []


def test_a_checkin_with_a_new_password_that_loses_its_release_stores_the_password_once(shared, losing, backoff):
    """checkin(new_password=...) used to commit update_secret in transactions of its own,
    then release the checkout in another: when the release lost, ``retried`` ran the whole
    checkin again and stored the password twice (a bug found here). Now the new version and
    the release are one transaction: a lost attempt leaves nothing behind."""
    case = Case(shared, "checkout")
    vault = _admin(shared)
    vault.checkouts.checkout(case.ref, reason=REASON)
    head = shared.admin.audit.head()[0]
    losing.lose(1, action="checkin")
    vault.checkouts.checkin(case.ref, new_password=case.value)
    assert losing.failed == 1
    assert _events_since(shared, head) == Counter({"secret-update": 1, "checkin": 1})
    assert [v.version for v in shared.admin.secrets.history(case.ref)] == [1, 2]


def test_two_updates_of_one_secret_at_once_both_land(shared, monkeypatch, request):
    """The first update reads the secret's current version in its unit of work, then pauses
    (in the keyholder's check of what it read) before writing the next one; the second
    update runs meanwhile. On SQLite the second waits at BEGIN IMMEDIATE; on PostgreSQL at
    the secret's row lock, and once it has the lock it reads the row again. Either way it
    then writes the version after the first's, at its first attempt: before the re-read, on
    PostgreSQL it wrote the same version number as the first, lost on the unique key and
    was only saved by a retry (and under heavy load ran out of them: the slow load test saw
    14 updates refused)."""
    client = shared.client()
    ref = f"{client}/fw01"
    shared.admin.secrets.add(ref, password=FIRST)
    first, second = _admin(shared), _admin(shared)
    paused, release = threading.Event(), threading.Event()
    real_verify, real_write = SecretKeyholder._verify, SecretAuthority._update

    writes: Counter[str] = Counter()

    def pausing_verify(keyholder: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name == "first" and not paused.is_set():
            paused.set()
            assert release.wait(30)
        return real_verify(keyholder, *args, **kwargs)

    def counted_write(authority: Any, *args: Any) -> Any:
        writes[threading.current_thread().name] += 1  # each attempt of the authority's unit
        return real_write(authority, *args)

    monkeypatch.setattr(SecretKeyholder, "_verify", pausing_verify)
    monkeypatch.setattr(SecretAuthority, "_update", counted_write)
    errors: list[BaseException] = []

    def update(vault: Vault, value: str) -> None:
        try:
            vault.secrets.update(ref, password=value)
        except BaseException as error:  # reported below
            errors.append(error)

    one = threading.Thread(target=update, args=(first, "first update ✓"), name="first")
    two = threading.Thread(target=update, args=(second, "second update ✓"), name="second")
    one.start()
    assert paused.wait(30)
    two.start()
    two.join(1.0)  # PostgreSQL: the second is done; SQLite: it waits for the first's write lock
    release.set()
    one.join(60)
    two.join(60)
    assert errors == [], f"an update was refused: {errors[0]!r}"
    assert writes == Counter({"first": 1, "second": 1}), "an update had to be run again"
    assert [v.version for v in shared.admin.secrets.history(ref)] == [1, 2, 3]
    stored = {shared.admin.checkouts.reveal(ref, version=v, reason=REASON) for v in (2, 3)}
    assert stored == {"first update ✓", "second update ✓"}


def test_a_revoke_racing_a_new_grant_ends_as_one_or_the_other(shared, monkeypatch, request):
    """Admin A re-grants a client to an engineer who holds a grant; A has replaced the old
    grant row and pauses before re-sealing the client key. Admin B revokes meanwhile and
    waits for A's row lock. Any serial order is fine: grant then revoke leaves no live
    grant, revoke then grant a live grant with its sealed key. On PostgreSQL (READ
    COMMITTED) B's revoke, decided on the rows it read before waiting, revokes only the
    old grant and deletes the key copy A has just re-sealed: the log says grant, revoke,
    yet the new grant is live, and it opens nothing."""
    client = shared.client()
    ref = f"{client}/fw01"
    shared.admin.secrets.add(ref, password=FIRST)
    engineer = shared.engineer("eve")
    name = engineer.engineer_name
    shared.admin.grants.grant(name, client, reason="T-3 first grant")
    assert engineer.checkouts.reveal(ref, reason=REASON) == FIRST
    head = shared.admin.audit.head()[0]
    a, b = _admin(shared), _admin(shared)
    paused, release = threading.Event(), threading.Event()
    real_seal = grant_keyholder._Seal.seal_copies  # sealing the client keys to the engineer, in A's unit

    def pausing_seal(seal: Any, *args: Any) -> Any:
        if threading.current_thread().name == "A" and not paused.is_set():
            paused.set()
            assert release.wait(30)
        return real_seal(seal, *args)

    monkeypatch.setattr(grant_keyholder._Seal, "seal_copies", pausing_seal)
    errors: list[BaseException] = []

    def run(call: Callable[[], Any]) -> None:
        try:
            call()
        except BaseException as error:  # reported below
            errors.append(error)

    granting = threading.Thread(target=run, args=(lambda: a.grants.grant(name, client, reason="T-3 again"),), name="A")
    revoking = threading.Thread(target=run, args=(lambda: b.grants.revoke(name, client),), name="B")
    granting.start()
    assert paused.wait(30)
    revoking.start()
    _wait_until_blocked(shared)
    release.set()
    granting.join(60)
    revoking.join(60)
    assert errors == [], repr(errors)
    order = [e.action for e in shared.admin.audit.log(client=client) if e.seq > head]
    assert sorted(order) == ["grant", "revoke"]
    live = [g for g in shared.admin.grants.list(engineer=name) if g.state == "active"]
    assert bool(live) == (order[-1] == "grant"), f"log says {order}, live grants: {live}"
    fresh = Vault(shared.admin.store, engineer=name, sessions=engineer.sessions, clock=shared.clock, kdf_params=FLOOR)
    if live:
        assert fresh.checkouts.reveal(ref, reason=REASON) == FIRST
    else:
        with pytest.raises(VaultError):
            fresh.checkouts.reveal(ref, reason=REASON)


def _wait_until_blocked(shared) -> None:  # type: ignore[no-untyped-def]
    """Until a session of the shared database waits for a lock (PostgreSQL), or a moment (SQLite)."""
    if not shared.url.startswith("postgresql"):
        time.sleep(0.5)
        return
    deadline = time.monotonic() + 30
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    while not shared.db.scalar(query):
        assert time.monotonic() < deadline, "the second writer never waited for the first"
        time.sleep(0.01)


# -- SQLite: "database is locked" is not a concurrent change --------------------------------------------


@sqlite_only
def test_a_locked_sqlite_database_stays_store_unavailable_and_is_not_retried(db_url, monkeypatch):
    admin, _ = Vault.create(db_url, admin=ADMIN, passphrase=ADMIN_PASS, kdf_params=FLOOR)
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    admin.clients.add("acme", "Acme Ltd")
    admin.secrets.add("acme/fw01", password=LOCKED)
    admin.close()
    monkeypatch.setattr(storage, "BUSY_TIMEOUT_MS", 300)  # engines made from here on give up after 0.3 s
    vault = Vault.open(db_url, engineer=ADMIN, sessions=admin.sessions, kdf_params=FLOOR)
    vault.engineers.unlock(ADMIN, ADMIN_PASS)
    holder = sqlite3.connect(make_url(db_url).database, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        for call, error_type in (
            (lambda: vault.secrets.add("acme/fw02", password=NEVER), StoreBusy),
            (lambda: vault.secrets.update("acme/fw01", password=NEVER), StoreBusy),
            (
                lambda: vault.checkouts.checkout("acme/fw01", reason=REASON),
                StoreBusy,
            ),  # a StoreUnavailable that says why
        ):
            started = time.monotonic()
            with pytest.raises(VaultError) as caught:
                call()
            elapsed = time.monotonic() - started
            assert type(caught.value) is error_type
            assert not isinstance(caught.value, ConcurrentChange)
            assert "locked by another session" in str(caught.value)
            assert_clean(caught.value, NEVER, LOCKED)
            assert vault.retries == 0
            assert elapsed < 0.3 * 4, f"{elapsed:.2f} s: retried?"  # one busy timeout, not RETRIES of them
        holder.execute("ROLLBACK")
        assert vault.checkouts.checkout("acme/fw01", reason=REASON).value == LOCKED
        assert vault.retries == 0
    finally:
        holder.close()
        vault.close()


def test_a_rotation_batch_that_loses_is_run_again_and_the_rotation_finishes(shared, losing, backoff, monkeypatch):
    """A client-key rotation is several transactions (start, batches, finish). A batch that
    loses must be run again on its own: re-running the whole ``rotate_client`` would find
    its own rotation under way and refuse ("already under way")."""
    client = shared.client()
    refs = [f"{client}/s{i}" for i in range(5)]
    for ref in refs:
        shared.admin.secrets.add(ref, password=f"{ref} ✓")
    vault = _admin(shared)
    real_batch, armed = KeyRotation._rewrap_batch, [True]

    def batch(self: Any, *args: Any) -> Any:
        if armed and armed.pop():  # the first batch's commit loses, twice
            losing.lose(2)
        return real_batch(self, *args)

    monkeypatch.setattr(KeyRotation, "_rewrap_batch", batch)
    retries = vault.retries
    info = vault.keys.rotate_client(client, batch_size=2)
    assert losing.failed == 2
    assert vault.retries - retries == 2
    assert (info.state, info.done, info.total) == ("done", 5, 5)
    assert [r for r in shared.admin.keys.list() if r.client == client] == [info]
    assert shared.admin.keys.versions(client) == [(1, "destroyed"), (2, "active")]
    for ref in refs:
        assert shared.admin.checkouts.reveal(ref, reason=REASON) == f"{ref} ✓"


def test_a_rotation_whose_finishing_transaction_loses_finishes(shared, losing, backoff):
    """The finishing transaction of a rotation (it appends ``client-key-rotated``) is run
    again on its own too."""
    client = shared.client()
    shared.admin.secrets.add(f"{client}/s0", password="finish ✓")
    vault = _admin(shared)
    losing.lose(1, action="client-key-rotated")
    info = vault.keys.rotate_client(client)
    assert losing.failed == 1
    assert (info.state, info.done, info.total) == ("done", 1, 1)
    assert shared.admin.keys.versions(client) == [(1, "destroyed"), (2, "active")]
    assert shared.admin.checkouts.reveal(f"{client}/s0", reason=REASON) == "finish ✓"
