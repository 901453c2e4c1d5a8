"""The suite's reused PostgreSQL databases (tests/conftest.py ``PgDatabases``) are as fresh
as new clones of the template: a database given back after rows were written is handed out
again empty, with every sequence restarted; one whose schema a test changed (a planted
trigger, a dropped column, a database setting) is dropped, never handed out again.
On SQLite each test gets its own copy of a migrated file, private (0600) as a vault file must be."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from vault import Vault

PG_URL = os.environ.get("CREDVAULT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.postgres)])
def databases(pg_databases: Any) -> Iterator[Any]:
    if pg_databases is None:
        pytest.skip("no PostgreSQL server reachable (set CREDVAULT_TEST_PG)")
    yield pg_databases


def _run(url: str, *statements: str) -> list[Any]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            results = [conn.execute(text(statement)) for statement in statements]
            return [result.all() if result.returns_rows else None for result in results]
    finally:
        engine.dispose()


def _counts(url: str) -> tuple[Any, ...]:
    (tables,) = _run(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
    counts = _run(url, *[f'SELECT count(*) FROM "{name}"' for (name,) in tables])
    (sequences,) = _run(url, "SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1")
    return tuple((name, rows[0][0]) for (name,), rows in zip(tables, counts, strict=True)), tuple(map(tuple, sequences))


def test_a_database_given_back_with_rows_is_handed_out_again_as_fresh(databases: Any) -> None:
    url = databases.take()
    fresh = _counts(url)
    admin, _ = Vault.create(url, admin="root-admin", passphrase="a passphrase of the admin")
    admin.engineers.unlock("root-admin", "a passphrase of the admin")
    admin.clients.add("acme", "Acme Ltd")
    admin.secrets.add("acme/fw01", password="Pw-of-fw01")
    used = _counts(url)
    assert used != fresh  # rows and sequences were written
    databases.give_back(url)  # the vault's sessions are still open: they are ended first
    admin.close()
    again = databases.take()
    try:
        assert again == url, "the database was not reused"
        assert _counts(again) == fresh
        assert dict(fresh[0])["alembic_version"] == 1
    finally:
        databases.give_back(again)


@pytest.mark.parametrize(
    "change",
    [
        "CREATE FUNCTION planted() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;"
        "CREATE TRIGGER planted BEFORE INSERT ON clients FOR EACH ROW EXECUTE FUNCTION planted()",
        "ALTER TABLE clients DROP COLUMN slug_blob",
        "ALTER TABLE grants DISABLE TRIGGER ALL",
        "CREATE INDEX ix_planted ON secrets (client_id)",
        "DO $$BEGIN EXECUTE format('ALTER DATABASE %I SET work_mem = 1024', current_database()); END$$",
        "UPDATE alembic_version SET version_num = '0001'",
    ],
    ids=["trigger", "dropped-column", "disabled-trigger", "index", "database-setting", "alembic-version"],
)
def test_a_database_whose_schema_changed_is_dropped_not_reused(databases: Any, change: str) -> None:
    url = databases.take()
    _run(url, change)
    databases.give_back(url)
    name = make_url(url).database
    assert name not in databases.free
    (exists,) = _run(PG_URL, f"SELECT count(*) FROM pg_database WHERE datname = '{name}'")
    assert exists == [(0,)]


def test_each_sqlite_test_gets_a_private_copy_of_the_migrated_file(sqlite_template: Any, tmp_path: Any) -> None:
    first, second = tmp_path / "a" / "vault.db", tmp_path / "b" / "vault.db"
    for path in (first, second):
        path.parent.mkdir()
        shutil.copy(sqlite_template, path)  # as db_url does
    admin, _ = Vault.create(f"sqlite:///{first}", admin="root-admin", passphrase="a passphrase of the admin")
    admin.close()
    assert stat.S_IMODE(first.stat().st_mode) == 0o600  # or the store refuses to open it
    second_vault = Vault.open(f"sqlite:///{second}")
    try:
        with second_vault.store.transaction() as s:
            assert s.execute(text("SELECT count(*) FROM engineers")).scalar() == 0  # the copy is untouched
    finally:
        second_vault.close()
