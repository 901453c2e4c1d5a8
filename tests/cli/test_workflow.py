"""The CLI end to end: each command run through CliRunner, its effect checked in the library."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_workspace import ADMIN, ADMIN_PASS, ENGINEER, ENGINEER_PASS, Workspace, ok, run

from vault.service.config import LocalConfig

STDIN_PASSWORD = "S3cret-from-stdin!"


def test_full_workflow_from_init_to_an_engineer_reading_a_granted_client(db_url: str, tmp_path: Path) -> None:
    ws = Workspace(url=db_url, tmp=tmp_path)
    outputs = [ws.init().output]
    assert LocalConfig.load() == LocalConfig(db_url=db_url, engineer=ADMIN)

    fingerprint = ws.enrol()
    assert LocalConfig.load().engineer == ADMIN  # alice enrolled on her own machine
    outputs.append(ok(ws.admin("client", "add", "acme", "--name", "Acme Ltd")).output)
    outputs.append(
        ok(
            ws.admin(
                "secret",
                "add",
                "acme/fw01-admin",
                "--kind",
                "equipment",
                "--host",
                "10.0.0.1",
                "--username",
                "netadmin",
                "--note",
                "rack 4",
                "--field",
                "vlan=20",
                "--password-stdin",
                input=STDIN_PASSWORD + "\n",
            )
        ).output
    )
    outputs.append(
        ok(
            ws.admin(
                "secret",
                "add",
                "acme/m365",
                "--kind",
                "service",
                "--url",
                "https://portal.office.com",
                "--generate",
                "--length",
                "32",
            )
        ).output
    )
    listed = ok(ws.admin("secret", "list", "--json"))
    shown = ok(ws.admin("secret", "show", "acme/fw01-admin", "--json"))
    outputs += [listed.output, shown.output]
    assert [s["name"] for s in json.loads(listed.stdout)] == ["fw01-admin", "m365"]
    assert json.loads(shown.stdout)["fields"] == {"vlan": "20"}
    outputs.append(ok(ws.admin("grant", ENGINEER, "acme", "--until", "8h", "--reason", "ticket 42")).output)
    mine = ok(ws.as_engineer(ENGINEER, "client", "list", "--json"))
    outputs += [mine.output, ok(ws.as_engineer(ENGINEER, "secret", "list", "acme")).output]
    assert [c["slug"] for c in json.loads(mine.stdout)] == ["acme"]

    alice = ws.library(ENGINEER)
    assert alice.checkouts.reveal("acme/fw01-admin", reason="test") == STDIN_PASSWORD
    generated = alice.checkouts.reveal("acme/m365", reason="test")
    assert len(generated) == 32
    info = alice.secrets.show("acme/fw01-admin")
    assert (info.kind, info.host, info.username, info.note, info.fields) == (
        "equipment",
        "10.0.0.1",
        "netadmin",
        "rack 4",
        {"vlan": "20"},
    )
    admin = ws.library(ADMIN)
    engineers = {e.name: e for e in admin.engineers.list()}
    assert (engineers[ENGINEER].status, engineers[ENGINEER].fingerprint) == ("active", fingerprint)
    [grant] = admin.grants.list(engineer=ENGINEER)
    assert (grant.client, grant.state, grant.until is not None) == ("acme", "active", True)
    for text in outputs:
        for secret in (STDIN_PASSWORD, generated, ADMIN_PASS, ENGINEER_PASS):
            assert secret not in text


def test_init_prints_recovery_shares_once_and_asks_the_passphrase_twice(workspace: Workspace) -> None:
    result = ok(
        run(
            "--db", workspace.url, "init", "--admin", ADMIN, "--shares", "2-of-3", input=f"{ADMIN_PASS}\n{ADMIN_PASS}\n"
        )
    )
    assert result.stdout.count("cvs1-2-") == 3
    assert "store" in result.stdout.lower() or "apart" in result.stdout.lower()
    assert ADMIN_PASS not in result.output
    workspace.passphrases[ADMIN] = ADMIN_PASS
    assert workspace.library().engineers.whoami().role == "admin"


def test_bad_shares_option_is_a_usage_error(workspace: Workspace) -> None:
    result = run("--db", workspace.url, "init", "--admin", ADMIN, "--shares", "three")
    assert result.exit_code == 2


def test_passphrase_file_loses_only_one_trailing_newline(workspace: Workspace) -> None:
    path = workspace.tmp / "spaces.pass"
    path.write_text(" padded passphrase \n\n", encoding="utf-8")
    path.chmod(0o600)
    ok(run("--db", workspace.url, "init", "--admin", ADMIN, "--passphrase-file", str(path)))
    workspace.passphrases[ADMIN] = " padded passphrase \n"
    assert workspace.library().engineers.whoami().engineer == ADMIN


def test_global_passphrase_file_works_without_any_keyring(ready: Workspace) -> None:
    import keyring
    from keyring.backends import fail

    keyring.set_keyring(fail.Keyring())
    result = ok(
        run("--db", ready.url, "--as", ADMIN, "--passphrase-file", ready.passfiles[ADMIN], "client", "list", "--json")
    )
    assert [c["slug"] for c in json.loads(result.stdout)] == ["acme"]


def test_interactive_confirm_asks_whether_the_fingerprint_matches(workspace: Workspace) -> None:
    workspace.init()
    code = ok(workspace.admin("engineer", "invite", "bob")).stdout.split("CV1-", 1)[1].split()[0]
    ok(
        workspace.as_engineer(
            "bob",
            "--db",
            workspace.url,
            "engineer",
            "enroll",
            "bob",
            input=f"CV1-{code}\nbob passphrase\nbob passphrase\n",
        )
    )
    refused = workspace.admin("engineer", "confirm", "bob", input="n\n")
    assert refused.exit_code == 1 and "not confirmed" in refused.stderr
    assert {e.name: e.status for e in workspace.library().engineers.list()}["bob"] == "enrolled"
    ok(workspace.admin("engineer", "confirm", "bob", input="y\n"))
    assert {e.name: e.status for e in workspace.library().engineers.list()}["bob"] == "active"


def test_secret_update_makes_new_versions_and_keeps_what_is_not_given(ready_any_engine: Workspace) -> None:
    ready = ready_any_engine
    ok(ready.admin("secret", "update", "acme/fw01-admin", "--host", "10.0.0.2", "--note", "moved"))
    ok(ready.admin("secret", "update", "acme/fw01-admin", "--username", "", "--password-stdin", input="new-Passw0rd\n"))
    history = ok(ready.admin("secret", "history", "acme/fw01-admin", "--json"))
    assert [v["version"] for v in json.loads(history.stdout)] == [1, 2, 3]
    admin = ready.library()
    info = admin.secrets.show("acme/fw01-admin")
    assert (info.version, info.host, info.note, info.username) == (3, "10.0.0.2", "moved", None)
    assert admin.checkouts.reveal("acme/fw01-admin", reason="test") == "new-Passw0rd"
    assert admin.checkouts.reveal("acme/fw01-admin", reason="test", version=2) == "fw-Passw0rd-stdin"
    assert "new-Passw0rd" not in history.output


def test_secret_update_with_generate_stores_an_unseen_password(ready_or_served: Workspace) -> None:
    ready = ready_or_served
    result = ok(ready.admin("secret", "update", "acme/fw01-admin", "--generate"))
    password = ready.library().checkouts.reveal("acme/fw01-admin", reason="test")
    assert len(password) == 24 and password != "fw-Passw0rd-stdin"
    assert password not in result.output


def test_grants_and_revoke(ready_any_engine: Workspace) -> None:
    ready = ready_any_engine
    ok(ready.admin("grant", ENGINEER, "acme"))
    listed = ok(ready.admin("grants", "--client", "acme", "--json"))
    assert [(g["engineer"], g["state"]) for g in json.loads(listed.stdout)] == [(ENGINEER, "active")]
    assert ENGINEER in ok(ready.as_engineer(ENGINEER, "grants")).stdout
    ok(ready.admin("revoke", ENGINEER, "acme"))
    assert [g.state for g in ready.library().grants.list(engineer=ENGINEER)] == ["revoked"]
    assert run("--db", ready.url, "grants", "--engineer", ENGINEER, "--client", "acme").exit_code == 2


def test_lock_forgets_the_session_and_whoami_reports_it(ready_or_served: Workspace, fake_keyring) -> None:  # type: ignore[no-untyped-def]
    ready = ready_or_served
    me = json.loads(ok(ready.admin("whoami", "--json")).stdout)
    assert (me["engineer"], me["role"]) == (ADMIN, "admin")
    assert ok(ready.admin("lock")).exit_code == 0
    assert not any(key[1].endswith(f"/{ADMIN}") for key in fake_keyring.items)
    assert ready.admin("whoami").exit_code == 1


def test_unlock_ttl_comes_from_the_option_or_the_environment(
    ready_or_served: Workspace, fake_keyring, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    ready = ready_or_served
    import time

    ok(ready.admin("unlock", "--ttl", "2h", "--passphrase-file", ready.passfiles[ADMIN]))
    _, data = ready.session_text(fake_keyring, ADMIN)
    assert 2 * 3600 - 60 < int(data["expires_at"]) - time.time() <= 2 * 3600  # type: ignore[call-overload]
    monkeypatch.setenv("CREDVAULT_SESSION_TTL", "5m")
    ok(ready.admin("unlock", "--passphrase-file", ready.passfiles[ADMIN]))
    _, data = ready.session_text(fake_keyring, ADMIN)
    assert 240 < int(data["expires_at"]) - time.time() <= 300  # type: ignore[call-overload]


def test_listings_have_human_tables(ready_or_served: Workspace) -> None:
    ready = ready_or_served
    ok(ready.admin("grant", ENGINEER, "acme"))
    for args in (
        ("engineer", "list"),
        ("client", "list"),
        ("client", "show", "acme"),
        ("secret", "list"),
        ("secret", "show", "acme/fw01-admin"),
        ("secret", "history", "acme/fw01-admin"),
        ("grants",),
        ("whoami",),
    ):
        result = ok(ready.admin(*args))
        assert result.stdout.strip()
        assert "fw-Passw0rd-stdin" not in result.output


def test_every_listing_and_show_command_has_json(ready_or_served: Workspace) -> None:
    ready = ready_or_served
    for args in (
        ("engineer", "list"),
        ("client", "list"),
        ("client", "show", "acme"),
        ("secret", "list"),
        ("secret", "show", "acme/fw01-admin"),
        ("secret", "history", "acme/fw01-admin"),
        ("grants",),
        ("whoami",),
        *([] if getattr(ready, "served", False) else [("db", "status")]),  # the database's own: on its host
    ):
        json.loads(ok(ready.admin(*args, "--json")).stdout)


def test_db_upgrade_and_status(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'vault.db'}"
    before = json.loads(ok(run("--db", url, "db", "status", "--json")).stdout)
    assert before["revision"] is None
    ok(run("--db", url, "db", "upgrade"))
    after = json.loads(ok(run("--db", url, "db", "status", "--json")).stdout)
    from vault import Vault

    assert after["revision"] == Vault.open(url).schema_revision() is not None
    assert after["vault_id"] is None


def test_a_schema_behind_this_credvault_is_shown_and_warned_about_until_db_upgrade(ready: Workspace) -> None:
    """An existing vault opened by a newer credvault: `db status` says the schema is behind,
    and `db upgrade` brings it to the head. (Since revision 0008 added
    signature columns that every checkout reads, a vault must be upgraded before use.)"""
    from alembic import command

    from vault import Vault
    from vault.storage import engine as storage

    vault = Vault.open(ready.url)
    head = vault.schema_head()
    command.downgrade(storage._alembic_config(vault.store.engine), "0005")
    assert vault.schema_revision() == "0005" != head
    shown = ok(ready.admin("db", "status")).stdout
    assert f"0005, behind this credvault's {head} (run `credvault db upgrade`)" in shown
    assert json.loads(ok(ready.admin("db", "status", "--json")).stdout)["latest_revision"] == head
    ok(ready.admin("db", "upgrade"))
    ok(ready.admin("checkout", "acme/fw01-admin", "-r", "T-1", "--show"))  # the upgraded vault works
    assert vault.schema_revision() == head
    assert f"{head} (the latest)" in ok(ready.admin("db", "status")).stdout
    assert "schema" not in ok(ready.admin("status")).stdout
    vault.close()


def test_db_status_hides_a_password_in_the_url(tmp_path: Path) -> None:
    from vault.cli.output import safe_url

    assert safe_url("postgresql+psycopg://vault:hunter2@db/x") == "postgresql+psycopg://vault:***@db/x"
    assert safe_url("sqlite:////tmp/a:b@c.db") == "sqlite:////tmp/a:b@c.db"


def test_unlock_remembers_the_engineer_and_the_database(ready: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    other_home = ready.home("laptop")
    ok(run("--db", ready.url, "unlock", ADMIN, "--passphrase-file", ready.passfiles[ADMIN], env=other_home))
    assert ok(run("client", "list", "--json", env=other_home)).stdout.count('"slug"') == 1
    monkeypatch.setenv("CREDVAULT_HOME", other_home["CREDVAULT_HOME"])
    assert LocalConfig.load() == LocalConfig(db_url=ready.url, engineer=ADMIN)


def test_an_admin_lists_every_clients_secrets_and_an_engineer_those_of_their_grants(
    ready_any_engine: Workspace,
) -> None:
    """Through a team server the admin's `secret list` asked for the clients of their own grants
    (none): it printed "(none)". An admin lists every client's, as in-process; alice her grants'."""
    ready = ready_any_engine
    ok(ready.admin("client", "add", "globex", "--name", "Globex"))
    ok(ready.admin("secret", "add", "globex/vpn", "--kind", "service", "--generate"))
    ok(ready.admin("grant", ENGINEER, "acme"))
    listed = json.loads(ok(ready.admin("secret", "list", "--json")).stdout)
    assert sorted((s["client"], s["name"]) for s in listed) == [("acme", "fw01-admin"), ("globex", "vpn")]
    mine = json.loads(ok(ready.as_engineer(ENGINEER, "secret", "list", "--json")).stdout)
    assert [(s["client"], s["name"]) for s in mine] == [("acme", "fw01-admin")]
