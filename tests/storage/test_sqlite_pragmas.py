"""SQLite is opened in WAL mode with foreign keys, secure_delete, FULL sync and a busy timeout."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from vault.storage import engine as storage

SYNCHRONOUS_FULL = 2


def _pragma(conn, name: str) -> object:  # type: ignore[no-untyped-def]
    if hasattr(conn, "cursor"):  # a raw DB-API connection
        cursor = conn.cursor()
        try:
            return cursor.execute(f"PRAGMA {name}").fetchone()[0]
        finally:
            cursor.close()
    return conn.execute(text(f"PRAGMA {name}")).scalar()


@pytest.fixture
def store(sqlite_url):  # type: ignore[no-untyped-def]
    store = storage.Store(sqlite_url)
    storage.upgrade(store)
    yield store
    store.close()


def test_every_sqlite_connection_has_the_safety_pragmas(store):
    # Two pool connections held at once: each new one must get the pragmas.
    first, second = store.engine.raw_connection(), store.engine.raw_connection()
    try:
        for conn in (first, second):
            assert str(_pragma(conn, "journal_mode")).lower() == "wal"
            assert _pragma(conn, "foreign_keys") == 1
            assert _pragma(conn, "secure_delete") == 1
            assert _pragma(conn, "synchronous") == SYNCHRONOUS_FULL
            assert int(_pragma(conn, "busy_timeout")) > 0  # type: ignore[call-overload]
    finally:
        first.close()
        second.close()


def test_the_pragmas_hold_inside_a_service_transaction(store):
    with store.transaction() as s:
        assert _pragma(s, "foreign_keys") == 1
        assert _pragma(s, "secure_delete") == 1
        assert _pragma(s, "synchronous") == SYNCHRONOUS_FULL


def test_the_database_file_is_in_wal_mode_on_disk(store, sqlite_url):
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    header = path.read_bytes()[:20]
    assert header.startswith(b"SQLite format 3\x00")
    assert header[18] == 2 and header[19] == 2  # file format read/write version 2 = WAL


def test_foreign_keys_are_enforced(store):
    from sqlalchemy import exc

    with pytest.raises(exc.IntegrityError), store.engine.connect() as conn:
        conn.execute(
            text(
                "INSERT INTO secrets (id, client_id, name_tag, kind, current_version, created_at, updated_at)"
                " VALUES (1, 999, x'00', 'other', 1, '2026-01-01', '2026-01-01')"
            )
        )
