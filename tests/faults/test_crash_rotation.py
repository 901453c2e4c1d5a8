"""Crash injection (issue 4): SIGKILL a key rotation at a random point, then recover.

A worker process (``_worker.py``, run with ``sys.executable``) forks one child per run;
the child opens a copy of a prepared SQLite vault, unlocks the admin from a passphrase
file and runs one operation: a client-key rotation in batches of three over 60 secrets,
a root rotation, an engineer removal (batches of three), or an engineer-key rotation.
The test SIGKILLs the child after a delay drawn uniformly over the operation's measured
duration. After every kill the vault is reopened and must be whole: ``PRAGMA
integrity_check`` is ok, every secret reveals the value written, the audit chain
verifies, and ``resume_rotations`` finishes every rotation left running.

The short runs (8 per kind, engineer-key rotation excepted) are in the default suite;
``-m slow`` runs 50 of each of the four kinds.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _invariants import (
    ADMIN,
    ADMIN_PASS,
    REASON,
    Outcome,
    WorkerProcess,
    add_clients,
    open_vault,
    write_passphrase_file,
)
from sqlalchemy import select

from vault import Vault
from vault.crypto.keyrecord import FLOOR
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m

WORKER = Path(__file__).with_name("_worker.py")
KINDS = ("client", "root", "remove", "engineer")
SHORT_KINDS = ("client", "root", "remove")  # an engineer-key rotation is one transaction: -m slow only
SHORT_RUNS, LONG_RUNS = 8, 50


# -- the vaults each kind of run starts from ----------------------------------------------------------


@dataclass
class Template:
    path: Path
    values: dict[str, str]  # ref -> password written


def _build(path: Path, kind: str) -> Template:
    admin, _ = Vault.create(f"sqlite:///{path}", admin=ADMIN, passphrase=ADMIN_PASS, kdf_params=FLOOR)
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    sizes = {"client": {"acme": 60}, "remove": {"acme": 9, "globex": 9, "initech": 2}}.get(
        kind, {"acme": 3, "globex": 3, "initech": 3}
    )
    values = add_clients(admin, sizes)
    if kind != "client":
        code = admin.engineers.invite("alice")
        alice = Vault.open(admin.store.url, engineer="alice", sessions=MemorySessionStore(), kdf_params=FLOOR)
        admin.engineers.confirm("alice", alice.engineers.enroll("alice", code, "alice passphrase"))
        alice.engineers.unlock("alice", "alice passphrase")
        for slug in ("acme", "globex"):
            admin.grants.grant("alice", slug)
            alice.checkouts.reveal(f"{slug}/s01", reason=REASON)
        alice.close()
    admin.close()
    return Template(path, values)


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Template]]:
    base = tmp_path_factory.mktemp("templates")
    built: dict[str, Template] = {}

    class Lazy(dict):  # type: ignore[type-arg]
        def __missing__(self, kind: str) -> Template:
            built[kind] = _build(base / f"{kind}.db", kind)
            return built[kind]

    yield Lazy()


# -- the worker -------------------------------------------------------------------------------------


class Worker(WorkerProcess):
    """The process that forks the children the test kills."""

    def run(self, db: Path, kind: str, kill_after: float | None) -> tuple[int, float | None]:
        """Run ``kind`` on ``db``; SIGKILL it ``kill_after`` seconds after it is ready.

        Returns (exit code, -9 when killed; seconds the operation took, if it finished).
        """
        pid = self.start(db=str(db), kind=kind, engineer=ADMIN, batch=3)
        if kill_after is not None:
            self.kill(pid, kill_after)
        out = self.reap(pid, Outcome())
        return out.code, out.duration


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    w = Worker(WORKER, write_passphrase_file(tmp_path_factory.mktemp("worker")))
    yield w
    w.close()


# -- after a crash ----------------------------------------------------------------------------------


def _integrity(path: Path) -> list[tuple[str]]:
    con = sqlite3.connect(path)
    try:
        return con.execute("PRAGMA integrity_check").fetchall()
    finally:
        con.close()


def _recover(path: Path, template: Template, kind: str) -> str:
    """Check the vault after a crash and resume; returns where the crash landed."""
    assert _integrity(path) == [("ok",)]
    vault = open_vault(f"sqlite:///{path}")
    try:
        for ref, password in template.values.items():
            assert vault.checkouts.reveal(ref, reason=REASON) == password, ref
        assert vault.audit.verify().ok
        running = vault.keys.list(running_only=True)
        with vault.store.transaction() as s:
            root = max(s.scalars(select(m.RootKey.version)))
            alice = s.scalars(select(m.Engineer.status).where(m.Engineer.name == "alice")).first()
            current = {c.id: c.current_key_version for c in s.scalars(select(m.Client))}
        finished = vault.keys.resume(batch_size=7)
        assert [(r.client, r.state) for r in finished] == [(r.client, "done") for r in running]
        assert vault.keys.list(running_only=True) == []
        with vault.store.transaction() as s:
            for client_id, version in current.items():
                states = {
                    v: state
                    for v, state in s.execute(
                        select(m.ClientKey.version, m.ClientKey.state).where(m.ClientKey.client_id == client_id)
                    )
                }
                assert states[version] == "active"
                assert all(state == "destroyed" for v, state in states.items() if v != version), states
                used = set(
                    s.scalars(
                        select(m.SecretVersion.key_version).join(m.Secret).where(m.Secret.client_id == client_id)
                    )
                )
                assert used <= {version}
            roots = {v: state for v, state in s.execute(select(m.RootKey.version, m.RootKey.state))}
            assert roots[max(roots)] == "active"
            assert sorted(roots.values()) == ["active"] + ["destroyed"] * (len(roots) - 1)
        first, last = next(iter(template.values)), list(template.values)[-1]
        assert vault.checkouts.reveal(first, reason=REASON) == template.values[first]
        assert vault.checkouts.reveal(last, reason=REASON) == template.values[last]
        assert vault.audit.verify().ok
    finally:
        vault.close()
    assert _integrity(path) == [("ok",)]
    if running:
        return "mid-rotation"
    if kind == "remove" and alice == "disabled" and set(current.values()) == {1}:
        # killed between the removal's first transaction and its key rotations: nothing
        # resumes it (see test_an_interrupted_removal_is_finished_by_resume, an xfail)
        return "removed, keys not rotated"
    changed = {
        "client": any(v > 1 for v in current.values()),
        "root": root > 1,
        "remove": alice == "disabled",
        "engineer": alice == "invited",
    }[kind]
    return "after" if changed else "before"


def _crash_runs(kind: str, runs: int, templates: dict[str, Template], worker: Worker, tmp_path: Path) -> Counter[str]:
    template = templates[kind]
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    calibration = tmp_path / "calibration.db"
    shutil.copy(template.path, calibration)
    code, duration = worker.run(calibration, kind, None)
    assert code == 0 and duration is not None
    assert _recover(calibration, template, kind) == "after"
    outcomes: Counter[str] = Counter()
    for run in range(runs):
        db = tmp_path / f"run{run}.db"
        shutil.copy(template.path, db)
        delay = rng.uniform(0, duration)
        code, _ = worker.run(db, kind, delay)
        outcomes["killed" if code == -signal.SIGKILL else f"exit {code}"] += 1
        try:
            outcomes[_recover(db, template, kind)] += 1
        except AssertionError as error:
            raise AssertionError(f"{kind} run {run} (seed {seed}, killed {delay:.4f}s in): {error}") from error
        db.unlink()
        for suffix in ("-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    assert outcomes["killed"] >= 1, (seed, duration, outcomes)
    known = {"killed", "exit 0", "before", "mid-rotation", "after", "removed, keys not rotated"}
    assert set(outcomes) <= known, outcomes
    print(f"{kind}: {duration * 1000:.0f} ms per run, seed {seed}, {dict(outcomes)}")
    return outcomes


@pytest.mark.parametrize("kind", SHORT_KINDS)
def test_a_killed_rotation_leaves_a_whole_vault_that_resume_finishes(kind, templates, worker, tmp_path):
    _crash_runs(kind, SHORT_RUNS, templates, worker, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_many_killed_rotations_leave_whole_vaults(kind, templates, worker, tmp_path, request):
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("a long crash run: `-m slow` runs it")
    outcomes = _crash_runs(kind, LONG_RUNS, templates, worker, tmp_path)
    if kind in ("client", "remove"):
        assert outcomes["mid-rotation"] >= 1, outcomes  # some kills landed between batches
    assert outcomes["killed"] >= LONG_RUNS // 2, outcomes
