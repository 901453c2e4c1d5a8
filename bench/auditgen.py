"""Fast path for audit events: the rows ``vault/service/journal.py`` appends, in bulk.

``Journal.append`` (vault/authority/journal.py) makes one event per call: it encrypts the details under the
client's current key (``blobs.encrypt_audit_detail`` with the event's sequence number
and action in the associated data), hashes the event with ``chain.event_hash`` over the
previous event's hash, signs ``(vault_id, seq, hash)`` with the actor's key through
``chain.sign_event``, inserts it, and moves ``audit_head``. Appending a million events
that way (one transaction and one fsync each) takes hours, so the benchmark does the
same computations in bulk:

* the caller builds each event's fields (details blob included) with the library's
  recipes; ``Chain.link`` computes the hashes in order, exactly as ``_append`` does;
* ``sign`` / ``sign_async`` compute the signatures with ``chain.sign_event`` in worker processes (they
  dominate: one Ed25519 signature per event);
* ``insert`` writes the events with one ``executemany`` and moves ``audit_head`` to the
  last of them, in the caller's (large) transaction.

The proof that these rows are the library's: ``Vault.verify_audit`` accepts them (every
workload that generates events runs it), and the library keeps appending after them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from multiprocessing import get_context
from multiprocessing.pool import Pool
from typing import Any, NamedTuple

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine

from bench.step import log
from vault.crypto import chain
from vault.storage import models as m

SIGN_CHUNK = 4_000


class Event(NamedTuple):
    """The fields of one event, in the order ``chain.event_hash`` covers them."""

    seq: int
    at_us: int
    engineer_id: int | None
    key_generation: int
    action: str
    client_id: int | None
    secret_id: int | None
    key_version: int | None
    details_blob: bytes | None
    details_json: str | None


def read_head(conn: Connection) -> tuple[int, bytes]:
    row = conn.execute(select(m.AuditHead.seq, m.AuditHead.hash).where(m.AuditHead.id == 1)).first()
    return (int(row[0]), bytes(row[1])) if row else (0, chain.GENESIS)


class Chain:
    """The running end of the chain while events are generated."""

    def __init__(self, vault_id: bytes, seq: int, head_hash: bytes) -> None:
        self.vault_id = vault_id
        self.seq = seq
        self.hash = head_hash

    def link(self, events: Sequence[Event]) -> list[dict[str, object]]:
        """Rows for ``events`` (which must continue the chain), hashes filled in."""
        rows = []
        for e in events:
            if e.seq != self.seq + 1:
                raise ValueError(f"event {e.seq} does not follow {self.seq}")
            digest = chain.event_hash(
                self.vault_id,
                e.seq,
                e.at_us,
                e.engineer_id,
                e.key_generation,
                e.action,
                e.client_id,
                e.secret_id,
                e.key_version,
                e.details_blob,
                e.details_json,
                prev_hash=self.hash,
            )
            row = e._asdict()
            row.update(prev_hash=self.hash, hash=digest, signature=None)
            rows.append(row)
            self.seq, self.hash = e.seq, digest
        return rows


def _sign_chunk(args: tuple[bytes, list[tuple[int, bytes, bytes]]]) -> list[bytes]:
    vault_id, items = args
    return [chain.sign_event(seed, vault_id, seq, digest) for seq, digest, seed in items]


def sign_async(
    pool: Pool | None, vault_id: bytes, rows: list[dict[str, object]], seeds: dict[int, bytes]
) -> Callable[[], None]:
    """Start signing each row with its actor's seed (``seeds[engineer_id]``); call the result to finish."""
    items = [(int(r["seq"]), r["hash"], seeds[r["engineer_id"]]) for r in rows]  # type: ignore[index]
    chunks = [(vault_id, items[i : i + SIGN_CHUNK]) for i in range(0, len(items), SIGN_CHUNK)]
    pending = pool.map_async(_sign_chunk, chunks) if pool is not None else None

    def finish() -> None:
        results = pending.get() if pending is not None else [_sign_chunk(c) for c in chunks]
        signatures = [sig for chunk in results for sig in chunk]
        for row, signature in zip(rows, signatures, strict=True):
            row["signature"] = signature

    return finish


def sign(pool: Pool | None, vault_id: bytes, rows: list[dict[str, object]], seeds: dict[int, bytes]) -> None:
    """Fill in each row's signature (see ``sign_async``)."""
    sign_async(pool, vault_id, rows, seeds)()


def insert(conn: Connection, rows: list[dict[str, object]], seq: int, digest: bytes) -> None:
    """Insert signed rows and move ``audit_head`` to ``(seq, digest)``, in ``conn``'s transaction."""
    if rows:
        conn.execute(m.AuditEvent.__table__.insert(), rows)
    conn.execute(update(m.AuditHead).where(m.AuditHead.id == 1).values(seq=seq, hash=digest))


# -- the generation pipeline ---------------------------------------------------------------

Window = list[Any]
Tables = Sequence[tuple[str, Any]]


def write(
    engine: Engine,
    vault_id: bytes,
    seeds: dict[int, bytes],
    windows: Iterator[Window],
    make: Callable[[Any], dict[str, list[Any]]],
    tables: Tables,
    workers: int,
) -> dict[str, int]:
    """Make, chain, sign and insert ``windows`` of units, one transaction per window.

    ``make(unit)`` runs in worker processes and returns rows per table name (inserted
    in the order of ``tables``) plus ``"events"``, a list of ``Event`` continuing the
    chain. A three-stage pipeline: the workers make window k+1 and sign window k while
    this process hashes window k and inserts window k-1 (hashing is sequential by nature).
    """
    counts = {name: 0 for name, _ in tables} | {"events": 0}
    engine.dispose()  # no open connection is inherited by the worker processes
    with get_context("fork").Pool(workers) as pool:
        with engine.connect() as conn:
            head = Chain(vault_id, *read_head(conn))

        def start(window: Window | None) -> Any:
            return pool.map_async(make, window, chunksize=1) if window else None

        made = start(next(windows, None))
        previous = None
        while made is not None or previous is not None:
            current = None
            if made is not None:
                results = made.get()
                made = start(next(windows, None))
                rows = head.link([e for r in results for e in r["events"]])
                current = (results, rows, sign_async(pool, vault_id, rows, seeds), head.seq, head.hash)
            if previous is not None:
                _insert_window(engine, previous, tables, counts)
            previous = current
    return counts


def _insert_window(engine: Engine, window: tuple[Any, ...], tables: Tables, counts: dict[str, int]) -> None:
    results, rows, finish_signing, seq, digest = window
    finish_signing()
    with engine.begin() as conn:
        for name, model in tables:
            batch = [row for r in results for row in r.get(name, ())]
            if batch:
                conn.execute(model.__table__.insert(), batch)
                counts[name] += len(batch)
        insert(conn, rows, seq, digest)
    counts["events"] += len(rows)
    done = ", ".join(f"{counts[name]:,} {name}" for name in ("secrets", "clients") if name in counts)
    log(f"{done + ', ' if done else ''}{counts['events']:,} events written")
