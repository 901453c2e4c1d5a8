"""Checkout and check-in through the CLI: reveal on the record, exclusive holds, policies.

Each command runs through CliRunner; what it recorded (audit events, checkouts, new
versions) is then read back through the library. Output is parsed only where it is
the behaviour itself: a value printed with --show, JSON for scripts, an error.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from cli_workspace import ADMIN, ENGINEER, MemoryKeyring, Snapshots, Workspace, assert_clean_error, ok
from served import only_local
from sqlalchemy import create_engine, exc, update
from sqlalchemy.orm import Session

from vault import Vault
from vault.authority import checkout_events
from vault.authority.checkouts import CheckoutAuthority
from vault.service.records import AuditEntry
from vault.storage import models as m

SECRET = "fw-Passw0rd-stdin"  # the password the `ready` fixture stored
REF = "acme/fw01-admin"
BOB, BOB_PASS = "bob", "bob's own passphrase"
# Through a server the checkout's event commits before the engineer's machine opens the metadata
# (the server cannot: it is under the client key); a refusal after is reported (answer_refused).
RELEASED_FIRST = "a release through a server is on record before the field is looked for"


def head(ws: Workspace) -> tuple[int, bytes]:
    """The audit chain's head, read without unlocking (unlocking appends an event)."""
    vault = Vault.open(ws.url)
    try:
        return vault.audit.head()
    finally:
        vault.close()


def events_after(ws: Workspace, seq: int, name: str = ADMIN) -> list[AuditEntry]:
    vault = ws.library(name)
    try:
        return [e for e in vault.audit.log() if e.seq > seq]
    finally:
        vault.close()


def reveal(ws: Workspace, version: int | None = None) -> str:
    vault = ws.library()
    try:
        return vault.checkouts.reveal(REF, reason="test: check the stored value", version=version)
    finally:
        vault.close()


# -- vaults built once per module, copied into each test (building one takes about a second) --


def populated(ws: Workspace) -> None:
    """What conftest's ``ready`` makes: an unlocked admin, acme with one secret, alice (no grant)."""
    ws.init()
    ok(ws.admin("client", "add", "acme", "--name", "Acme Ltd"))
    secret = (REF, "--kind", "equipment", "--host", "10.0.0.1", "--username", "netadmin")
    ok(ws.admin("secret", "add", *secret, "--password-stdin", input=SECRET + "\n"))
    ws.enrol()


def with_bob(ws: Workspace) -> None:
    populated(ws)
    ws.enrol(BOB, BOB_PASS)
    ok(ws.admin("grant", ENGINEER, "acme"))
    ok(ws.admin("grant", BOB, "acme"))


@pytest.fixture
def ready(snapshots: Snapshots, tmp_path: Path, fake_keyring: MemoryKeyring) -> Workspace:
    return snapshots.clone(populated, tmp_path, fake_keyring)


@pytest.fixture
def team(snapshots: Snapshots, tmp_path: Path, fake_keyring: MemoryKeyring) -> Workspace:
    """``ready`` plus bob; alice and bob both hold a grant for acme."""
    return snapshots.clone(with_bob, tmp_path, fake_keyring)


# -- checkout -------------------------------------------------------------------------------


def test_checkout_show_prints_the_value_and_records_the_reason(ready: Workspace) -> None:
    before, _ = head(ready)
    result = ok(ready.admin("checkout", REF, "--reason", "T-1234 reset VPN", "--show"))
    assert result.stdout.splitlines()[0] == SECRET
    checkouts = [e for e in events_after(ready, before) if e.action == "checkout"]
    assert len(checkouts) == 1
    [event] = checkouts
    assert (event.engineer, event.client, event.readable) == (ADMIN, "acme", True)
    assert event.details is not None
    assert event.details["reason"] == "T-1234 reset VPN"
    # the secret's name is looked up when shown, never stored in the event
    assert (event.secret, event.details["field"], event.details["version"]) == ("fw01-admin", "password", 1)
    assert "secret" not in event.details


def test_checkout_without_a_reason_is_refused_and_records_nothing(ready: Workspace) -> None:
    before = head(ready)
    result = ready.admin("checkout", REF, "--show")
    assert_clean_error(result, SECRET)
    assert "reason" in result.stderr
    assert head(ready) == before


def test_checkout_json_has_the_value_version_and_expiry(ready: Workspace) -> None:
    start = dt.datetime.now(dt.UTC)
    data = json.loads(ok(ready.admin("checkout", REF, "-r", "T-7", "--json")).stdout)
    assert (data["ref"], data["field"], data["value"], data["version"]) == (REF, "password", SECRET, 1)
    expires = dt.datetime.fromisoformat(data["expires_at"])
    assert dt.timedelta(minutes=119) < expires - start <= dt.timedelta(minutes=121)  # the default 2h
    assert data["must_change"] is False
    [hold] = ready.library().checkouts.list()
    assert (hold.client, hold.secret, hold.engineer) == ("acme", "fw01-admin", ADMIN)
    assert abs(hold.expires_at - expires) < dt.timedelta(seconds=1)


def test_checkout_for_sets_the_length_of_the_hold(ready: Workspace) -> None:
    data = json.loads(ok(ready.admin("checkout", REF, "-r", "T-7", "--json", "--for", "15m")).stdout)
    left = dt.datetime.fromisoformat(data["expires_at"]) - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=14) < left <= dt.timedelta(minutes=15)


def test_checkout_of_another_field(ready: Workspace) -> None:
    before, _ = head(ready)
    result = ok(ready.admin("checkout", REF, "--field", "username", "-r", "T-8", "--show"))
    assert result.stdout.splitlines()[0] == "netadmin"
    assert SECRET not in result.output
    [event] = [e for e in events_after(ready, before) if e.action == "checkout"]
    assert event.details is not None and event.details["field"] == "username"


def test_checkout_of_a_missing_field_is_an_error(ready: Workspace) -> None:
    only_local(ready, RELEASED_FIRST)
    before = head(ready)
    result = ready.admin("checkout", REF, "--field", "url", "-r", "T-8", "--show")
    assert_clean_error(result, SECRET, "netadmin")
    assert head(ready) == before


def test_checkout_of_an_older_version(ready: Workspace) -> None:
    ok(ready.admin("secret", "update", REF, "--password-stdin", input="second-Passw0rd\n"))
    result = ok(ready.admin("checkout", REF, "--version", "1", "-r", "T-9", "--show"))
    assert result.stdout.splitlines()[0] == SECRET
    assert "second-Passw0rd" not in result.output


def test_checkout_without_a_clipboard_fails_before_anything_is_recorded(
    ready: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("CREDVAULT_CLIPBOARD_FILE", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    before = head(ready)
    result = ready.admin("checkout", REF, "--reason", "T-1234")
    assert_clean_error(result, SECRET)
    assert "clipboard" in result.stderr and "--show" in result.stderr
    assert head(ready) == before
    assert ready.library().checkouts.list() == []


def test_checkout_reveals_nothing_when_the_access_cannot_be_recorded(
    ready: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The log refuses checkout events, as a full or failing disk would. (Not with a trigger:
    # credvault refuses to work on a database holding one, see test_attack_database.py.)
    # A checkout's event is appended by the checkout's authority (vault/authority/checkouts.py).
    original = CheckoutAuthority._append

    def failing(self: CheckoutAuthority, conn: Any, sqlite: bool, caller: Any, request: Any, *rest: Any) -> int:
        if request.action == "checkout":
            raise exc.OperationalError("INSERT INTO audit_events", {}, sqlite3.OperationalError("disk I/O error"))
        return original(self, conn, sqlite, caller, request, *rest)

    def failing_on_the_server(s: Any, event: Any, clock: Any, request: Any, *rest: Any, **kwargs: Any) -> int:
        if request.action == "checkout":  # the format-3 append, where the team server is
            raise exc.OperationalError("INSERT INTO audit_events", {}, sqlite3.OperationalError("disk I/O error"))
        return server_append(s, event, clock, request, *rest, **kwargs)

    server_append = checkout_events.append
    monkeypatch.setattr(CheckoutAuthority, "_append", failing)
    monkeypatch.setattr(checkout_events, "append", failing_on_the_server)
    before = head(ready)
    for args in (("--show",), ("--json",), ("--field", "username", "--show")):
        result = ready.admin("checkout", REF, "--reason", "T-1", *args)
        assert_clean_error(result, SECRET, "netadmin")
        assert "nothing was revealed" in result.stderr
    assert head(ready) == before
    assert ready.library().checkouts.list() == []


def test_an_engineer_without_a_grant_cannot_check_out(ready: Workspace) -> None:
    before = head(ready)
    result = ready.as_engineer(ENGINEER, "checkout", REF, "-r", "T-1", "--show")
    assert_clean_error(result, SECRET, "netadmin")
    assert head(ready) == before


def test_an_engineer_with_a_grant_checks_out(team: Workspace) -> None:
    result = ok(team.as_engineer(ENGINEER, "checkout", REF, "-r", "T-2", "--show"))
    assert result.stdout.splitlines()[0] == SECRET
    [hold] = team.library().checkouts.list()
    assert hold.engineer == ENGINEER


def test_no_reason_policy_allows_a_checkout_without_one(ready: Workspace) -> None:
    ok(ready.admin("policy", "set", "acme", "--no-reason-required"))
    assert not ready.library().policies.get("acme").reason_required
    before, _ = head(ready)
    ok(ready.admin("checkout", REF, "--show"))
    [event] = [e for e in events_after(ready, before) if e.action == "checkout"]
    assert event.details is not None and event.details["reason"] is None


# -- exclusive checkout ---------------------------------------------------------------------


def test_exclusive_checkout_refuses_a_second_engineer_naming_the_holder(team: Workspace) -> None:
    ok(team.admin("policy", "set", "acme", "--exclusive"))
    ok(team.as_engineer(ENGINEER, "checkout", REF, "-r", "T-1", "--show"))
    before = head(team)
    refused = team.as_engineer(BOB, "checkout", REF, "-r", "T-2", "--show")
    assert_clean_error(refused, SECRET)
    assert "checked out exclusively by alice until" in refused.stderr
    assert head(team) == before
    [hold] = team.library().checkouts.list()
    assert (hold.engineer, hold.exclusive) == (ENGINEER, True)


def test_a_lapsed_exclusive_checkout_no_longer_blocks(team: Workspace) -> None:
    ok(team.admin("policy", "set", "acme", "--exclusive"))
    ok(team.as_engineer(ENGINEER, "checkout", REF, "-r", "T-1", "--show", "--for", "1m"))
    engine = create_engine(team.url)
    with Session(engine) as s, s.begin():
        s.execute(update(m.Checkout).values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
    engine.dispose()
    assert team.library().checkouts.list() == []
    assert json.loads(ok(team.admin("checkouts", "--json")).stdout) == []
    ok(team.as_engineer(BOB, "checkout", REF, "-r", "T-2", "--show"))
    assert [c.engineer for c in team.library().checkouts.list()] == [BOB]


def test_checking_out_again_replaces_ones_own_hold(team: Workspace) -> None:
    ok(team.admin("policy", "set", "acme", "--exclusive"))
    ok(team.as_engineer(ENGINEER, "checkout", REF, "-r", "T-1", "--show", "--for", "10m"))
    data = json.loads(ok(team.as_engineer(ENGINEER, "checkout", REF, "-r", "T-1", "--json", "--for", "3h")).stdout)
    [hold] = team.library().checkouts.list()
    assert hold.engineer == ENGINEER
    assert abs(hold.expires_at - dt.datetime.fromisoformat(data["expires_at"])) < dt.timedelta(seconds=1)


def test_checkin_releases_an_exclusive_checkout(team: Workspace) -> None:
    ok(team.admin("policy", "set", "acme", "--exclusive"))
    ok(team.as_engineer(ENGINEER, "checkout", REF, "-r", "T-1", "--show"))
    before, _ = head(team)
    ok(team.as_engineer(ENGINEER, "checkin", REF))
    assert team.library().checkouts.list() == []
    [event] = [e for e in events_after(team, before) if e.action == "checkin"]
    assert event.engineer == ENGINEER
    assert event.details is not None and event.details["released"] == 1
    result = ok(team.as_engineer(BOB, "checkout", REF, "-r", "T-2", "--show"))
    assert result.stdout.splitlines()[0] == SECRET
    assert [c.engineer for c in team.library().checkouts.list()] == [BOB]


def test_checkin_without_a_checkout_is_an_error(team: Workspace) -> None:
    before = head(team)
    result = team.as_engineer(ENGINEER, "checkin", REF)
    assert_clean_error(result, SECRET)
    assert "no checkout" in result.stderr
    assert head(team) == before


def test_checkin_generate_stores_a_new_password(team: Workspace) -> None:
    ok(team.as_engineer(ENGINEER, "checkout", REF, "-r", "T-1", "--show"))
    result = ok(team.as_engineer(ENGINEER, "checkin", REF, "--generate"))
    new = reveal(team)
    assert new != SECRET and len(new) == 24
    assert reveal(team, version=1) == SECRET
    assert new not in result.output
    assert team.library().checkouts.list() == []
    assert team.library().secrets.show(REF).version == 2


def test_checkin_generate_with_a_length(team: Workspace) -> None:
    ok(team.as_engineer(ENGINEER, "checkout", REF, "-r", "T-1", "--show"))
    ok(team.as_engineer(ENGINEER, "checkin", REF, "--generate", "--length", "40"))
    assert len(reveal(team)) == 40


def test_checkin_new_password_from_stdin(team: Workspace) -> None:
    ok(team.as_engineer(ENGINEER, "checkout", REF, "-r", "T-1", "--show"))
    result = ok(team.as_engineer(ENGINEER, "checkin", REF, "--new-password-stdin", input="Changed-On-The-Box-1\n"))
    assert reveal(team) == "Changed-On-The-Box-1"
    assert "Changed-On-The-Box-1" not in result.output
    assert team.library().checkouts.list() == []


def test_checkin_with_both_a_new_password_and_generate_is_refused(team: Workspace) -> None:
    ok(team.as_engineer(ENGINEER, "checkout", REF, "-r", "T-1", "--show"))
    result = team.as_engineer(ENGINEER, "checkin", REF, "--generate", "--new-password-stdin", input="Other-Passw0rd\n")
    assert_clean_error(result, "Other-Passw0rd", SECRET)
    assert reveal(team) == SECRET
    assert [c.engineer for c in team.library().checkouts.list()] == [ENGINEER]


def test_admin_breaks_a_checkout(team: Workspace) -> None:
    ok(team.admin("policy", "set", "acme", "--exclusive"))
    ok(team.as_engineer(ENGINEER, "checkout", REF, "-r", "T-1", "--show"))
    before, _ = head(team)
    result = ok(team.admin("checkin", REF, "--break"))
    assert ENGINEER in result.stdout
    assert team.library().checkouts.list() == []
    [event] = [e for e in events_after(team, before) if e.action == "checkout-break"]
    assert event.engineer == ADMIN
    assert event.details is not None and event.details["holders"] == [ENGINEER]
    ok(team.as_engineer(BOB, "checkout", REF, "-r", "T-2", "--show"))


def test_breaking_a_checkout_that_nobody_holds_is_an_error(ready: Workspace) -> None:
    before = head(ready)
    result = ready.admin("checkin", REF, "--break")
    assert_clean_error(result, SECRET)
    assert "not checked out" in result.stderr
    assert head(ready) == before


def test_an_engineer_cannot_break_a_checkout(team: Workspace) -> None:
    ok(team.admin("policy", "set", "acme", "--exclusive"))
    ok(team.as_engineer(ENGINEER, "checkout", REF, "-r", "T-1", "--show"))
    before = head(team)
    result = team.as_engineer(BOB, "checkin", REF, "--break")
    assert_clean_error(result, SECRET)
    assert "admin" in result.stderr
    assert head(team) == before
    assert [c.engineer for c in team.library().checkouts.list()] == [ENGINEER]


def test_rotate_after_checkout_flags_must_change_until_checkin_stores_a_value(team: Workspace) -> None:
    ok(team.admin("policy", "set", "acme", "--rotate-after-checkout"))
    data = json.loads(ok(team.as_engineer(ENGINEER, "checkout", REF, "-r", "T-1", "--json")).stdout)
    assert data["must_change"] is True
    assert team.library().reports.status().must_change == [REF]
    plain = team.as_engineer(ENGINEER, "checkin", REF)
    ok(plain)
    assert "must still be changed" in plain.stderr
    assert team.library().reports.status().must_change == [REF]
    ok(team.as_engineer(ENGINEER, "checkout", REF, "-r", "T-1", "--show"))
    ok(team.as_engineer(ENGINEER, "checkin", REF, "--generate"))
    assert team.library().reports.status().must_change == []
    assert reveal(team) != SECRET


# -- listing and policy ---------------------------------------------------------------------


def test_checkouts_lists_all_for_an_admin_and_their_own_for_an_engineer(team: Workspace) -> None:
    ok(team.admin("secret", "add", "acme/m365", "--kind", "service", "--generate"))
    ok(team.as_engineer(ENGINEER, "checkout", REF, "-r", "T-1", "--show"))
    ok(team.as_engineer(BOB, "checkout", "acme/m365", "-r", "T-2", "--show"))
    everyone = json.loads(ok(team.admin("checkouts", "--json")).stdout)
    assert sorted((c["engineer"], c["secret"]) for c in everyone) == [(ENGINEER, "fw01-admin"), (BOB, "m365")]
    assert {c["client"] for c in everyone} == {"acme"}
    mine = json.loads(ok(team.as_engineer(ENGINEER, "checkouts", "--json")).stdout)
    assert [(c["engineer"], c["secret"]) for c in mine] == [(ENGINEER, "fw01-admin")]
    table = ok(team.admin("checkouts")).stdout
    assert "acme/fw01-admin" in table and "acme/m365" in table
    assert SECRET not in table


def test_checkouts_when_there_are_none(ready: Workspace) -> None:
    assert json.loads(ok(ready.admin("checkouts", "--json")).stdout) == []
    assert ok(ready.admin("checkouts")).stdout.strip() == "(none)"


def test_policy_show_json_has_the_defaults(ready: Workspace) -> None:
    data = json.loads(ok(ready.admin("policy", "show", "acme", "--json")).stdout)
    expected = {
        "client": "acme",
        "reason_required": True,
        "exclusive": False,
        "rotate_after_checkout": False,
        "checkout_minutes": 120,
    }
    assert {key: data[key] for key in expected} == expected
    assert "reason required" in ok(ready.admin("policy", "show", "acme")).stdout


def test_policy_set_is_stored_and_logged(ready: Workspace) -> None:
    before, _ = head(ready)
    ok(ready.admin("policy", "set", "acme", "--exclusive", "--rotate-after-checkout", "--for", "90m"))
    policy = ready.library().policies.get("acme")
    assert (policy.reason_required, policy.exclusive, policy.rotate_after_checkout, policy.checkout_minutes) == (
        True,
        True,
        True,
        90,
    )
    [event] = [e for e in events_after(ready, before) if e.action == "policy-set"]
    assert event.details == {"exclusive": True, "rotate_after_checkout": True, "checkout_minutes": 90}
    data = json.loads(ok(ready.admin("checkout", REF, "-r", "T-1", "--json")).stdout)
    left = dt.datetime.fromisoformat(data["expires_at"]) - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=89) < left <= dt.timedelta(minutes=90)


@pytest.mark.parametrize("length", ["0m", "8d", "soon"])
def test_policy_set_with_a_bad_checkout_length_is_refused(ready: Workspace, length: str) -> None:
    before = head(ready)
    result = ready.admin("policy", "set", "acme", "--exclusive", "--for", length)
    assert_clean_error(result, SECRET)
    assert head(ready) == before
    policy = ready.library().policies.get("acme")
    assert (policy.exclusive, policy.checkout_minutes) == (False, 120)


def test_an_engineer_cannot_set_a_policy(team: Workspace) -> None:
    result = team.as_engineer(ENGINEER, "policy", "set", "acme", "--no-reason-required")
    assert_clean_error(result, SECRET)
    assert team.library().policies.get("acme").reason_required


def test_a_policy_relaxed_in_the_database_shows_unsigned_and_the_strict_policy_applies(ready: Workspace) -> None:
    """Issue 12 item 12: a database writer switches "reason required" off with SQL."""
    engine = create_engine(ready.url)
    with Session(engine) as s, s.begin():
        s.execute(update(m.ClientPolicy).values(reason_required=False))
    engine.dispose()
    before = head(ready)
    assert_clean_error(ready.admin("checkout", REF, "--show"), SECRET)
    assert head(ready) == before  # nothing revealed, nothing recorded
    shown = ok(ready.admin("policy", "show", "acme"))
    assert "NO: the stored policy does not verify" in shown.stdout and "policy set acme" in shown.stderr
    policy = ready.library().policies.get("acme")
    assert (policy.signed, policy.reason_required, policy.exclusive) == (False, True, True)
    ok(ready.admin("policy", "set", "acme", "--no-exclusive", "--no-rotate-after-checkout"))
    policy = ready.library().policies.get("acme")
    assert (policy.signed, policy.reason_required, policy.exclusive) == (True, True, False)


def test_secret_show_lists_a_sensitive_field_by_name_and_checkout_reveals_it_on_the_record(ready: Workspace) -> None:
    """Issue 12 item 16: `secret show` printed MFA seeds and enable secrets, unlogged."""
    seed, enable = "JBSWY3DPEHPK3PXP", "En4ble-S3cret"
    ok(
        ready.admin(
            "secret",
            "update",
            REF,
            "--field",
            f"mfa-seed={seed}",
            "--sensitive-field",
            f"enable={enable}",
            "--public-field",
            "pin-colour=blue",
        )
    )
    shown = ok(ready.admin("secret", "show", REF))
    data = json.loads(ok(ready.admin("secret", "show", REF, "--json")).stdout)
    listed = ok(ready.admin("secret", "list", "acme", "--json"))
    for output in (shown.output, json.dumps(data), listed.output):
        assert seed not in output and enable not in output
    assert f"credvault checkout {REF} --field mfa-seed" in shown.stdout
    assert (data["fields"], data["sensitive_fields"]) == ({"pin-colour": "blue"}, ["enable", "mfa-seed"])
    before, _ = head(ready)
    assert ok(ready.admin("checkout", REF, "--field", "mfa-seed", "-r", "T-5 token", "--show")).stdout.strip() == seed
    [event] = [e for e in events_after(ready, before) if e.action == "checkout"]
    assert event.details is not None and event.details["field"] == "mfa-seed"
    vault = ready.library()
    try:
        assert [(r.field, r.reason) for r in vault.reports.at_risk(ADMIN) if r.field != "password"] == [
            ("mfa-seed", "T-5 token")
        ]
    finally:
        vault.close()


def test_a_sensitive_field_given_by_name_alone_is_asked_for_not_taken_from_argv(ready: Workspace) -> None:
    value = "Rec0very-1111-2222"
    result = ok(ready.admin("secret", "update", REF, "--sensitive-field", "rescue", input=f"{value}\n{value}\n"))
    assert value not in result.stdout
    vault = ready.library()
    try:
        assert vault.secrets.show(REF).sensitive_fields == ("rescue",)
        assert vault.checkouts.reveal(REF, "rescue", reason="T-6 check") == value
    finally:
        vault.close()


def test_policy_adopt_lists_the_unsigned_policies_and_signs_them_only_when_agreed(ready: Workspace) -> None:
    """After the upgrade to signed policies: `policy adopt` shows the stored values first."""
    engine = create_engine(ready.url)
    with Session(engine) as s, s.begin():
        s.execute(update(m.ClientPolicy).values(signature=None, signed_by=None, signed_at=None))
    engine.dispose()
    declined = ready.admin("policy", "adopt", input="n\n")
    assert_clean_error(declined)
    assert "acme" in declined.output and "nothing was signed" in declined.output
    assert not ready.library().policies.get("acme").signed
    adopted = ok(ready.admin("policy", "adopt", "--yes"))
    assert "Signed 1 policies." in adopted.stdout
    assert ready.library().policies.get("acme").signed
    assert "nothing to adopt" in ok(ready.admin("policy", "adopt")).stdout
