"""The error contract: `credvault: error:` and a hint on stderr, exit 1, no traceback, no secret."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cli_workspace import (
    ADMIN,
    ADMIN_PASS,
    ENGINEER,
    MemoryKeyring,
    Workspace,
    assert_clean_error,
    ok,
    run,
)
from sqlalchemy import create_engine, text

from vault.service import config

SECRET = "fw-Passw0rd-stdin"  # the password the `ready` fixture stored


def test_wrong_passphrase_on_unlock(ready_or_served: Workspace) -> None:
    ready = ready_or_served
    wrong = ready.passfile("wrong", "not the passphrase")
    result = ready.admin("unlock", "--passphrase-file", wrong)
    assert_clean_error(result, "not the passphrase", ADMIN_PASS, SECRET)
    assert "wrong passphrase" in result.stderr


def test_wrong_passphrase_on_the_automation_path(ready_or_served: Workspace) -> None:
    ready = ready_or_served
    wrong = ready.passfile("wrong", "not the passphrase")
    result = run("--db", ready.url, "--as", ADMIN, "--passphrase-file", wrong, "secret", "list")
    assert_clean_error(result, "not the passphrase", ADMIN_PASS, SECRET)


def test_missing_passphrase_file(ready_or_served: Workspace) -> None:
    ready = ready_or_served
    result = ready.admin("unlock", "--passphrase-file", str(ready.tmp / "nope.pass"))
    assert_clean_error(result)
    assert "passphrase file" in result.stderr


def test_locked_session(ready_or_served: Workspace) -> None:
    ready = ready_or_served
    ok(ready.admin("lock"))
    result = ready.admin("secret", "show", "acme/fw01-admin")
    assert_clean_error(result, SECRET)
    assert "locked" in result.stderr and "credvault unlock" in result.stderr


def test_no_engineer_selected(workspace: Workspace, isolated_home: Path) -> None:
    workspace.init()
    config.LocalConfig(db_url=workspace.url, engineer=None).save()
    assert_clean_error(run("client", "list"))


def test_edited_session_expiry(ready_or_served: Workspace, fake_keyring: MemoryKeyring) -> None:
    ready = ready_or_served
    import json

    key, data = ready.session_text(fake_keyring, ADMIN)
    data["expires_at"] = int(time.time()) - 5  # the expiry is authenticated: any edit fails to open
    fake_keyring.items[key] = json.dumps(data)
    result = ready.admin("client", "list")
    assert_clean_error(result)
    assert "does not open" in result.stderr
    assert key not in fake_keyring.items  # an altered session is removed


def test_expired_session_after_a_short_ttl(ready_or_served: Workspace) -> None:
    ready = ready_or_served
    ok(ready.admin("unlock", "--ttl", "1s", "--passphrase-file", ready.passfiles[ADMIN]))
    time.sleep(1.1)
    result = ready.admin("whoami")
    assert_clean_error(result)
    assert "expired" in result.stderr


def test_no_os_keyring(ready_or_served: Workspace) -> None:
    ready = ready_or_served
    import keyring
    from keyring.backends import fail

    keyring.set_keyring(fail.Keyring())
    result = ready.admin("client", "list")
    assert_clean_error(result)
    assert "--passphrase-file" in result.stderr


def test_unknown_client(ready_or_served: Workspace) -> None:
    ready = ready_or_served
    assert_clean_error(ready.admin("client", "show", "nope"))
    assert_clean_error(ready.admin("secret", "list", "nope"))


def test_unknown_secret(ready_any_engine: Workspace) -> None:
    ready = ready_any_engine
    result = ready.admin("secret", "show", "acme/nope")
    assert_clean_error(result, SECRET)
    assert "acme/nope" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("client", "show", "ac\x1b[31mme"),
        ("client", "add", "acme\u202egpj.exe", "--name", "x"),
        ("secret", "show", "acme/fw01\x1b]0;owned\x07"),
        ("grant", "al\u200bice", "acme"),
    ],
    ids=["ansi-slug", "rtl-slug", "osc-secret-name", "zero-width-engineer"],
)
def test_bad_names_are_refused_without_echoing_control_characters(
    ready_or_served: Workspace, args: tuple[str, ...]
) -> None:
    ready = ready_or_served
    result = ready.admin(*args)
    assert_clean_error(result)
    for char in ("\x1b", "\u202e", "\u200b", "\x07"):
        assert char not in result.output


def test_missing_grant(ready_any_engine: Workspace) -> None:
    ready = ready_any_engine
    for args in (("secret", "show", "acme/fw01-admin"), ("client", "show", "acme"), ("secret", "list", "acme")):
        result = ready.as_engineer(ENGINEER, *args)
        assert_clean_error(result, SECRET, "netadmin", "10.0.0.1")
    assert ok(ready.as_engineer(ENGINEER, "client", "list")).stdout.strip() == "(none)"


def test_engineer_cannot_do_admin_work(ready_or_served: Workspace) -> None:
    ready = ready_or_served
    assert_clean_error(ready.as_engineer(ENGINEER, "client", "add", "globex", "--name", "Globex"))
    assert_clean_error(ready.as_engineer(ENGINEER, "grant", ENGINEER, "acme"))


def test_corrupted_metadata_blob(ready_any_engine: Workspace) -> None:
    ready = ready_any_engine
    engine = create_engine(ready.url)
    with engine.begin() as conn:
        secret_id, version, blob = conn.execute(
            text("SELECT secret_id, version, metadata_blob FROM secret_versions")
        ).one()
        corrupted = blob[:-1] + bytes([blob[-1] ^ 0x01])
        conn.execute(
            text("UPDATE secret_versions SET metadata_blob = :b WHERE secret_id = :s AND version = :v"),
            {"b": corrupted, "s": secret_id, "v": version},
        )
    engine.dispose()
    for args in (("secret", "show", "acme/fw01-admin"), ("secret", "list")):
        result = ready.admin(*args)
        assert_clean_error(result, SECRET, "netadmin", "10.0.0.1")
        assert "cannot decrypt" in result.stderr


def test_postgresql_unreachable(tmp_path: Path) -> None:
    result = run("--db", "postgresql+psycopg://nobody@127.0.0.1:1/x", "--as", ADMIN, "client", "list")
    assert_clean_error(result)
    assert "database" in result.stderr and "--db" in result.stderr


def test_postgresql_unreachable_on_init(tmp_path: Path) -> None:
    path = tmp_path / "p.pass"
    path.write_text(ADMIN_PASS, encoding="utf-8")
    result = run(
        "--db",
        "postgresql+psycopg://nobody:hunter2@127.0.0.1:1/x",
        "init",
        "--admin",
        ADMIN,
        "--passphrase-file",
        str(path),
    )
    assert_clean_error(result, ADMIN_PASS, "hunter2")


def test_sqlite_in_an_impossible_directory() -> None:
    result = run("--db", "sqlite:////proc/nope/vault.db", "db", "status")
    assert_clean_error(result)
    assert "database" in result.stderr and "internal error" not in result.stderr


def test_invalid_database_url() -> None:
    assert_clean_error(run("--db", "mysql://x@y/z", "db", "status"))
    assert_clean_error(run("--db", "not a url", "db", "status"))


def test_wrong_fingerprint_on_confirm(workspace: Workspace) -> None:
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
            "--passphrase-file",
            workspace.passfile("bob", "bob passphrase"),
            input=f"CV1-{code}\n",
        )
    )
    result = workspace.admin("engineer", "confirm", "bob", "--fingerprint", "0000 1111 2222 3333 4444 5555 6666 7777")
    assert_clean_error(result, "bob passphrase")
    assert "does not match" in result.stderr
    assert {e.name: e.status for e in workspace.library().engineers.list()}["bob"] == "enrolled"


@pytest.mark.parametrize("code", ["hello", "CV1-AAAA-BBBB", "CV1-" + "A" * 80, "CV1-!!!!-????"])
def test_malformed_enrolment_code(workspace: Workspace, code: str) -> None:
    workspace.init()
    ok(workspace.admin("engineer", "invite", "bob"))
    result = workspace.as_engineer(
        "bob",
        "--db",
        workspace.url,
        "engineer",
        "enroll",
        "bob",
        "--passphrase-file",
        workspace.passfile("bob", "bob passphrase"),
        input=code + "\n",
    )
    assert_clean_error(result, "bob passphrase")
    assert "enrolment code" in result.stderr


def test_confirmation_mismatch_then_end_of_input(workspace: Workspace) -> None:
    result = run("--db", workspace.url, "init", "--admin", ADMIN, input="first passphrase\nsecond passphrase\n")
    assert_clean_error(result, "first passphrase", "second passphrase")


def test_password_prompt_mismatch_stores_nothing(ready_or_served: Workspace) -> None:
    ready = ready_or_served
    result = ready.admin("secret", "add", "acme/new", "--kind", "other", input="one-Passw0rd\ntwo-Passw0rd\n")
    assert_clean_error(result, "one-Passw0rd", "two-Passw0rd")
    assert [s.name for s in ready.library().secrets.list()] == ["fw01-admin"]


def test_session_length_out_of_bounds(ready_or_served: Workspace) -> None:
    ready = ready_or_served
    result = ready.admin("unlock", "--ttl", "13h", "--passphrase-file", ready.passfiles[ADMIN])
    assert_clean_error(result, ADMIN_PASS)
    assert "12h" in result.stderr


def test_duplicate_secret(ready_or_served: Workspace) -> None:
    ready = ready_or_served
    result = ready.admin(
        "secret", "add", "acme/fw01-admin", "--kind", "other", "--password-stdin", input="another-Passw0rd\n"
    )
    assert_clean_error(result, "another-Passw0rd", SECRET)
    assert ready.library().checkouts.reveal("acme/fw01-admin", reason="test") == SECRET


@pytest.mark.parametrize(
    "args",
    [
        ("secret", "add", "acme/x", "--password-stdin"),  # --kind missing
        ("secret", "add", "acme/x", "--kind", "other", "--generate", "--password-stdin"),
        ("secret", "add", "acme/x", "--kind", "other", "--length", "30"),
        ("secret", "add", "acme/x", "--kind", "gadget", "--generate"),
        ("secret", "add", "acme/x", "--kind", "other", "--generate", "--field", "novalue"),
        ("unlock", "--bogus"),
    ],
)
def test_usage_errors_keep_exit_code_2(ready_or_served: Workspace, args: tuple[str, ...]) -> None:
    ready = ready_or_served
    result = ready.admin(*args, input="x\n")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert [s.name for s in ready.library().secrets.list()] == ["fw01-admin"]


def test_unexpected_exception_is_reported_by_type_only(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(_explicit: str | None) -> str:
        raise RuntimeError("something secret hunter2")

    monkeypatch.setattr(config, "resolve_db_url", explode)
    result = run("db", "status")
    assert_clean_error(result, "hunter2")
    assert "internal error (RuntimeError)" in result.stderr


def test_debug_mode_lets_the_traceback_through(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(_explicit: str | None) -> str:
        raise RuntimeError("boom")

    monkeypatch.setattr(config, "resolve_db_url", explode)
    monkeypatch.setenv("CREDVAULT_DEBUG", "1")
    result = run("db", "status")
    assert isinstance(result.exception, RuntimeError)


def test_keyboard_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(_explicit: str | None) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(config, "resolve_db_url", interrupt)
    result = run("db", "status")
    assert result.exit_code == 130
    assert "credvault: error: interrupted" in result.stderr
    assert "Traceback" not in result.output


def test_bad_input_without_a_hint_of_its_own_gets_a_usage_hint(ready_or_served: Workspace) -> None:
    ready = ready_or_served
    result = ready.admin(
        "secret", "add", "acme/x", "--kind", "service", "--url", "https://a", "--host", "b", "--generate"
    )
    assert_clean_error(result)
    assert "--help" in result.stderr


def test_ctrl_c_at_a_prompt_exits_130(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    import click

    def interrupted_prompt(*_args: object, **_kwargs: object) -> str:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise click.Abort() from None  # what click.prompt does on Ctrl-C

    monkeypatch.setattr(click, "prompt", interrupted_prompt)
    result = run("--db", workspace.url, "init", "--admin", ADMIN)
    assert result.exit_code == 130
    assert "credvault: error: interrupted" in result.stderr
