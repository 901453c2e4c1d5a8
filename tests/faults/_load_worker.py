"""Load-test worker: one engineer (or admin) working on the vault for a bounded time.

Started by ``test_load.py`` as ``python _load_worker.py JOB_JSON``. The worker opens its
own ``Vault`` (its own engine and connections), unlocks, says it is ready by creating
the ``ready`` file, waits for the ``go`` file, then loops for ``seconds``:

* engineers: checkouts with a reason (and usually a check-in), plain reveals, updates;
* admins: grants and revokes of the spare engineers, and updates.

Every call that returns is acknowledged by one JSON line in the ``acks`` file, written
before the next call starts, with what it wrote or read:

    {"op": "update", "ref": "acme/s0", "version": 7, "password": "..."}
    {"op": "checkout", "ref": "acme/s0", "version": 7, "value": "..."}

Errors the vault raises on purpose under contention (``EXPECTED``, and ``RACED``: a known
bug) are counted, not acknowledged: they must leave nothing behind. Anything else is recorded with its
traceback as unexpected. At the end one JSON report goes to stdout: retries
(``Vault.retries``), counts, expected errors by type, and unexpected errors.
"""

from __future__ import annotations

import json
import random
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from vault import Vault
from vault.crypto.keyrecord import FLOOR
from vault.errors import CheckoutConflict, NotFound, VaultError
from vault.service.sessions import MemorySessionStore

# CheckoutConflict: another engineer holds the exclusive checkout (checkout, reveal, update);
# NotFound: an admin revoked a grant another admin had revoked first (only from revoke).
EXPECTED: dict[str, tuple[type[VaultError], ...]] = {
    "checkout": (CheckoutConflict,),
    "reveal": (CheckoutConflict,),
    "update": (CheckoutConflict,),
    "revoke": (NotFound,),
}


class Worker:
    """One engineer's loop; ``acks`` is the open acknowledgement file."""

    def __init__(self, job: dict[str, Any], acks: TextIO) -> None:
        self.job, self.acks = job, acks
        self.name: str = job["name"]
        self.rng = random.Random(job["seed"])
        self.refs: dict[str, bool] = job["refs"]  # ref -> its client's policy is exclusive
        self.counts: Counter[str] = Counter()
        self.expected: Counter[str] = Counter()
        self.unexpected: list[str] = []
        self.vault = Vault.open(job["url"], engineer=self.name, sessions=MemorySessionStore(), kdf_params=FLOOR)

    def ack(self, record: dict[str, Any]) -> None:
        self.acks.write(json.dumps(record) + "\n")
        self.acks.flush()
        self.counts[record["op"]] += 1

    def attempt(self, op: str, call: Callable[[], Any]) -> tuple[bool, Any]:
        """(True, what the call returned) if it returned, else (False, None)."""
        try:
            return True, call()
        except EXPECTED.get(op, ()) as error:
            self.expected[f"{op}:{type(error).__name__}"] += 1
        except Exception:  # reported to the test, which fails on any
            self.unexpected.append(f"{op}: {traceback.format_exc()}")
        return False, None

    def run(self) -> dict[str, Any]:
        job, vault = self.job, self.vault
        vault.engineers.unlock(self.name, job["passphrase"])
        self.ack({"op": "unlock"})
        Path(job["ready"]).touch()
        go, wait_until = Path(job["go"]), time.monotonic() + 300
        while not go.exists():
            if time.monotonic() > wait_until:
                raise SystemExit("no start signal")
            time.sleep(0.005)
        started = time.monotonic()
        deadline, i = started + job["seconds"], 0
        while time.monotonic() < deadline and len(self.unexpected) < 5:
            i += 1
            self.one(i)
        seconds = time.monotonic() - started
        vault.close()
        return {
            "name": self.name,
            "role": job["role"],
            "retries": vault.retries,
            "seconds": seconds,
            "counts": dict(self.counts),
            "expected": dict(self.expected),
            "unexpected": self.unexpected,
        }

    def one(self, i: int) -> None:
        vault, rng, reason = self.vault, self.rng, f"T-{self.name}-{i}"
        ref = rng.choice(sorted(self.refs))
        r = rng.random()
        if self.job["role"] == "admin" and r < 0.6:
            spare, client = rng.choice(self.job["spares"]), rng.choice(self.job["clients"])
            if rng.random() < 0.55:
                if self.attempt("grant", lambda: vault.grants.grant(spare, client, reason=reason))[0]:
                    self.ack({"op": "grant", "engineer": spare, "client": client})
            else:
                done, revoked = self.attempt("revoke", lambda: vault.grants.revoke(spare, client))
                if done:
                    self.ack({"op": "revoke", "engineer": spare, "client": client, "grants": revoked})
        elif r < 0.75:
            done, out = self.attempt("checkout", lambda: vault.checkouts.checkout(ref, reason=reason))
            if done:
                self.ack({"op": "checkout", "ref": ref, "version": out.version, "value": out.value})
                # an exclusive hold is always released; others are often kept (a new one replaces it)
                if (self.refs[ref] or rng.random() < 0.7) and self.attempt("checkin", lambda: vault.checkouts.checkin(ref))[0]:
                    self.ack({"op": "checkin", "ref": ref})
        elif r < 0.85:
            done, value = self.attempt("reveal", lambda: vault.checkouts.reveal(ref, reason=reason))
            if done:
                self.ack({"op": "reveal", "ref": ref, "value": value})
        else:
            password = f"{self.name}/{i}/{rng.getrandbits(48):012x} ✓"
            done, info = self.attempt("update", lambda: vault.secrets.update(ref, password=password))
            if done:
                self.ack({"op": "update", "ref": ref, "version": info.version, "password": password})


def main() -> None:
    job: dict[str, Any] = json.loads(sys.argv[1])
    with Path(job["acks"]).open("a", encoding="utf-8") as acks:
        report = Worker(job, acks).run()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
