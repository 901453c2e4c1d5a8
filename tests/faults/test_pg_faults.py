"""PostgreSQL faults (issue 6): a killed client, and an immediate server stop and restart.

The shared server on 127.0.0.1:5432 serves other tests in parallel, so this module
runs its own throwaway cluster (``pgcluster.py``: initdb in /tmp, a free port, trust
authentication, ``fsync=on``) that it may crash and restart. Every run starts from
the same prepared vault (client acme with 8 secrets, globex with 3, engineers
eng0..eng5 enrolled without grants; its database is reset to a snapshot of every row
and sequence) and runs a batch of one kind of operation (add, update, grant, checkout,
purge), saying ``try`` before each call and ``ack`` after it. The fault strikes a call
drawn at random, at a moment drawn over a call's measured length after it began.

* A killed client: ``_ops_worker.py`` forks a child that runs the batch; the test
  SIGKILLs it. The server must notice: no backend of the dead
  client left (idle in transaction or otherwise), no lock held, and the next write by
  a new client, bounded by ``lock_timeout``, does not block.
* An immediate server stop: a thread runs the batch on a long-lived ``Vault`` while
  the test runs ``pg_ctl stop -m immediate`` (no shutdown checkpoint). The call in
  flight fails with ``StoreUnavailable`` (``AuditUnavailable`` for a checkout, which
  returns nothing), never a driver exception; so does the CLI, cleanly. After the
  restart (crash recovery) the same ``Vault`` object works again, the call that failed
  can be made again on it (or is refused as already done, when it had committed), and
  ``pg_amcheck`` finds no corruption when it is installed.

After every run: every acknowledged write is there with its exact value, the one in
flight is wholly there or wholly absent, nothing is half-applied (every secret has its
current version, live grants their signature and sealed key copies, checkouts their
audit event, a purge removes every row of the client and leaves a verifying receipt),
audit sequence numbers are contiguous up to the head, and the chain verifies. These
checks, the batch and the worker driver are ``_invariants.py``'s, shared with
``test_crash_operations.py``; the PostgreSQL ones (backends, locks, ``pg_amcheck``) are here.

Without PostgreSQL server binaries the module is skipped; with them, a cluster that
cannot start skips it too unless CREDVAULT_REQUIRE_PG=1, which makes that a failure.
The default run kills 3 clients per kind and stops the server 3 times; ``-m slow``
kills 20 per kind and stops it 10 times per kind.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keyring
import keyring.errors
import pytest
from _invariants import (
    ADMIN,
    COUNTS,
    KINDS,
    REASON,
    Outcome,
    WorkerProcess,
    chain_is_whole,
    check_batch,
    nothing_half_applied,
    open_vault,
    retry_in_flight,
    run_batch,
    seed_vault,
    write_passphrase_file,
)
from click.testing import CliRunner
from keyring.backend import KeyringBackend
from pgcluster import PgCluster, PgClusterError, find_bindir
from sqlalchemy import MetaData, Table, select, text
from vault.cli.main import cli

from vault.errors import AuditUnavailable, NotFound, StoreUnavailable, VaultError

pytestmark = pytest.mark.postgres

WORKER = Path(__file__).with_name("_ops_worker.py")
SHORT_KILLS, LONG_KILLS = 3, 20
SHORT_STOPS = ("checkout", "update", "grant")  # one stop each; -m slow stops LONG_STOPS times per kind
LONG_STOPS = 10
# A new client must never wait on a lock the dead one left: it gets an error instead.
BOUNDED = {"lock_timeout": "5000", "statement_timeout": "30000"}
SETTLE_SECONDS = 10


# -- the private cluster and the vault every run starts from ---------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl, postgres) under /usr/lib/postgresql/*/bin")
    pg = PgCluster(bindir)
    try:
        pg.create()
        pg.start()
    except (PgClusterError, OSError) as error:
        pg.destroy()
        if os.environ.get("CREDVAULT_REQUIRE_PG") == "1":
            pytest.fail(f"CREDVAULT_REQUIRE_PG=1 but the private PostgreSQL cluster did not start: {error}")
        pytest.skip(f"the private PostgreSQL cluster did not start: {error}")
    try:
        yield pg
    finally:
        pg.destroy()


@dataclass
class Template:
    """The prepared vault: its database, the passwords written, and a snapshot to reset it to."""

    database: str
    values: dict[str, str]  # ref -> password written
    passphrases: dict[str, str] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)  # reflected, parents before children
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    sequences: list[tuple[str, int | None]] = field(default_factory=list)  # name, last value (None: unused)


def _sql(cluster: PgCluster, statement: str, database: str = "postgres", **params: object) -> list[Any]:
    engine = cluster.admin_engine(database)
    try:
        with engine.connect() as conn:
            result = conn.execute(text(statement), params)
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def template(cluster: PgCluster) -> Template:
    """Build the vault once and snapshot every row and sequence of its database.

    Every run starts from ``_fresh``: the same database reset to the snapshot in one
    transaction. (A CREATE DATABASE per run would cost a checkpoint at each DROP, or, left
    to pile up, make every checkpoint and crash recovery flush all the clones.)"""
    database = "credvault_faults"
    _sql(cluster, f'CREATE DATABASE "{database}"')
    values, passphrases = seed_vault(cluster.url(database))
    meta = MetaData()
    engine = cluster.admin_engine(database)
    try:
        meta.reflect(engine)  # the tables the migrations made, not only those models.py knows
        tables = [t for t in meta.sorted_tables if t.name != "alembic_version"]
        with engine.connect() as conn:
            rows = {t.name: [dict(r._mapping) for r in conn.execute(select(t))] for t in tables}
            sequences = [
                (f'"{schema}"."{name}"', last)
                for schema, name, last in conn.execute(
                    text("SELECT schemaname, sequencename, last_value FROM pg_sequences WHERE schemaname = 'public'")
                )
            ]
    finally:
        engine.dispose()
    assert rows["audit_events"] and rows["secrets"] and rows["engineers"], "the snapshot missed the vault"
    return Template(database, values, passphrases, tables, rows, sequences)


@pytest.fixture(autouse=True)
def server_running(cluster: PgCluster) -> Iterator[None]:
    """A test that failed while the server was stopped leaves it running for the next one."""
    yield
    if not cluster.running:
        cluster.start(attempts=1)


def _fresh(cluster: PgCluster, template: Template) -> str:
    """Reset the vault database to the template's snapshot (one transaction); returns its name."""
    engine = cluster.admin_engine(template.database, autocommit=False)
    try:
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '10s'"))  # a lock left behind fails here, not hangs
            names = ", ".join(f'"{t.name}"' for t in template.tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY"))
            for table in template.tables:
                if template.rows[table.name]:
                    conn.execute(table.insert(), template.rows[table.name])
            for sequence, last in template.sequences:
                if last is None:
                    conn.execute(text("SELECT setval(CAST(:s AS regclass), 1, false)"), {"s": sequence})
                else:
                    conn.execute(text("SELECT setval(CAST(:s AS regclass), :v, true)"), {"s": sequence, "v": last})
    finally:
        engine.dispose()
    return template.database


class Worker(WorkerProcess):
    """``_ops_worker.py``: forks one child per batch, which the test may SIGKILL."""

    def run(self, url: str, kind: str, tag: str, kill: tuple[int, float] | None) -> Outcome:
        """Run a batch; ``kill=(k, seconds)`` SIGKILLs the child that long after it says ``try`` for call k."""
        pid = self.start(url=url, kind=kind, count=COUNTS[kind], tag=tag)
        outcome = Outcome()
        if kill is not None:
            call, after = kill
            while len(outcome.tried) <= call and outcome.duration is None:
                self.take(outcome)
            self.kill(pid, after)
        return self.reap(pid, outcome)


@pytest.fixture(scope="module")
def passphrase_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_passphrase_file(tmp_path_factory.mktemp("pg-faults"))


@pytest.fixture(scope="module")
def worker(passphrase_file: Path) -> Iterator[Worker]:
    w = Worker(WORKER, passphrase_file)
    yield w
    w.close()


# -- after a fault (the checks are _invariants.check_batch; here what only PostgreSQL has) ----------------


def _no_leftover_backend(cluster: PgCluster, database: str) -> None:
    """Once the server has noticed the dead client: no backend, transaction or lock of it remains."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        rows = _sql(
            cluster,
            "SELECT pid, state, xact_start IS NOT NULL FROM pg_stat_activity"
            " WHERE datname = :db AND pid <> pg_backend_pid()",
            db=database,
        )
        if not rows:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"backends of the killed client are still there after {SETTLE_SECONDS}s: {rows}")
        time.sleep(0.05)
    locks = _sql(
        cluster,
        "SELECT l.pid, l.locktype, l.mode FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
        " WHERE d.datname = :db AND l.pid IS DISTINCT FROM pg_backend_pid()",
        db=database,
    )
    assert locks == [], f"locks left behind: {locks}"
    assert _sql(cluster, "SELECT gid FROM pg_prepared_xacts WHERE database = :db", db=database) == []


# -- 1. a killed client -----------------------------------------------------------------------------


def _kill_runs(kind: str, runs: int, cluster: PgCluster, template: Template, worker: Worker) -> Counter[str]:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    calibration = _fresh(cluster, template)
    measured = worker.run(cluster.url(calibration), kind, "cal", None)
    assert measured.code == 0 and measured.duration is not None
    assert len(measured.acked) == COUNTS[kind]
    assert check_batch(cluster.url(calibration, **BOUNDED), template, kind, measured) in ("all acked", "after")
    outcomes: Counter[str] = Counter()
    per_call = measured.duration / COUNTS[kind]
    for run in range(runs):
        database = _fresh(cluster, template)
        # A call drawn at random, killed at a moment drawn over a call's length after it began.
        kill = (rng.randrange(COUNTS[kind]), rng.uniform(0, per_call))
        out = worker.run(cluster.url(database), kind, str(run), kill)
        outcomes["killed" if out.code == -signal.SIGKILL else f"exit {out.code}"] += 1
        try:
            _no_leftover_backend(cluster, database)
            # The next write from a new client: lock_timeout (5 s) turns a wait on anything the
            # killed client left locked into an error; no wall-clock bound (a loaded machine is slow).
            after = open_vault(cluster.url(database, **BOUNDED))
            try:
                after.secrets.add(f"globex/after-kill-{run}", password="after ✓")
                assert after.checkouts.reveal(f"globex/after-kill-{run}", reason=REASON) == "after ✓"
            finally:
                after.close()
            outcomes[check_batch(cluster.url(database, **BOUNDED), template, kind, out)] += 1
        except AssertionError as error:
            where = f"killed {kill[1]:.4f}s into call {kill[0]}, acked {len(out.acked)}"
            raise AssertionError(f"{kind} run {run} (seed {seed}, {where}): {error}") from error
    assert outcomes["killed"] >= 1, (seed, measured.duration, outcomes)
    print(f"pg kill {kind}: {measured.duration * 1000:.0f} ms per batch, seed {seed}, {dict(outcomes)}")
    return outcomes


@pytest.mark.parametrize("kind", KINDS)
def test_a_killed_client_on_postgresql_leaves_acknowledged_writes_and_no_open_transaction(
    kind, cluster, template, worker
):
    _kill_runs(kind, SHORT_KILLS, cluster, template, worker)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_many_killed_clients_on_postgresql(kind, cluster, template, worker):
    outcomes = _kill_runs(kind, LONG_KILLS, cluster, template, worker)
    assert outcomes["killed"] >= LONG_KILLS // 2, outcomes


# -- 2. an immediate server stop, and the restart ---------------------------------------------------


class _NoKeyring(KeyringBackend):
    """A keyring that holds nothing (the CLI below unlocks with --passphrase-file)."""

    priority = 1  # type: ignore[assignment]

    def get_password(self, service: str, username: str) -> str | None:
        return None

    def set_password(self, service: str, username: str, password: str) -> None:
        raise keyring.errors.PasswordSetError("no keyring in this test")

    def delete_password(self, service: str, username: str) -> None:
        raise keyring.errors.PasswordDeleteError(username)


def _cli_while_down(url: str, passphrase_file: Path, home: Path) -> None:
    previous = keyring.get_keyring()
    keyring.set_keyring(_NoKeyring())
    try:
        result = CliRunner().invoke(
            cli,
            [
                "--db",
                url,
                "--as",
                ADMIN,
                "--passphrase-file",
                str(passphrase_file),
                "checkout",
                "globex/s00",
                "--reason",
                REASON,
                "--json",
            ],
            env={"CREDVAULT_HOME": str(home), "CREDVAULT_DB": None, "CREDVAULT_ENGINEER": None},
        )
    finally:
        keyring.set_keyring(previous)
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "credvault: error: " in result.stderr and "\nhint: " in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert "globex-0" not in result.output  # nothing revealed


def _amcheck(cluster: PgCluster, database: str) -> str:
    """Run pg_amcheck on the database when it is installed; returns what was done."""
    tool = cluster.bindir / "pg_amcheck"
    if not os.access(tool, os.X_OK):
        return "pg_amcheck absent"
    done = subprocess.run(
        [
            str(tool),
            "-h",
            "127.0.0.1",
            "-p",
            str(cluster.port),
            "-U",
            "postgres",
            "--install-missing",
            "--heapallindexed",
            "--parent-check",
            "-d",
            database,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and not done.stdout.strip(), (
        f"pg_amcheck: {done.returncode}\n{done.stdout}{done.stderr}"
    )
    return "pg_amcheck clean"


def _recoveries(cluster: PgCluster) -> int:
    return cluster.logfile.read_text(errors="replace").count("not properly shut down")


_calibrated: dict[str, float] = {}


def _calibrate(kind: str, cluster: PgCluster, template: Template) -> float:
    """How long one call of ``kind`` takes in this process, as a stop run makes it (once per kind)."""
    if kind not in _calibrated:
        database = _fresh(cluster, template)
        vault = open_vault(cluster.url(database))
        try:
            assert len(vault.secrets.list("acme")) == 8
            out = Outcome()
            run_batch(vault, kind, "cal", out)
            assert out.error is None, repr(out.error)
            assert out.duration is not None and len(out.acked) == COUNTS[kind]
        finally:
            vault.close()
        assert check_batch(cluster.url(database, **BOUNDED), template, kind, out) in ("all acked", "after")
        _calibrated[kind] = out.duration / COUNTS[kind]
    return _calibrated[kind]


def _stop_run(
    kind: str,
    run: int,
    rng: random.Random,
    cluster: PgCluster,
    template: Template,
    passphrase_file: Path,
    home: Path,
) -> str:
    per_call = _calibrate(kind, cluster, template)
    database = _fresh(cluster, template)
    _sql(cluster, "CHECKPOINT")  # recovery then replays only this run's WAL
    url = cluster.url(database)
    vault = open_vault(url)  # long-lived: it must outlive the server's crash
    context = f"{kind} stop {run}"
    try:
        assert len(vault.secrets.list("acme")) == 8  # its pool now holds a connection to the old server
        out = Outcome()
        runner = threading.Thread(target=run_batch, args=(vault, kind, f"stop{run}", out), daemon=True)
        # A call drawn at random; the server stops at a moment drawn over a call's length after it began.
        call, after = rng.randrange(COUNTS[kind]), rng.uniform(0, per_call)
        crashes = _recoveries(cluster)
        runner.start()
        while len(out.tried) <= call and runner.is_alive():
            time.sleep(0.0005)
        time.sleep(after)
        cluster.stop("immediate")
        runner.join(60)
        assert not runner.is_alive(), "the call in flight hangs after the server stopped"
        context = f"{kind} stop {run} ({after:.4f}s into call {call}, acked {len(out.acked)}, raised {out.error!r})"
        if out.error is not None:
            assert isinstance(out.error, VaultError), f"{context}: a raw exception escaped"
            expected = AuditUnavailable if kind == "checkout" else StoreUnavailable
            assert isinstance(out.error, expected), context
            assert out.in_flight is not None, context
        # While the server is down, every call fails cleanly and fast.
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            vault.secrets.add(f"globex/while-down-{run}", password="never ✓")
        with pytest.raises(AuditUnavailable):
            vault.checkouts.reveal("globex/s00", reason=REASON)
        assert time.monotonic() - started < 30, context
        _cli_while_down(url, passphrase_file, home)

        cluster.start(attempts=1)  # same port: the long-lived Vault keeps its URL
        assert _recoveries(cluster) == crashes + 1, "the restart did not run crash recovery"
        # The same Vault object works again: its dead pooled connections are replaced.
        started = time.monotonic()
        vault.secrets.add(f"globex/after-restart-{run}", password=f"after restart {run} ✓")
        assert vault.checkouts.reveal(f"globex/after-restart-{run}", reason=REASON) == f"after restart {run} ✓"
        assert time.monotonic() - started < 30, context
        with pytest.raises(NotFound):
            vault.checkouts.reveal(f"globex/while-down-{run}", reason=REASON)
        landed = check_batch(cluster.url(database, **BOUNDED), template, kind, out)
        amcheck = _amcheck(cluster, database)
        if out.in_flight is not None:
            retry_in_flight(vault, kind, out.in_flight, landed, template)
            nothing_half_applied(vault)
            chain_is_whole(vault)
    except AssertionError as error:
        raise AssertionError(f"{context}: {error}") from error
    finally:
        vault.close()
    return f"{landed}; {amcheck}"


def test_an_immediate_server_stop_fails_the_call_in_flight_cleanly_and_loses_nothing(
    cluster, template, passphrase_file, tmp_path
):
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    for run, kind in enumerate(SHORT_STOPS):
        outcomes[f"{kind}: " + _stop_run(kind, run, rng, cluster, template, passphrase_file, tmp_path)] += 1
    print(f"pg stops (seed {seed}, seconds per call {_calibrated}): {dict(outcomes)}")
    assert sum(n for what, n in outcomes.items() if "in flight" in what) >= 1, outcomes


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_many_immediate_server_stops(kind, cluster, template, passphrase_file, tmp_path):
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    for run in range(LONG_STOPS):
        outcomes[_stop_run(kind, run, rng, cluster, template, passphrase_file, tmp_path)] += 1
    print(f"pg stops {kind} (seed {seed}): {dict(outcomes)}")
    assert sum(n for what, n in outcomes.items() if "in flight" in what) >= LONG_STOPS // 2, outcomes
