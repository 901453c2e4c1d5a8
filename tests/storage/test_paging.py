"""Keyset paging (vault/storage/repositories/paging.py): every row once, in key order, one
statement per page, and a row written during the walk neither skipped nor read twice."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, event, insert, select
from sqlalchemy.engine import Connection

from vault.storage.repositories import paging

ITEMS = Table("items", MetaData(), Column("id", Integer, primary_key=True), Column("kind", String(8)))


@pytest.fixture
def conn() -> Any:
    engine = create_engine("sqlite://")
    ITEMS.metadata.create_all(engine)
    with engine.connect() as connection:
        connection.execute(insert(ITEMS), [{"id": i, "kind": "odd" if i % 2 else "even"} for i in range(1, 24)])
        yield connection
    engine.dispose()


@contextlib.contextmanager
def _counting(conn: Connection) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(*args: Any) -> None:
        seen.append(args[2])

    event.listen(conn, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(conn, "before_cursor_execute", count)


@pytest.mark.parametrize("size", [1, 3, 5, 23, 24, 500])
def test_every_row_comes_once_in_key_order_one_statement_a_page(conn, size) -> None:  # type: ignore[no-untyped-def]
    with _counting(conn) as seen:
        pages = list(paging.pages(conn, select(ITEMS.c.id, ITEMS.c.kind), ITEMS.c.id, size=size))
    ids = [row.id for page in pages for row in page]
    assert ids == list(range(1, 24))
    assert all(len(page) <= size for page in pages)
    assert len(seen) == 23 // size + 1  # the last page is short (or empty): the walk stops there


def test_a_filter_holds_on_every_page(conn) -> None:  # type: ignore[no-untyped-def]
    query = select(ITEMS.c.id).where(ITEMS.c.kind == "odd")
    assert [r.id for r in paging.rows(conn, query, ITEMS.c.id, size=2)] == list(range(1, 24, 2))


def test_a_row_written_during_the_walk_is_read_once(conn) -> None:  # type: ignore[no-untyped-def]
    walk = paging.rows(conn, select(ITEMS.c.id), ITEMS.c.id, size=4)
    first = [next(walk).id for _ in range(6)]
    conn.execute(insert(ITEMS), [{"id": 100, "kind": "new"}, {"id": 0, "kind": "old"}])  # after and before the key
    rest = [row.id for row in walk]
    assert first + rest == [*range(1, 24), 100]


def test_a_page_holds_at_least_one_row(conn) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="at least one row"):
        next(paging.pages(conn, select(ITEMS.c.id), ITEMS.c.id, size=0))
