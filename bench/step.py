"""One measured step in its own subprocess: its result, its wall time, its peak memory.

The parent runs ``python -m bench.step MODULE:FUNCTION PARAMS_JSON OUT_PATH``; the
child imports ``MODULE``, calls ``FUNCTION(params)`` and writes the returned dict as
JSON to ``OUT_PATH``. The parent reaps the child with ``os.wait4``, whose resource
usage gives the child's peak RSS, including that of any worker processes it started
and waited for (``ru_maxrss`` of the largest). This is workload 8's column.
"""

from __future__ import annotations

import importlib
import json
import os
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
    return StepResult(value, seconds, usage.ru_maxrss / 1024)


def log(message: str) -> None:
    """Progress of a step, on stderr (stdout is kept for the final table)."""
    print(f"  · {message}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    target, params, out = argv
    module_name, _, function = target.partition(":")
    fn = getattr(importlib.import_module(module_name), function)
    result = fn(json.loads(params))
    Path(out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
