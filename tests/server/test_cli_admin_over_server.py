"""An admin's CLI through the team server with no database (``credvault --server``): ``policy set``
(and the purge commands served so). Each command runs through click's ``CliRunner`` in a home of
its own (``cli_home``); what it did is then checked in the server's database through the library."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from server_harness import Keyed, events
from test_cli_over_server import joined, ok, refused, run

pytestmark = pytest.mark.usefixtures("cli_home")


def admin_joined(keyed: Keyed, tmp_path: Path) -> str:
    """The admin pins the server, copies their key record once and unlocks: their name."""
    admin = keyed.served.admin.engineer_name
    assert admin is not None
    served = keyed.served
    ok(run("server", "trust", served.url, "--ca-file", str(served.ca.ca_file), "--yes"))
    secret = tmp_path / "admin.pass"
    secret.write_text("admin passphrase ✓\n", encoding="utf-8")
    secret.chmod(0o600)
    ok(run("--db", served.db_url, "server", "join", served.url, admin, "--passphrase-file", str(secret)))
    ok(run("unlock", admin, "--keyring", "--passphrase-file", str(secret)))
    return admin


def test_an_admin_sets_a_policy_through_the_server(keyed: Keyed, tmp_path: Path) -> None:
    admin_joined(keyed, tmp_path)
    before = len(events(keyed.served))
    shown = ok(run("policy", "set", "acme", "--exclusive", "--for", "90m")).output
    assert "exclusive" in shown and "90 min" in shown
    policy = keyed.served.admin.policies.get("acme")  # where the database is: the signature verifies
    assert (policy.exclusive, policy.checkout_minutes, policy.signed) == (True, 90, True)
    ok(run("policy", "set", "acme", "--no-exclusive", "--for", "2h"))
    refused(run("policy", "set", "nobody", "--exclusive"), "no client")
    me = keyed.served.admin.keyholder.me().engineer_id
    actions = [(e.action, e.engineer_id, e.request_id is not None) for e in events(keyed.served)[before:]]
    assert actions == [("policy-set", me, True), ("policy-set", me, True)]
    assert keyed.served.admin.audit.verify().ok


def test_an_engineer_cannot_set_a_policy_through_the_server(keyed: Keyed, tmp_path: Path) -> None:
    secret = joined(keyed, tmp_path)
    ok(run("unlock", "alice", "--keyring", "--passphrase-file", secret))
    before = len(events(keyed.served))
    refused(run("policy", "set", "acme", "--exclusive"), "not an admin")
    assert len(events(keyed.served)) == before
    assert keyed.served.admin.policies.get("acme").exclusive is False


def test_an_admin_purges_a_client_through_the_server_and_anyone_checks_the_receipt(
    keyed: Keyed, tmp_path: Path
) -> None:
    admin_joined(keyed, tmp_path)
    ok(run("client", "add", "cli-gone", "--name", "CLI Gone Ltd"))
    before = len(events(keyed.served))
    refused(run("purge", "client", "cli-gone", "--request", "DSR-7", "--yes", "--vacuum"), "not served")
    purged = ok(run("purge", "client", "cli-gone", "--request", "DSR-7", "--yes", "--json"))
    receipt = json.loads(purged.stdout)
    assert (receipt["kind"], receipt["request"]) == ("client", "DSR-7")
    assert f"Receipt #{receipt['id']} verifies" in ok(run("receipts", "verify", str(receipt["id"]))).output
    refused(run("purge", "client", "cli-gone", "--request", "DSR-8", "--yes"), "no client")
    added = [(e.action, e.request_id is not None) for e in events(keyed.served)[before:]]
    assert added == [("purge-client", True)]
    ok(run("lock"))
    secret = joined(keyed, tmp_path)  # alice, an engineer, on the same machine
    ok(run("unlock", "alice", "--keyring", "--passphrase-file", secret))
    assert "verifies" in ok(run("receipts", "verify", str(receipt["id"]))).output
    refused(run("purge", "client", "acme", "--request", "DSR-9", "--yes"), "not an admin")
    assert keyed.served.admin.purge.verify_receipt(receipt["id"]).ok
    assert keyed.served.admin.audit.verify().ok


def test_an_admin_invites_through_the_server(keyed: Keyed, tmp_path: Path) -> None:
    admin_joined(keyed, tmp_path)
    before = len(events(keyed.served))
    shown = ok(run("engineer", "invite", "cli-newcomer", "--valid-for", "24h")).output
    assert "CV1-" in shown and f"credvault server trust {keyed.served.url}" in shown and "--db" not in shown
    assert [e.action for e in events(keyed.served)[before:]] == ["engineer-invite"]
    assert keyed.served.admin.audit.verify().ok


def test_an_admin_rekeys_and_removes_engineers_through_the_server(keyed: Keyed, tmp_path: Path) -> None:
    """``rotate engineer`` (a lost laptop) and ``engineer remove`` with ``--server``: the stored state then
    checked through the library (carol re-invited; bob disabled, his grant revoked, every client re-keyed)."""
    from sqlalchemy import select

    from vault.storage import models as m

    admin_joined(keyed, tmp_path)
    before = len(events(keyed.served))
    shown = ok(run("rotate", "engineer", "carol")).output
    assert "CV1-" in shown and f"credvault server trust {keyed.served.url}" in shown
    removed = json.loads(ok(run("engineer", "remove", "bob", "--yes", "--json")).output)
    assert removed["rotations_started"] >= 1 and "rotate resume" in removed["rewrap_on_host"]
    refused(run("engineer", "remove", "bob", "--yes"), "already removed")
    actions = [e.action for e in events(keyed.served)[before:]]
    assert actions == ["engineer-invite", "engineer-key-rotate", "engineer-remove"]
    with keyed.store.read() as s:
        rows = {r.name: r for r in s.scalars(select(m.Engineer).where(m.Engineer.name.in_(("bob", "carol"))))}
        assert (rows["carol"].status, rows["carol"].key_record) == ("invited", None)
        assert rows["bob"].status == "disabled"
        bobs = s.scalars(select(m.Grant).where(m.Grant.engineer_id == rows["bob"].id)).all()
        assert bobs and all(g.revoked_at is not None and g.revocation for g in bobs)
        running = s.scalars(select(m.Rotation).where(m.Rotation.state == "running")).all()
        assert len(running) == removed["rotations_started"]
    assert keyed.served.admin.audit.verify().ok
