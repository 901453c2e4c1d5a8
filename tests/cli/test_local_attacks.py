"""Attacks from the engineer's own machine, through the CLI (issue 12, items 13–15)."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from cli_workspace import ADMIN, CODE, FINGERPRINT, Workspace, assert_clean_error, ok, run
from memory_keyring import MemoryKeyring

from vault.service import config

# -- item 13: the unlocked session ------------------------------------------------------------------


def test_a_longer_expiry_written_into_the_keyring_is_refused(ready: Workspace, fake_keyring: MemoryKeyring) -> None:
    key, data = ready.session_text(fake_keyring, ADMIN)
    data["expires_at"] = int(time.time()) + 30 * 86_400
    fake_keyring.items[key] = json.dumps(data)
    assert_clean_error(ready.admin("whoami"))
    assert key not in fake_keyring.items


def test_a_keyring_copy_taken_before_lock_opens_nothing_after_it(
    ready: Workspace, fake_keyring: MemoryKeyring
) -> None:
    key, _ = ready.session_text(fake_keyring, ADMIN)
    stolen = fake_keyring.items[key]
    ok(ready.admin("lock"))
    fake_keyring.items[key] = stolen
    result = ready.admin("client", "list")
    assert_clean_error(result)
    assert "acme" not in result.stdout


# -- item 14: redirection to another database -------------------------------------------------------


def _copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite vault (WAL included), as a thief would take it."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def _enrolled_not_confirmed(ready: Workspace, name: str) -> str:
    code = CODE.search(ok(ready.admin("engineer", "invite", name)).stdout)
    assert code is not None
    code_file = ready.tmp / f"{name}.code"
    code_file.write_text(code.group(0) + "\n", encoding="utf-8")
    code_file.chmod(0o600)
    enrolled = ok(
        ready.as_engineer(
            name,
            "--db",
            ready.url,
            "engineer",
            "enroll",
            name,
            *_code_args(code.group(0), code_file),
            "--passphrase-file",
            ready.passfile(name, f"{name}'s passphrase"),
        )
    )
    fingerprint = FINGERPRINT.search(enrolled.stdout)
    assert fingerprint is not None
    return fingerprint.group(0)


def _code_args(code: str, code_file: Path) -> list[str]:
    from vault.cli.engineers import enroll

    if any("--code-file" in param.opts for param in enroll.params):
        return ["--code-file", str(code_file)]
    return ["--code", code]  # the main this test was first run on had only --code


def test_an_admin_pointed_at_a_clone_by_credvault_db_is_refused(ready: Workspace) -> None:
    fingerprint = _enrolled_not_confirmed(ready, "mallory")
    clone = ready.tmp / "clone.db"
    _copy_sqlite(ready.tmp / "vault.db", clone)
    with sqlite3.connect(clone) as db:  # on his own copy, mallory makes himself an admin
        db.execute("UPDATE engineers SET role = 'admin' WHERE name = 'mallory'")
    clone_url = f"sqlite:///{clone}"
    # the admin's machine pinned the real vault at `init`; CREDVAULT_DB now points at the clone
    result = run("--as", ADMIN, "engineer", "confirm", "mallory", "--fingerprint", fingerprint,
                 input="y\n", env={"CREDVAULT_DB": clone_url})  # fmt: skip
    assert_clean_error(result)
    assert "--trust-new-vault" in result.stderr
    with sqlite3.connect(clone) as db:
        assert db.execute("SELECT status FROM engineers WHERE name = 'mallory'").fetchone()[0] != "active"
    # the same through an edited config file
    local = config.LocalConfig.load()
    local.db_url = clone_url
    local.save()
    assert_clean_error(run("--as", ADMIN, "engineer", "confirm", "mallory", "--fingerprint", fingerprint, input="y\n"))
    with sqlite3.connect(clone) as db:
        assert db.execute("SELECT status FROM engineers WHERE name = 'mallory'").fetchone()[0] != "active"


def test_another_vault_at_a_pinned_url_is_refused_until_trusted(ready: Workspace, tmp_path: Path) -> None:
    from vault import Vault

    other = tmp_path / "other.db"
    made, _ = Vault.create(f"sqlite:///{other}", admin=ADMIN, passphrase="another admin passphrase")
    made.close()
    _copy_sqlite(other, ready.tmp / "vault.db")  # the file at the pinned URL now holds another vault
    result = ready.admin("whoami")
    assert_clean_error(result)
    assert "pinned" in result.stderr and "--trust-new-vault" in result.stderr
    passfile = ready.passfile("other-admin", "another admin passphrase")
    trusted = ok(run("--db", ready.url, "--as", ADMIN, "--passphrase-file", passfile, "--trust-new-vault", "whoami"))
    assert "now trusts" in trusted.stderr
    assert ok(run("--db", ready.url, "--as", ADMIN, "--passphrase-file", passfile, "whoami")).exit_code == 0


def test_a_remote_postgresql_url_without_verified_tls_is_refused_with_a_hint(workspace: Workspace) -> None:
    for url in ("postgresql+psycopg://vault@db.example.net/credvault",
                "postgresql+psycopg://vault@10.1.2.3/credvault?sslmode=require"):  # fmt: skip
        result = run("--db", url, "status")
        assert_clean_error(result)
        assert "sslmode=verify-full" in result.stderr and "--insecure-db" in result.stderr
