"""Medians, percentiles and peak memory: the only statistics the suite reports.

Times come from ``time.perf_counter``. Percentiles are nearest-rank, so a p99 over 200
samples is the second-largest sample: no interpolation invents a value never seen.
Peak memory inside a process is read from ``/proc/self/status`` (``VmHWM``) after
resetting it through ``/proc/self/clear_refs``, so one phase's peak is not hidden by
an earlier, larger one (data-set generation, for instance).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def median(samples: Sequence[float]) -> float:
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def percentile(samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0–100)."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(samples: Sequence[float]) -> dict[str, Any]:
    """Median, p99, min, max and count of a list of seconds."""
    return {
        "n": len(samples),
        "median": median(samples),
        "p99": percentile(samples, 99),
        "min": min(samples),
        "max": max(samples),
    }


def repeat(fn: Callable[[], Any], n: int, warmup: int = 0, budget: float | None = None) -> list[float]:
    """Seconds taken by each of ``n`` calls of ``fn``, after ``warmup`` untimed calls;
    with a ``budget`` (seconds), stop early once it is spent (at least 10 calls)."""
    for _ in range(warmup):
        fn()
    out: list[float] = []
    began = time.perf_counter()
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
        if budget is not None and len(out) >= 10 and time.perf_counter() - began > budget:
            break
    return out


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


# -- memory -----------------------------------------------------------------------------

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux ≥ 4.0); False if impossible."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mib() -> float | None:
    """This process's peak RSS since start or the last ``reset_peak``, in MiB."""
    kib = _status_kib("VmHWM")
    return None if kib is None else kib / 1024


def rss_mib() -> float | None:
    kib = _status_kib("VmRSS")
    return None if kib is None else kib / 1024


class PhasePeak:
    """``with PhasePeak() as peak: …`` then ``peak.mib`` (peak RSS during the block)."""

    def __init__(self) -> None:
        self.mib: float | None = None
        self.start_mib: float | None = None

    def __enter__(self) -> PhasePeak:
        reset_peak()
        self.start_mib = rss_mib()
        return self

    def __exit__(self, *exc: object) -> None:
        self.mib = peak_rss_mib()
