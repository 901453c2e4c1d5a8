"""Crash injection (issue 6): SIGKILL add, update, grant, checkout and purge at random points.

A worker process (``_ops_worker.py``) forks one child per run; the child opens a copy of
a prepared SQLite vault (clients acme with 8 secrets and globex with 3, engineers
eng0..eng5 enrolled but without grants) and runs a batch of one kind of operation,
saying ``try`` before each call and ``ack`` after it returns. The test SIGKILLs the
child after a delay drawn uniformly over the batch's measured duration, then checks:

* ``PRAGMA integrity_check`` is ok, the audit chain verifies, its sequence numbers are
  contiguous and its head is the last event (before and after the checks' reads);
* every acknowledged write is there with its exact value (secret, version, grant,
  checkout, purge);
* the one write in flight is either wholly there or wholly absent;
* nothing is half-applied anywhere: every secret has its current version, every live
  grant its signature and a sealed key copy per live client-key version, every
  checkout its audit event; a purged client is wholly gone (no row of it left) and its
  receipt verifies.

The checks are ``_invariants.check_batch``, shared with ``test_pg_faults.py``.
Five runs per kind are in the default suite; ``-m slow`` runs 40 of each.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from _invariants import COUNTS, KINDS, Outcome, WorkerProcess, check_batch, seed_vault, write_passphrase_file

WORKER = Path(__file__).with_name("_ops_worker.py")
SHORT_RUNS, LONG_RUNS = 5, 40


# -- the vault every run starts from ------------------------------------------------------------------


@dataclass
class Template:
    path: Path
    values: dict[str, str]  # ref -> password written
    passphrases: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    path = tmp_path_factory.mktemp("ops-template") / "vault.db"
    return Template(path, *seed_vault(f"sqlite:///{path}"))


# -- the worker -------------------------------------------------------------------------------------


class Worker(WorkerProcess):
    def run(self, db: Path, kind: str, tag: str, kill_after: float | None) -> Outcome:
        pid = self.start(db=str(db), kind=kind, count=COUNTS[kind], tag=tag)
        if kill_after is not None:
            self.kill(pid, kill_after)
        return self.reap(pid, Outcome())


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    w = Worker(WORKER, write_passphrase_file(tmp_path_factory.mktemp("ops-worker")))
    yield w
    w.close()


# -- after a crash ----------------------------------------------------------------------------------


def _integrity(path: Path) -> list[tuple[str]]:
    con = sqlite3.connect(path)
    try:
        return con.execute("PRAGMA integrity_check").fetchall()
    finally:
        con.close()


def _check(path: Path, template: Template, kind: str, out: Outcome) -> str:
    """Check the vault after a run (``_invariants.check_batch`` and SQLite's integrity check, before and after);
    returns where the kill landed."""
    assert _integrity(path) == [("ok",)]
    landed = check_batch(f"sqlite:///{path}", template, kind, out)
    assert _integrity(path) == [("ok",)]
    return landed


def _crash_runs(kind: str, runs: int, template: Template, worker: Worker, tmp_path: Path) -> Counter[str]:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    calibration = tmp_path / "calibration.db"
    shutil.copy(template.path, calibration)
    measured = worker.run(calibration, kind, "cal", None)
    assert measured.code == 0 and measured.duration is not None
    assert len(measured.acked) == COUNTS[kind]
    assert _check(calibration, template, kind, measured) in ("all acked", "after")
    outcomes: Counter[str] = Counter()
    for run in range(runs):
        db = tmp_path / f"run{run}.db"
        shutil.copy(template.path, db)
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
