"""Crash-test worker: a pre-imported process that forks one child per job.

Started by the crash tests as ``python _worker.py``; importing SQLAlchemy and the vault
takes about a second, so this process imports once and forks a child for each job.
The child is the process the test kills: it opens the SQLite vault, unlocks the admin
with the passphrase read from a file, says ``ready PID``, runs the operation, and says
``done PID SECONDS`` (or ``error PID TEXT``). Commands, one JSON object per line on
stdin:

    {"op": "run", "db": PATH, "kind": KIND, "engineer": NAME, "passphrase_file": PATH, "batch": N}
    {"op": "reap", "pid": PID}      -> "reaped PID CODE" (CODE is -9 after SIGKILL)

Children are reaped only on request, so a PID cannot be reused before the test has
sent its SIGKILL (``serve``, which ``_ops_worker.py`` uses too). Nothing here opens a
database before forking.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import sqlalchemy.dialects.sqlite  # noqa: F401 - loaded before forking, like the rest

from vault import Vault
from vault.crypto.keyrecord import FLOOR
from vault.service.sessions import MemorySessionStore


def _say(line: str) -> None:
    os.write(1, (line + "\n").encode("utf-8"))


def _job(command: dict[str, object]) -> None:
    pid = os.getpid()
    vault = Vault.open(
        f"sqlite:///{command['db']}",
        engineer=str(command["engineer"]),
        sessions=MemorySessionStore(),
        kdf_params=FLOOR,
    )
    passphrase = Path(str(command["passphrase_file"])).read_text(encoding="utf-8")
    vault.engineers.unlock(str(command["engineer"]), passphrase)
    batch = int(command.get("batch", 3))  # type: ignore[call-overload]
    _say(f"ready {pid}")
    started = time.perf_counter()
    kind = command["kind"]
    if kind == "client":
        vault.keys.rotate_client("acme", batch_size=batch)
    elif kind == "root":
        vault.keys.rotate_root()
    elif kind == "remove":
        vault.engineers.remove("alice", batch_size=batch)
    elif kind == "engineer":
        vault.engineers.rotate("alice")
    else:
        raise ValueError(f"unknown kind {kind!r}")
    _say(f"done {pid} {time.perf_counter() - started:.6f}")


def serve(job: Callable[[dict[str, object]], None]) -> None:
    """Fork a child that runs ``job`` for each ``run`` command; reap one for each ``reap`` (``_ops_worker.py`` too)."""
    print("worker ready", flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "run":
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    job(command)
                except BaseException:
                    _say(f"error {os.getpid()} " + traceback.format_exc().replace("\n", " | "))
                    code = 1
                os._exit(code)
        elif command["op"] == "reap":
            pid = int(command["pid"])
            _, status = os.waitpid(pid, 0)
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            print(f"reaped {pid} {code}", flush=True)


def main() -> None:
    serve(_job)


if __name__ == "__main__":
    main()
