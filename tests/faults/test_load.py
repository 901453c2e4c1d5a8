"""Load on PostgreSQL (issue 6): N engineers in separate processes, for a bounded time.

Each worker (``_load_worker.py``) opens its own ``Vault`` as its own engineer and loops
over checkouts with a reason (and check-ins), plain reveals and updates; admin workers
also grant and revoke spare engineers. Clients ``acme`` and ``initech`` have the default
policy, ``globex`` is exclusive (so checkouts and updates meet ``CheckoutConflict``).
Every call that returns is acknowledged in a file with what it wrote or read. Then:

* every acknowledged operation has exactly its audit event, in the worker's own order,
  signed as its engineer, and refused operations left none;
* every acknowledged update is a distinct version, the versions of each secret are
  contiguous, the last acknowledged write is the current value and every retained
  version decrypts to the value acknowledged for it;
* every checkout and reveal returned a value some acknowledged write stored (for a
  checkout: exactly the value of the version it names);
* grants and revokes end in the state the acknowledgements imply, and every live grant
  has its sealed key copy for every live client-key version;
* audit sequence numbers are contiguous and ``verify_audit`` passes;
* no worker met an unexpected exception; retries (``Vault.retries``) are reported.

Refusals counted, not failed: ``CheckoutConflict`` (exclusive client) and ``NotFound`` (a
revoke that another admin's revoke beat). Two writers of one new row on PostgreSQL (the
next version of a secret) used to refuse one of them; the loser is now retried as a
``ConcurrentChange`` (``tests/service/test_retry.py``), so any refusal is a failure.

The default run is 6 workers for 8 s; ``-m slow`` runs 32 workers for 60 s. Throughput
and retries are printed (``pytest -s`` shows them). The test needs PostgreSQL: it is
skipped without a server, and fails with CREDVAULT_REQUIRE_PG=1 (``db_url``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from vault import Vault
from vault.crypto.keyrecord import FLOOR
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m

ADMIN, ADMIN_PASS = "root-admin", "admin passphrase ✓"
REASON = "T-0 load check"
WORKER = Path(__file__).with_name("_load_worker.py")
REPO = Path(__file__).resolve().parents[2]
CLIENTS = {"acme": (4, False), "globex": (3, True), "initech": (3, False)}  # slug -> (secrets, exclusive)
SPARES = 3
ACTION = {
    "unlock": "unlock",
    "checkout": "checkout",
    "checkin": "checkin",
    "reveal": "reveal",
    "update": "secret-update",
    "grant": "grant",
    "revoke": "revoke",
}

pytestmark = pytest.mark.parametrize("db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)


def _initial(ref: str) -> str:
    return f"initial value of {ref} ✓"


def _setup(url: str, workers: int) -> tuple[Vault, list[dict[str, Any]]]:
    """The vault, its clients and secrets, and one job per worker (admins first)."""
    admin, _ = Vault.create(url, admin=ADMIN, passphrase=ADMIN_PASS, kdf_params=FLOOR)
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    refs: dict[str, bool] = {}
    for slug, (count, exclusive) in CLIENTS.items():
        admin.clients.add(slug, slug.title())
        if exclusive:
            admin.policies.set(slug, exclusive=True)
        for i in range(count):
            ref = f"{slug}/s{i}"
            admin.secrets.add(ref, password=_initial(ref), kind="equipment")
            refs[ref] = exclusive
    admins = max(1, workers // 6)
    people = [(f"adm{i}", "admin") for i in range(admins)]
    people += [(f"eng{i}", "engineer") for i in range(workers - admins)]
    people += [(f"spare{i}", "spare") for i in range(SPARES)]
    jobs = []
    for index, (name, role) in enumerate(people):
        passphrase = f"pass of {name}"
        code = admin.engineers.invite(name, role="admin" if role == "admin" else "engineer")
        mine = Vault.open(url, engineer=name, sessions=MemorySessionStore(), kdf_params=FLOOR)
        admin.engineers.confirm(name, mine.engineers.enroll(name, code, passphrase))
        mine.close()
        if role == "engineer":
            for slug in CLIENTS:
                admin.grants.grant(name, slug, reason="T-0 load setup")
        if role != "spare":
            jobs.append(
                {
                    "url": url,
                    "name": name,
                    "passphrase": passphrase,
                    "role": role,
                    "refs": refs,
                    "clients": sorted(CLIENTS),
                    "spares": [f"spare{i}" for i in range(SPARES)],
                    "seed": 1000 + index,
                }
            )
    return admin, jobs


def _run(jobs: list[dict[str, Any]], tmp_path: Path, seconds: float) -> list[dict[str, Any]]:
    go = tmp_path / "go"
    procs = []
    for job in jobs:
        job.update(
            seconds=seconds,
            ready=str(tmp_path / f"ready-{job['name']}"),
            go=str(go),
            acks=str(tmp_path / f"acks-{job['name']}.jsonl"),
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), json.dumps(job)],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    try:
        deadline = time.monotonic() + 300
        while not all(Path(job["ready"]).exists() for job in jobs):
            failed = [p for p in procs if p.poll() is not None]
            assert not failed, failed[0].communicate()[1].decode()
            assert time.monotonic() < deadline, "the workers did not get ready"
            time.sleep(0.02)
        go.touch()
        reports = []
        for proc in procs:
            out, err = proc.communicate(timeout=seconds + 300)
            assert proc.returncode == 0, err.decode()
            reports.append(json.loads(out))
        return reports
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _acks(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(job["acks"]).read_text(encoding="utf-8").splitlines()]


def _events(admin: Vault) -> list[tuple[int, str | None, str]]:
    """(seq, engineer name, action) of every event, in order."""
    with admin.store.transaction() as s:
        names = {e.id: e.name for e in s.scalars(select(m.Engineer))}
        rows = s.execute(select(m.AuditEvent.seq, m.AuditEvent.engineer_id, m.AuditEvent.action).order_by("seq"))
        return [(seq, names.get(engineer_id), action) for seq, engineer_id, action in rows]


def _load(db_url: str, tmp_path: Path, workers: int, seconds: float) -> None:
    started = time.monotonic()
    admin, jobs = _setup(db_url, workers)
    try:
        before = admin.audit.head()[0]
        load_started = time.monotonic()
        reports = _run(jobs, tmp_path, seconds)
        load_seconds = time.monotonic() - load_started
        acks = {job["name"]: _acks(job) for job in jobs}
        _report(workers, seconds, reports, acks, f"load phase {load_seconds:.1f} s")
        _check(admin, before, jobs, acks, reports)
    finally:
        admin.close()
    print(f"load: whole test {time.monotonic() - started:.1f} s")


def _report(
    workers: int, seconds: float, reports: list[dict[str, Any]], acks: dict[str, list[dict[str, Any]]], extra: str
) -> None:
    """What happened, for the log (pytest -s shows it)."""
    ops = sum(len(a) - 1 for a in acks.values())  # not the unlocks
    retries = {r["name"]: r["retries"] for r in reports}
    by_op: Counter[str] = Counter()
    expected: Counter[str] = Counter()
    for report in reports:
        by_op.update(report["counts"])
        expected.update(report["expected"])
    by_op.pop("unlock", None)
    unexpected = Counter(text.strip().splitlines()[-1] for r in reports for text in r["unexpected"])
    print(
        f"\nload: {workers} workers x {seconds:.0f} s on PostgreSQL: {ops} acknowledged operations "
        f"({ops / max(r['seconds'] for r in reports):.1f}/s) {dict(sorted(by_op.items()))}; "
        f"retries {sum(retries.values())} (max {max(retries.values())} in one worker); "
        f"expected refusals {dict(sorted(expected.items()))}; unexpected {dict(unexpected)}; {extra}"
    )


def _check(
    admin: Vault,
    before: int,
    jobs: list[dict[str, Any]],
    acks: dict[str, list[dict[str, Any]]],
    reports: list[dict[str, Any]],
) -> None:
    # no worker met anything but the expected refusals
    unexpected = [f"{r['name']}: {text}" for r in reports for text in r["unexpected"]]
    assert unexpected == [], f"{len(unexpected)} unexpected errors; the first:\n{unexpected[0]}"
    for report in reports:
        assert report["counts"] == dict(Counter(a["op"] for a in acks[report["name"]]))
    assert sum(len(a) for a in acks.values()) > 10 * len(jobs), "the workers hardly did anything"

    # every acknowledged operation has exactly its event, in the worker's order, and nothing else was logged
    events = _events(admin)
    assert [seq for seq, _, _ in events] == list(range(1, len(events) + 1)), "audit sequence numbers have a gap"
    logged: dict[str | None, list[str]] = defaultdict(list)
    for _seq, name, action in events[before:]:
        logged[name].append(action)
    assert set(logged) == set(acks), "events by someone who was not running"
    for name, done in acks.items():
        assert logged[name] == [ACTION[a["op"]] for a in done], f"{name}'s events differ from its acknowledgements"

    # updates: distinct, contiguous versions; the last acknowledged write is the current value
    written: dict[str, dict[int, str]] = {ref: {1: _initial(ref)} for ref in jobs[0]["refs"]}
    for done in acks.values():
        for a in done:
            if a["op"] == "update":
                assert a["version"] not in written[a["ref"]], f"two updates acknowledged as {a['ref']} v{a['version']}"
                written[a["ref"]][a["version"]] = a["password"]
    current = {ref: admin.secrets.show(ref).version for ref in written}
    for ref, versions in written.items():
        assert sorted(versions) == list(range(1, current[ref] + 1)), f"{ref}: versions written != acknowledged"
        retained = [v.version for v in admin.secrets.history(ref)]
        assert retained == sorted(versions)[-len(retained) :] and current[ref] in retained
        for version in retained:
            assert admin.checkouts.reveal(ref, version=version, reason=REASON) == versions[version], f"{ref} v{version}"

    # reads returned what was written
    for done in acks.values():
        for a in done:
            if a["op"] == "checkout":
                assert written[a["ref"]].get(a["version"]) == a["value"], f"checkout of {a['ref']} v{a['version']}"
            elif a["op"] == "reveal":
                assert a["value"] in written[a["ref"]].values(), f"reveal of {a['ref']}"

    # grants end as the acknowledgements say: replay them in audit order per (spare, client)
    expected_grants: dict[tuple[str, str], bool] = {}
    order = [(seq, name) for seq, name, action in events[before:] if action in ("grant", "revoke")]
    ops = {name: [a for a in acks[name] if a["op"] in ("grant", "revoke")] for name in acks}
    cursor = dict.fromkeys(acks, 0)
    for _seq, name in order:
        a = ops[name][cursor[name]]
        cursor[name] += 1
        expected_grants[(a["engineer"], a["client"])] = a["op"] == "grant"
    live = {(g.engineer, g.client) for g in admin.grants.list() if g.state == "active"}
    for key, granted in expected_grants.items():
        assert (key in live) == granted, f"grant {key} should be {'live' if granted else 'revoked'}"
    with admin.store.transaction() as s:
        ids = {e.name: e.id for e in s.scalars(select(m.Engineer))}
        slugs = {slug: admin.clients.client(s, slug).id for slug in CLIENTS}
        live_versions = {
            (k.client_id, k.version) for k in s.scalars(select(m.ClientKey).where(m.ClientKey.state != "destroyed"))
        }
        seals = {
            (x.client_id, x.version, x.recipient_id)
            for x in s.scalars(select(m.ClientKeySeal).where(m.ClientKeySeal.recipient_kind == "engineer"))
        }
    for engineer, slug in live:
        for client_id, version in live_versions:
            if client_id == slugs[slug]:
                assert (client_id, version, ids[engineer]) in seals, f"{engineer}'s live grant for {slug} has no key"

    result = admin.audit.verify()
    assert result.ok, result.problem
    assert result.head_seq == admin.audit.head()[0] > len(events)


def test_six_engineers_for_eight_seconds_on_postgresql(db_url, tmp_path):
    _load(db_url, tmp_path, workers=6, seconds=8)


@pytest.mark.slow
def test_thirty_two_engineers_for_a_minute_on_postgresql(db_url, tmp_path):
    _load(db_url, tmp_path, workers=32, seconds=60)
