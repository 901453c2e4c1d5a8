"""The access log through the CLI: audit verify/checkpoint/log/export and the reports.

Tampering is done the way an attacker with the database would do it, with SQL; the
verdict is then read from the CLI (its error names the event), and what `audit verify`
remembers is read back from this machine's AuditMemory.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from cli_workspace import ADMIN, ENGINEER, MemoryKeyring, Snapshots, Workspace, assert_clean_error, ok, run
from click.testing import Result
from sqlalchemy import create_engine, text

from vault import Vault
from vault.service.config import AuditMemory

SECRET = "fw-Passw0rd-stdin"
REF = "acme/fw01-admin"


# -- a vault built once per module, copied into each test --------------------------------------


def granted(ws: Workspace) -> None:
    """An unlocked admin, acme with one secret, alice unlocked with a grant for acme."""
    ws.init()
    ok(ws.admin("client", "add", "acme", "--name", "Acme Ltd"))
    secret = (REF, "--kind", "equipment", "--host", "10.0.0.1", "--username", "netadmin")
    ok(ws.admin("secret", "add", *secret, "--password-stdin", input=SECRET + "\n"))
    ok(ws.admin("client", "add", "globex", "--name", "Globex"))
    ok(ws.admin("secret", "add", "globex/vpn", "--kind", "service", "--password-stdin", input="globex-Passw0rd\n"))
    ws.enrol()
    ok(ws.admin("grant", ENGINEER, "acme"))


@pytest.fixture
def ready(snapshots: Snapshots, tmp_path: Path, fake_keyring: MemoryKeyring) -> Workspace:
    return snapshots.clone(granted, tmp_path, fake_keyring)



# -- helpers ---------------------------------------------------------------------------------------


def head(ws: Workspace) -> tuple[int, bytes]:
    """The chain's head, read without unlocking (unlocking appends an event)."""
    vault = Vault.open(ws.url)
    try:
        return vault.audit.head()
    finally:
        vault.close()


def vault_id(ws: Workspace) -> str:
    vault = Vault.open(ws.url)
    try:
        return vault.vault_id().hex()
    finally:
        vault.close()


def sql(ws: Workspace, statement: str, **params: object) -> None:
    engine = create_engine(ws.url)
    with engine.begin() as conn:
        conn.execute(text(statement), params)
    engine.dispose()


def truncate(ws: Workspace, keep: int) -> None:
    """Delete every event after ``keep`` and rewind the recorded head to it: a clean cut."""
    engine = create_engine(ws.url)
    with engine.begin() as conn:
        digest = conn.execute(text("SELECT hash FROM audit_events WHERE seq = :k"), {"k": keep}).scalar_one()
        conn.execute(text("DELETE FROM audit_events WHERE seq > :k"), {"k": keep})
        conn.execute(text("UPDATE audit_head SET seq = :k, hash = :h WHERE id = 1"), {"k": keep, "h": digest})
    engine.dispose()


def activity(ws: Workspace) -> None:
    """Alice checks acme's secret out with a reason; the admin looks at globex."""
    ok(ws.as_engineer(ENGINEER, "checkout", REF, "--reason", "T-42 reset VPN", "--show"))
    ok(ws.admin("secret", "show", "globex/vpn"))


# -- audit verify ----------------------------------------------------------------------------------


def test_verify_passes_and_remembers_the_head_on_this_machine(ready: Workspace) -> None:
    result = ok(ready.admin("audit", "verify"))
    seq, digest = head(ready)
    assert f"head at event {seq}" in result.stdout
    with ready.at_admins_machine() as home:
        assert AuditMemory.path(vault_id(ready)) == home / f"audit-{vault_id(ready)}.json"
        assert AuditMemory.path(vault_id(ready)).exists()
        memory = AuditMemory.load(vault_id(ready))
    assert memory.verified == memory.seen == (seq, digest)


def test_second_verify_checks_only_the_new_events(ready: Workspace) -> None:
    ok(ready.admin("audit", "verify"))
    first, _ = head(ready)
    activity(ready)
    second, digest = head(ready)
    assert second > first
    result = ok(ready.admin("audit", "verify"))
    assert f"{second - first} new event(s) checked (events {first + 1}-{second})" in result.stdout
    with ready.at_admins_machine():
        assert AuditMemory.load(vault_id(ready)).verified == (second, digest)
    data = json.loads(ok(ready.admin("audit", "verify", "--json")).stdout)
    assert (data["ok"], data["checked"], data["head_seq"]) == (True, 0, second)
    again = ok(ready.admin("audit", "verify")).stdout
    assert f"0 new event(s) checked (none since the head verified last), head at event {second}." in again


def test_full_verify_checks_every_event(ready: Workspace) -> None:
    ok(ready.admin("audit", "verify"))
    seq, _ = head(ready)
    data = json.loads(ok(ready.admin("audit", "verify", "--full", "--json")).stdout)
    assert (data["ok"], data["checked"], data["first_seq"], data["head_seq"]) == (True, seq, 1, seq)


def test_a_changed_event_is_named_by_a_full_verify(ready: Workspace) -> None:
    activity(ready)
    ok(ready.admin("audit", "verify"))
    checkout = next(e.seq for e in ready.library().audit.log(engineer=ENGINEER) if e.action == "checkout")
    sql(ready, "UPDATE audit_events SET action = 'secret-list' WHERE seq = :s", s=checkout)
    result = ready.admin("audit", "verify", "--full")
    assert_clean_error(result, SECRET, "T-42")
    assert f"event {checkout}: its contents were changed" in result.stderr


def test_a_deleted_event_in_the_middle_is_named(ready: Workspace) -> None:
    activity(ready)
    seq, _ = head(ready)
    sql(ready, "DELETE FROM audit_events WHERE seq = :s", s=seq - 2)
    result = ready.admin("audit", "verify", "--full")
    assert_clean_error(result, SECRET)
    assert f"event {seq - 2} is missing" in result.stderr


def test_a_truncated_tail_is_caught_against_the_head_this_machine_saw(ready: Workspace) -> None:
    activity(ready)
    ok(ready.admin("audit", "verify"))
    seen, _ = head(ready)
    truncate(ready, seen - 3)
    result = ready.admin("audit", "verify")
    assert_clean_error(result, SECRET)
    assert f"event {seen}" in result.stderr
    full = ready.admin("audit", "verify", "--full")
    assert_clean_error(full, SECRET)
    assert "truncated" in full.stderr and "the head this machine saw" in full.stderr
    with ready.at_admins_machine():
        assert AuditMemory.load(vault_id(ready)).seen is not None
        assert AuditMemory.load(vault_id(ready)).seen[0] == seen  # type: ignore[index]  # a failure forgets nothing


def test_a_checkpoint_kept_elsewhere_catches_truncation_on_a_fresh_machine(ready: Workspace) -> None:
    activity(ready)
    line = ok(ready.admin("audit", "checkpoint")).stdout.strip()
    seq, _ = head(ready)
    assert line.startswith(f"credvault-checkpoint:1:{vault_id(ready)}:{seq}:")
    saved = ready.tmp / "checkpoints.txt"
    saved.write_text(line + "\n", encoding="utf-8")
    ok(ready.admin("audit", "verify", "--full", "--checkpoint", str(saved)))
    truncate(ready, seq - 3)

    def fresh_machine(*args: str) -> Result:
        home = ready.tmp / f"fresh-{len(list(ready.tmp.glob('fresh-*')))}"
        return run(  # another machine: the keyring session of this one does not open there
            "--db",
            ready.url,
            "--as",
            ADMIN,
            "--passphrase-file",
            ready.passfiles[ADMIN],
            "audit",
            "verify",
            "--full",
            *args,
            env={"CREDVAULT_HOME": str(home)},
        )

    ok(fresh_machine())  # without the checkpoint (or a memory), a clean cut is invisible
    result = fresh_machine("--checkpoint", str(saved))
    assert_clean_error(result, SECRET)
    assert "truncated" in result.stderr and "checkpoint" in result.stderr
    assert f"event {seq}" in result.stderr


def test_a_forged_checkpoint_is_refused(ready: Workspace) -> None:
    line = ok(ready.admin("audit", "checkpoint")).stdout.strip()
    parts = line.split(":")
    parts[3] = str(int(parts[3]) + 100)  # claim a longer log than was signed
    saved = ready.tmp / "forged.txt"
    saved.write_text(":".join(parts) + "\n", encoding="utf-8")
    result = ready.admin("audit", "verify", "--full", "--checkpoint", str(saved))
    assert_clean_error(result, SECRET)
    assert "checkpoint" in result.stderr


# -- audit log and export -----------------------------------------------------------------------------


def test_audit_log_json_shows_details_the_admin_may_read(ready: Workspace) -> None:
    activity(ready)
    library = ready.library()
    entries = json.loads(ok(ready.admin("audit", "log", "--json")).stdout)
    assert [e["seq"] for e in entries] == [e.seq for e in library.audit.log()]
    [checkout] = [e for e in entries if e["action"] == "checkout"]
    assert (checkout["engineer"], checkout["client"], checkout["readable"]) == (ENGINEER, "acme", True)
    assert checkout["details"]["reason"] == "T-42 reset VPN"
    assert SECRET not in json.dumps(entries)


def test_audit_log_filters(ready: Workspace) -> None:
    activity(ready)
    library = ready.library()
    by_client = json.loads(ok(ready.admin("audit", "log", "--client", "acme", "--json")).stdout)
    assert by_client and {e["client"] for e in by_client} == {"acme"}
    assert [e["seq"] for e in by_client] == [e.seq for e in library.audit.log(client="acme")]
    by_engineer = json.loads(ok(ready.admin("audit", "log", "--engineer", ENGINEER, "--json")).stdout)
    assert by_engineer and {e["engineer"] for e in by_engineer} == {ENGINEER}
    assert [e["seq"] for e in by_engineer] == [e.seq for e in library.audit.log(engineer=ENGINEER)]
    everything = [e.seq for e in library.audit.log()]
    recent = json.loads(ok(ready.admin("audit", "log", "--since", "1d", "--json")).stdout)
    assert [e["seq"] for e in recent] == everything
    after_all = dt.datetime.now(dt.UTC).isoformat()  # later than every event, earlier than the command
    assert json.loads(ok(ready.admin("audit", "log", "--since", after_all, "--json")).stdout) == []
    newest = json.loads(ok(ready.admin("audit", "log", "--limit", "2", "--json")).stdout)
    assert [e["seq"] for e in newest] == everything[-2:]
    both = json.loads(ok(ready.admin("audit", "log", "--client", "acme", "--engineer", ENGINEER, "--json")).stdout)
    assert [e["action"] for e in both] == ["checkout"]


def test_audit_log_since_a_future_time_shows_nothing(ready: Workspace) -> None:
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat(timespec="minutes")
    assert json.loads(ok(ready.admin("audit", "log", "--since", future, "--json")).stdout) == []


def test_an_engineer_sees_only_their_own_events(ready: Workspace) -> None:
    activity(ready)
    mine = json.loads(ok(ready.as_engineer(ENGINEER, "audit", "log", "--json")).stdout)
    assert mine and {e["engineer"] for e in mine} == {ENGINEER}
    assert "checkout" in [e["action"] for e in mine]


def test_audit_log_table(ready: Workspace) -> None:
    activity(ready)
    table = ok(ready.admin("audit", "log", "--client", "acme")).stdout
    assert table.splitlines()[0].split()[:4] == ["SEQ", "TIME", "ENGINEER", "ACTION"]
    assert "checkout" in table and "reason=T-42 reset VPN" in table
    assert SECRET not in table


def test_audit_log_filter_errors(ready: Workspace) -> None:
    assert_clean_error(ready.admin("audit", "log", "--engineer", "nobody"), SECRET)
    assert_clean_error(ready.admin("audit", "log", "--client", "nope"), SECRET)
    assert_clean_error(ready.admin("audit", "log", "--since", "last tuesday"), SECRET)
    assert ready.admin("audit", "log", "--limit", "0").exit_code == 2


def test_audit_export_jsonl_has_one_event_per_line(ready: Workspace) -> None:
    activity(ready)
    library = ready.library()
    result = ok(ready.admin("audit", "export", "--format", "jsonl"))
    lines = result.stdout.splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["seq"] for e in events] == [e.seq for e in library.audit.log()]
    assert {"seq", "at", "engineer", "action", "client", "details"} <= set(events[0])
    assert [e["details"]["reason"] for e in events if e["action"] == "checkout"] == ["T-42 reset VPN"]
    assert SECRET not in result.output
    acme = [json.loads(line) for line in ok(ready.admin("audit", "export", "--client", "acme")).stdout.splitlines()]
    assert acme and {e["client"] for e in acme} == {"acme"}


# -- reports -----------------------------------------------------------------------------------------


def test_report_access_and_at_risk_follow_reveals_and_changes(ready: Workspace) -> None:
    ok(ready.as_engineer(ENGINEER, "checkout", REF, "--reason", "T-42 reset VPN", "--show"))
    ok(ready.as_engineer(ENGINEER, "checkout", REF, "--field", "username", "--reason", "T-43", "--show"))
    access = json.loads(ok(ready.admin("report", "access", ENGINEER, "--json")).stdout)
    assert [(r["client"], r["secret"], r["field"], r["version"], r["reason"], r["changed_since"]) for r in access] == [
        ("acme", "fw01-admin", "password", 1, "T-42 reset VPN", False),
        ("acme", "fw01-admin", "username", 1, "T-43", False),
    ]
    at_risk = json.loads(ok(ready.admin("report", "at-risk", ENGINEER, "--json")).stdout)
    assert [(r["secret"], r["field"]) for r in at_risk] == [("fw01-admin", "password"), ("fw01-admin", "username")]

    ok(ready.admin("secret", "update", REF, "--note", "metadata only"))  # a new version, same password
    at_risk = json.loads(ok(ready.admin("report", "at-risk", ENGINEER, "--json")).stdout)
    assert [(r["field"], r["changed_since"]) for r in at_risk] == [("password", False), ("username", False)]

    ok(ready.admin("secret", "update", REF, "--password-stdin", input="Changed-On-The-Box-1\n"))
    access = json.loads(ok(ready.admin("report", "access", ENGINEER, "--json")).stdout)
    assert [(r["field"], r["changed_since"]) for r in access] == [("password", True), ("username", False)]
    at_risk = json.loads(ok(ready.admin("report", "at-risk", ENGINEER, "--json")).stdout)
    assert [(r["secret"], r["field"]) for r in at_risk] == [("fw01-admin", "username")]
    actions = [e.action for e in ready.library().audit.log(engineer=ADMIN)]
    assert "report-access" in actions and "report-at-risk" in actions


def test_report_at_risk_keeps_the_latest_reveal_of_each_value(ready: Workspace) -> None:
    for reason in ("T-1", "T-2"):
        ok(ready.as_engineer(ENGINEER, "checkout", REF, "--reason", reason, "--show"))
    assert len(json.loads(ok(ready.admin("report", "access", ENGINEER, "--json")).stdout)) == 2
    at_risk = json.loads(ok(ready.admin("report", "at-risk", ENGINEER, "--json")).stdout)
    assert [r["reason"] for r in at_risk] == ["T-2"]


def test_report_tables(ready: Workspace) -> None:
    ok(ready.as_engineer(ENGINEER, "checkout", REF, "--reason", "T-42", "--show"))
    for kind in ("access", "at-risk"):
        table = ok(ready.admin("report", kind, ENGINEER)).stdout
        assert "acme/fw01-admin" in table and "T-42" in table
        assert SECRET not in table
    assert ok(ready.admin("report", "access", ADMIN)).stdout.strip() == "(none)"


def test_an_engineer_cannot_read_reports(ready: Workspace) -> None:
    ok(ready.as_engineer(ENGINEER, "checkout", REF, "--reason", "T-42", "--show"))
    before = head(ready)
    for kind in ("access", "at-risk"):
        result = ready.as_engineer(ENGINEER, "report", kind, ENGINEER)
        assert_clean_error(result, SECRET, "T-42")
        assert "admin" in result.stderr
    assert head(ready) == before


def test_report_on_an_unknown_engineer(ready: Workspace) -> None:
    result = ready.admin("report", "access", "nobody")
    assert_clean_error(result, SECRET)
    assert "nobody" in result.stderr


# -- streamed printing (audit log, report access) ------------------------------------------------


def test_a_streamed_table_or_json_prints_what_the_whole_list_printed(capsys: pytest.CaptureFixture[str]) -> None:
    from vault.cli import audit as cli_audit
    from vault.cli.output import echo_json, echo_table

    rows = [(i, f"name-{'x' * (i % 7)}", None, i % 2 == 0) for i in range(40)]
    for items in (rows, []):
        echo_table(["seq", "name", "none", "even"], items)
        whole = capsys.readouterr().out
        cli_audit._stream_table(["seq", "name", "none", "even"], iter(items))
        assert capsys.readouterr().out == whole
        records = [{"seq": i, "name": n, "nested": {"a": [1, None]}} for i, n, _, _ in items]
        echo_json(records)
        whole = capsys.readouterr().out
        cli_audit._stream_json(iter(records))
        assert capsys.readouterr().out == whole
        assert json.loads(whole) == records


def test_a_streamed_table_prints_its_first_block_before_reading_on(capsys: pytest.CaptureFixture[str]) -> None:
    from vault.cli import audit as cli_audit

    def rows():  # type: ignore[no-untyped-def]
        for i in range(cli_audit.BLOCK + 1):
            yield (i, "row")
        raise RuntimeError("the stream broke after one block")

    with pytest.raises(RuntimeError):
        cli_audit._stream_table(["seq", "what"], rows())
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["SEQ", "WHAT"] and len(printed) == 1 + cli_audit.BLOCK  # shown as read


def test_an_error_of_the_stream_comes_before_any_output(capsys: pytest.CaptureFixture[str]) -> None:
    from vault.cli import audit as cli_audit

    def broken():  # type: ignore[no-untyped-def]
        raise RuntimeError("refused")
        yield {}

    for show in (cli_audit._stream_json, lambda items: cli_audit._stream_table(["a"], items)):
        with pytest.raises(RuntimeError):
            show(broken())
        assert capsys.readouterr().out == ""
