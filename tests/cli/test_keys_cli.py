"""Keys over time through the CLI: rotate client/root/engineer/resume, passwd, status,
maintain, settings, `secret rotate` and `engineer remove`.

Each command runs through CliRunner; key versions, rotations, grants and values are then
read back through the library (and, for the root key's state, the table that holds it).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from cli_workspace import (
    ADMIN,
    ADMIN_PASS,
    CODE,
    ENGINEER,
    ENGINEER_PASS,
    FINGERPRINT,
    MemoryKeyring,
    Snapshots,
    Workspace,
    assert_clean_error,
    ok,
)
from served import only_local
from sqlalchemy import create_engine, text, update
from sqlalchemy.orm import Session

from vault import Vault
from vault.errors import NotFound, WrongPassphrase
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m

SECRET = "fw-Passw0rd-stdin"
REF = "acme/fw01-admin"
NEW_PASS = "a brand new passphrase ✓"


# -- a vault built once per module, copied into each test --------------------------------------


def granted(ws: Workspace) -> None:
    """An unlocked admin, acme with one secret, alice unlocked with a grant for acme."""
    ws.init()
    ok(ws.admin("client", "add", "acme", "--name", "Acme Ltd"))
    secret = (REF, "--kind", "equipment", "--host", "10.0.0.1", "--username", "netadmin")
    ok(ws.admin("secret", "add", *secret, "--password-stdin", input=SECRET + "\n"))
    ws.enrol()
    ok(ws.admin("grant", ENGINEER, "acme"))


@pytest.fixture
def ready(snapshots: Snapshots, tmp_path: Path, fake_keyring: MemoryKeyring) -> Workspace:
    return snapshots.clone(granted, tmp_path, fake_keyring)


# What the third mode (through a team server) skips: not served yet (docs/server.md, "Not built").

# -- helpers ---------------------------------------------------------------------------------------


def head(ws: Workspace) -> tuple[int, bytes]:
    vault = Vault.open(ws.url)
    try:
        return vault.audit.head()
    finally:
        vault.close()


def query(ws: Workspace, statement: str) -> list[tuple[object, ...]]:
    engine = create_engine(ws.url)
    with engine.connect() as conn:
        rows = [tuple(row) for row in conn.execute(text(statement))]
    engine.dispose()
    return rows


def alice_reads(ws: Workspace) -> str:
    """What alice's own CLI shows for acme's password (fails the test if she cannot)."""
    return ok(ws.as_engineer(ENGINEER, "checkout", REF, "--reason", "T-1", "--show")).stdout.splitlines()[0]


# -- rotate client and resume ------------------------------------------------------------------------


def test_rotate_client_makes_a_new_version_and_destroys_the_old(ready: Workspace) -> None:
    library = ready.library()
    library.secrets.add("acme/m365", password="m365-Passw0rd", kind="service")
    assert library.keys.versions("acme") == [(1, "active")]
    result = ok(ready.admin("rotate", "client", "acme", "--batch", "1"))
    assert "key version 1 -> 2" in result.stdout and "2 data key(s)" in result.stdout
    after = ready.library()
    assert after.keys.versions("acme") == [(1, "destroyed"), (2, "active")]
    assert [c.key_version for c in after.clients.list()] == [2]
    assert {v.key_version for v in after.secrets.history(REF)} == {2}
    assert after.checkouts.reveal(REF, reason="test") == SECRET
    assert after.checkouts.reveal("acme/m365", reason="test") == "m365-Passw0rd"
    [rotation] = after.keys.list()
    assert (rotation.state, rotation.done, rotation.total) == ("done", 2, 2)
    assert alice_reads(ready) == SECRET  # her grant was re-sealed to the new version
    actions = [e.action for e in after.audit.log(client="acme")]
    assert "client-key-rotate" in actions and "client-key-rotated" in actions


def test_rotate_client_twice(ready: Workspace) -> None:
    ok(ready.admin("rotate", "client", "acme"))
    ok(ready.admin("rotate", "client", "acme"))
    library = ready.library()
    assert library.keys.versions("acme") == [(1, "destroyed"), (2, "destroyed"), (3, "active")]
    assert library.checkouts.reveal(REF, reason="test") == SECRET


def test_rotate_unknown_client_and_by_an_engineer_are_refused(ready: Workspace) -> None:
    assert_clean_error(ready.admin("rotate", "client", "nope"), SECRET)
    result = ready.as_engineer(ENGINEER, "rotate", "client", "acme")
    assert_clean_error(result, SECRET)
    assert ready.library().keys.versions("acme") == [(1, "active")]


def test_rotate_resume_with_nothing_pending_says_so(ready: Workspace) -> None:
    result = ok(ready.admin("rotate", "resume"))
    assert result.stdout.strip() == "No rotation was under way."
    assert ready.library().keys.list() == []


class Crash(Exception):
    """A crash in the middle of a rotation."""


def test_an_interrupted_rotation_is_finished_by_rotate_resume(ready: Workspace) -> None:
    library = ready.library()
    for i in range(3):
        library.secrets.add(f"acme/extra-{i}", password=f"extra-Passw0rd-{i}")
    rewrap = library.keys._rewrap_batch
    batches: list[int] = []

    def one_batch_then_crash(rotation_id: int, batch_size: int, progress: object) -> int:
        if batches:
            raise Crash
        batches.append(rewrap(rotation_id, batch_size, progress))  # type: ignore[arg-type]
        return batches[-1]

    library.keys._rewrap_batch = one_batch_then_crash  # type: ignore[method-assign]
    with pytest.raises(Crash):
        library.keys.rotate_client("acme", batch_size=1)
    assert batches == [1]

    library = ready.library()
    [running] = library.keys.list(running_only=True)
    assert (running.client, running.from_version, running.to_version, running.done, running.total) == (
        "acme",
        1,
        2,
        1,
        4,
    )
    assert library.keys.versions("acme") == [(1, "retiring"), (2, "active")]
    assert library.checkouts.reveal("acme/extra-2", reason="test") == "extra-Passw0rd-2"  # reads keep working
    assert alice_reads(ready) == SECRET
    status = ok(ready.admin("status"))
    assert "rotation is incomplete (1/4)" in status.stdout and "rotate resume" in status.stdout
    again = ready.admin("rotate", "client", "acme")
    assert_clean_error(again, SECRET)
    assert "rotate resume" in again.stderr

    result = ok(ready.admin("rotate", "resume", "--batch", "2"))
    assert "Finished acme: key version 2, 4 data key(s) re-wrapped." in result.stdout
    library = ready.library()
    assert library.keys.list(running_only=True) == []
    assert library.keys.versions("acme") == [(1, "destroyed"), (2, "active")]
    assert [library.checkouts.reveal(f"acme/extra-{i}", reason="test") for i in range(3)] == [
        f"extra-Passw0rd-{i}" for i in range(3)
    ]
    assert library.checkouts.reveal(REF, reason="test") == SECRET
    assert "No warnings." in ok(ready.admin("status")).stdout
    ok(ready.admin("audit", "verify", "--full"))


# -- rotate root ---------------------------------------------------------------------------------------


def test_rotate_root_reseals_every_client_and_destroys_the_old_key(ready: Workspace) -> None:
    ok(ready.admin("client", "add", "globex", "--name", "Globex"))
    result = ok(ready.admin("rotate", "root"))
    assert "2 client(s) re-sealed" in result.stdout
    assert "shares" in result.stderr
    assert query(ready, "SELECT version, state FROM root_keys ORDER BY version") == [(1, "destroyed"), (2, "active")]
    assert query(ready, "SELECT DISTINCT root_version FROM root_seals") == [(2,)]
    library = ready.library()  # a fresh admin session opens the new recovery key
    assert library.checkouts.reveal(REF, reason="test") == SECRET
    assert sorted(c.slug for c in library.clients.list()) == ["acme", "globex"]  # slugs re-tagged
    library.clients.add("initech", name="Initech")  # needs the new root bundle
    assert alice_reads(ready) == SECRET
    assert "root-key-rotate" in [e.action for e in library.audit.log(engineer=ADMIN)]


def test_rotate_root_by_an_engineer_is_refused(ready: Workspace) -> None:
    assert_clean_error(ready.as_engineer(ENGINEER, "rotate", "root"), SECRET)
    assert query(ready, "SELECT version, state FROM root_keys") == [(1, "active")]


# -- rotate engineer -------------------------------------------------------------------------------------


def test_rotate_engineer_then_re_enrol_confirm_and_the_grants_work_again(ready: Workspace) -> None:
    result = ok(ready.admin("rotate", "engineer", ENGINEER))
    code = CODE.search(result.stdout)
    assert code is not None
    stale = ready.as_engineer(ENGINEER, "checkout", REF, "--reason", "T-1", "--show")
    assert_clean_error(stale, SECRET)  # the old keys are gone: her session is useless
    assert {e.name: e.status for e in ready.library().engineers.list()}[ENGINEER] == "invited"

    new_file = ready.passfile(ENGINEER, "alice's second passphrase")
    enrolled = ok(
        ready.as_engineer(
            ENGINEER, "engineer", "enroll", ENGINEER, "--passphrase-file", new_file, input=code.group(0) + "\n"
        )
    )
    fingerprint = FINGERPRINT.search(enrolled.stdout)
    assert fingerprint is not None
    ok(ready.admin("engineer", "confirm", ENGINEER, "--fingerprint", fingerprint.group(0)))
    ok(ready.as_engineer(ENGINEER, "unlock", "--passphrase-file", new_file))
    assert alice_reads(ready) == SECRET
    alice = ready.library(ENGINEER)
    assert alice.checkouts.reveal(REF, reason="test") == SECRET
    info = {e.name: e for e in ready.library().engineers.list()}[ENGINEER]
    assert (info.status, info.key_generation, info.fingerprint) == ("active", 2, fingerprint.group(0))
    old = Vault.open(ready.url, engineer=ENGINEER, sessions=MemorySessionStore())
    with pytest.raises(WrongPassphrase):
        old.engineers.unlock(ENGINEER, ENGINEER_PASS)
    ok(ready.admin("audit", "verify", "--full"))


def test_rotate_engineer_refuses_oneself_and_unknown_names(ready: Workspace) -> None:
    before = head(ready)
    assert_clean_error(ready.admin("rotate", "engineer", ADMIN), SECRET)
    assert_clean_error(ready.admin("rotate", "engineer", "nobody"), SECRET)
    assert head(ready) == before
    assert alice_reads(ready) == SECRET


# -- passwd -------------------------------------------------------------------------------------------------


def test_passwd_through_the_prompts(ready: Workspace) -> None:
    result = ok(ready.admin("passwd", input=f"{ADMIN_PASS}\n{NEW_PASS}\n{NEW_PASS}\n"))
    assert ADMIN_PASS not in result.output and NEW_PASS not in result.output
    fresh = ready.open(ADMIN)
    with pytest.raises(WrongPassphrase):
        fresh.engineers.unlock(ADMIN, ADMIN_PASS)
    fresh.engineers.unlock(ADMIN, NEW_PASS)
    assert fresh.checkouts.reveal(REF, reason="test") == SECRET
    assert "passphrase-change" in [e.action for e in fresh.audit.log(engineer=ADMIN)]
    ok(ready.admin("client", "list"))  # the unlocked session is still good: the keys did not change
    assert alice_reads(ready) == SECRET


def test_passwd_with_the_global_passphrase_file(ready: Workspace) -> None:
    args = (*ready.reach(ENGINEER), "--as", ENGINEER, "--passphrase-file", ready.passfiles[ENGINEER], "passwd")
    ok(ready.as_engineer(ENGINEER, *args, input=f"{NEW_PASS}\n{NEW_PASS}\n"))
    ready.passphrases[ENGINEER] = NEW_PASS
    assert ready.library(ENGINEER).checkouts.reveal(REF, reason="test") == SECRET
    assert ready.library().checkouts.reveal(REF, reason="test") == SECRET  # nobody else's record changed


def test_passwd_with_a_wrong_current_passphrase_changes_nothing(ready: Workspace) -> None:
    result = ready.admin("passwd", input=f"not my passphrase\n{NEW_PASS}\n{NEW_PASS}\n")
    assert_clean_error(result, "not my passphrase", NEW_PASS, ADMIN_PASS, SECRET)
    assert ready.library().engineers.whoami().engineer == ADMIN  # the old passphrase still unlocks


def test_passwd_confirmation_mismatch_changes_nothing(ready: Workspace) -> None:
    result = ready.admin("passwd", input=f"{ADMIN_PASS}\none new passphrase\nanother new one\n")
    assert_clean_error(result, ADMIN_PASS, "one new passphrase", "another new one", SECRET)
    assert ready.library().engineers.whoami().engineer == ADMIN


# -- status, maintain, settings, secret rotate ---------------------------------------------------------------


def test_status_without_anything_to_do(ready: Workspace) -> None:
    result = ok(ready.admin("status"))
    assert "1 client(s), 1 secret(s), 2 engineer(s)" in result.stdout
    assert "No warnings." in result.stdout
    data = json.loads(ok(ready.admin("status", "--json")).stdout)
    assert (data["warnings"], data["must_change"], data["open_rotations"]) == ([], [], 0)


def test_status_lists_secrets_that_must_change(ready: Workspace) -> None:
    ok(ready.admin("policy", "set", "acme", "--rotate-after-checkout"))
    alice_reads(ready)
    result = ok(ready.admin("status"))
    assert "must change: acme/fw01-admin" in result.stdout
    assert "1 secret(s) must be changed after checkout" in result.stdout
    assert SECRET not in result.output
    assert json.loads(ok(ready.admin("status", "--json")).stdout)["must_change"] == [REF]
    ok(ready.admin("secret", "rotate", REF))
    assert ready.library().reports.status().must_change == []


def test_status_warns_about_keys_older_than_the_cryptoperiod(ready: Workspace) -> None:
    ok(ready.admin("settings", "--cryptoperiod", "30"))
    assert "No warnings." in ok(ready.admin("status")).stdout
    forty_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    engine = create_engine(ready.url)
    with Session(engine) as s, s.begin():
        s.execute(update(m.ClientKey).values(created_at=forty_days_ago))
        s.execute(update(m.RootKey).values(created_at=forty_days_ago))
    engine.dispose()
    warnings = ok(ready.admin("status")).stdout
    assert "client acme: key version 1 is older than 30 days" in warnings
    assert "the recovery key is older than 30 days" in warnings
    ok(ready.admin("settings", "--cryptoperiod", "365"))
    assert "No warnings." in ok(ready.admin("status")).stdout


def test_status_is_for_admins(ready: Workspace) -> None:
    result = ready.as_engineer(ENGINEER, "status")
    assert_clean_error(result, SECRET)
    assert "admin" in result.stderr


def test_maintain_deletes_the_key_copies_of_expired_grants(ready: Workspace) -> None:
    only_local(ready, "a grant made an hour ago (a past clock): a server dates its events now, within 120 s")
    ok(ready.admin("client", "add", "globex", "--name", "Globex"))
    ok(ready.admin("secret", "add", "globex/vpn", "--kind", "service", "--password-stdin", input="globex-Pw-1\n"))
    an_hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    past = ready.open(ADMIN, clock=lambda: an_hour_ago)
    past.engineers.unlock(ADMIN, ADMIN_PASS)
    past.grants.grant(ENGINEER, "globex", until=an_hour_ago + dt.timedelta(minutes=30))  # ended half an hour ago
    past.close()
    seals = "SELECT COUNT(*) FROM client_key_seals WHERE recipient_kind = 'engineer'"
    assert query(ready, seals) == [(2,)]

    result = ok(ready.admin("maintain"))
    assert "Deleted 1 sealed key copy(ies)" in result.stdout
    assert query(ready, seals) == [(1,)]
    assert [g.state for g in ready.library().grants.list(engineer=ENGINEER, client="globex")] == ["revoked"]
    expired = ready.as_engineer(ENGINEER, "checkout", "globex/vpn", "--reason", "T-1", "--show")
    assert_clean_error(expired, "globex-Pw-1", SECRET)
    assert alice_reads(ready) == SECRET
    assert "Deleted 0 sealed key copy(ies)" in ok(ready.admin("maintain")).stdout


def test_maintain_is_for_admins(ready: Workspace) -> None:
    assert_clean_error(ready.as_engineer(ENGINEER, "maintain"), SECRET)


def test_retention_keeps_the_last_n_versions(ready: Workspace) -> None:
    ok(ready.admin("settings", "--retention", "3"))
    outputs = [ok(ready.admin("secret", "rotate", REF)).output for _ in range(5)]
    library = ready.library()
    assert [v.version for v in library.secrets.history(REF)] == [4, 5, 6]
    values = [library.checkouts.reveal(REF, reason="test", version=v) for v in (4, 5, 6)]
    assert len(set(values) | {SECRET}) == 4
    for printed in outputs:
        assert not any(value in printed for value in values)
    with pytest.raises(NotFound):
        library.checkouts.reveal(REF, reason="test", version=3)
    assert alice_reads(ready) == values[-1]


def test_secret_rotate_json_and_length(ready: Workspace) -> None:
    data = json.loads(ok(ready.admin("secret", "rotate", REF, "--length", "40", "--json")).stdout)
    assert (data["client"], data["name"], data["version"]) == ("acme", "fw01-admin", 2)
    assert "password" not in data
    assert len(ready.library().checkouts.reveal(REF, reason="test")) == 40


def test_secret_rotate_by_an_engineer_with_a_grant(ready: Workspace) -> None:
    ok(ready.as_engineer(ENGINEER, "secret", "rotate", REF))
    assert ready.library().checkouts.reveal(REF, reason="test") not in (SECRET, "")


@pytest.mark.parametrize(
    "args", [("--retention", "0"), ("--retention", "1001"), ("--cryptoperiod", "0"), ("--cryptoperiod", "3651")]
)
def test_settings_out_of_range_are_refused(ready: Workspace, args: tuple[str, ...]) -> None:
    before = head(ready)
    assert_clean_error(ready.admin("settings", *args), SECRET)
    assert head(ready) == before


def test_settings_without_an_option_is_a_usage_error(ready: Workspace) -> None:
    assert ready.admin("settings").exit_code == 2


def test_settings_are_for_admins(ready: Workspace) -> None:
    assert_clean_error(ready.as_engineer(ENGINEER, "settings", "--retention", "1"), SECRET)


# -- engineer remove -------------------------------------------------------------------------------------------


def test_engineer_remove_prints_the_at_risk_list_and_the_engineer_can_do_nothing(ready: Workspace) -> None:
    alice_reads(ready)
    ok(ready.as_engineer(ENGINEER, "checkout", REF, "--field", "username", "--reason", "T-2", "--show"))
    result = ok(ready.admin("engineer", "remove", ENGINEER, "--yes"))
    assert "1 client key(s) rotated" in result.stdout
    assert "2 value(s) alice saw have not changed since" in result.stdout
    assert result.stdout.count("acme/fw01-admin") == 2
    assert SECRET not in result.output and "netadmin" not in result.output

    library = ready.library()
    assert {e.name: e.status for e in library.engineers.list()}[ENGINEER] == "disabled"
    assert [g.state for g in library.grants.list(engineer=ENGINEER)] == ["revoked"]
    assert library.keys.versions("acme") == [(1, "destroyed"), (2, "active")]
    assert library.checkouts.reveal(REF, reason="test") == SECRET
    for args in (("checkout", REF, "--reason", "T-3", "--show"), ("secret", "list"), ("audit", "log")):
        assert_clean_error(ready.as_engineer(ENGINEER, *args), SECRET)
    unlock = ready.as_engineer(ENGINEER, "unlock", "--passphrase-file", ready.passfiles[ENGINEER])
    assert_clean_error(unlock, ENGINEER_PASS, SECRET)
    at_risk = json.loads(ok(ready.admin("report", "at-risk", ENGINEER, "--json")).stdout)
    assert [(r["secret"], r["field"]) for r in at_risk] == [("fw01-admin", "password"), ("fw01-admin", "username")]
    ok(ready.admin("audit", "verify", "--full"))  # her old events still verify


def test_engineer_remove_json(ready: Workspace) -> None:
    alice_reads(ready)
    data = json.loads(ok(ready.admin("engineer", "remove", ENGINEER, "--yes", "--json")).stdout)
    assert [(r["client"], r["secret"], r["field"]) for r in data["at_risk"]] == [("acme", "fw01-admin", "password")]
    assert [(r["client"], r["from_version"], r["to_version"], r["state"]) for r in data["rotations"]] == [
        ("acme", 1, 2, "done")
    ]


def test_engineer_remove_when_nothing_was_revealed(ready: Workspace) -> None:
    result = ok(ready.admin("engineer", "remove", ENGINEER, "--yes"))
    assert "Nothing alice revealed is unchanged." in result.stdout


def test_engineer_remove_answered_no_changes_nothing(ready: Workspace) -> None:
    alice_reads(ready)
    before = head(ready)
    result = ready.admin("engineer", "remove", ENGINEER, input="n\n")
    assert_clean_error(result, SECRET)
    assert head(ready) == before
    library = ready.library()
    assert {e.name: e.status for e in library.engineers.list()}[ENGINEER] == "active"
    assert [g.state for g in library.grants.list(engineer=ENGINEER)] == ["active"]
    assert library.keys.versions("acme") == [(1, "active")]
    assert alice_reads(ready) == SECRET


def test_engineer_remove_answered_no_says_it_was_cancelled(ready: Workspace) -> None:
    result = ready.admin("engineer", "remove", ENGINEER, input="n\n")
    assert result.exit_code != 0
    assert "no answer was given" not in result.stderr


def test_engineer_remove_refuses_oneself_unknown_names_and_engineers(ready: Workspace) -> None:
    assert_clean_error(ready.admin("engineer", "remove", ADMIN, "--yes"), SECRET)
    assert_clean_error(ready.admin("engineer", "remove", "nobody", "--yes"), SECRET)
    assert_clean_error(ready.as_engineer(ENGINEER, "engineer", "remove", ENGINEER, "--yes"), SECRET)
    assert {e.name: e.status for e in ready.library().engineers.list()} == {ADMIN: "active", ENGINEER: "active"}


def test_engineer_remove_twice_is_refused(ready: Workspace) -> None:
    ok(ready.admin("engineer", "remove", ENGINEER, "--yes"))
    result = ready.admin("engineer", "remove", ENGINEER, "--yes")
    assert_clean_error(result, SECRET)
    assert "already removed" in result.stderr
