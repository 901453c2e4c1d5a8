"""Crash injection (issue 6): SIGKILL add, update, grant, checkout and purge at random points.

A worker process (``_ops_worker.py``) forks one child per run; the child opens a copy of
a prepared SQLite vault (clients acme with 8 secrets and globex with 3, engineers
eng0..eng5 enrolled but without grants) and runs a batch of one kind of operation,
saying ``try`` before each call and ``ack`` after it returns. The test SIGKILLs the
child after a delay drawn uniformly over the batch's measured duration, then checks:

* ``PRAGMA integrity_check`` is ok and the audit chain verifies;
* every acknowledged write is there with its exact value (secret, version, grant,
  checkout, purge);
* the one write in flight is either wholly there or wholly absent;
* nothing is half-applied anywhere: every secret has its current version, every live
  grant its signature and a sealed key copy per live client-key version, every
  checkout its audit event; a purged client is wholly gone and its receipt verifies.

Five runs per kind are in the default suite; ``-m slow`` runs 40 of each.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from vault import Vault
from vault.crypto.keyrecord import FLOOR
from vault.errors import AccessDenied, NotFound
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m

ADMIN, ADMIN_PASS = "root-admin", "admin passphrase ✓"
REASON = "T-1 crash test"
WORKER = Path(__file__).with_name("_ops_worker.py")
REPO = Path(__file__).resolve().parents[2]
KINDS = ("add", "update", "grant", "checkout", "purge")
COUNTS = {"add": 6, "update": 8, "grant": 6, "checkout": 8, "purge": 1}
ENGINEERS = 6
SHORT_RUNS, LONG_RUNS = 5, 40


# -- the vault every run starts from ------------------------------------------------------------------


@dataclass
class Template:
    path: Path
    values: dict[str, str]  # ref -> password written
    passphrases: dict[str, str] = field(default_factory=dict)


def _open(path: Path, name: str = ADMIN, passphrase: str = ADMIN_PASS) -> Vault:
    vault = Vault.open(f"sqlite:///{path}", engineer=name, sessions=MemorySessionStore(), kdf_params=FLOOR)
    vault.unlock(name, passphrase)
    return vault


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    path = tmp_path_factory.mktemp("ops-template") / "vault.db"
    admin, _ = Vault.create(f"sqlite:///{path}", admin=ADMIN, passphrase=ADMIN_PASS, kdf_params=FLOOR)
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
        mine = Vault.open(admin.store.url, engineer=name, sessions=MemorySessionStore(), kdf_params=FLOOR)
        admin.confirm_engineer(name, mine.enroll_engineer(name, code, f"pass of {name}"))
        mine.close()
        passphrases[name] = f"pass of {name}"
    admin.close()
    return Template(path, values, passphrases)


# -- the worker -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    code: int  # -9 when killed
    duration: float | None  # seconds, if the batch finished
    tried: list[dict[str, Any]]
    acked: list[dict[str, Any]]

    @property
    def in_flight(self) -> dict[str, Any] | None:
        """The call that was running when the child died (tried, never acknowledged)."""
        return self.tried[-1] if len(self.tried) > len(self.acked) else None


class Worker:
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

    def run(self, db: Path, kind: str, tag: str, kill_after: float | None) -> Outcome:
        self._send(
            op="run", db=str(db), kind=kind, passphrase_file=str(self.passphrase_file), count=COUNTS[kind], tag=tag
        )
        word, pid_text, *rest = self._line().split(" ", 2)
        if word == "error":
            raise AssertionError(f"the worker failed before it was ready: {rest}")
        assert word == "ready", word
        pid = int(pid_text)
        if kill_after is not None:
            time.sleep(kill_after)
            os.kill(pid, signal.SIGKILL)  # not reaped yet: the PID is still this child's
        self._send(op="reap", pid=pid)
        outcome = Outcome(0, None, [], [])
        while True:
            word, *rest = self._line().split(" ", 2)
            if word == "try":
                outcome.tried.append(json.loads(rest[1]))
            elif word == "ack":
                outcome.acked.append(json.loads(rest[1]))
            elif word == "done":
                outcome.duration = float(rest[1])
            elif word == "error":
                raise AssertionError(f"the operation failed (not a crash): {rest[1]}")
            elif word == "reaped":
                outcome.code = int(rest[1])
                return outcome

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    secret = tmp_path_factory.mktemp("ops-worker") / "passphrase"
    secret.write_text(ADMIN_PASS, encoding="utf-8")
    secret.chmod(0o600)
    w = Worker(secret)
    yield w
    w.close()


# -- after a crash ----------------------------------------------------------------------------------


def _integrity(path: Path) -> list[tuple[str]]:
    con = sqlite3.connect(path)
    try:
        return con.execute("PRAGMA integrity_check").fetchall()
    finally:
        con.close()


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


def _check(path: Path, template: Template, kind: str, out: Outcome) -> str:
    """Check the vault after a run; returns where the kill landed."""
    assert _integrity(path) == [("ok",)]
    vault = _open(path)
    try:
        result = vault.verify_audit()
        assert result.ok, result.problem
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
                mine = _open(path, name, template.passphrases[name])
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
            held = {f"{c.client}/{c.secret}" for c in vault.list_checkouts() if c.engineer == ADMIN}
            acked_refs = [item["ref"] for item in out.acked]
            assert set(acked_refs) <= held, (acked_refs, held)
            with vault.store.transaction() as s:
                rows = s.scalar(select(func.count()).select_from(m.Checkout)) or 0
            assert rows in (len(acked_refs), len(acked_refs) + (1 if flight else 0)), (rows, acked_refs, flight)
            if flight:
                landed = "in flight, " + ("committed" if rows > len(acked_refs) else "rolled back")
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
                landed = "before"
            else:
                assert len(receipts) == 1, receipts
                check = vault.verify_receipt(receipts[0].id)
                assert check.ok, check.problems
                if out.acked:
                    assert out.acked[0]["receipt"] == receipts[0].id
                for ref in template.values:
                    if ref.startswith("acme/"):
                        with pytest.raises(NotFound):
                            vault.reveal(ref, reason=REASON)
                landed = "after"
    finally:
        vault.close()
    assert _integrity(path) == [("ok",)]
    return landed


def _crash_runs(kind: str, runs: int, template: Template, worker: Worker, tmp_path: Path) -> Counter[str]:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    calibration = tmp_path / "calibration.db"
    shutil.copyfile(template.path, calibration)
    measured = worker.run(calibration, kind, "cal", None)
    assert measured.code == 0 and measured.duration is not None
    assert len(measured.acked) == COUNTS[kind]
    assert _check(calibration, template, kind, measured) in ("all acked", "after")
    outcomes: Counter[str] = Counter()
    for run in range(runs):
        db = tmp_path / f"run{run}.db"
        shutil.copyfile(template.path, db)
        delay = rng.uniform(0, measured.duration)
        out = worker.run(db, kind, str(run), delay)
        outcomes["killed" if out.code == -signal.SIGKILL else f"exit {out.code}"] += 1
        try:
            outcomes[_check(db, template, kind, out)] += 1
        except AssertionError as error:
            raise AssertionError(
                f"{kind} run {run} (seed {seed}, killed {delay:.4f}s in, acked {len(out.acked)}): {error}"
            ) from error
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    assert outcomes["killed"] >= 1, (seed, measured.duration, outcomes)
    print(f"{kind}: {measured.duration * 1000:.0f} ms per batch, seed {seed}, {dict(outcomes)}")
    return outcomes


@pytest.mark.parametrize("kind", KINDS)
def test_a_killed_operation_leaves_every_acknowledged_write_and_nothing_half_applied(kind, template, worker, tmp_path):
    _crash_runs(kind, SHORT_RUNS, template, worker, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_many_killed_operations_leave_whole_vaults(kind, template, worker, tmp_path):
    outcomes = _crash_runs(kind, LONG_RUNS, template, worker, tmp_path)
    assert outcomes["killed"] >= LONG_RUNS // 2, outcomes
