"""Issue 12, item 11, as a person meets it: ``audit verify --full`` names a forged event, and
``audit log`` marks an event no key vouches for. The forgeries are written with SQL, as a
database writer would; the verdict is read from the CLI, the stored state from the library.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_workspace import ENGINEER, MemoryKeyring, Snapshots, Workspace, assert_clean_error, ok
from sqlalchemy import create_engine, select, text

from vault.crypto import chain
from vault.storage import models as m


def enrolled(ws: Workspace) -> None:
    ws.init()
    ok(ws.admin("client", "add", "acme", "--name", "Acme Ltd"))
    ws.enrol()
    ok(ws.host("engineer", "list"))  # an event with no details: details_json is NULL


@pytest.fixture
def ready(snapshots: Snapshots, tmp_path: Path, fake_keyring: MemoryKeyring) -> Workspace:
    return snapshots.clone(enrolled, tmp_path, fake_keyring)


def test_a_null_detail_made_empty_is_named_by_a_full_verify(ready: Workspace) -> None:
    engine = create_engine(ready.url)
    with engine.begin() as conn:
        seq = conn.execute(text("SELECT max(seq) FROM audit_events WHERE action = 'engineer-list'")).scalar_one()
        conn.execute(text("UPDATE audit_events SET details_json = '' WHERE seq = :s"), {"s": seq})
    engine.dispose()
    result = ready.admin("audit", "verify", "--full")
    assert_clean_error(result)
    assert f"event {seq}: its contents were changed" in result.stderr
    assert ready.library().audit.verify().first_bad_seq == seq


def test_a_forged_unlock_failure_is_shown_unauthenticated(ready: Workspace) -> None:
    vault = ready.library()
    vault_id = vault.vault_id()
    with vault.store.transaction() as s:
        engineer_id = s.scalar(select(m.Engineer.id).where(m.Engineer.name == ENGINEER))
        head = s.get(m.AuditHead, 1)
        assert head is not None and engineer_id is not None
        last = s.get(m.AuditEvent, head.seq)
        assert last is not None
        seq, details = head.seq + 1, json.dumps({"engineer": ENGINEER})
        fields = (last.at_us, engineer_id, 1, "unlock-failed", None, None, None, None, details)
        digest = chain.event_hash(vault_id, seq, *fields, prev_hash=head.hash)
        s.add(
            m.AuditEvent(
                seq=seq,
                at_us=last.at_us,
                engineer_id=engineer_id,
                key_generation=1,
                action="unlock-failed",
                details_json=details,
                prev_hash=head.hash,
                hash=digest,
                signature=None,
            )
        )
        head.seq, head.hash = seq, digest
    listed = json.loads(ok(ready.admin("audit", "log", "--json")).stdout)
    forged = next(e for e in listed if e["seq"] == seq)
    assert forged["details"]["unauthenticated"] is True
    assert all("unauthenticated" not in (e["details"] or {}) for e in listed if e["action"] != "unlock-failed")
    assert "unauthenticated=True" in ok(ready.admin("audit", "log")).stdout
