"""W16: the team server (docs/server.md §7 "Bench rows", issue 14 step 9).

Two measures, each a step of its own:

* **Round trip** (SQLite, ``bench/server_checkout.py``'s ``measure``): a checkout through
  ``credvault serve``'s app under uvicorn over TLS on 127.0.0.1 (``HttpsTransport``, a
  kept-alive connection, format-3 event, the nonce kept in the checkout's unit) against the
  in-process checkout of a vault made the same way, in alternating blocks of 20, same run.
  Reported: median and p99 of each, their ratio (no target: the design names none).
* **Team load** (PostgreSQL, ``bench/server_team.py``): N engineers (32; 4 with --quick) over
  two ``credvault serve`` subprocesses, checkouts per second against a raw psycopg replay of
  the statements of the same checkout by the same number of processes (target: at least
  0.5×), and (reported) against the same replay sent in the server's round trips (what it sends
  together in psycopg's pipeline mode, together). Checks: no failure, every value right, one
  ``checkout`` event per acknowledged checkout, seq contiguous, ``audit verify`` accepting the
  chain. Skipped without PostgreSQL.

The team load has its own data set (a server key is certified in it, after which in-process
checkouts are refused; W1 and W7 keep theirs).
"""

from __future__ import annotations

from typing import Any

from bench.dataset import Shape
from bench.report import MET, NOT_MET, REPORT, SKIPPED, Outcome, Row
from bench.suite import Context
from bench.timing import median, percentile

TARGET_RATIO = 0.5


def _round_trip(ctx: Context, out: Outcome) -> dict[str, Any] | None:
    n = 20 if ctx.plan.quick else 300
    result = ctx.step(
        out, f"W16 round trip through the server (n={n})", "bench.server_checkout:round_trip_step", {"n": n}
    )
    if result is None:
        return None
    ms = result.value["ms"]
    https, local = ms["https"], ms["in-process"]
    samples = f"n={len(https)} each"
    out.rows += [
        Row(
            "W16",
            "checkout through the server, loopback TLS, SQLite: median",
            median(https),
            "ms",
            median(local),
            "in-process checkout",
            verdict=REPORT,
            peak_rss_mib=result.peak_rss_mib,
            samples=samples,
        ),
        Row(
            "W16",
            "checkout through the server, loopback TLS, SQLite: p99",
            percentile(https, 99),
            "ms",
            percentile(local, 99),
            "in-process p99",
            verdict=REPORT,
            peak_rss_mib=result.peak_rss_mib,
            samples=samples,
        ),
    ]
    out.checks.append((f"W16: {len(https)} checkouts through the server returned the stored value", len(https) == n))
    return {"https": (median(https), percentile(https, 99)), "local": (median(local), percentile(local, 99)), "n": n}


def _team(ctx: Context, out: Outcome) -> dict[str, Any] | None:
    plan = ctx.plan
    engineers = plan.w7_engineers
    if ctx.pg is None:
        out.rows.append(
            Row(
                "W16",
                f"checkouts/s, {engineers} engineers over 2 servers on PostgreSQL",
                verdict=SKIPPED,
                baseline_what="no PostgreSQL server answered (set CREDVAULT_BENCH_PG)",
            )
        )
        return None
    secrets = 200 if plan.quick else 2_000
    shape = Shape(secrets=secrets, clients=secrets // 50, engineers=engineers)
    manifest = ctx.build(out, "data set (PostgreSQL, W16)", ctx.pg.create_database(), shape, "pg_w16")
    if manifest is None:
        return None
    params = {"manifest": manifest, "engineers": engineers, "seconds": plan.w7_seconds, "workdir": str(ctx.workdir)}
    result = ctx.step(
        out,
        f"W16 team load over 2 servers ({engineers} engineers, {plan.w7_seconds:g} s)",
        "bench.server_team:team_step",
        params,
    )
    if result is None:
        return None
    served, raw, piped = result.value["served"], result.value["raw"], result.value["raw_pipelined"]
    ratio = served["rate"] / raw["rate"] if raw["rate"] else 0.0
    trips = result.value["round_trips"]
    out.rows += [
        Row(
            "W16",
            f"team load, {engineers} engineers over 2 servers on PostgreSQL: checkouts per second",
            served["rate"],
            "/s",
            raw["rate"],
            f"raw psycopg, same statements, {raw['processes']} processes",
            f"≥ {TARGET_RATIO}×",
            MET if ratio >= TARGET_RATIO else NOT_MET,
            result.peak_rss_mib,
            f"n={served['done']:,}",
        ),
        Row(
            "W16",
            f"team load, {engineers} engineers over 2 servers: checkouts per second against a replay in the "
            f"server's {trips} round trips",
            served["rate"],
            "/s",
            piped["rate"],
            f"raw psycopg, same statements pipelined as the server sends them, {piped['processes']} processes",
            verdict=REPORT,
            peak_rss_mib=result.peak_rss_mib,
            samples=f"n={served['done']:,}",
        ),
        Row(
            "W16",
            "team load over 2 servers: median latency",
            (served["median"] or 0) * 1000,
            "ms",
            (raw["median"] or 0) * 1000,
            "raw psycopg median",
            samples=f"n={served['done']:,}",
        ),
        Row(
            "W16",
            "team load over 2 servers: p99 latency",
            (served["p99"] or 0) * 1000,
            "ms",
            (raw["p99"] or 0) * 1000,
            "raw psycopg p99",
            samples=f"n={served['done']:,}",
        ),
    ]
    return {
        "served": served,
        "raw": raw,
        "raw_pipelined": piped,
        "ratio": ratio,
        "statements": result.value["statements"],
        "round_trips": trips,
    }


def run(ctx: Context) -> Outcome:
    out = Outcome()
    trip = _round_trip(ctx, out)
    team = _team(ctx, out)
    out.notes += _discussion(trip, team)
    return out


def _cpu(team: dict[str, Any]) -> str:
    """``server 7.1, postgres 2.5, engineers 2.9 (total 12.5)`` from a team's ``cpu`` seconds."""
    cpu, done = team.get("cpu"), max(team["done"], 1)
    if not cpu:
        return ""
    shares = {group: seconds * 1000 / done for group, seconds in cpu.items() if seconds}
    parts = ", ".join(f"{group} {ms:.2f}" for group, ms in shares.items())
    return f"{parts} (total {sum(shares.values()):.2f})"


def _discussion(trip: dict[str, Any] | None, team: dict[str, Any] | None) -> list[str]:
    notes = []
    if trip is not None:
        (hm, hp), (lm, lp) = trip["https"], trip["local"]
        notes.append(
            f"Round trip (SQLite, n={trip['n']} each, alternating blocks of 20): through the server {hm:.2f} ms "
            f"median, {hp:.2f} ms p99; in-process {lm:.2f} ms / {lp:.2f} ms ({hm / lm:.1f}× at the median). The "
            "difference is the request's signature and digest, TLS on loopback, the server's authentication read "
            "and nonce, and the server-signed format-3 event."
        )
    if team is not None:
        s, r = team["served"], team["raw"]
        notes.append(
            f"Team load: {s['processes']} engineer processes, engineer i on server i mod 2, made {s['done']:,} "
            f"checkouts in {s['seconds']:.1f} s ({s['rate']:.1f}/s, median {(s['median'] or 0) * 1000:.0f} ms, p99 "
            f"{(s['p99'] or 0) * 1000:.0f} ms; failures: {s['failures'] or 'none'}). The same number of processes "
            f"replaying the {team['statements']} captured statements of one server checkout with raw psycopg (no "
            f"HTTP, no crypto, no ORM) made {r['rate']:.1f}/s (median {(r['median'] or 0) * 1000:.1f} ms): "
            f"{team['ratio']:.2f}× (target ≥ {TARGET_RATIO}×). Every process, both servers and PostgreSQL share the "
            "machine's cores, so the engineers' own CPU work (key derivation is not in the loop; signing, "
            "verifying and decrypting are) competes with the servers'."
        )
        p = team["raw_pipelined"]
        notes.append(
            f"The server sends some of those statements together (psycopg's pipeline mode: the audit head's lock "
            f"with the read after it, then the event, the head's move and the hold), {team['round_trips']} round "
            f"trips in all. The replay above sends one statement per round trip, as the baseline always has; the "
            f"same processes replaying them in the server's round trips made {p['rate']:.1f}/s (median "
            f"{(p['median'] or 0) * 1000:.1f} ms): {s['rate'] / p['rate'] if p['rate'] else 0:.2f}× (reported, "
            "no target)."
        )
        cpu = [_cpu(s), _cpu(r), _cpu(p)]
        if all(cpu):
            notes.append(
                f"CPU per checkout in the window (ms; /proc ticks of the servers and of the data set's PostgreSQL "
                f"backends, each engineer process's own process time): through the servers {cpu[0]}; raw replay "
                f"{cpu[1]}; raw replay in the server's round trips {cpu[2]}."
            )
    return notes
