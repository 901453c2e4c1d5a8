"""Keyset paging: a table walked in bounded pages, one statement per page.

``pages(conn, query, key)`` runs ``query`` (a SELECT whose rows carry ``key``) again and
again with ``WHERE key > :last ORDER BY key LIMIT :size``, yielding each page's rows, until
a page comes back short. Unlike OFFSET paging, each page costs the same however far the
walk has gone, and a row written meanwhile is neither skipped nor read twice (the key
only grows). ``rows`` flattens the pages.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Row, Select
from sqlalchemy.engine import Connection

PAGE = 500  # rows per statement: big enough that a page costs little, small enough to bound memory


def pages(
    conn: Connection, query: Select[Any], key: ColumnElement[Any], *, size: int = PAGE
) -> Iterator[Sequence[Row[Any]]]:
    """The rows of ``query`` ordered by ``key`` (unique, never NULL), one page at a time.
    ``key`` must be one of the columns ``query`` selects."""
    if size < 1:
        raise ValueError("a page holds at least one row")
    last = None
    while True:
        page = query if last is None else query.where(key > last)
        page = page.order_by(key).limit(size)
        found = conn.execute(page).all()
        if found:
            yield found
        if len(found) < size:
            return
        last = found[-1]._mapping[key]


def rows(conn: Connection, query: Select[Any], key: ColumnElement[Any], *, size: int = PAGE) -> Iterator[Row[Any]]:
    """``pages`` flattened: each row of ``query`` in ``key`` order, read ``size`` at a time."""
    for page in pages(conn, query, key, size=size):
        yield from page
