"""W15: ``audit export`` of the whole log in flat memory.

On the SQLite data set of W14 (built here if W14 did not run: N generated audit events,
N the run's audit scale, plus the events of the data set's own making and of W14), the
admin consumes ``vault.audit.export()`` to the end in a step of its own, checking each
line (one JSON object, the events in order, none missing). The figure is the step's peak
RSS (W8's measure, ``bench/step.py``), against the target of 150 MiB; the baseline is
the peak RSS of the same step reading only the last 20 events (``audit_log(limit=20)``):
the process, its imports and its unlocked vault, without the export.

Checks: the export yields every event of the log, in order, each a JSON object whose
``seq`` follows the one before.
"""

from __future__ import annotations

import json
import time
from typing import Any

from bench import dataset
from bench.report import MET, NOT_MET, REPORT, Outcome, Row
from bench.suite import Context
from bench.workloads.w14_contention import audit_dataset, open_for_step

TARGET_MIB = 150.0


def export_step(params: dict[str, Any]) -> dict[str, Any]:
    mf = dataset.load(params["manifest"])
    admin = open_for_step(mf, dataset.ADMIN)  # a session that outlasts the export
    head = admin.audit.head()[0]
    if not params["export"]:  # the baseline: the same process without the export
        entries = admin.audit.log(limit=20)
        admin.close()
        return {"checks": [("W15: the baseline step reads the last 20 events", len(entries) == min(20, head))]}
    start = time.perf_counter()
    count, previous, in_order = 0, 0, True
    for line in admin.audit.export():
        seq = json.loads(line)["seq"]
        in_order = in_order and seq > previous
        previous = seq
        count += 1
    seconds = time.perf_counter() - start
    admin.close()
    checks = [
        (
            f"W15: `audit export` yields all {head:,} events, in order, each a JSON object ({count:,} lines)",
            count >= head and in_order,
        )
    ]
    return {"checks": checks, "events": count, "seconds": seconds}


def run(ctx: Context) -> Outcome:
    out = Outcome()
    manifest = audit_dataset(ctx, out, "SQLite")
    if manifest is None:
        return out
    base = ctx.step(
        out,
        "W15 baseline: the last 20 events",
        "bench.workloads.w15_export:export_step",
        {"manifest": manifest, "export": False},
    )
    result = ctx.step(
        out, "W15 audit export", "bench.workloads.w15_export:export_step", {"manifest": manifest, "export": True}
    )
    if result is None:
        return out
    v, peak = result.value, result.peak_rss_mib
    base_peak = base.peak_rss_mib if base is not None else None
    verdict = MET if peak <= TARGET_MIB else NOT_MET
    out.rows += [
        Row(
            "W15",
            f"`audit export` of {v['events']:,} events: peak RSS of the process",
            peak,
            "MiB",
            base_peak,
            "same process, `audit log --limit 20` only",
            f"≤ {TARGET_MIB:.0f} MiB",
            verdict,
            peak,
            "n=1",
        ),
        Row(
            "W15",
            f"`audit export` of {v['events']:,} events: wall time",
            v["seconds"],
            "s",
            verdict=REPORT,
            peak_rss_mib=peak,
            samples="n=1",
        ),
    ]
    rate = v["events"] / v["seconds"] if v["seconds"] else 0.0
    out.notes.append(
        f"**Target (≤ {TARGET_MIB:.0f} MiB peak): {verdict}.** Exporting {v['events']:,} events as JSON lines took "
        f"{v['seconds']:.1f} s ({rate:,.0f} events a second) and a peak RSS of {peak:.0f} MiB"
        + (
            f"; the same process reading only the last 20 events peaks at {base_peak:.0f} MiB, so the export "
            f"itself held about {max(peak - base_peak, 0):.0f} MiB."
            if base_peak is not None
            else "."
        )
    )
    return out
