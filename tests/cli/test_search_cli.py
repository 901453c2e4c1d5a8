"""`credvault secret search QUERY [--client SLUG] [--json]` on SQLite, PostgreSQL and through a team server.

The workspace (``ready_any_engine``): an admin, client acme with fw01-admin (host 10.0.0.1, username
netadmin), and alice with no grant yet. What was recorded is read from the database afterwards: the
search's ``secret-list`` events, and that the query is nowhere in it.
"""

from __future__ import annotations

import json

import pytest
from cli_workspace import ENGINEER, Workspace, assert_clean_error, ok, run
from sqlalchemy import create_engine, select, text
from vault.cli.context import AppContext

from vault.records import SearchMatch
from vault.storage import models as m

PASSWORD = "fw-Passw0rd-stdin"  # acme/fw01-admin's, as ``ready_any_engine`` stored it
QUERY = "Gl0bex-Portal"


@pytest.fixture
def searchable(ready_any_engine: Workspace) -> Workspace:
    ws = ready_any_engine
    ok(ws.admin("client", "add", "globex", "--name", "Globex Corp"))
    ok(
        ws.admin(
            "secret", "add", "globex/xero", "--kind", "service", "--url", "https://gl0bex-portal.example/login",
            "--username", "ops@globex.example", "--field", "mfa_seed=gl0bex-portal-seed", "--generate",
        )
    )  # fmt: skip
    return ws


def _events(ws: Workspace) -> list[tuple[str, int | None, str | None, int | None]]:
    engine = create_engine(ws.url)
    try:
        with engine.connect() as conn:
            query = select(m.AuditEvent.action, m.AuditEvent.engineer_id, m.AuditEvent.details_json, m.AuditEvent.seq)
            return [tuple(r) for r in conn.execute(query.order_by(m.AuditEvent.seq))]  # type: ignore[misc]
    finally:
        engine.dispose()


def _database_holds(ws: Workspace, needle: str) -> list[str]:
    """The tables any of whose values hold ``needle`` (as text or UTF-8 bytes, any case)."""
    engine = create_engine(ws.url)
    found = []
    try:
        with engine.connect() as conn:
            for table in sorted(m.Base.metadata.tables):
                for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                    for value in row:
                        raw = value if isinstance(value, bytes) else str(value).encode()
                        if needle.lower().encode() in raw.lower():
                            found.append(table)
    finally:
        engine.dispose()
    return found


def test_search_finds_by_metadata_across_clients_and_prints_where(searchable: Workspace) -> None:
    ws = searchable
    table = ok(ws.admin("secret", "search", "10.0.0.1")).stdout.splitlines()
    assert table[0].split() == ["CLIENT", "SECRET", "KIND", "MATCHED"]
    assert table[1].split() == ["acme", "fw01-admin", "equipment", "host"]
    assert len(table) == 2
    found = json.loads(ok(ws.admin("secret", "search", QUERY.upper(), "--json")).stdout)
    assert found == [{"client": "globex", "name": "xero", "kind": "service", "version": 1, "matched": ["url"]}]
    none = ok(ws.admin("secret", "search", "gl0bex-portal-seed")).stdout  # a sensitive field's value
    assert none.strip() == "(none)"
    assert ok(ws.admin("secret", "search", PASSWORD)).stdout.strip() == "(none)"
    assert json.loads(ok(ws.admin("secret", "search", "ops@", "--client", "acme", "--json")).stdout) == []


def test_an_engineer_searches_only_granted_clients_and_the_query_stays_off_the_record(searchable: Workspace) -> None:
    ws = searchable
    assert ok(ws.as_engineer(ENGINEER, "secret", "search", "xero")).stdout.strip() == "(none)"
    assert_clean_error(ws.as_engineer(ENGINEER, "secret", "search", "xero", "--client", "globex"))
    ok(ws.admin("grant", ENGINEER, "globex"))
    before = _events(ws)[-1][3]
    found = json.loads(ok(ws.as_engineer(ENGINEER, "secret", "search", QUERY, "--json")).stdout)
    assert [(x["client"], x["name"], x["matched"]) for x in found] == [("globex", "xero", ["url"])]
    new = [e for e in _events(ws) if e[3] is not None and before is not None and e[3] > before]
    assert [e[0] for e in new] == ["secret-list"]  # on record as the listing it read
    assert json.loads(new[0][2] or "{}")["clients"] == 1
    assert _database_holds(ws, QUERY) == []  # no event's details or request body holds the query
    assert _database_holds(ws, ENGINEER) != []  # the scan reads what it should (engineers' names are plain text)
    ok(ws.admin("revoke", ENGINEER, "globex"))
    assert ok(ws.as_engineer(ENGINEER, "secret", "search", QUERY)).stdout.strip() == "(none)"


@pytest.mark.parametrize("query", ["", "fw\x1b[2J"], ids=["empty", "escape"])
def test_a_bad_query_is_a_clean_error_and_nothing_is_recorded(searchable: Workspace, query: str) -> None:
    ws = searchable
    before = len(_events(ws))
    result = ws.admin("secret", "search", query)
    assert_clean_error(result)
    assert "\x1b" not in result.output
    assert len(_events(ws)) == before


def test_what_a_search_prints_is_neutralised(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name or field read back with terminal escapes (a database someone else edited): printed as '?'."""
    hostile = SearchMatch("acme", "fw\x1b[2J01\u202e", "equipment", 1, ("field \x1b]0;x\x07",))

    class _Secrets:
        def search(self, query: str, client: str | None = None) -> list[SearchMatch]:
            return [hostile] if query == "fw" and client is None else []

    class _Vault:
        secrets = _Secrets()

    monkeypatch.setattr(AppContext, "session_vault", lambda _self: _Vault())
    shown = ok(run("--db", workspace.url, "secret", "search", "fw")).stdout
    assert "\x1b" not in shown and "\u202e" not in shown and "\x07" not in shown
    assert shown.splitlines()[1].split()[:3] == ["acme", "fw?[2J01?", "equipment"]
    as_json = ok(run("--db", workspace.url, "secret", "search", "fw", "--json")).stdout
    assert "\x1b" not in as_json and json.loads(as_json)[0]["name"] == hostile.name  # escaped, exact
