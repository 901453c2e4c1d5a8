"""W7: team load on PostgreSQL: 32 engineers checking out secrets at once.

Each engineer is its own process (forked from the step, so no Python lock is shared)
with its own ``Vault`` object and engine, unlocked in memory. All wait at a barrier,
then check out random secrets of the clients they hold grants for, back to back, for a
bounded time (10 s; 2 s with --quick), each call timed. Every checkout appends an
audit event under the lock of the single ``audit_head`` row, so this measures how the
chain serialises a team.

Reported: checkouts per second (all engineers), median and p99 latency, failures by
kind. Checks: no failure; the number of ``checkout`` events written equals the number
of successful checkouts (no lost and no extra events); ``verify_audit`` accepts the
whole chain afterwards.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from bench import dataset
from bench.report import SKIPPED, Outcome, Row
from bench.suite import Context
from bench.timing import median, percentile, repeat
from vault.errors import VaultError
from vault.storage import models as m


def _engineer(index: int, manifest: dict[str, Any], seconds: float, barrier: Any, results: Any) -> None:
    mf = dataset.Manifest.from_json(manifest)
    rng = random.Random(index)
    refs = [mf.ref(c, j) for c in mf.shape.granted_clients(index) for j in range(mf.shape.secrets_of(c))]
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    wrong = 0
    warm = 0
    try:
        vault = dataset.open_vault(mf, dataset.engineer_name(index))
        vault.checkouts.checkout(refs[0], reason="bench warm-up")  # caches, connections: not timed, but counted
        warm = 1
    except VaultError as error:
        failures[type(error).__name__] += 1
        barrier.wait()
        results.put({"latencies": [], "failures": dict(failures), "wrong": 0, "warm": warm, "window": 0.0})
        return
    barrier.wait()
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        ref = rng.choice(refs)
        t0 = time.perf_counter()
        try:
            value = vault.checkouts.checkout(ref, reason="bench team load").value
        except VaultError as error:
            failures[type(error).__name__] += 1
            continue
        latencies.append(time.perf_counter() - t0)
        wrong += value != mf.password(ref)
    window = time.perf_counter() - start
    vault.close()
    results.put({"latencies": latencies, "failures": dict(failures), "wrong": wrong, "warm": warm, "window": window})


def _lock_waits(url: str, stop: threading.Event, samples: list[tuple[int, int]]) -> None:
    """Every 0.2 s: (sessions waiting for a lock, sessions active) in the vault's database."""
    import psycopg

    parsed = make_url(url)
    conninfo = f"host={parsed.host} port={parsed.port or 5432} user={parsed.username} dbname={parsed.database}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        while not stop.wait(0.2):
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE wait_event_type = 'Lock'), count(*) FILTER (WHERE state = 'active')"
                " FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
            if row is not None:
                samples.append((int(row[0]), int(row[1])))


def _team(mf: dataset.Manifest, engineers: int, seconds: float) -> dict[str, Any]:
    """Run ``engineers`` forked engineer processes for ``seconds``; their results, and lock-wait samples."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(engineers + 1), ctx.Queue()
    procs = [ctx.Process(target=_engineer, args=(i, mf.to_json(), seconds, barrier, results)) for i in range(engineers)]
    for p in procs:
        p.start()
    samples: list[tuple[int, int]] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_lock_waits, args=(mf.url, stop, samples), daemon=True)
    barrier.wait()
    watcher.start()
    started = time.perf_counter()
    collected = [results.get() for _ in procs]
    wall = time.perf_counter() - started
    stop.set()
    watcher.join()
    for p in procs:
        p.join()
    latencies = [x for r in collected for x in r["latencies"]]
    failures: Counter[str] = Counter()
    for r in collected:
        failures.update(r["failures"])
    window = max((r["window"] for r in collected), default=wall) or wall
    return {
        "engineers": engineers,
        "checkouts": len(latencies),
        "successes": len(latencies) + sum(r["warm"] for r in collected),
        "wrong": sum(r["wrong"] for r in collected),
        "failures": dict(failures),
        "rate": len(latencies) / window if window else 0.0,
        "median": median(latencies) if latencies else None,
        "p99": percentile(latencies, 99) if latencies else None,
        "seconds": window,
        "lock_waiting": sum(w for w, _ in samples) / len(samples) if samples else None,
        "active": sum(a for _, a in samples) / len(samples) if samples else None,
    }


def load_step(params: dict[str, Any]) -> dict[str, Any]:
    mf = dataset.load(params["manifest"])
    engineers, seconds = params["engineers"], params["seconds"]
    admin = dataset.open_vault(mf, dataset.ADMIN)
    head = admin.audit.head()
    admin.close()  # nothing open is inherited by the forked engineers
    alone = dataset.open_vault(mf, dataset.engineer_name(0))
    solo_ref = mf.ref(mf.shape.granted_clients(0)[0], 0)
    uncontended = repeat(lambda: alone.checkouts.checkout(solo_ref, reason="bench alone"), 5, 1)
    alone.close()
    small = _team(mf, min(4, engineers), seconds) if engineers > 4 else None
    team = _team(mf, engineers, seconds)
    runs = [r for r in (small, team) if r is not None]
    successes = sum(r["successes"] for r in runs) + len(uncontended) + 1
    failures: Counter[str] = Counter()
    for r in runs:
        failures.update(r["failures"])
    wrong = sum(r["wrong"] for r in runs)
    admin = dataset.open_vault(mf, dataset.ADMIN)
    with admin.store.transaction() as s:
        events = s.scalar(
            select(func.count())
            .select_from(m.AuditEvent)
            .where(m.AuditEvent.seq > head[0], m.AuditEvent.action == "checkout")
        )
    verified = admin.audit.verify()
    admin.close()
    checks = [
        (f"W7: {engineers} engineers, no failed checkout ({dict(failures) or 'none'})", not failures),
        (f"W7: every checkout returned the generated value ({wrong} wrong)", wrong == 0),
        (
            f"W7: zero lost events: {successes:,} successful checkouts wrote {events:,} checkout events",
            events == successes,
        ),
        (f"W7: verify_audit accepts the whole chain afterwards ({verified.checked:,} events)", verified.ok),
    ]
    return {
        "checks": checks,
        **team,
        "small": small,
        "grants": len(mf.shape.granted_clients(0)),
        "uncontended": median(uncontended),
        "cpus": os.cpu_count() or 1,
    }


def run(ctx: Context) -> Outcome:
    out = Outcome()
    plan = ctx.plan
    if ctx.pg is None:
        out.rows.append(
            Row(
                "W7",
                f"team load, {plan.w7_engineers} engineers on PostgreSQL",
                verdict=SKIPPED,
                baseline_what="no PostgreSQL server answered (set CREDVAULT_BENCH_PG)",
            )
        )
        return out
    manifest = ctx.pg_dataset(out)
    if manifest is None:
        return out
    result = ctx.step(
        out,
        f"W7 team load ({plan.w7_engineers} engineers, {plan.w7_seconds:g} s)",
        "bench.workloads.w7_team_load:load_step",
        {"manifest": manifest, "engineers": plan.w7_engineers, "seconds": plan.w7_seconds},
    )
    if result is None:
        return out
    v = result.value
    n = f"n={v['checkouts']:,}"
    small = v.get("small")
    out.rows += [
        Row(
            "W7",
            f"team load, {v['engineers']} engineers: checkouts per second",
            v["rate"],
            "/s",
            small["rate"] if small else v["cpus"] / v["uncontended"],
            f"{small['engineers']} engineers, same run" if small else f"{v['cpus']} cores ÷ one uncontended checkout",
            verdict="report",
            peak_rss_mib=result.peak_rss_mib,
            samples=n,
        ),
        Row("W7", "team load: median latency", (v["median"] or 0) * 1000, "ms", samples=n),
        Row("W7", "team load: p99 latency", (v["p99"] or 0) * 1000, "ms", samples=n),
    ]
    out.notes += _discussion(v)
    return out


def _discussion(v: dict[str, Any]) -> list[str]:
    ceiling = v["cpus"] / v["uncontended"]
    text = (
        f"{v['engineers']} engineer processes ({v['grants']} grants each) made {v['checkouts']:,} checkouts in "
        f"{v['seconds']:.1f} s: {v['rate']:.1f} a second, median latency {(v['median'] or 0) * 1000:.0f} ms, p99 "
        f"{(v['p99'] or 0) * 1000:.0f} ms, failures: {v['failures'] or 'none'}; no event lost (see the checks). "
        f"One engineer alone takes {v['uncontended'] * 1000:.0f} ms a checkout (client-side work and one "
        f"durable commit), so {v['cpus']} cores could do at most about {ceiling:.0f} a second if that were all "
        "CPU and nothing else ran."
    )
    small = v.get("small")
    if small:
        text += (
            f" With {small['engineers']} engineers the same run made {small['rate']:.1f} a second (median "
            f"{(small['median'] or 0) * 1000:.0f} ms)."
        )
    if v.get("lock_waiting") is not None:
        text += (
            f" Sampled every 0.2 s during the {v['engineers']}-engineer window, on average {v['lock_waiting']:.1f} of "
            f"{v['active']:.1f} active database sessions were waiting for a lock"
        )
        if v["lock_waiting"] >= 1:
            text += (
                ": every checkout appends its event under the lock of the one `audit_head` row and holds it until "
                f"its commit, so while the holder waits for a CPU ({v['engineers']} runnable processes on "
                f"{v['cpus']} cores) the others queue behind it."
            )
        else:
            text += ": the chain's lock is not what limits the rate here; the engineers' own CPU work is."
    return [
        text,
        "Peak RSS is that of the largest single engineer process. The machine is shared, so these rates are "
        "a lower bound of what dedicated cores would give; the lock on the chain's head bounds the rate of "
        "audited writes whatever the cores (one commit at a time).",
    ]
