"""The purge, receipts, subject, backup and stale-report commands, run through CliRunner;
their effect is checked through the library.

``ready`` is a SQLite vault made through the CLI: an unlocked admin (root), client acme
with acme/fw01-admin (username netadmin), and alice enrolled without a grant.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from cli_workspace import ADMIN, ENGINEER, Workspace, assert_clean_error, ok, run
from served import only_local
from sqlalchemy import update

from vault import Vault
from vault.errors import NotFound
from vault.service.sessions import MemorySessionStore
from vault.storage import engine as storage
from vault.storage import models as m

FW_PASSWORD = "fw-Passw0rd-stdin"  # acme/fw01-admin, as tests/cli/conftest.py stores it
REASON = "T-1 test"


def _add_secret(ws: Workspace, ref: str, password: str, *options: str) -> None:
    ok(ws.admin("secret", "add", ref, "--kind", "other", *options, "--password-stdin", input=password + "\n"))


def _store_write(url: str, statement: object) -> None:
    store = storage.Store(url)
    try:
        with store.transaction() as s:
            s.execute(statement)  # type: ignore[call-overload]
    finally:
        store.close()


def _open(url: str, ws: Workspace, name: str = ADMIN) -> Vault:
    vault = Vault.open(url, engineer=name, sessions=MemorySessionStore())
    vault.engineers.unlock(name, ws.passphrases[name])
    return vault


# -- purge client, receipts -----------------------------------------------------------------------


def test_purge_client_asks_for_the_slug_then_prints_a_receipt_that_verifies(ready_or_served: Workspace) -> None:
    ready = ready_or_served
    ws = ready
    missing = ws.admin("purge", "client", "acme")
    assert missing.exit_code == 2 and "--request" in missing.output  # a usage error: nothing is asked

    wrong = ws.admin("purge", "client", "acme", "--request", "DSR-1", input="acme-ltd\n")
    assert_clean_error(wrong)
    assert "1 secret(s)" in wrong.stderr and "nothing was purged" in wrong.stderr
    empty = ws.admin("purge", "client", "acme", "--request", "DSR-1", input="\n")
    assert_clean_error(empty)
    bad_ref = ws.admin("purge", "client", "acme", "--request", "jane@example.org", input="acme\n")
    assert_clean_error(bad_ref)
    library = ws.library()
    assert library.clients.show("acme").secrets == 1 and library.purge.receipts() == []
    assert library.checkouts.reveal("acme/fw01-admin", reason=REASON) == FW_PASSWORD

    purged = ok(ws.admin("purge", "client", "acme", "--request", "DSR-1", input="acme\n"))
    assert "#1" in purged.stdout and "DSR-1" in purged.stdout
    assert "destroy every older key export" in purged.stderr
    library = ws.library()
    with pytest.raises(NotFound):
        library.clients.show("acme")
    (receipt,) = library.purge.receipts()
    assert (receipt.kind, receipt.request, receipt.counts["secrets"]) == ("client", "DSR-1", 1)
    assert " ".join(receipt.fingerprints) in purged.stdout

    listed = ok(ws.admin("receipts", "--json"))
    assert [(r["id"], r["request"]) for r in json.loads(listed.stdout)] == [(1, "DSR-1")]
    assert "DSR-1" in ok(ws.admin("receipts")).stdout
    ok(ws.admin("receipts", "verify", "1"))
    assert_clean_error(ws.admin("receipts", "verify", "2"))
    _store_write(ws.url, update(m.PurgeReceipt).values(request_ref="DSR-2"))
    tampered = ws.admin("receipts", "verify", "1")
    assert_clean_error(tampered)
    assert "does not verify" in tampered.stderr and "invalid signature" in tampered.stderr
    assert not ws.library().purge.verify_receipt(1).ok


def test_purge_secret_and_subject_remove_only_what_was_named(ready_or_served: Workspace) -> None:
    ready = ready_or_served
    ws = ready
    email = "jane.doe@example.org"
    _add_secret(ws, "acme/jane-mailbox", "Jane-Mail-Pw-1", "--username", email)
    _add_secret(ws, "acme/printer", "Printer-Pw-2", "--note", "second floor")
    ok(ws.admin("client", "add", "globex", "--name", "Globex Corp"))
    _add_secret(ws, "globex/vpn", "Globex-Vpn-Pw-3", "--field", f"owner={email.upper()}")
    _add_secret(ws, "globex/wifi", "Globex-Wifi-Pw-4")

    assert_clean_error(ws.admin("purge", "secret", "acme/fw01-admin", "--request", "DSR-2", input="acme\n"))
    assert ws.library().checkouts.reveal("acme/fw01-admin", reason=REASON) == FW_PASSWORD
    ok(ws.admin("purge", "secret", "acme/fw01-admin", "--request", "DSR-2", input="acme/fw01-admin\n"))

    declined = ws.admin("purge", "subject", email, "--request", "DSR-3", input="no\n")
    assert_clean_error(declined)
    assert "acme/jane-mailbox" in declined.stderr and "globex/vpn" in declined.stderr
    assert len(ws.library().purge.receipts()) == 1
    assert_clean_error(ws.admin("purge", "subject", "no.such.person@example.org", "--request", "DSR-3", "--yes"))
    ok(ws.admin("purge", "subject", email, "--request", "DSR-3", "--yes"))

    library = ws.library()
    receipts = library.purge.receipts()
    assert [(r.kind, r.request) for r in receipts] == [("secret", "DSR-2"), ("subject", "DSR-3"), ("subject", "DSR-3")]
    assert all(library.purge.verify_receipt(r.id).ok for r in receipts)
    assert sorted(s.ref for s in library.secrets.list()) == ["acme/printer", "globex/wifi"]
    assert library.checkouts.reveal("globex/wifi", reason=REASON) == "Globex-Wifi-Pw-4"
    assert library.subjects.find(email) == []

    ok(ws.admin("purge", "client", "globex", "--request", "DSR-4", "--yes"))
    assert [c.slug for c in ws.library().clients.list()] == ["acme"]
    assert ws.library().audit.verify().ok


# -- subject find / report, report stale ---------------------------------------------------------------


def test_subject_find_and_report_and_report_stale(ready_or_served: Workspace, tmp_path: Path) -> None:
    ready = ready_or_served
    ws = ready
    found = ok(ws.admin("subject", "find", "NetAdmin"))
    assert "acme" in found.stdout and "fw01-admin" in found.stdout
    matches = json.loads(ok(ws.admin("subject", "find", "netadmin", "--json")).stdout)
    assert [(x["client"], x["secret"], x["field"], x["value"]) for x in matches] == [
        ("acme", "fw01-admin", "username", "netadmin")
    ]
    assert json.loads(ok(ws.admin("subject", "find", "nobody-at-all", "--json")).stdout) == []
    assert_clean_error(ws.admin("subject", "find", "ab"))
    assert_clean_error(ws.as_engineer(ENGINEER, "subject", "find", "netadmin"))  # alice is no admin

    out = tmp_path / "report.json"
    ok(ws.admin("subject", "report", "netadmin", "--out", str(out)))
    assert out.stat().st_mode & 0o777 == 0o600
    report = json.loads(out.read_text(encoding="utf-8"))
    assert [x["value"] for x in report["matches"]] == ["netadmin"] and report["generated_by"] == ADMIN
    assert FW_PASSWORD not in out.read_text(encoding="utf-8")
    written = out.read_bytes()
    again = ws.admin("subject", "report", "netadmin", "--out", str(out))
    assert_clean_error(again)
    assert "already exists" in again.stderr and out.read_bytes() == written
    assert ws.admin("subject", "report", "netadmin").exit_code == 2  # --out is required
    def reports(e: Any) -> bool:  # in-process its own event; through the server each search page's, naming it
        return e.action == "subject-report" or (e.action == "subject-search" and e.details.get("purpose") == "report")

    reported = [e for e in ws.library().audit.log() if reports(e)]
    assert len(reported) >= 1

    ok(ws.admin("policy", "set", "acme", "--stale-after", "30"))
    assert json.loads(ok(ws.admin("report", "stale", "--json")).stdout) == []
    aged = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    _store_write(ws.url, update(m.Secret).values(created_at=aged))
    stale = json.loads(ok(ws.admin("report", "stale", "--json")).stdout)
    assert [(x["client"], x["secret"], x["days_unused"], x["stale_days"]) for x in stale] == [
        ("acme", "fw01-admin", 40, 30)
    ]
    assert "acme/fw01-admin" in ok(ws.admin("report", "stale")).stdout
    assert ws.library().checkouts.reveal("acme/fw01-admin", reason=REASON) == FW_PASSWORD  # flagged, not deleted
    assert json.loads(ok(ws.admin("report", "stale", "--json")).stdout) == []  # and now it was used


def test_a_refused_subject_report_is_not_logged(ready_or_served: Workspace, tmp_path: Path) -> None:
    ready = ready_or_served
    out = tmp_path / "existing.json"
    out.write_text("{}", encoding="utf-8")
    assert_clean_error(ready.admin("subject", "report", "netadmin", "--out", str(out)))
    assert [e for e in ready.library().audit.log() if e.action == "subject-report"] == []


# -- backups ------------------------------------------------------------------------------------------


def test_backup_create_through_the_server_is_a_backup_the_host_restores(
    ready_or_served: Workspace, tmp_path: Path
) -> None:
    """`backup create` by an admin with no database (the server streams, this machine seals and checks),
    or on the host in the embedded mode; its file restores as any backup. An engineer is refused and
    no file is left; restore and key export through the server say they are the host's."""
    ws = ready_or_served
    served = bool(getattr(ws, "served", False))
    backup, keys = tmp_path / "vault.cvbk", tmp_path / "keys.json"
    made = ok(ws.admin("backup", "create", str(backup)))
    assert "1 client(s)" in made.stdout
    assert backup.stat().st_mode & 0o777 == 0o600
    assert FW_PASSWORD.encode() not in backup.read_bytes() and b"netadmin" not in backup.read_bytes()
    assert_clean_error(ws.admin("backup", "create", str(backup)))  # never overwritten
    assert_clean_error(ws.as_engineer(ENGINEER, "backup", "create", str(tmp_path / "alice.cvbk")))
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".cvbk", ".part")) == ["vault.cvbk"]
    if served:
        refused = ws.admin("backup", "export-keys", str(keys))
        assert_clean_error(refused)
        assert "server's host" in refused.stderr and not keys.exists()
        ok(ws.host("backup", "export-keys", str(keys)))  # where the key file is
        restore = ws.admin("backup", "restore", str(backup), "--keys", str(keys), "--admin", ADMIN)
        assert_clean_error(restore)
        assert "host operation" in restore.stderr and "--db" in restore.stderr
    else:
        ok(ws.admin("backup", "export-keys", str(keys)))
    target = f"sqlite:///{tmp_path / 'restored.db'}"
    restore_args = ("backup", "restore", str(backup), "--keys", str(keys), "--admin", ADMIN)
    restored = ok(run("--db", target, "--passphrase-file", ws.passfiles[ADMIN], *restore_args))
    assert "Restored 1 client(s) and 1 secret(s)" in restored.stdout
    copy = _open(target, ws)
    try:
        assert copy.audit.verify().ok
        assert "backup-create" in [e.action for e in copy.audit.log()]
    finally:
        copy.close()


def test_backup_create_export_keys_and_restore_round_trip(ready_or_served: Workspace, tmp_path: Path) -> None:
    ready = ready_or_served
    only_local(ready, "not served yet: backups")
    ws = ready
    backup, keys = tmp_path / "vault.cvbk", tmp_path / "keys.json"
    ok(ws.admin("backup", "create", str(backup)))
    ok(ws.admin("backup", "export-keys", str(keys)))
    for file in (backup, keys):
        assert file.stat().st_mode & 0o777 == 0o600
        assert FW_PASSWORD.encode() not in file.read_bytes() and b"netadmin" not in file.read_bytes()
    assert_clean_error(ws.admin("backup", "create", str(backup)))  # never overwritten
    assert_clean_error(ws.admin("backup", "export-keys", str(keys)))
    assert_clean_error(ws.as_engineer(ENGINEER, "backup", "create", str(tmp_path / "alice.cvbk")))

    target = f"sqlite:///{tmp_path / 'restored.db'}"
    passfile = ws.passfiles[ADMIN]
    restore = ("backup", "restore", str(backup), "--keys", str(keys))
    assert run("--db", target, *restore).exit_code == 2  # neither --admin nor --share
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not the passphrase\n", encoding="utf-8")
    assert_clean_error(run("--db", target, "--passphrase-file", str(wrong), *restore, "--admin", ADMIN))
    restored = ok(run("--db", target, "--passphrase-file", passfile, *restore, "--admin", ADMIN))
    assert "Restored 1 client(s) and 1 secret(s)" in restored.stdout
    assert_clean_error(run("--db", target, "--passphrase-file", passfile, *restore, "--admin", ADMIN))  # not empty
    copy = _open(target, ws)
    assert copy.checkouts.reveal("acme/fw01-admin", reason=REASON) == FW_PASSWORD
    assert copy.audit.verify().ok
    copy.close()

    # purge acme, export the keys again: the old backup restores without acme
    ok(ws.admin("purge", "client", "acme", "--request", "DSR-5", "--yes"))
    new_keys = tmp_path / "keys-new.json"
    ok(ws.admin("backup", "export-keys", str(new_keys)))
    second = f"sqlite:///{tmp_path / 'restored-after-purge.db'}"
    after = ok(
        run(
            "--db",
            second,
            "--passphrase-file",
            passfile,
            "backup",
            "restore",
            str(backup),
            "--keys",
            str(new_keys),
            "--admin",
            ADMIN,
        )
    )
    assert "1 client(s) stayed unreadable" in after.stdout
    copy = _open(second, ws)
    assert copy.clients.list() == []
    with pytest.raises(NotFound):
        copy.checkouts.reveal("acme/fw01-admin", reason=REASON)
    assert copy.audit.verify().ok
    copy.close()
