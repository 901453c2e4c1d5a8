"""Concurrent writers (issue 3): the chain never forks, and one exclusive checkout wins.

Appends come from separate processes, each with its own ``Vault.open`` (its own
engine and connections), started together. The exclusive-checkout race uses threads,
each with its own Vault and therefore its own connection, released by a barrier.
Every test runs on SQLite and PostgreSQL (the ``team`` fixture).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from vault import Vault
from vault.errors import CheckoutConflict, StoreBusy
from vault.service.holds import Holds
from vault.storage import models as m

REF, PW = "acme/fw01", "acme-pw-1"
REPO = Path(__file__).resolve().parents[2]

# One writer process: unlock, say it is ready, wait for the start signal, then append.
# SQLite gives up on a write lock after its busy timeout (10 s); on a loaded machine a
# writer can lose that many times in a row and is refused with the documented "busy"
# error. Such a refusal must leave no event, so the writer counts it apart.
WORKER = r"""
import json, pathlib, sys, time
from vault import Vault
from vault.crypto.keyrecord import FLOOR
from vault.errors import AuditUnavailable, StoreUnavailable

job = json.loads(sys.argv[1])
done = {"busy": 0}


def attempt(kind, call):
    try:
        call()
    except (AuditUnavailable, StoreUnavailable) as error:
        if "busy" not in str(error):
            raise
        done["busy"] += 1
        return False
    done[kind] = done.get(kind, 0) + 1
    return True


def check(value):
    assert value == job["expect"]


vault = Vault.open(job["url"], engineer=job["name"], kdf_params=FLOOR)
while not attempt("unlock", lambda: vault.engineers.unlock(job["name"], job["passphrase"])):
    assert done["busy"] < 5, "could not unlock"
pathlib.Path(job["ready"]).touch()
go, deadline = pathlib.Path(job["go"]), time.monotonic() + 120
while not go.exists():
    if time.monotonic() > deadline:
        raise SystemExit("no start signal")
    time.sleep(0.002)
for i in range(job["ops"]):
    reason = f"T-{job['index']}-{i}"
    kind = ("checkout", "secret-view", "reveal")[i % 3]
    if kind == "checkout":
        attempt(kind, lambda: check(vault.checkouts.checkout(job["ref"], reason=reason).value))
    elif kind == "secret-view":
        attempt(kind, lambda: vault.secrets.show(job["ref"]))
    else:
        attempt(kind, lambda: check(vault.checkouts.reveal(job["ref"], reason=reason)))
vault.close()
print(json.dumps({"name": job["name"], "done": done}))
"""


# -- helpers ------------------------------------------------------------------------------------


def _acme(team, engineers: list[str]) -> list[Vault]:  # type: ignore[no-untyped-def]
    team.admin.clients.add("acme", "Acme Ltd")
    team.admin.secrets.add(REF, password=PW, kind="equipment")
    vaults = []
    for name in engineers:
        vaults.append(team.engineer(name))
        team.admin.grants.grant(name, "acme")
    return vaults


def _run_writers(team, tmp_path: Path, names: list[str], ops: int) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    go = tmp_path / "go"
    procs, ready = [], []
    for index, name in enumerate(names):
        ready.append(tmp_path / f"ready-{index}")
        job = {
            "url": team.url,
            "name": name,
            "passphrase": team.passphrases[name],
            "ref": REF,
            "expect": PW,
            "ops": ops,
            "index": index,
            "ready": str(ready[-1]),
            "go": str(go),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER, json.dumps(job)],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    try:
        deadline = time.monotonic() + 120
        while not all(path.exists() for path in ready):
            failed = [p for p in procs if p.poll() not in (None, 0)]
            assert not failed, failed[0].communicate()[1].decode()
            assert time.monotonic() < deadline, "the writers did not get ready"
            time.sleep(0.01)
        go.touch()  # all of them start appending at once
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err.decode()
            results.append(json.loads(out))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _events(team) -> list[m.AuditEvent]:  # type: ignore[no-untyped-def]
    with team.admin.store.transaction() as s:
        rows = list(s.scalars(select(m.AuditEvent).order_by(m.AuditEvent.seq)))
        s.expunge_all()
        return rows


def _open_checkouts(team) -> list[tuple[int, bool]]:  # type: ignore[no-untyped-def]
    with team.admin.store.transaction() as s:
        return [
            (row.engineer_id, row.exclusive)
            for row in s.scalars(select(m.Checkout).where(m.Checkout.released_at.is_(None)))
        ]


def _assert_one_contiguous_chain(team, expected_events: int) -> list[m.AuditEvent]:  # type: ignore[no-untyped-def]
    events = _events(team)
    assert [e.seq for e in events] == list(range(1, expected_events + 1))
    assert all(later.prev_hash == earlier.hash for earlier, later in itertools.pairwise(events))
    assert team.admin.audit.head() == (expected_events, events[-1].hash)
    result = team.admin.audit.verify()
    assert result.ok, result.problem
    assert (result.checked, result.head_seq) == (expected_events, expected_events)
    return events


def _concurrent_appends(team, tmp_path: Path, processes: int, ops: int) -> None:  # type: ignore[no-untyped-def]
    engineers = [f"eng{i}" for i in range(processes // 2)]
    _acme(team, engineers)
    before = team.admin.audit.head()[0]
    names = [engineers[i % len(engineers)] for i in range(processes)]  # two writers per engineer
    reports = _run_writers(team, tmp_path, names, ops)

    appended: Counter[str] = Counter()
    for report in reports:
        appended.update(report["done"])
    busy = appended.pop("busy")
    if team.url.startswith("postgresql"):
        assert busy == 0  # row locks wait: nothing is ever refused
    assert busy <= processes * ops // 4, f"{busy} writes timed out"
    assert appended["unlock"] == processes
    events = _assert_one_contiguous_chain(team, before + sum(appended.values()))
    assert Counter(e.action for e in events[before:]) == appended  # refused writes left nothing
    if busy == 0:
        assert len(events) == before + processes * (1 + ops)
    # every engineer's events are there, signed as that engineer
    ids = {e.engineer_id for e in events[before:]}
    assert len(ids) == len(engineers)
    # each engineer's newest checkout replaced their older one: exactly one open each
    holders = {r["name"] for r in reports if r["done"].get("checkout")}
    open_by = sorted(engineer for engineer, _ in _open_checkouts(team))
    assert len(open_by) == len(set(open_by)) == len(holders)
    # and the admin can read the details of every one of them
    assert all(e.readable for e in team.admin.audit.log() if e.client_id is not None)


# -- concurrent appends ------------------------------------------------------------------------------


def test_concurrent_appends_from_eight_processes_keep_one_contiguous_chain(team, tmp_path):
    _concurrent_appends(team, tmp_path, processes=8, ops=6)  # ~8 s: mostly starting 8 interpreters


@pytest.mark.slow
def test_many_concurrent_appends_keep_one_contiguous_chain(team, tmp_path):
    _concurrent_appends(team, tmp_path, processes=8, ops=45)


# -- the exclusive-checkout race ----------------------------------------------------------------------


@pytest.fixture
def wide_race_window(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Hold each checkout for 50 ms between finding the open holds and writing its own.

    Without the lock on the secret's row, every racer would find no holder in that
    window and all of them would win; with it, the others wait and then see the winner.
    """
    real = Holds.lock_and_find_holds

    def slow(self, s, secret):  # type: ignore[no-untyped-def]
        held = real(self, s, secret)
        time.sleep(0.05)
        return held

    monkeypatch.setattr(Holds, "lock_and_find_holds", slow)


def _race(team, vaults: list[Vault], rounds: int) -> None:  # type: ignore[no-untyped-def]
    names = [v.engineer_name for v in vaults]
    for round_ in range(rounds):
        barrier = threading.Barrier(len(vaults))
        results: list[tuple[str, Any]] = [("none", None)] * len(vaults)

        def run(
            i: int, round_: int = round_, barrier: threading.Barrier = barrier, results: list[tuple[str, Any]] = results
        ) -> None:
            barrier.wait(timeout=60)
            try:
                results[i] = ("won", vaults[i].checkouts.checkout(REF, reason=f"T-race-{round_}-{i}").value)
            except CheckoutConflict as conflict:
                results[i] = ("lost", str(conflict))
            except Exception as error:  # reported below
                results[i] = ("error", repr(error))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(vaults))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        winners = [i for i, (outcome, _) in enumerate(results) if outcome == "won"]
        assert len(winners) == 1, results
        assert sorted(outcome for outcome, _ in results) == ["lost"] * (len(vaults) - 1) + ["won"], results
        winner = winners[0]
        assert results[winner][1] == PW
        assert all(str(names[winner]) in message for outcome, message in results if outcome == "lost")
        assert len(_open_checkouts(team)) == 1
        assert vaults[winner].checkouts.list()[0].engineer == names[winner]
        vaults[winner].checkouts.checkin(REF)
        assert _open_checkouts(team) == []


def _race_setup(team, n: int) -> list[Vault]:  # type: ignore[no-untyped-def]
    vaults = _acme(team, [f"racer{i}" for i in range(n)])
    team.admin.policies.set("acme", exclusive=True)
    return vaults


def test_of_six_engineers_racing_for_an_exclusive_checkout_exactly_one_wins(team, wide_race_window):
    vaults = _race_setup(team, 6)
    before = team.admin.audit.head()[0]
    _race(team, vaults, rounds=5)
    events = _assert_one_contiguous_chain(team, team.admin.audit.head()[0])
    assert Counter(e.action for e in events[before:]) == Counter({"checkout": 5, "checkin": 5})  # losers leave nothing


def test_the_exclusive_checkout_race_without_a_widened_window(team):
    vaults = _race_setup(team, 8)
    _race(team, vaults, rounds=8)
    _assert_one_contiguous_chain(team, team.admin.audit.head()[0])


# -- other state written by concurrent writers --------------------------------------------------------


def test_concurrent_new_versions_count_every_use_of_the_client_key(team):
    team.admin.clients.add("acme", "Acme Ltd")
    refs = [f"acme/s{i}" for i in range(4)]
    for ref in refs:
        team.admin.secrets.add(ref, password="v0-password")

    def encryptions() -> int:
        with team.admin.store.transaction() as s:
            return int(s.scalar(select(func.sum(m.ClientKey.encryptions))))

    start = encryptions()
    writers = [
        Vault.open(team.url, engineer="root-admin", sessions=team.admin.sessions, clock=team.clock) for _ in refs
    ]
    barrier = threading.Barrier(len(refs))
    errors: list[BaseException] = []
    busy: list[str] = []

    def write(vault: Vault, ref: str) -> None:
        barrier.wait(timeout=60)
        try:
            for k in range(5):
                for _attempt in range(3):  # on a loaded machine a writer can wait out SQLite's busy timeout
                    try:
                        vault.secrets.update(ref, password=f"v{k + 1}-password")
                        break
                    except StoreBusy:  # documented: nothing was changed, so the user tries again
                        busy.append(ref)
                else:
                    raise AssertionError(f"{ref}: busy three times in a row")
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=write, args=pair) for pair in zip(writers, refs, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for vault in writers:
        vault.close()
    assert errors == []
    assert [team.admin.checkouts.reveal(ref, reason="T-check") for ref in refs] == ["v5-password"] * 4
    # one wrapped data key per new version: a busy refusal (retried above) counted none
    assert encryptions() - start == 4 * 5, f"busy refusals: {len(busy)}"
