"""W11's design floor: what one cold checkout costs with no Python of credvault's around it.

W11 (``w11_cold_checkout.py``, which runs this as a step of its own) asks a checkout of a secret and client not touched
before to take at most 3× the durable-commit floor. This script measures, in one run and
against that floor, the two parts a cold checkout cannot do without in credvault's design:

* **SQL**: the same statements in the same two transactions as a real checkout on the same
  data set (the client-context read, rolled back; then the write unit: caller and grant
  read, the client/secret/version/policy/hold read, the event insert, the head update, the
  hold rows, the last-use update, the commit), replayed with raw ``sqlite3``, the same
  pragmas, no ORM, no credvault code. The statement texts are captured from a real checkout
  (``sql_of_one_checkout``), so they cannot drift from what the code runs.
* **credvault**: W11's kept-engineer series itself, on the same copy, in the same run.
* **Crypto**: the minimum of credvault's own crypto recipes a kept engineer session runs for a
  client new to it: the three client-context fields opened (slug, lookup key, audit-key ring),
  the name tag, the grant's Ed25519 signature checked, the data key unwrapped, the metadata and
  the password opened, the event's details sealed, the event hashed and signed.

Run alone: ``python -m bench.workloads.w11_design_floor DATASET_DIR [N]`` (a data set kept by
``bench/run.py --keep``; it is copied, never written). It prints medians and ratios.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url

from bench import dataset
from bench.timing import summary
from vault.crypto import _primitives as p
from vault.crypto import blobs, chain, signing
from vault.crypto.labels import LABEL_SIG_GRANT, LABEL_TAG_SECRET_NAME

PRAGMAS = ("busy_timeout = 5000", "journal_mode = WAL", "foreign_keys = ON", "secure_delete = ON", "synchronous = FULL")


def credvault_series(
    manifest: dataset.Manifest, n: int
) -> tuple[list[tuple[str, tuple[Any, ...]]], list[float], list[float]]:
    """W11's kept-engineer series (each checkout of a secret and client new to the session):
    the statements of one of them (text, parameters), ``n`` timed ones, and the time of each
    durable commit inside them (the write unit's: the driver's ``commit``, timed around it)."""
    from bench.workloads.w11_cold_checkout import FreshObjects, _new_refs

    name, clients = dataset.engineer_name(0), manifest.shape.granted_clients(0)
    refs = _new_refs(manifest, clients, 1)
    vault = FreshObjects(manifest, name)()
    for _ in range(2):
        vault.checkouts.checkout(next(refs), reason="design floor warm-up")
    seen: list[tuple[str, tuple[Any, ...]]] = []

    def listen(_c: Any, _cur: Any, statement: str, parameters: Any, _x: Any, _many: bool) -> None:
        seen.append((statement, tuple(bytes(v) if isinstance(v, memoryview) else v for v in parameters)))

    event.listen(vault.store.engine, "before_cursor_execute", listen)
    vault.checkouts.checkout(next(refs), reason="design floor")
    event.remove(vault.store.engine, "before_cursor_execute", listen)
    commits: list[float] = []
    dialect = type(vault.store.engine.dialect)
    real_commit = dialect.do_commit

    def do_commit(self: Any, connection: Any) -> None:
        start = time.perf_counter()
        real_commit(self, connection)
        commits.append(time.perf_counter() - start)

    dialect.do_commit = do_commit  # type: ignore[method-assign]
    try:
        times = [_timed(lambda: vault.checkouts.checkout(next(refs), reason="design floor")) for _ in range(n)]
    finally:
        dialect.do_commit = real_commit  # type: ignore[method-assign]
    vault.close()
    return seen, times, commits


def sql_floor(db: Path, statements: list[tuple[str, tuple[Any, ...]]], n: int) -> tuple[list[float], list[float]]:
    """(the statements replayed, one INSERT and COMMIT): ``n`` timed runs each, interleaved."""
    conn = sqlite3.connect(db, isolation_level=None)
    for pragma in PRAGMAS:
        conn.execute(f"PRAGMA {pragma}")
    conn.execute("CREATE TABLE floor_events (seq INTEGER PRIMARY KEY, body BLOB)")
    (head,) = conn.execute("SELECT seq FROM audit_head WHERE id = 1").fetchone()
    secrets = [row[0] for row in conn.execute("SELECT id FROM secrets ORDER BY id DESC LIMIT ?", (n + 20,))]
    replay, floor = [], []

    def checkout(seq: int, secret_id: int) -> None:
        for text, params in statements:
            if text.startswith("INSERT INTO audit_events"):
                params = (seq, *params[1:6], secret_id, *params[7:])
            elif text.startswith("UPDATE audit_head"):
                params = (seq, *params[1:])
            elif text.startswith("INSERT INTO checkouts"):
                params = (secret_id, *params[1:4], seq, *params[5:])
            elif text.startswith("UPDATE secrets"):
                params = (params[0], secret_id)
            elif text.startswith("UPDATE checkouts"):
                continue  # a held checkout of the same secret released: the captured one was not
            if text.startswith("BEGIN") and conn.in_transaction:
                conn.execute("ROLLBACK")  # the context read ends (read units roll back)
            cur = conn.execute(text, params)
            if text.startswith("SELECT"):
                cur.fetchall()
        conn.execute("COMMIT")  # the write unit's (SQLAlchemy commits on the connection, not by a statement)

    def commit() -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO floor_events (body) VALUES (?)", (os.urandom(300),))
        conn.execute("COMMIT")

    for i, secret_id in enumerate(secrets):
        replay.append(_timed(lambda: checkout(head + 1 + i, secret_id)))  # noqa: B023 - called at once
        floor.append(_timed(commit))
    conn.close()
    return replay[20:], floor[20:]


def crypto_floor(n: int) -> list[float]:
    client_key, ring, dek = blobs.new_key(), blobs.new_key(), blobs.new_key()
    seed, _public = p.ed25519_generate()
    granter_seed, granter_public = p.ed25519_generate()
    fields = {
        purpose: blobs.encrypt_client_field(client_key, 1, os.urandom(32), 7, purpose)
        for purpose in ("slug", "lookup", "audit")
    }
    wrapped = blobs.wrap_data_key(client_key, 1, dek, 7, 11, 1)
    metadata = blobs.encrypt_secret_field(dek, 1, os.urandom(120), 7, 11, 1, "metadata")
    password = blobs.encrypt_secret_field(dek, 1, os.urandom(24), 7, 11, 1, "password")
    vault_id, prev = os.urandom(16), os.urandom(32)
    grant_message = p.ctx(LABEL_SIG_GRANT, vault_id, 3, 7, 2, 1_800_000_000, 12)
    grant_signature = p.ed25519_sign(granter_seed, grant_message)

    def checkout() -> None:
        opened = [blobs.decrypt_client_field(client_key, 1, blob, 7, purpose) for purpose, blob in fields.items()]
        signing.lookup_tag(opened[1], LABEL_TAG_SECRET_NAME, "router-admin")
        p.ed25519_verify(granter_public, grant_signature, grant_message)
        key = blobs.unwrap_data_key(client_key, 1, wrapped, 7, 11, 1)
        blobs.decrypt_secret_field(key, 1, metadata, 7, 11, 1, "metadata")
        blobs.decrypt_secret_field(key, 1, password, 7, 11, 1, "password")
        details = blobs.encrypt_audit_detail(ring, 1, b'{"field":"password","reason":"ticket 1"}', 7, 99, "checkout")
        digest = chain.event_hash(
            vault_id, 99, 1_800_000_000, 2, 1, "checkout", 7, 11, 1, details, None, prev_hash=prev
        )
        chain.sign_event(seed, vault_id, 99, digest)

    for _ in range(20):
        checkout()
    return [_timed(checkout) for _ in range(n)]


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def measure(params: dict[str, Any]) -> dict[str, Any]:
    """Step entry (``w11_cold_checkout.run``): on a copy of the main data set, in one run, W11's
    kept-engineer series, the same SQL replayed raw, the minimum crypto, the commit floor."""
    source, n = Path(params["manifest"]), params["samples"]
    with tempfile.TemporaryDirectory(prefix="cvbench-w11floor-", dir=params["workdir"]) as tmp:
        db = Path(tmp) / "main.db"
        manifest = dataset.load(source)
        shutil.copy(make_url(manifest.url).database or "", db)
        manifest = dataclasses.replace(manifest, url=f"sqlite:///{db}")
        statements, real, commits = credvault_series(manifest, n)
        replay, floor = sql_floor(db, statements, n)
    crypto = crypto_floor(n)
    writes = [text.split(" (")[0] for text, _ in statements if not text.startswith(("SELECT", "BEGIN", "PRAGMA"))]
    return {
        "checks": [
            (
                f"W11 design floor: the replayed checkout holds the reads and the writes of one "
                f"({len(statements)} statements: {', '.join(writes)})",
                any(w.startswith("INSERT INTO audit_events") for w in writes)
                and any(w.startswith("INSERT INTO checkouts") for w in writes),
            )
        ],
        "statements": len(statements),
        "floor": summary(floor),
        "sql": summary(replay),
        "crypto": summary(crypto),
        "credvault": summary(real),
        "commit": summary(commits),
    }


def main() -> None:
    source, n = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 300
    with tempfile.TemporaryDirectory(prefix="cvbench-w11floor-") as workdir:
        v = measure({"manifest": str(source / "main.json"), "samples": n, "workdir": workdir})
    f, s, c, r = (v[k]["median"] * 1e3 for k in ("floor", "sql", "crypto", "credvault"))
    print(f"{v['statements']} statements per cold checkout (W11's engineer, kept session)")
    print(f"durable-commit floor (W11's baseline)      {f:.3f} ms")
    print(f"the same SQL, raw sqlite3, no credvault    {s:.3f} ms  {s / f:.2f}x the floor")
    print(f"the minimum crypto, credvault's recipes    {c:.3f} ms  {c / f:.2f}x the floor")
    print(f"design floor (SQL + crypto)                {s + c:.3f} ms  {(s + c) / f:.2f}x the floor (target 3x)")
    print(f"credvault's checkout (the same series)     {r:.3f} ms  {r / f:.2f}x the floor")
    k = v["commit"]["median"] * 1e3
    print(f"  of which its write unit's commit         {k:.3f} ms  {k / f:.2f}x the floor")


if __name__ == "__main__":
    main()
