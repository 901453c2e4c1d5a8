"""Crash-test worker for everyday operations: forks one child per job, like ``_worker.py``.

Started by ``test_crash_operations.py`` (and ``test_pg_faults.py``) as ``python
_ops_worker.py``. The child opens the vault (a SQLite path as ``db``, or any database
URL as ``url``), unlocks the admin with the passphrase read from a file, says
``ready PID``, then runs ``count`` operations of one kind. Before each call it says
``try PID JSON`` (what it is about to write) and after the call returns ``ack PID JSON``
(what was written); at the end ``done PID SECONDS`` (or ``error PID TEXT``). Commands,
one JSON object per line on stdin:

    {"op": "run", "db": PATH, "kind": KIND, "passphrase_file": PATH, "count": N, "tag": TEXT}
    {"op": "run", "url": URL, ...}  # the same, on any database URL (PostgreSQL)
    {"op": "reap", "pid": PID}      -> "reaped PID CODE" (CODE is -9 after SIGKILL)

Kinds: ``add`` (new secrets acme/new-TAG-I), ``update`` (new passwords for acme/sNN),
``grant`` (acme to eng0..engN-1), ``checkout`` (acme/sNN with a reason), ``purge`` (the
client acme): ``batch``, which ``test_pg_faults.py`` also runs in its own process.
Nothing here opens a database before forking.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg  # noqa: F401 - loaded before forking, like the rest (no connection is open)
import sqlalchemy.dialects.sqlite  # noqa: F401
from _worker import serve

from vault import Vault
from vault.crypto.keyrecord import FLOOR
from vault.service.sessions import MemorySessionStore

ADMIN = "root-admin"
REASON = "T-1 crash test"
Item = dict[str, Any]  # what a call writes: said as JSON in ``try`` and ``ack``


def _say(line: str) -> None:
    os.write(1, (line + "\n").encode("utf-8"))


def batch(
    vault: Vault, kind: object, count: int, tag: str, tried: Callable[[Item], None], acked: Callable[[Item], None]
) -> None:
    """Run ``count`` calls of ``kind``, telling ``tried`` each item before its call and ``acked`` after it.

    ``test_pg_faults.py`` runs it in its own process too (a server stop, on a long-lived Vault)."""
    for i in range(count):
        item: Item
        if kind == "add":
            item = {"ref": f"acme/new-{tag}-{i}", "password": f"added {tag} {i} ✓"}
            tried(item)
            vault.secrets.add(item["ref"], password=item["password"], username=f"user{i}")
        elif kind == "update":
            item = {"ref": f"acme/s{i:02d}", "password": f"updated {tag} {i} ✓"}
            tried(item)
            vault.secrets.update(item["ref"], password=item["password"])
        elif kind == "grant":
            item = {"engineer": f"eng{i}", "client": "acme"}
            tried(item)
            vault.grants.grant(item["engineer"], "acme", reason=f"T-{tag}")
        elif kind == "checkout":
            item = {"ref": f"acme/s{i:02d}"}
            tried(item)
            item["value"] = vault.checkouts.checkout(item["ref"], reason=REASON).value
        elif kind == "purge":
            item = {"client": "acme"}
            tried(item)
            item["receipt"] = vault.purge.client("acme", request=f"REQ-{tag}").id
        else:
            raise ValueError(f"unknown kind {kind!r}")
        acked(item)


def _job(command: dict[str, object]) -> None:
    pid = os.getpid()
    url = str(command["url"]) if "url" in command else f"sqlite:///{command['db']}"
    vault = Vault.open(url, engineer=ADMIN, sessions=MemorySessionStore(), kdf_params=FLOOR)
    vault.engineers.unlock(ADMIN, Path(str(command["passphrase_file"])).read_text(encoding="utf-8"))
    count, tag, kind = int(command["count"]), str(command["tag"]), command["kind"]  # type: ignore[call-overload]
    _say(f"ready {pid}")
    started = time.perf_counter()
    batch(
        vault,
        kind,
        count,
        tag,
        lambda item: _say(f"try {pid} {json.dumps(item)}"),
        lambda item: _say(f"ack {pid} {json.dumps(item)}"),
    )
    _say(f"done {pid} {time.perf_counter() - started:.6f}")


def main() -> None:
    serve(_job)


if __name__ == "__main__":
    main()
