"""W17: the engineer's CLI checkout through the team server, with and without the agent, against ``pass show``.

One step (``bench/server_cli.py``'s ``cli_step``): a ``credvault serve`` subprocess on loopback
TLS over SQLite, an engineer machine that holds no database URL (pinned server, key record copied
once), and whole ``credvault checkout … --show`` processes timed two ways — the session in the
keyring (each process talks to the server itself) and in ``credvault agent`` (each process asks
the agent, which keeps its connection to the server) — against ``pass show`` in the same run.
Goal (issue 14): with the agent, at most 2× ``pass show``.
"""

from __future__ import annotations

from bench.report import MET, NOT_MET, REPORT, Outcome, Row
from bench.suite import Context
from bench.timing import median, percentile

GOAL = 2.0


def run(ctx: Context) -> Outcome:
    out = Outcome()
    reps = ctx.plan.w2_reps
    result = ctx.step(out, f"W17 CLI checkout through the server ({reps} runs each)", "bench.server_cli:cli_step",
                      {"reps": reps})  # fmt: skip
    if result is None:
        return out
    v = result.value
    passed = v["pass"]
    pass_ms = median(passed["times"]) * 1000 if passed.get("available") else None
    pass_what = "pass show" if pass_ms is not None else passed.get("why", "pass unavailable")
    agent_ms, keyring_ms = median(v["agent"]) * 1000, median(v["keyring"]) * 1000
    samples = f"n={len(v['agent'])} each"
    where = "installed with `pip install .`" if v.get("installed") else "editable install"
    verdict = "not measurable" if pass_ms is None else (MET if agent_ms <= GOAL * pass_ms else NOT_MET)
    out.rows += [
        Row("W17", f"CLI checkout through the server, session in `credvault agent`, {where}: median", agent_ms, "ms",
            pass_ms, pass_what, f"≤ {GOAL:g}× pass", verdict, v["peak_mib"], samples),
        Row("W17", "CLI checkout through the server, session in `credvault agent`: p99",
            percentile(v["agent"], 99) * 1000, "ms", samples=samples),
        Row("W17", "CLI checkout through the server, keyring session, no agent: median", keyring_ms, "ms",
            pass_ms, pass_what, "—", REPORT, v["peak_mib"], samples),
    ]  # fmt: skip
    if pass_ms is not None:
        out.notes.append(
            f"CLI checkout through the team server (loopback TLS, SQLite): {agent_ms:.0f} ms with the agent, "
            f"{keyring_ms:.0f} ms with a keyring session, against {pass_ms:.0f} ms for `pass show` "
            f"({agent_ms / pass_ms:.2f}× and {keyring_ms / pass_ms:.2f}×; goal ≤ {GOAL:g}× with the agent). Without "
            "the agent each process imports the library, opens the session and makes a new TLS connection."
        )
    return out
