"""Checking one range of the audit chain: the work behind ``AuditOps.verify_audit``.

Every row stores its own hash and its predecessor's, so a range ``[lo, hi]`` of events
can be checked on its own: each event's sequence number, its hash recomputed from its
fields, its link to the row before it inside the range, and its signature against the
key of the engineer and key generation that signed it. Only the link of the range's
first event (its ``prev_hash`` against the hash that ends the range before it) is left
to the caller, which walks the ranges in order. So a long chain is split by sequence
number over worker processes, each reading its own rows from the database (nothing but
the range, the vault id and the public keys crosses a process boundary), while a short
one is one range checked in the caller's own transaction.

Rows are read as plain DB-API tuples: a million events are never ORM objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from multiprocessing.util import Finalize
from typing import Any, NamedTuple

from sqlalchemy import func, select
from sqlalchemy.engine import Dialect, Engine, make_url

from vault.crypto import chain
from vault.service.journal import UNSIGNED_ACTIONS
from vault.storage import models as m
from vault.storage.engine import make_engine

CHUNK = 20_000  # events per range handed to a worker process, at most
CHUNKS_PER_WORKER = 8  # at least this many ranges per worker, so a busy core does not hold the others up
FETCH = 2_000

Keys = dict[tuple[int | None, int], bytes]

_T = m.AuditEvent.__table__
_COLUMNS = [
    _T.c[name]
    for name in (
        "seq",
        "at_us",
        "engineer_id",
        "key_generation",
        "action",
        "client_id",
        "secret_id",
        "key_version",
        "details_blob",
        "details_json",
        "prev_hash",
        "hash",
        "signature",
    )
]


class RangeResult(NamedTuple):
    good: int  # events that verified, from lo on, before the first bad one (or all of them)
    first_prev: bytes | None  # prev_hash of event lo if it is there: its link is the caller's to check
    last_hash: bytes | None  # hash of the last event that verified
    bad_seq: int | None = None
    problem: str | None = None


def chunk_size(events: int, workers: int) -> int:
    return max(1, min(CHUNK, chain.PARALLEL_THRESHOLD, -(-events // (workers * CHUNKS_PER_WORKER))))


def shareable(url: str) -> bool:
    """Whether another process can open the same database (not an in-memory SQLite one)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return True
    database = parsed.database or ""
    return database not in ("", ":memory:") and "mode=memory" not in str(parsed)


def _sql(dialect: Dialect, statement: Any) -> str:
    return str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def check_range(dbapi_connection: Any, dialect: Dialect, vault_id: bytes, keys: Keys, lo: int, hi: int) -> RangeResult:
    """Check events ``lo``..``hi`` (all but the first one's link) on a DB-API connection."""
    cursor = dbapi_connection.cursor()
    try:
        seq = _T.c.seq
        cursor.execute(_sql(dialect, select(*_COLUMNS).where(seq >= lo, seq <= hi).order_by(seq)))
        result = _check(_fetched(cursor), chain.EventCodec(vault_id), keys, lo)
        missing = lo + result.good
        if result.problem is None and missing <= hi:  # the rows stop before hi: what comes next?
            cursor.execute(_sql(dialect, select(func.min(seq)).where(seq > missing)))
            row = cursor.fetchone()
            if row is not None and row[0] is not None:
                result = result._replace(bad_seq=missing, problem=f"event {missing} is missing (next is {row[0]})")
        return result
    finally:
        cursor.close()


def _fetched(cursor: Any) -> Iterator[tuple[Any, ...]]:
    while rows := cursor.fetchmany(FETCH):
        yield from rows


def _check(rows: Iterable[tuple[Any, ...]], codec: chain.EventCodec, keys: Keys, lo: int) -> RangeResult:
    expected, first_prev, running = lo, None, None
    event_hash, signature_valid = codec.audit_event_hash, codec.signature_valid
    problem = None
    for row in rows:
        seq, _, engineer_id, generation, action, _, _, _, _, _, prev_hash, digest, signature = row
        if seq != expected:
            problem = f"event {expected} is missing (next is {seq})" if seq > expected else "events are out of order"
        elif running is None:
            first_prev = prev_hash
        elif prev_hash != running:
            problem = "it does not link to the event before it"
        if problem is None:
            if event_hash(*row[:11]) != digest:  # seq … details_json, prev_hash: the hashed fields in order
                problem = "its contents were changed"
            elif signature is None:
                if action not in UNSIGNED_ACTIONS:
                    problem = "it is not signed"
            else:
                public = keys.get((engineer_id, generation))
                if public is None:
                    problem = "it is signed by an unknown or unverified engineer key"
                elif not signature_valid(public, signature, seq, digest):
                    problem = "its signature is invalid"
        if problem is not None:
            return RangeResult(expected - lo, first_prev, running, expected, problem)
        running = digest
        expected += 1
    return RangeResult(expected - lo, first_prev, running)


# -- in a worker process --------------------------------------------------------------------------

_ENGINES: dict[str, Engine] = {}


def check_range_at(url: str, vault_id: bytes, keys: Keys, lo: int, hi: int) -> RangeResult:
    """``check_range`` on a connection of this (worker) process's own, read-only use.

    A plain DB-API connection, outside the store's transactions: on SQLite those begin
    with ``BEGIN IMMEDIATE``, and the verifying process already holds that lock (readers
    of a WAL database are not blocked by it).
    """
    engine = _ENGINES.get(url)
    if engine is None:
        engine = _ENGINES[url] = make_engine(url)
        Finalize(None, engine.dispose, exitpriority=10)  # close it when the worker process exits
    connection = engine.raw_connection()
    try:
        return check_range(connection, engine.dialect, vault_id, keys, lo, hi)
    finally:
        connection.close()
