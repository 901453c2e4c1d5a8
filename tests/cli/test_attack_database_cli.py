"""Database attacks met through the CLI (issue 12, items 10 and 19): a trigger credvault did
not create stops every command with an error that names it (``status`` and ``audit
verify`` report it), and ``audit verify`` runs a full verify when the last one is old."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cli_workspace import Workspace, assert_clean_error, ok
from served import only_local
from sqlalchemy import create_engine, exc, text

from vault import Vault
from vault.service.clients import Clients
from vault.service.config import AuditMemory

SECRET = "fw-Passw0rd-stdin"
REF = "acme/fw01-admin"
TRIGGER = """CREATE TRIGGER blind_reveals AFTER UPDATE OF seq ON audit_head
WHEN (SELECT action FROM audit_events WHERE seq = NEW.seq) IN ('reveal', 'checkout')
BEGIN
  UPDATE audit_head SET seq = NEW.seq - 1, hash = (SELECT prev_hash FROM audit_events WHERE seq = NEW.seq) WHERE id = 1;
  DELETE FROM audit_events WHERE seq = NEW.seq;
END"""


def sql(ws: Workspace, statement: str, **params: object) -> None:
    engine = create_engine(ws.url)
    with engine.begin() as conn:
        conn.execute(text(statement), params)
    engine.dispose()


def head(ws: Workspace) -> tuple[int, bytes]:
    engine = create_engine(ws.url)
    with engine.connect() as conn:
        seq, digest = conn.execute(text("SELECT seq, hash FROM audit_head")).one()
    engine.dispose()
    return int(seq), bytes(digest)


def test_a_trigger_stops_every_command_and_status_and_audit_verify_name_it(ready: Workspace) -> None:
    sql(ready, TRIGGER)
    before = head(ready)
    for args in (("checkout", REF, "--reason", "T-1", "--show"), ("secret", "show", REF), ("client", "list")):
        result = ready.admin(*args)
        assert_clean_error(result, SECRET)
        assert "trigger 'blind_reveals' on audit_head" in result.stderr
        assert "did not create" in result.stderr and "hint: " in result.stderr
    status = ok(ready.admin("status"))
    assert "warning: " in status.stdout and "blind_reveals" in status.stdout
    verify = ready.admin("audit", "verify")
    assert_clean_error(verify, SECRET)
    assert "does not verify" in verify.stderr and "blind_reveals" in verify.stderr
    assert head(ready) == before
    vault = Vault.open(ready.url)
    try:
        assert vault.store.foreign_objects() == ["trigger 'blind_reveals' on audit_head"]
    finally:
        vault.close()
    sql(ready, "DROP TRIGGER blind_reveals")  # the admin removes it: work goes on
    assert SECRET in ok(ready.admin("checkout", REF, "--reason", "T-2", "--show")).stdout


def test_an_old_full_verify_makes_the_next_verify_a_full_one(ready: Workspace, isolated_home: Path) -> None:
    ok(ready.admin("audit", "verify"))  # the first one is full
    ok(ready.admin("secret", "show", REF))
    ok(ready.admin("audit", "verify"))  # incremental from here
    sql(ready, "UPDATE audit_events SET action = 'secret-list' WHERE seq = 3")  # before the anchor
    incremental = ok(ready.admin("audit", "verify")).stdout  # not due: the anchor trusted, event 3 not read
    assert "new event(s) checked (" in incremental and "checked (all)" not in incremental
    vault_id = Vault.open(ready.url).vault_id().hex()
    memory = AuditMemory.load(vault_id)
    assert memory.full is not None and memory.full[0] > time.time() - 60
    memory.full = (memory.full[0] - 8 * 86_400, memory.full[1])  # the last full verify was 8 days ago
    memory.save()
    result = ready.admin("audit", "verify")
    assert_clean_error(result, SECRET)
    assert "event 3: its contents were changed" in result.stderr


def test_a_driver_error_the_library_missed_is_a_database_failure_not_an_internal_error(
    ready: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(*_args: object, **_kwargs: object) -> None:
        raise exc.DataError("INSERT INTO purge_receipts", {}, Exception("value too long for type character varying"))

    monkeypatch.setattr(Clients, "list", failing)
    result = ready.admin("client", "list")
    assert_clean_error(result, SECRET)
    assert "the database failed: nothing was changed" in result.stderr
    assert "internal error" not in result.stderr and "purge_receipts" not in result.stderr


@pytest.mark.parametrize(
    "args, most",
    [
        (("client", "list"), 1),
        (("checkout", REF, "--reason", "T-1", "--show"), 1),
        (("status",), 2),  # the guard's check, then the one whose findings status shows
        (("audit", "verify"), 2),  # the same: the command's and verify_audit's inspecting() share one
    ],
)
def test_a_command_reads_the_postgresql_catalog_at_most_once_more_to_report_it(
    ready_any_engine: Workspace, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], most: int
) -> None:
    """The catalog query (2.6-25 ms on PostgreSQL) runs once per command for the guard, once
    more only where the command reports what it finds: never once per unit of work."""
    from vault.storage import engine

    only_local(ready_any_engine, "the --db mode's catalog guard, one per command (a server's is per request)")
    calls = []
    real = engine.foreign_objects

    def counted(conn):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(conn)

    monkeypatch.setattr(engine, "foreign_objects", counted)
    ok(ready_any_engine.admin(*args))
    if ready_any_engine.url.startswith("postgresql"):
        assert 1 <= len(calls) <= most, f"{args}: the catalog was read {len(calls)} times"
