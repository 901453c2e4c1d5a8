"""Audit events for verifying the chain: its newest event and events by sequence number.

The pages themselves are ``audit.chained_page`` (unfiltered: the chain in order).
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from vault.storage.repositories.audit import EVENTS, ChainedRow


def newest(conn: Connection) -> int:
    """The highest sequence number stored (0: no event)."""
    found = conn.execute(select(func.max(EVENTS.c.seq))).scalar()
    return 0 if found is None else int(found)


def events_at(conn: Connection, seqs: Collection[int]) -> list[ChainedRow]:
    """The events at ``seqs`` that exist, with their links, by increasing seq (one statement)."""
    if not seqs:
        return []
    query = select(*(EVENTS.c[name] for name in ChainedRow._fields)).where(EVENTS.c.seq.in_(sorted(seqs)))
    return [ChainedRow._make(row) for row in conn.execute(query.order_by(EVENTS.c.seq))]
