"""``credvault passwd``, ``audit log/export/checkpoint`` and ``audit verify`` with a team server and no
database (``CliRunner``; the config folder and keyring of the test's own: ``cli_home``).

What each command did is checked through the library: the key records on the server and on this
machine, the events in the server's database, a checkpoint verified in-process. ``audit log`` also
runs through the engineer's agent (a process of its own, holding a ``RemoteVault``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_harness import joined, ok, refused, run
from server_harness import Keyed, events

from vault import Vault
from vault.crypto import keyrecord
from vault.errors import WrongPassphrase
from vault.service.config import AuditMemory
from vault.service.serverpins import KeyRecordFile
from vault.storage import models as m

NEW = "dave's passphrase typed at the prompt 3141"


@pytest.fixture(scope="module")
def keyed(keyed_more: tuple[Keyed, dict[str, Vault]]) -> Keyed:  # this module's: dave enrolled too
    return keyed_more[0]


@pytest.fixture(scope="module")
def dave(keyed_more: tuple[Keyed, dict[str, Vault]]) -> Vault:
    return keyed_more[1]["dave"]


def _opens(record: bytes, passphrase: str, dave: Vault) -> bool:
    me = dave.keyholder.me()
    try:
        keyrecord.open_record(record, passphrase, me.vault_id, me.engineer_id, me.key_generation)
    except WrongPassphrase:
        return False
    return True


def test_passwd_through_the_server(keyed: Keyed, dave: Vault, cli_home: Path, tmp_path: Path) -> None:
    secret = joined(keyed, tmp_path, "dave")
    before = len(events(keyed.served))
    result = ok(run("--passphrase-file", secret, "passwd", input=f"{NEW}\n{NEW}\n"))
    assert "Passphrase changed." in result.output
    with keyed.store.read() as s:
        stored = s.query(m.Engineer).filter_by(name="dave").one().key_record
    kept = KeyRecordFile.load(keyed.served.admin.vault_id(), "dave").record
    assert kept == stored and _opens(kept, NEW, dave) and not _opens(kept, "pass of dave", dave)
    assert [e.action for e in events(keyed.served)[before:]] == ["passphrase-change"]
    refused(run("unlock", "dave", "--keyring", "--passphrase-file", secret), "passphrase")
    (tmp_path / "new.pass").write_text(NEW + "\n", encoding="utf-8")
    (tmp_path / "new.pass").chmod(0o600)
    ok(run("unlock", "dave", "--keyring", "--passphrase-file", str(tmp_path / "new.pass")))
    assert json.loads(ok(run("whoami", "--json")).output)["engineer"] == "dave"


def test_audit_log_export_and_checkpoint_through_the_server(keyed: Keyed, cli_home: Path, tmp_path: Path) -> None:
    secret = joined(keyed, tmp_path)
    ok(run("unlock", "alice", "--keyring", "--passphrase-file", secret))
    ok(run("checkout", "acme/fw01", "--reason", "T-7100 cli audit", "--show"))
    ok(run("checkin", "acme/fw01"))
    before = len(events(keyed.served))
    shown = json.loads(ok(run("audit", "log", "--json")).output)
    local = keyed.served.alice.audit.log()
    assert [(e["seq"], e["action"], e["client"]) for e in shown] == [(e.seq, e.action, e.client) for e in local]
    assert any((e["details"] or {}).get("reason") == "T-7100 cli audit" for e in shown)
    assert len(json.loads(ok(run("audit", "log", "--limit", "1", "--json")).output)) == 1
    exported = [json.loads(line) for line in ok(run("audit", "export")).output.splitlines()]
    assert [e["seq"] for e in exported] == [e["seq"] for e in shown]
    line = ok(run("audit", "checkpoint")).output.strip()
    assert keyed.served.admin.audit.verify(checkpoints=[line]).ok
    assert len(events(keyed.served)) == before  # reading and checkpointing append nothing
    out = ok(run("audit", "verify")).output  # her own events and the head; the whole chain is an admin's
    assert "whole chain is verified by an admin" in out
    memory = AuditMemory.load(keyed.served.admin.vault_id().hex())
    assert memory.verified is None and memory.seen == keyed.served.admin.audit.head()
    assert json.loads(ok(run("audit", "verify", "--json")).output)["whole_chain"] is False


def test_the_agent_serves_audit_log_through_the_server(keyed: Keyed, cli_home: Path, tmp_path: Path) -> None:
    secret = joined(keyed, tmp_path)
    ok(run("unlock", "alice", "--passphrase-file", secret))  # into an agent (a process of its own)
    try:
        shown = json.loads(ok(run("audit", "log", "--json")).output)
        assert [e["seq"] for e in shown] == [e.seq for e in keyed.served.alice.audit.log()]
    finally:
        ok(run("lock"))
