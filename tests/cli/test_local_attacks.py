"""Attacks from the engineer's own machine, through the CLI (issue 12, items 13–15)."""

from __future__ import annotations

import json
import re
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


def test_a_keyring_copy_taken_before_lock_opens_nothing_after_it(ready: Workspace, fake_keyring: MemoryKeyring) -> None:
    key, _ = ready.session_text(fake_keyring, ADMIN)
    stolen = fake_keyring.items[key]
    ok(ready.admin("lock"))
    fake_keyring.items[key] = stolen
    result = ready.admin("client", "list")
    assert_clean_error(result)
    assert "acme" not in result.stdout


# -- item 14: redirection to another database -------------------------------------------------------


def _copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite vault (WAL included), as a thief would take it
    (private: the clone must fail for being a clone, not for its file mode)."""
    target.touch(mode=0o600)
    target.chmod(0o600)
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
            "--code-file",
            str(code_file),
            "--passphrase-file",
            ready.passfile(name, f"{name}'s passphrase"),
        )
    )
    fingerprint = FINGERPRINT.search(enrolled.stdout)
    assert fingerprint is not None
    return fingerprint.group(0)


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


def test_an_unpinned_database_is_refused_before_any_code_or_passphrase_is_typed(
    ready: Workspace, tmp_path: Path
) -> None:
    """`unlock` and `engineer enroll` on a database this machine has not pinned stop at the
    pin check, as `agent start` does, instead of asking for a passphrase (and a code) that
    the refusal then throws away."""
    from vault import Vault

    other = tmp_path / "other.db"
    made, _ = Vault.create(f"sqlite:///{other}", admin="other-admin", passphrase="another admin passphrase")
    made.close()
    other_url = f"sqlite:///{other}"
    for args in (("unlock", ADMIN), ("engineer", "enroll", "newbie")):
        result = run("--db", other_url, *args, input="")  # nothing typed: any prompt would abort
        assert_clean_error(result)
        assert "--trust-new-vault" in result.stderr and "Passphrase" not in result.stderr
        assert "Enrolment code" not in result.stderr


def test_a_remote_postgresql_url_without_verified_tls_is_refused_with_a_hint(workspace: Workspace) -> None:
    for url in ("postgresql+psycopg://vault@db.example.net/credvault",
                "postgresql+psycopg://vault@10.1.2.3/credvault?sslmode=require"):  # fmt: skip
        result = run("--db", url, "status")
        assert_clean_error(result)
        assert "sslmode=verify-full" in result.stderr and "--insecure-db" in result.stderr


# -- item 15: local files and argv -----------------------------------------------------------------


def test_init_makes_a_private_data_folder_vault_and_config(isolated_home: Path, tmp_path: Path) -> None:
    passfile = tmp_path / "admin.pass"
    passfile.write_text("an admin passphrase\n", encoding="utf-8")
    passfile.chmod(0o600)
    ok(run("init", "--admin", ADMIN, "--passphrase-file", str(passfile)))  # the embedded default: CREDVAULT_HOME
    ok(run("--as", ADMIN, "unlock", "--passphrase-file", str(passfile)))
    for path in (isolated_home / "vault.db", isolated_home / "config.json", isolated_home / "pins.json"):
        assert path.stat().st_mode & 0o777 == 0o600, path
    for folder in (isolated_home, isolated_home / "run"):
        assert folder.stat().st_mode & 0o777 == 0o700, folder


def test_a_world_readable_vault_file_is_refused_unless_allowed(ready: Workspace) -> None:
    (ready.tmp / "vault.db").chmod(0o644)
    result = ready.admin("client", "list")
    assert_clean_error(result)
    assert "chmod 600" in result.stderr and "--allow-readable" in result.stderr
    assert "acme" in ok(run("--db", ready.url, "--as", ADMIN, "--allow-readable", "client", "list")).stdout


def test_a_passphrase_file_others_may_read_is_refused(ready: Workspace) -> None:
    ok(ready.admin("lock"))
    Path(ready.passfiles[ADMIN]).chmod(0o644)
    result = ready.admin("unlock", "--passphrase-file", ready.passfiles[ADMIN])
    assert_clean_error(result, ready.passphrases[ADMIN])
    assert "chmod 600" in result.stderr
    assert_clean_error(ready.admin("whoami"))  # nothing was unlocked
    result = run("--db", ready.url, "--as", ADMIN, "--passphrase-file", ready.passfiles[ADMIN], "client", "list")
    assert_clean_error(result, ready.passphrases[ADMIN])


def test_the_enrolment_code_is_never_taken_from_argv(ready: Workspace) -> None:
    code = CODE.search(ok(ready.admin("engineer", "invite", "bob")).stdout)
    assert code is not None
    passfile = ready.passfile("bob", "bob's passphrase")
    argv = ready.as_engineer("bob", "--db", ready.url, "engineer", "enroll", "bob", "--code", code.group(0),
                             "--passphrase-file", passfile)  # fmt: skip
    assert_clean_error(argv, code.group(0))
    assert "--code-file" in argv.stderr
    code_file = ready.tmp / "bob.code"
    code_file.write_text(code.group(0) + "\n", encoding="utf-8")
    code_file.chmod(0o644)
    readable = ready.as_engineer("bob", "--db", ready.url, "engineer", "enroll", "bob", "--code-file", str(code_file),
                                 "--passphrase-file", passfile)  # fmt: skip
    assert_clean_error(readable, code.group(0))
    status = {e.name: e.status for e in ready.library().engineers.list()}
    assert status["bob"] == "invited"  # neither attempt used the code
    code_file.chmod(0o600)
    ok(ready.as_engineer("bob", "--db", ready.url, "engineer", "enroll", "bob", "--code-file", str(code_file),
                         "--passphrase-file", passfile))  # fmt: skip
    assert {e.name: e.status for e in ready.library().engineers.list()}["bob"] == "enrolled"


def test_recovery_shares_are_never_taken_from_argv(ready: Workspace, tmp_path: Path) -> None:
    backup, keys = tmp_path / "b.cvbk", tmp_path / "k.json"
    ok(ready.admin("backup", "create", str(backup)))
    ok(ready.admin("backup", "export-keys", str(keys)))
    target = f"sqlite:///{tmp_path / 'restored.db'}"
    share = "CV1S-" + "A" * 40
    argv = run("--db", target, "backup", "restore", str(backup), "--keys", str(keys), "--share", share)
    assert_clean_error(argv, share)
    assert "--shares-file" in argv.stderr
    shares_file = tmp_path / "shares.txt"
    shares_file.write_text(share + "\n", encoding="utf-8")
    shares_file.chmod(0o644)
    restore = ("backup", "restore", str(backup), "--keys", str(keys))
    readable = run("--db", target, *restore, "--shares-file", str(shares_file))
    assert_clean_error(readable, share)
    assert "chmod 600" in readable.stderr


def test_recovery_shares_from_a_private_file_or_typed_restore_a_backup(workspace: Workspace, tmp_path: Path) -> None:
    made = ok(run("--db", workspace.url, "init", "--admin", ADMIN, "--shares", "2-of-3",
                  "--passphrase-file", workspace.passfile(ADMIN, "admin passphrase")))  # fmt: skip
    shares = re.findall(r"^  (\S+)$", made.stdout.split("RECOVERY SHARES", 1)[1], flags=re.MULTILINE)
    assert len(shares) == 3
    ok(workspace.admin("unlock", "--passphrase-file", workspace.passfiles[ADMIN]))
    backup, keys = tmp_path / "b.cvbk", tmp_path / "k.json"
    ok(workspace.admin("backup", "create", str(backup)))
    ok(workspace.admin("backup", "export-keys", str(keys)))
    shares_file = tmp_path / "shares.txt"
    shares_file.write_text("\n".join(shares[:2]) + "\n", encoding="utf-8")
    shares_file.chmod(0o600)
    restore = ("backup", "restore", str(backup), "--keys", str(keys))
    ok(run("--db", f"sqlite:///{tmp_path / 'one.db'}", *restore, "--shares-file", str(shares_file)))
    typed = ok(run("--db", f"sqlite:///{tmp_path / 'two.db'}", *restore, "--shares-file", "-",
                   input=f"{shares[1]}\n{shares[2]}\n\n"))  # fmt: skip
    assert shares[1] not in typed.output  # hidden input
