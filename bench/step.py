"""One measured step in its own subprocess: its result, its wall time, its peak memory.

The parent runs ``python -m bench.step MODULE:FUNCTION PARAMS_JSON OUT_PATH``; the
child imports ``MODULE``, calls ``FUNCTION(params)`` and writes the returned dict as
JSON to ``OUT_PATH``. Its peak RSS, workload 8's column, is the largest of its own
(``VmHWM`` in ``/proc/self/status``) and of the worker processes it started and waited
for (``RUSAGE_CHILDREN``); the child writes it next to its result. (The ``ru_maxrss``
that ``os.wait4`` gives the parent is no measure of the child: Linux charges a process
the resident size of the process it was forked from until its ``exec``, so every step
would weigh at least as much as ``run.py`` itself. It is used only if the child wrote
no figure.)
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class StepFailed(Exception):
    """A step's subprocess exited non-zero (its traceback went to stderr)."""


@dataclass
class StepResult:
    value: dict[str, Any]
    seconds: float
    peak_rss_mib: float


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a step: this one, with the repository root importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONHASHSEED", "0")
    env.update(extra or {})
    return env


def run_step(target: str, params: dict[str, Any]) -> StepResult:
    """Run ``target`` (``module:function``) with ``params`` in a fresh interpreter."""
    with tempfile.TemporaryDirectory(prefix="cvbench-step-") as tmp:
        out = Path(tmp) / "result.json"
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.step", target, json.dumps(params), str(out)], cwd=ROOT, env=child_env()
        )
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        if code != 0:
            raise StepFailed(f"step {target} exited with status {code}")
        value = json.loads(out.read_text())
        own = Path(str(out) + ".rss")
        peak = float(own.read_text()) if own.exists() else usage.ru_maxrss / 1024
    return StepResult(value, seconds, peak)


def own_peak_rss_mib() -> float:
    """This process's peak RSS, or its waited-for workers' if larger, in MiB."""
    from bench.timing import peak_rss_mib

    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return max(peak_rss_mib() or 0.0, workers)


def log(message: str) -> None:
    """Progress of a step, on stderr (stdout is kept for the final table)."""
    print(f"  · {message}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    target, params, out = argv
    module_name, _, function = target.partition(":")
    fn = getattr(importlib.import_module(module_name), function)
    result = fn(json.loads(params))
    Path(out).write_text(json.dumps(result))
    Path(out + ".rss").write_text(f"{own_peak_rss_mib():.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
