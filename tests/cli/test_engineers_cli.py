"""`engineer confirm` shows what it will certify before asking, and refuses what no admin signed.

The attacker writes the database between enrolment and confirmation (issue 12 items 1-3);
the admin meets it through the CLI. What was stored is then read through the library.
"""

from __future__ import annotations

import datetime as dt

import pytest
from cli_workspace import CODE, ENGINEER, FINGERPRINT, Workspace, assert_clean_error, ok
from sqlalchemy import func, insert, select, update

from vault.errors import VaultError
from vault.storage import models as m

SECRET = "fw-Passw0rd-stdin"
QUESTION = "Does the engineer's fingerprint match"


def _status(ws: Workspace, name: str) -> str:
    return {e.name: e.status for e in ws.library().engineers.list()}[name]


def _re_enrol(ws: Workspace, name: str, code: str) -> str:
    passfile = ws.passfile(name, f"second passphrase of {name}")
    enrolled = ok(
        ws.as_engineer(
            name, *ws.reach(name), "engineer", "enroll", name, "--passphrase-file", passfile, input=code + "\n"
        )
    )
    fingerprint = FINGERPRINT.search(enrolled.stdout)
    assert fingerprint is not None
    return fingerprint.group(0)


def test_confirm_shows_name_role_fingerprint_and_the_grants_it_carries_before_asking(
    ready_any_engine: Workspace,
) -> None:
    ws = ready_any_engine
    ok(ws.admin("client", "add", "globex", "--name", "Globex Corp"))
    ok(ws.admin("grant", ENGINEER, "acme"))
    code = CODE.search(ok(ws.admin("rotate", "engineer", ENGINEER)).stdout)
    assert code is not None
    fingerprint = _re_enrol(ws, ENGINEER, code.group(0))
    admin = ws.library()
    with admin.store.transaction() as s:  # the engineer plants a grant no admin signed
        alice = s.scalar(select(m.Engineer.id).where(m.Engineer.name == ENGINEER))
        globex = s.scalar(select(func.max(m.Client.id)))
        now = dt.datetime.now(dt.UTC)
        s.execute(
            insert(m.Grant).values(
                engineer_id=alice, client_id=globex, granted_by=1, signed_at=int(now.timestamp()), created_at=now
            )
        )

    refused = ws.admin("engineer", "confirm", ENGINEER, input="n\n")

    assert refused.exit_code == 1 and "not confirmed" in refused.stderr
    shown = refused.stdout
    assert QUESTION in refused.stderr
    for expected in (ENGINEER, "engineer", fingerprint, "Grants carried over to the new keys (1)", "acme"):
        assert expected in shown
    assert "NOT carried over (1)" in shown and "globex" in shown and "not signed by an admin" in shown
    assert shown.index("acme") < shown.index("NOT carried over") < shown.index("globex")
    assert _status(ws, ENGINEER) == "enrolled"

    ok(ws.admin("engineer", "confirm", ENGINEER, input="y\n"))
    assert _status(ws, ENGINEER) == "active"
    ws.passphrases[ENGINEER] = f"second passphrase of {ENGINEER}"
    mine = ws.library(ENGINEER)
    assert mine.checkouts.reveal("acme/fw01-admin", reason="T-1") == SECRET
    assert [c.slug for c in mine.clients.list()] == ["acme"]
    with pytest.raises(VaultError):
        mine.clients.show("globex")


def test_confirm_refuses_a_role_raised_in_the_database_before_asking(ready_any_engine: Workspace) -> None:
    ws = ready_any_engine
    code = CODE.search(ok(ws.admin("engineer", "invite", "bob")).stdout)
    assert code is not None
    fingerprint = _re_enrol(ws, "bob", code.group(0))
    admin = ws.library()
    with admin.store.transaction() as s:
        s.execute(update(m.Engineer).where(m.Engineer.name == "bob").values(role="admin"))

    for args, answer in (((), "y\n"), (("--fingerprint", fingerprint), None)):
        result = ws.admin("engineer", "confirm", "bob", *args, input=answer)
        assert_clean_error(result)
        assert "invitation" in result.stderr and "credvault engineer invite bob" in result.stderr
        assert QUESTION not in result.stderr
    assert _status(ws, "bob") == "enrolled"
    assert {e.name: e.role for e in ws.library().engineers.list()}["bob"] == "admin"  # the row's word only
    with admin.store.transaction() as s:
        bob = s.scalar(select(m.Engineer.id).where(m.Engineer.name == "bob"))
        assert s.scalar(select(func.count()).select_from(m.RootSeal).where(m.RootSeal.engineer_id == bob)) == 0
