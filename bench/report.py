"""The results: rows of a table, the checks, and ``docs/performance.md``.

A row is one figure: credvault's median (or rate, or peak), the baseline measured in
the same run when there is one, their ratio, the target and a verdict. Verdicts are
words, never assertions: ``met``, ``not met``, ``report`` (no target), ``not
implemented yet`` (the library lacks the call), ``skipped`` (e.g. no PostgreSQL).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MET, NOT_MET, REPORT, MISSING, SKIPPED = "met", "not met", "report", "not implemented yet", "skipped"


@dataclass
class Row:
    workload: str
    measure: str
    value: float | None = None
    unit: str = "ms"
    baseline: float | None = None
    baseline_what: str = ""
    target: str = "—"
    verdict: str = REPORT
    peak_rss_mib: float | None = None
    samples: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline


@dataclass
class Outcome:
    """What one workload hands back: rows, prose for the document, correctness checks."""

    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checks: list[tuple[str, bool]] = field(default_factory=list)


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "ms":
        return f"{value:.3g} ms" if value < 1000 else f"{value / 1000:.3g} s"
    if unit == "s":
        return f"{value:.3g} s" if value >= 1 else f"{value * 1000:.3g} ms"
    if unit == "MiB":
        return f"{value:.0f} MiB"
    if unit == "/s":
        return f"{value:,.0f}/s"
    return f"{value:,.3g} {unit}".strip()


def _cells(row: Row) -> list[str]:
    value = fmt(row.value, row.unit) if row.value is not None else row.verdict
    baseline = (
        f"{fmt(row.baseline, row.unit)} ({row.baseline_what})"
        if row.baseline is not None
        else (row.baseline_what or "—")
    )
    ratio = f"{row.ratio:.2f}×" if row.ratio is not None else "—"
    peak = fmt(row.peak_rss_mib, "MiB") if row.peak_rss_mib is not None else "—"
    measure = row.measure + (f" [{row.samples}]" if row.samples else "")
    return [row.workload, measure, value, baseline, ratio, row.target, row.verdict, peak]


HEADERS = ["#", "measure", "credvault", "baseline (same run)", "ratio", "target", "verdict", "peak RSS"]


def text_table(rows: list[Row]) -> str:
    cells = [HEADERS] + [_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADERS))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(HEADERS))).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[Row]) -> str:
    out = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for r in rows:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |")
    return "\n".join(out)


def document(
    rows: list[Row],
    notes: dict[str, list[str]],
    checks: list[tuple[str, bool]],
    machine: dict[str, Any],
    command: str,
    plan: str,
    intro: str,
    steps: list[tuple[str, float, float]],
) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items())
    lines = [
        "# credvault performance",
        "",
        intro,
        "",
        f"Measured {machine['date']} with `{command}` at commit {machine['commit']}.",
        "",
        "## Machine",
        "",
        f"* CPU: {machine['cpu']}, {machine['logical_cpus']} logical CPUs ({machine['physical_cores']} cores "
        "reported by /proc/cpuinfo)",
        f"* RAM: {machine['ram']}; kernel {machine['kernel']}",
        f"* load average (1/5/15 min) at start: {machine.get('load_start', '?')}; "
        f"at end: {machine.get('load_end', '?')}",
        f"* Python {machine['python']}, SQLite {machine['sqlite']}, PostgreSQL {machine['postgresql']}",
        f"* {packages}",
        "",
        "## Plan and method of this run",
        "",
        plan,
        "",
        "## Results",
        "",
        markdown_table(rows),
        "",
        "Ratios are credvault ÷ baseline, both measured in this run. Peak RSS is that of the",
        "step's own process (the largest of its own `VmHWM` and of the worker processes it waited",
        "for; `bench/step.py`): workload 8. W10 and W12 give each CLI command's own, read by GNU `time`.",
        "",
    ]
    for workload, paragraphs in notes.items():
        if paragraphs:
            lines += [f"## {workload}", ""]
            for p in paragraphs:
                lines += [p, ""]
    lines += [
        "## W8: peak memory of each step",
        "",
        "Each step is its own process; its peak RSS is the largest of its own `VmHWM` and of the worker",
        "processes it waited for (not `wait4`'s figure, which charges a child the size of the process it",
        "was forked from). Data-set generation is a step of its own, so its memory is not charged to the",
        "workload that uses the data set.",
        "",
        "| step | wall time | peak RSS |",
        "|---|---|---|",
    ]
    lines += [f"| {label} | {fmt(seconds, 's')} | {fmt(peak, 'MiB')} |" for label, seconds, peak in steps]
    lines.append("")
    failed = [c for c, ok in checks if not ok]
    lines += ["## Correctness checks", ""]
    lines.append(
        f"All {len(checks)} checks passed." if not failed else f"{len(failed)} of {len(checks)} checks FAILED:"
    )
    lines.append("")
    lines += [f"* {'ok' if ok else 'FAILED'}: {c}" for c, ok in checks]
    return "\n".join(lines).rstrip() + "\n"
