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
audit sequence numbers are contiguous up to the head, and the chain verifies.

Without PostgreSQL server binaries the module is skipped; with them, a cluster that
cannot start skips it too unless CREDVAULT_REQUIRE_PG=1, which makes that a failure.
The default run kills 3 clients per kind and stops the server 3 times; ``-m slow``
kills 20 per kind and stops it 10 times per kind.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
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
from click.testing import CliRunner
from keyring.backend import KeyringBackend
from pgcluster import PgCluster, PgClusterError, find_bindir
from sqlalchemy import MetaData, Table, func, select, text
from vault.cli.main import cli

from vault import Vault
from vault.crypto.keyrecord import FLOOR
from vault.errors import AccessDenied, AlreadyExists, AuditUnavailable, NotFound, StoreUnavailable, VaultError
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m

pytestmark = pytest.mark.postgres

ADMIN, ADMIN_PASS = "root-admin", "admin passphrase ✓"
REASON = "T-1 crash test"
WORKER = Path(__file__).with_name("_ops_worker.py")
REPO = Path(__file__).resolve().parents[2]
KINDS = ("add", "update", "grant", "checkout", "purge")
COUNTS = {"add": 6, "update": 8, "grant": 6, "checkout": 8, "purge": 1}
ENGINEERS = 6
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


def _open(url: str, name: str = ADMIN, passphrase: str = ADMIN_PASS) -> Vault:
    vault = Vault.open(url, engineer=name, sessions=MemorySessionStore(), kdf_params=FLOOR)
    vault.unlock(name, passphrase)
    return vault


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
    url = cluster.url(database)
    admin, _ = Vault.create(url, admin=ADMIN, passphrase=ADMIN_PASS, kdf_params=FLOOR)
    admin.unlock(ADMIN, ADMIN_PASS)
    values: dict[str, str] = {}
    for slug, count in (("acme", 8), ("globex", 3)):
        admin.add_client(slug, slug.title())
        for i in range(count):
            values[f"{slug}/s{i:02d}"] = f"{slug}-{i}-✓"
            admin.add_secret(f"{slug}/s{i:02d}", password=values[f"{slug}/s{i:02d}"])
    passphrases = {}
    for i in range(ENGINEERS):
        name = f"eng{i}"
        code = admin.invite_engineer(name)
        mine = Vault.open(url, engineer=name, sessions=MemorySessionStore(), kdf_params=FLOOR)
        admin.confirm_engineer(name, mine.enroll_engineer(name, code, f"pass of {name}"))
        mine.close()
        passphrases[name] = f"pass of {name}"
    admin.close()
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


# -- a batch of operations, said try/ack (the same items as _ops_worker.py) ---------------------------


@dataclass
class Outcome:
    code: int  # -9 when killed
    duration: float | None  # seconds, if the batch finished
    tried: list[dict[str, Any]]
    acked: list[dict[str, Any]]
    error: BaseException | None = None  # what the call in flight raised (server stops)

    @property
    def in_flight(self) -> dict[str, Any] | None:
        """The call that was running when the client or the server died (tried, never acknowledged)."""
        return self.tried[-1] if len(self.tried) > len(self.acked) else None


def _batch(vault: Vault, kind: str, tag: str, out: Outcome) -> None:
    """What ``_ops_worker._job`` does, in this process, on a Vault that outlives the batch."""
    started = time.perf_counter()
    try:
        for i in range(COUNTS[kind]):
            item: dict[str, Any]
            if kind == "add":
                item = {"ref": f"acme/new-{tag}-{i}", "password": f"added {tag} {i} ✓"}
                out.tried.append(item)
                vault.add_secret(item["ref"], password=item["password"], username=f"user{i}")
            elif kind == "update":
                item = {"ref": f"acme/s{i:02d}", "password": f"updated {tag} {i} ✓"}
                out.tried.append(item)
                vault.update_secret(item["ref"], password=item["password"])
            elif kind == "grant":
                item = {"engineer": f"eng{i}", "client": "acme"}
                out.tried.append(item)
                vault.grant(item["engineer"], "acme", reason=f"T-{tag}")
            elif kind == "checkout":
                item = {"ref": f"acme/s{i:02d}"}
                out.tried.append(item)
                item["value"] = vault.checkout(item["ref"], reason=REASON).value
            elif kind == "purge":
                item = {"client": "acme"}
                out.tried.append(item)
                item["receipt"] = vault.purge_client("acme", request=f"REQ-{tag}").id
            else:
                raise ValueError(f"unknown kind {kind!r}")
            out.acked.append(item)
        out.duration = time.perf_counter() - started
    except BaseException as error:  # recorded for the test to judge: only VaultErrors are fine
        out.error = error


class Worker:
    """``_ops_worker.py``: forks one child per batch, which the test may SIGKILL."""

    def __init__(self, passphrase_file: Path) -> None:
        self.passphrase_file = passphrase_file
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=env,
            cwd=REPO,
        )
        assert self._line() == "worker ready"

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the crash worker exited ({self.proc.poll()})")
        return line.rstrip("\n")

    def _send(self, **command: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def run(self, url: str, kind: str, tag: str, kill: tuple[int, float] | None) -> Outcome:
        """Run a batch; ``kill=(k, seconds)`` SIGKILLs the child that long after it says ``try`` for call k."""
        self._send(op="run", url=url, kind=kind, passphrase_file=str(self.passphrase_file), count=COUNTS[kind], tag=tag)
        word, pid_text, *rest = self._line().split(" ", 2)
        if word == "error":
            raise AssertionError(f"the worker failed before it was ready: {rest}")
        assert word == "ready", word
        pid = int(pid_text)
        outcome = Outcome(0, None, [], [])
        finished = False

        def take(line: str) -> None:
            nonlocal finished
            word, *rest = line.split(" ", 2)
            if word == "try":
                outcome.tried.append(json.loads(rest[1]))
            elif word == "ack":
                outcome.acked.append(json.loads(rest[1]))
            elif word == "done":
                outcome.duration, finished = float(rest[1]), True
            elif word == "error":
                raise AssertionError(f"the operation failed (not a crash): {rest[1]}")
            elif word == "reaped":
                outcome.code = int(rest[1])

        if kill is not None:
            call, after = kill
            while len(outcome.tried) <= call and not finished:
                take(self._line())
            time.sleep(after)
            os.kill(pid, signal.SIGKILL)  # not reaped yet: the PID is still this child's
        self._send(op="reap", pid=pid)
        while True:
            line = self._line()
            take(line)
            if line.startswith("reaped "):
                return outcome

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def passphrase_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    secret = tmp_path_factory.mktemp("pg-faults") / "passphrase"
    secret.write_text(ADMIN_PASS, encoding="utf-8")
    secret.chmod(0o600)
    return secret


@pytest.fixture(scope="module")
def worker(passphrase_file: Path) -> Iterator[Worker]:
    w = Worker(passphrase_file)
    yield w
    w.close()


# -- after a fault ------------------------------------------------------------------------------


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


def _chain_is_whole(vault: Vault) -> None:
    result = vault.verify_audit()
    assert result.ok, result.problem
    with vault.store.transaction() as s:
        seqs = list(s.scalars(select(m.AuditEvent.seq).order_by(m.AuditEvent.seq)))
        assert seqs == list(range(1, len(seqs) + 1)), "audit sequence numbers are not contiguous from 1"
        head = s.scalars(select(m.AuditHead)).one()
        last = s.get(m.AuditEvent, seqs[-1])
        assert last is not None and (head.seq, head.hash) == (last.seq, last.hash), (
            "the audit head is not the last event"
        )


def _nothing_half_applied(vault: Vault) -> None:
    with vault.store.transaction() as s:
        for secret in s.scalars(select(m.Secret)):
            assert secret.current_version >= 1, f"secret #{secret.id} has no version"
            versions = set(s.scalars(select(m.SecretVersion.version).where(m.SecretVersion.secret_id == secret.id)))
            assert secret.current_version in versions, f"secret #{secret.id} lacks its current version"
            assert max(versions) == secret.current_version, f"secret #{secret.id} has a version past its current"
        orphans = s.scalar(
            select(func.count())
            .select_from(m.SecretVersion)
            .where(m.SecretVersion.secret_id.not_in(select(m.Secret.id)))
        )
        assert not orphans, "a secret version without its secret"
        for grant in s.scalars(select(m.Grant).where(m.Grant.revoked_at.is_(None))):
            assert grant.signature is not None, f"grant #{grant.id} has no signature"
            live = set(
                s.scalars(
                    select(m.ClientKey.version).where(
                        m.ClientKey.client_id == grant.client_id, m.ClientKey.state != "destroyed"
                    )
                )
            )
            sealed = set(
                s.scalars(
                    select(m.ClientKeySeal.version).where(
                        m.ClientKeySeal.client_id == grant.client_id,
                        m.ClientKeySeal.recipient_kind == "engineer",
                        m.ClientKeySeal.recipient_id == grant.engineer_id,
                    )
                )
            )
            assert live <= sealed, f"grant #{grant.id} lacks sealed key copies {live - sealed}"
        for checkout in s.scalars(select(m.Checkout)):
            event = s.get(m.AuditEvent, checkout.event_seq)
            assert event is not None and event.action == "checkout", f"checkout #{checkout.id} has no audit event"
            assert event.secret_id == checkout.secret_id


def _purged_rows(vault: Vault, client_id: int) -> dict[str, int]:
    """Rows of a purged client that are still there (all should be gone)."""
    with vault.store.transaction() as s:
        counts = {
            "clients": s.scalar(select(func.count()).select_from(m.Client).where(m.Client.id == client_id)),
            "secrets": s.scalar(select(func.count()).select_from(m.Secret).where(m.Secret.client_id == client_id)),
            "client_keys": s.scalar(
                select(func.count()).select_from(m.ClientKey).where(m.ClientKey.client_id == client_id)
            ),
            "client_key_seals": s.scalar(
                select(func.count()).select_from(m.ClientKeySeal).where(m.ClientKeySeal.client_id == client_id)
            ),
            "grants": s.scalar(select(func.count()).select_from(m.Grant).where(m.Grant.client_id == client_id)),
            "checkouts": s.scalar(
                select(func.count()).select_from(m.Checkout).where(m.Checkout.client_id == client_id)
            ),
        }
    return {table: n or 0 for table, n in counts.items() if n}


def _check(url: str, template: Template, kind: str, out: Outcome) -> str:
    """Check the vault after a fault; returns where the fault landed."""
    vault = _open(url)
    try:
        _chain_is_whole(vault)
        _nothing_half_applied(vault)
        for ref, password in template.values.items():
            if ref.startswith("globex/"):
                assert vault.reveal(ref, reason=REASON) == password, ref
        flight = out.in_flight
        landed = "in flight" if flight else ("all acked" if len(out.acked) == COUNTS[kind] else "between calls")
        if kind == "add":
            for item in out.acked:
                assert vault.reveal(item["ref"], reason=REASON) == item["password"], item
                assert vault.show_secret(item["ref"]).username == f"user{item['ref'].rsplit('-', 1)[1]}"
            if flight:
                try:
                    assert vault.reveal(flight["ref"], reason=REASON) == flight["password"]
                    assert vault.show_secret(flight["ref"]).username == f"user{flight['ref'].rsplit('-', 1)[1]}"
                    landed = "in flight, committed"
                except NotFound:
                    landed = "in flight, rolled back"
            assert len(vault.list_secrets("acme")) == 8 + len(out.acked) + (landed == "in flight, committed")
        elif kind == "update":
            acked = {item["ref"]: item["password"] for item in out.acked}
            for ref, old in template.values.items():
                if not ref.startswith("acme/"):
                    continue
                value = vault.reveal(ref, reason=REASON)
                history = vault.secret_history(ref)
                if ref in acked:
                    assert value == acked[ref] and len(history) == 2, ref
                elif flight and flight["ref"] == ref:
                    assert (value, len(history)) in ((old, 1), (flight["password"], 2)), ref
                    landed = "in flight, " + ("committed" if value != old else "rolled back")
                else:
                    assert value == old and len(history) == 1, ref
        elif kind == "grant":
            granted = {g.engineer for g in vault.list_grants(client="acme") if g.state == "active"}
            acked = {item["engineer"] for item in out.acked}
            assert acked <= granted, (acked, granted)
            allowed = acked | ({flight["engineer"]} if flight else set())
            assert granted <= allowed, (granted, allowed)
            if flight:
                landed = "in flight, " + ("committed" if flight["engineer"] in granted else "rolled back")
            for name in sorted(allowed):
                mine = _open(url, name, template.passphrases[name])
                try:
                    if name in granted:
                        assert mine.reveal("acme/s00", reason=REASON) == template.values["acme/s00"]
                    else:
                        with pytest.raises((NotFound, AccessDenied)):
                            mine.reveal("acme/s00", reason=REASON)
                finally:
                    mine.close()
        elif kind == "checkout":
            for item in out.acked:
                assert item["value"] == template.values[item["ref"]], item
            if flight:
                assert "value" not in flight, "the checkout in flight returned a value"
            held = {f"{c.client}/{c.secret}" for c in vault.list_checkouts() if c.engineer == ADMIN}
            acked_refs = [item["ref"] for item in out.acked]
            assert set(acked_refs) <= held, (acked_refs, held)
            with vault.store.transaction() as s:
                rows = s.scalar(select(func.count()).select_from(m.Checkout)) or 0
            assert rows in (len(acked_refs), len(acked_refs) + (1 if flight else 0)), (rows, acked_refs, flight)
            if flight:
                landed = "in flight, " + ("committed" if rows > len(acked_refs) else "rolled back")
                if rows > len(acked_refs):
                    assert flight["ref"] in held, (flight, held)
        elif kind == "purge":
            receipts = vault.list_receipts()
            try:
                vault.show_client("acme")
                present = True
            except NotFound:
                present = False
            if present:
                assert not out.acked and receipts == [], "acknowledged purge, yet the client is there"
                for ref, password in template.values.items():
                    if ref.startswith("acme/"):
                        assert vault.reveal(ref, reason=REASON) == password, ref
                assert len(vault.list_secrets("acme")) == 8
                landed = ("in flight, " if flight else "") + "before"
            else:
                assert len(receipts) == 1, receipts
                check = vault.verify_receipt(receipts[0].id)
                assert check.ok, check.problems
                if out.acked:
                    assert out.acked[0]["receipt"] == receipts[0].id
                assert _purged_rows(vault, receipts[0].client_id) == {}
                for ref in template.values:
                    if ref.startswith("acme/"):
                        with pytest.raises(NotFound):
                            vault.reveal(ref, reason=REASON)
                landed = ("in flight, " if flight else "") + "after"
        _chain_is_whole(vault)  # the reads above appended events: the chain still verifies
    finally:
        vault.close()
    return landed


# -- 1. a killed client -----------------------------------------------------------------------------


def _kill_runs(kind: str, runs: int, cluster: PgCluster, template: Template, worker: Worker) -> Counter[str]:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    calibration = _fresh(cluster, template)
    measured = worker.run(cluster.url(calibration), kind, "cal", None)
    assert measured.code == 0 and measured.duration is not None
    assert len(measured.acked) == COUNTS[kind]
    assert _check(cluster.url(calibration, **BOUNDED), template, kind, measured) in ("all acked", "after")
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
            # The next write from a new client: lock_timeout turns any wait into an error.
            started = time.monotonic()
            after = _open(cluster.url(database, **BOUNDED))
            try:
                after.add_secret(f"globex/after-kill-{run}", password="after ✓")
                assert after.reveal(f"globex/after-kill-{run}", reason=REASON) == "after ✓"
            finally:
                after.close()
            assert time.monotonic() - started < SETTLE_SECONDS
            outcomes[_check(cluster.url(database, **BOUNDED), template, kind, out)] += 1
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
        vault = _open(cluster.url(database))
        try:
            assert len(vault.list_secrets("acme")) == 8
            out = Outcome(0, None, [], [])
            _batch(vault, kind, "cal", out)
            assert out.error is None, repr(out.error)
            assert out.duration is not None and len(out.acked) == COUNTS[kind]
        finally:
            vault.close()
        assert _check(cluster.url(database, **BOUNDED), template, kind, out) in ("all acked", "after")
        _calibrated[kind] = out.duration / COUNTS[kind]
    return _calibrated[kind]


def _retry_in_flight(vault: Vault, kind: str, flight: dict[str, Any], landed: str, template: Template) -> None:
    """The caller's natural reaction to the error: the same call again, on the same Vault object."""
    committed = landed.endswith(("committed", "after"))
    if kind == "add":
        if committed:
            with pytest.raises(AlreadyExists):
                vault.add_secret(flight["ref"], password=flight["password"], username="again")
        else:
            vault.add_secret(flight["ref"], password=flight["password"], username="again")
        assert vault.reveal(flight["ref"], reason=REASON) == flight["password"]
    elif kind == "update":
        before = len(vault.secret_history(flight["ref"]))
        vault.update_secret(flight["ref"], password=flight["password"])
        assert vault.reveal(flight["ref"], reason=REASON) == flight["password"]
        assert len(vault.secret_history(flight["ref"])) == before + 1
    elif kind == "grant":
        vault.grant(flight["engineer"], "acme", reason="T-again")
        active = [
            g for g in vault.list_grants(client="acme") if g.engineer == flight["engineer"] and g.state == "active"
        ]
        assert len(active) == 1, active
        _nothing_half_applied(vault)
    elif kind == "checkout":
        assert vault.checkout(flight["ref"], reason=REASON).value == template.values[flight["ref"]]
    elif kind == "purge":
        if committed:
            with pytest.raises(NotFound):
                vault.purge_client("acme", request="REQ-again")
        else:
            receipt = vault.purge_client("acme", request="REQ-again")
            assert vault.verify_receipt(receipt.id).ok
            assert _purged_rows(vault, receipt.client_id) == {}
        with pytest.raises(NotFound):
            vault.reveal("acme/s00", reason=REASON)


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
    vault = _open(url)  # long-lived: it must outlive the server's crash
    context = f"{kind} stop {run}"
    try:
        assert len(vault.list_secrets("acme")) == 8  # its pool now holds a connection to the old server
        out = Outcome(0, None, [], [])
        runner = threading.Thread(target=_batch, args=(vault, kind, f"stop{run}", out), daemon=True)
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
            vault.add_secret(f"globex/while-down-{run}", password="never ✓")
        with pytest.raises(AuditUnavailable):
            vault.reveal("globex/s00", reason=REASON)
        assert time.monotonic() - started < 30, context
        _cli_while_down(url, passphrase_file, home)

        cluster.start(attempts=1)  # same port: the long-lived Vault keeps its URL
        assert _recoveries(cluster) == crashes + 1, "the restart did not run crash recovery"
        # The same Vault object works again: its dead pooled connections are replaced.
        started = time.monotonic()
        vault.add_secret(f"globex/after-restart-{run}", password=f"after restart {run} ✓")
        assert vault.reveal(f"globex/after-restart-{run}", reason=REASON) == f"after restart {run} ✓"
        assert time.monotonic() - started < 30, context
        with pytest.raises(NotFound):
            vault.reveal(f"globex/while-down-{run}", reason=REASON)
        landed = _check(cluster.url(database, **BOUNDED), template, kind, out)
        amcheck = _amcheck(cluster, database)
        if out.in_flight is not None:
            _retry_in_flight(vault, kind, out.in_flight, landed, template)
            _nothing_half_applied(vault)
            _chain_is_whole(vault)
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
