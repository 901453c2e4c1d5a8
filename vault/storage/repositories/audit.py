"""Audit events: read in pages of sequence numbers, with what showing them needs.

``chained_page`` reads one page of the log (by keyset on ``seq``, filtered by client,
engineer, time and a set of actions) with each event's links, for the keyholder to check;
``newest_start`` finds where the last ``limit`` of them start. ``names`` and
``purge_receipts`` answer, in one statement each, what a page of events refers to.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, NamedTuple

from sqlalchemy import Select, select
from sqlalchemy.engine import Connection

from vault.storage import models as m

EVENTS, ENGINEERS, RECEIPTS = m.AuditEvent.__table__, m.Engineer.__table__, m.PurgeReceipt.__table__
HEAD = m.AuditHead.__table__


class EventRow(NamedTuple):
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
    signature: bytes | None


def _query(
    client_id: int | None,
    engineer_ids: Collection[int] | None,
    since_us: int | None,
    actions: Collection[str] | None,
) -> Select[Any]:
    query = select(*(EVENTS.c[name] for name in EventRow._fields))
    if client_id is not None:
        query = query.where(EVENTS.c.client_id == client_id)
    if engineer_ids is not None:
        query = query.where(EVENTS.c.engineer_id.in_(sorted(engineer_ids)))
    if since_us is not None:
        query = query.where(EVENTS.c.at_us >= since_us)
    if actions is not None:
        query = query.where(EVENTS.c.action.in_(sorted(actions)))
    return query


def names(conn: Connection) -> dict[int, str]:
    """Every engineer's name by id (one statement; engineers are few)."""
    return {int(i): str(n) for i, n in conn.execute(select(ENGINEERS.c.id, ENGINEERS.c.name))}


def engineer_id(conn: Connection, name: str) -> int | None:
    found = conn.execute(select(ENGINEERS.c.id).where(ENGINEERS.c.name == name)).first()
    return None if found is None else int(found[0])


def purge_receipts(conn: Connection, client_ids: Collection[int]) -> dict[int, int]:
    """The receipt of each purged client of ``client_ids`` (the first, if several), by client id."""
    if not client_ids:
        return {}
    query = (
        select(RECEIPTS.c.client_id, RECEIPTS.c.id)
        .where(RECEIPTS.c.client_id.in_(sorted(client_ids)), RECEIPTS.c.kind == "client")
        .order_by(RECEIPTS.c.id.desc())
    )
    return {int(client): int(receipt) for client, receipt in conn.execute(query)}


# -- the keyholder's pages: each event with its chain links -----------------------------------------


class ChainedRow(NamedTuple):
    """An event row with its links: what a keyholder recomputes the hash of and checks."""

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
    signature: bytes | None
    prev_hash: bytes
    hash: bytes
    # format 3 (docs/format.md §8.2): the engineer's signed request and the server key's version
    request_id: bytes | None = None
    request_digest: bytes | None = None
    request_sig: str | None = None
    request_body: bytes | None = None
    server_key_version: int | None = None


FORMAT3 = ("request_id", "request_digest", "request_sig", "request_body", "server_key_version")


def chained_page(
    conn: Connection,
    after: int,
    until: int,
    size: int,
    *,
    client_id: int | None = None,
    engineer_ids: Collection[int] | None = None,
    since_us: int | None = None,
    actions: Collection[str] | None = None,
) -> list[ChainedRow]:
    """One page (at most ``size``) of the events after ``after`` up to ``until`` that pass
    every filter given, oldest first: one statement (keyset on ``seq``)."""
    query = _query(client_id, engineer_ids, since_us, actions).add_columns(
        EVENTS.c.prev_hash, EVENTS.c.hash, *(EVENTS.c[name] for name in FORMAT3)
    )
    query = query.where(EVENTS.c.seq > after, EVENTS.c.seq <= until).order_by(EVENTS.c.seq).limit(size)
    return [ChainedRow._make(row) for row in conn.execute(query)]


def newest_start(
    conn: Connection,
    limit: int,
    until: int,
    *,
    client_id: int | None = None,
    engineer_ids: Collection[int] | None = None,
    since_us: int | None = None,
) -> int:
    """The seq just before the last ``limit`` events up to ``until`` that pass the filters
    (0: fewer than ``limit`` of them)."""
    query = _query(client_id, engineer_ids, since_us, None).where(EVENTS.c.seq <= until)
    start = conn.execute(
        query.with_only_columns(EVENTS.c.seq).order_by(EVENTS.c.seq.desc()).offset(max(0, limit - 1)).limit(1)
    ).scalar()
    return 0 if start is None else int(start) - 1


def head(conn: Connection) -> tuple[int, bytes] | None:
    """The chain's recorded head (seq, hash), if any."""
    found = conn.execute(select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == 1)).first()
    return None if found is None else (int(found[0]), bytes(found[1]))
