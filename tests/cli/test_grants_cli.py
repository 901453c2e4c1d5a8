"""Issue 12, items 4 and 7, as an admin meets them: `rotate client` after a revocation
was cleared in the database, and `engineer remove` after the leaver deleted his grant
rows. Commands run through CliRunner; the stored state is then read through the library."""

from __future__ import annotations

import pytest
from cli_workspace import ENGINEER, Workspace, assert_clean_error, ok
from sqlalchemy import create_engine, delete, func, select, update

from vault.storage import models as m

PASSWORD = "fw-Passw0rd-cli"
SECRET_REF = "acme/fw01"
REVOCATION_COLUMNS = [c for c in ("revoked_at", "revoked_by", "revocation") if hasattr(m.Grant, c)]


@pytest.fixture
def granted(workspace_any_engine: Workspace) -> Workspace:
    workspace = workspace_any_engine
    workspace.init()
    ok(workspace.admin("client", "add", "acme", "--name", "Acme Ltd"))
    ok(workspace.admin("secret", "add", SECRET_REF, "--kind", "equipment", "--password-stdin", input=PASSWORD + "\n"))
    workspace.enrol()
    ok(workspace.admin("grant", ENGINEER, "acme"))
    return workspace


def _write(ws: Workspace, statement) -> None:  # type: ignore[no-untyped-def]
    engine = create_engine(ws.url)
    with engine.begin() as conn:
        conn.execute(statement)
    engine.dispose()


def _alice_seals(ws: Workspace) -> int:
    engine = create_engine(ws.url)
    with engine.connect() as conn:
        alice = conn.execute(select(m.Engineer.id).where(m.Engineer.name == ENGINEER)).scalar()
        count = conn.execute(
            select(func.count())
            .select_from(m.ClientKeySeal)
            .where(m.ClientKeySeal.recipient_kind == "engineer", m.ClientKeySeal.recipient_id == alice)
        ).scalar()
    engine.dispose()
    return int(count or 0)


def test_rotate_client_after_a_cleared_revocation_seals_nothing_to_the_revoked_engineer(granted: Workspace) -> None:
    ok(granted.admin("revoke", ENGINEER, "acme"))
    _write(granted, update(m.Grant).values(**dict.fromkeys(REVOCATION_COLUMNS)))  # the attack

    rotated = granted.admin("rotate", "client", "acme")

    assert _alice_seals(granted) == 0
    assert_clean_error(granted.as_engineer(ENGINEER, "checkout", SECRET_REF, "--reason", "T-1", "--show"), PASSWORD)
    library = granted.library()
    if getattr(granted, "served", False):  # through a server the admin's machine refuses the whole rotation
        assert_clean_error(rotated, PASSWORD)
        assert f"the audit log takes {ENGINEER!r}'s grant back" in rotated.stderr
        assert library.keys.versions("acme") == [(1, "active")]
        return
    ok(rotated)
    assert library.keys.versions("acme") == [(1, "destroyed"), (2, "active")]
    assert "active" not in {g.state for g in library.grants.list(engineer=ENGINEER)}
    refused = [e for e in library.audit.log(client="acme") if e.action == "grant-refused"]
    assert refused and refused[0].details is not None and refused[0].details["engineer"] == ENGINEER


def test_engineer_remove_rotates_a_client_whose_grant_rows_the_leaver_deleted(granted: Workspace) -> None:
    ok(granted.as_engineer(ENGINEER, "checkout", SECRET_REF, "--reason", "T-1", "--show"))
    _write(granted, delete(m.Grant))  # the attack: the leaver's rows are gone

    result = ok(granted.admin("engineer", "remove", ENGINEER, "--yes"))

    assert "1 client key(s) rotated" in result.stdout
    assert PASSWORD not in result.output
    assert granted.library().keys.versions("acme") == [(1, "destroyed"), (2, "active")]
