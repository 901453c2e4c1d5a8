"""Run credvault's benchmark suite and write docs/performance.md.

    .venv/bin/python bench/run.py                  # everything, 1,000,000 secrets
    .venv/bin/python bench/run.py --scale 100000   # smaller
    .venv/bin/python bench/run.py --quick          # tiny; checks results, not times (CI)
    .venv/bin/python bench/run.py --only W1,W6 --out /tmp/perf.md

Prints a table of medians and ratios against baselines measured in the same run; the
exit status is non-zero if any correctness check failed (never because of a time).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import machine, report
from bench.suite import FULL_SCALE, Context, PgServer, Plan

WORKLOADS = {
    "W1": ("in-process checkout", "bench.workloads.w1_checkout"),
    "W2": ("CLI checkout against pass", "bench.workloads.w2_cli"),
    "W3": ("client-key rotation against its floor", "bench.workloads.w3_client_rotation"),
    "W4": ("root-key rotation", "bench.workloads.w4_root_rotation"),
    "W5": ("purge of a client", "bench.workloads.w5_purge"),
    "W6": ("audit verification", "bench.workloads.w6_audit"),
    "W7": ("team load on PostgreSQL", "bench.workloads.w7_team_load"),
    "W9": ("backup and restore", "bench.workloads.w9_backup"),
    "W10": ("everyday CLI commands against pass", "bench.workloads.w10_everyday"),
    "W11": ("in-process checkout of a secret not touched before", "bench.workloads.w11_cold_checkout"),
    "W12": ("listings at 10,000 secrets and 10,000 clients", "bench.workloads.w12_listings"),
    "W13": ("checkout with 1,000 grants against 10", "bench.workloads.w13_grants"),
    "W14": ("checkouts while an admin runs heavy commands", "bench.workloads.w14_contention"),
    "W15": ("audit export in flat memory", "bench.workloads.w15_export"),
    "W16": ("checkout through the team server", "bench.workloads.w16_server"),
    "W17": ("CLI checkout through the team server against pass", "bench.workloads.w17_server_cli"),
}
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
INTRO = (
    "Written by `bench/run.py` (see `bench/__init__.py`); do not edit by hand, run the suite again. "
    "Times are medians of repeated runs unless a row says n=1; every baseline is measured in the same run, on "
    "the same machine. The machine is shared with other work, so figures carry noise: compare ratios, and the "
    "load average below, rather than absolute times across runs."
)

METHOD = """\
* **Data sets** (`bench/dataset.py`): the vault, its admin and every engineer are made through the real API
  (engineers' key records at `keyrecord.FLOOR`, OWASP's minimum, to keep 200 enrolments short; W2 enrols its own
  engineer at the default parameters). Clients, grants, secrets and their audit events go through a documented
  fast path that calls the library's own recipes (`blobs.wrap_data_key`, `blobs.encrypt_secret_field`,
  `signing.lookup_tag`, `sealing.seal`, `chain.event_hash`, `chain.sign_event`, …) exactly as the service does,
  and inserts in bulk. Every workload that uses a data set first has the real `Vault` read a sample back (values,
  metadata, audit details, as an admin and as an engineer through their grants): see the correctness checks.
* **Audit events** for W6 (`bench/auditgen.py`): the same rows `vault/service/journal.py` appends; the proof is
  that `verify_audit` accepts them.
* **Isolation**: every measured step runs in its own process (`bench/step.py`), so each has its own peak RSS
  (W8) and no step inherits another's caches. Data-set generation is a step of its own.
* **Baselines**, measured in the same run: W1, one durable single-row commit on the same storage (the floor of any
  checkout that commits its audit event first); W2, `pass show`; W3, re-wrapping the same keys with plain
  sqlite3 + cryptography; W4, the same rotation at a tenth of the secrets; W6, the Ed25519 + SHA-256 work per
  event, divided by the cores; W10, `pass show`; W11, W1's durable-commit floor; W12, one JOIN plus the same
  decryption with the library's recipes; W13, the same engineer set-up with 10 grants; W14, the same checkouts
  alone; W15, the same process reading 20 events; W16, the in-process checkout and a raw psycopg replay of the
  server checkout's statements; W17, `pass show`.
* **Statistics**: medians (and nearest-rank p99) of repeated runs; `n=` gives the count. Nothing asserts on a
  time: the exit status is non-zero only when a correctness check fails."""


def _selection(text: str | None) -> list[str]:
    if not text:
        return list(WORKLOADS)
    chosen = [w.strip().upper() for w in text.split(",") if w.strip()]
    unknown = [w for w in chosen if w not in WORKLOADS and w != "W8"]
    if unknown:
        raise SystemExit(f"unknown workload(s): {', '.join(unknown)} (choose from W1…W17)")
    return [w for w in WORKLOADS if w in chosen]


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=FULL_SCALE, help="number of secrets (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes; check results, not times (CI)")
    parser.add_argument("--only", metavar="W1,W6", help="run only these workloads (W8 is every row's peak RSS)")
    parser.add_argument("--out", type=Path, help="write the report here (default docs/performance.md; none in --quick)")
    parser.add_argument("--audit-events", type=int, help="audit events for W6, W14 and W15 (default: the scale)")
    parser.add_argument(
        "--contention-events",
        type=int,
        help="audit events for W14 and W15 only (default: --audit-events); W14 at 1,000,000 takes about an hour",
    )
    parser.add_argument("--workdir", type=Path, help="where the data sets go (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the data sets afterwards")
    args = parser.parse_args(argv)
    if args.scale < 100:
        parser.error("--scale must be at least 100")
    selected = _selection(args.only)
    plan = Plan.make(args.scale, args.quick, args.audit_events)
    if args.contention_events:
        plan = dataclasses.replace(plan, w14_events=args.contention_events)
    out_path = args.out if args.out is not None else (None if args.quick else DEFAULT_OUT)

    pg = PgServer.connect()
    info = machine.describe(pg.version if pg else None)
    info["load_start"] = _loadavg()
    workdir = Path(tempfile.mkdtemp(prefix="credvault-bench-", dir=args.workdir))
    ctx = Context(plan, workdir, pg)
    outcomes: dict[str, report.Outcome] = {}
    started = time.perf_counter()
    try:
        for key in selected:
            title, module = WORKLOADS[key]
            print(f"== {key}: {title}", file=sys.stderr, flush=True)
            outcomes[key] = importlib.import_module(module).run(ctx)
    finally:
        if pg is not None:
            pg.drop_all()
        if args.keep:
            print(f"data sets kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    info["load_end"] = _loadavg()
    elapsed = time.perf_counter() - started

    rows = [r for o in outcomes.values() for r in o.rows]
    if plan.quick:  # tiny sizes: times say nothing about the targets
        for r in rows:
            if r.verdict in (report.MET, report.NOT_MET):
                r.verdict = "n/a (--quick)"
    checks = list(ctx.setup_checks) + [c for o in outcomes.values() for c in o.checks]
    failed = [c for c, ok in checks if not ok]
    print(report.text_table(rows))
    print(f"\n{len(checks) - len(failed)} of {len(checks)} correctness checks passed in {elapsed:.0f} s.")
    for c in failed:
        print(f"FAILED: {c}")
    if out_path is not None:
        command = "python bench/run.py" + ("" if argv is None else " " + " ".join(argv))
        if argv is None:
            command = "python bench/run.py " + " ".join(sys.argv[1:])
        notes = {f"{k}: {WORKLOADS[k][0]}": o.notes for k, o in outcomes.items()}
        text = report.document(
            rows, notes, checks, info, command.strip(), plan.describe() + "\n\n" + METHOD, INTRO, ctx.steps
        )
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(text, encoding="utf-8")
        print(f"wrote {out_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
