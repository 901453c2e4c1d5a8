"""What the figures were measured on: CPU, cores, memory, kernel, versions, date.

Read from ``/proc`` and from the installed packages, never guessed; a value that
cannot be read is reported as ``unknown``.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import sqlite3
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cryptography", "SQLAlchemy", "argon2-cffi", "psycopg", "click", "keyring")


def _cpuinfo() -> tuple[str, int]:
    model, physical = "unknown", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, 0
    phys = core = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and model == "unknown":
            model = value
        elif key == "physical id":
            phys = value
        elif key == "core id":
            core = value
            physical.add((phys, core))
    return model, len(physical)


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        return None
    return None


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")


def describe(postgres_version: str | None) -> dict[str, Any]:
    model, physical_cores = _cpuinfo()
    mem = _mem_total_gib()
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": model,
        "logical_cpus": os.cpu_count() or 0,
        "physical_cores": physical_cores,
        "ram": f"{mem:.1f} GiB" if mem else "unknown",
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": postgres_version or "unreachable",
        "packages": {name: _version(name) for name in PACKAGES},
        "commit": _git_commit(),
    }
