"""An admin's CLI through the team server with no database (``credvault --server``): ``policy set``
(and the purge commands served so). Each command runs through click's ``CliRunner`` in a home of
its own (``cli_home``); what it did is then checked in the server's database through the library."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from server_harness import Keyed, events
from sqlalchemy import select, update
from test_cli_over_server import joined, ok, refused, run

from vault.crypto import keyrecord
from vault.storage import models as m
from vault.transport.https_enrolment import enroll_over_https

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


def assert_vacuumed(receipt: dict[str, object]) -> None:
    """The receipt says the server's host vacuumed its database once the purge committed."""
    said = str(receipt["scrubbed"])
    assert said.startswith("on the server's host: ")
    assert "file vacuumed" in said or "VACUUM FULL run on the purged tables" in said


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
    purged = ok(run("purge", "client", "cli-gone", "--request", "DSR-7", "--yes", "--vacuum", "--json"))
    receipt = json.loads(purged.stdout)
    assert (receipt["kind"], receipt["request"]) == ("client", "DSR-7")
    assert_vacuumed(receipt)
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
    code = re.search(r"CV1-[A-Za-z0-9-]+", shown)
    assert code is not None
    enrolled = enroll_over_https(
        keyed.served.url, ca_file=str(keyed.served.ca.ca_file), name="cli-newcomer", code=code.group(0),
        passphrase="newcomer's passphrase", kdf_params=keyrecord.FLOOR,
    )  # fmt: skip
    refused(run("engineer", "confirm", "cli-newcomer", "--fingerprint", "0000 1111"), "fingerprint")
    confirmed = ok(run("engineer", "confirm", "cli-newcomer", "--fingerprint", enrolled.fingerprint)).output
    assert enrolled.fingerprint in confirmed and "Confirmed cli-newcomer (engineer)" in confirmed
    assert [e.action for e in events(keyed.served)[before:]] == ["engineer-invite", "enroll", "engineer-confirm"]
    with keyed.store.read() as s:  # where the database is: active, with a certificate
        row = s.scalars(select(m.Engineer).where(m.Engineer.name == "cli-newcomer")).one()
        assert row.status == "active" and row.certificate is not None and row.certified_at is not None
    assert keyed.served.admin.audit.verify().ok


def test_an_admin_rotates_a_client_key_through_the_server(keyed: Keyed, tmp_path: Path) -> None:
    admin_joined(keyed, tmp_path)
    before = len(events(keyed.served))
    shown = ok(run("rotate", "client", "excl")).output
    assert "Rotated excl: key version 1 -> 2, 5 data key(s) re-wrapped" in shown
    assert keyed.served.admin.keys.versions("excl") == [(1, "destroyed"), (2, "active")]  # where the database is
    assert "Deleted 0 sealed key copy(ies)" in ok(run("maintain")).output  # nothing past its end: no event
    refused(run("rotate", "client", "nobody"), "no client")
    actions = [e.action for e in events(keyed.served)[before:]]
    assert actions == ["client-key-rotate", "client-key-rotated"]  # the server layers nothing here: no release
    ok(run("lock"))
    secret = joined(keyed, tmp_path)  # alice, an engineer, on the same machine
    ok(run("unlock", "alice", "--keyring", "--passphrase-file", secret))
    refused(run("rotate", "client", "acme"), "not an admin")
    assert keyed.served.admin.keys.versions("acme") == [(1, "active")]
    assert keyed.served.admin.audit.verify().ok


def test_an_admins_audit_log_and_verify_through_the_server(keyed: Keyed, tmp_path: Path) -> None:
    """``audit log`` (every engineer's events, checked on the admin's machine) and ``audit verify``
    (the whole chain): the log is the in-process one; the head verified is the in-process head,
    remembered on this machine for the next, incremental, verify; nothing is appended."""
    from vault.service.config import AuditMemory

    admin_joined(keyed, tmp_path)
    before = len(events(keyed.served))
    shown = json.loads(ok(run("audit", "log", "--json")).output)
    local = keyed.served.admin.audit.log()
    assert [(e["seq"], e["engineer"], e["action"], e["client"]) for e in shown] == [
        (e.seq, e.engineer, e.action, e.client) for e in local
    ]
    assert {e["engineer"] for e in shown} >= {"alice", keyed.served.admin.engineer_name}
    out = ok(run("audit", "verify")).output
    assert "The audit log verifies" in out
    head = keyed.served.admin.audit.head()
    memory = AuditMemory.load(keyed.served.admin.vault_id().hex())
    assert memory.verified == head and memory.seen == head
    assert json.loads(ok(run("audit", "verify", "--json")).output)["whole_chain"] is True
    assert len(events(keyed.served)) == before


def test_an_admin_purges_a_secret_through_the_server(keyed: Keyed, tmp_path: Path) -> None:
    admin_joined(keyed, tmp_path)
    ok(run("secret", "add", "acme/cli-old", "--generate", "--kind", "equipment"))
    before = len(events(keyed.served))
    purged = ok(run("purge", "secret", "acme/cli-old", "--request", "DSR-12", "--yes", "--vacuum"))
    assert re.search(r"vacuum:\s+on the server's host: (sqlite|postgresql)", purged.stdout), purged.stdout
    receipt = json.loads(ok(run("receipts", "--json")).stdout)[-1]
    assert (receipt["kind"], receipt["request"], len(receipt["fingerprints"])) == ("secret", "DSR-12", 1)
    refused(run("purge", "secret", "acme/cli-old", "--request", "DSR-13", "--yes"), "no secret")
    actions = [e.action for e in events(keyed.served)[before:]]
    assert actions[-2:] == ["purge-secret-draft", "purge-secret"] and "purge-secret" not in actions[:-2]
    stored = keyed.served.admin  # where the database is: the secret is gone, its receipt verifies
    with keyed.store.read() as s:
        assert s.get(m.Secret, receipt["secret_ids"][0]) is None
    assert stored.purge.verify_receipt(receipt["id"]).ok
    assert stored.audit.verify().ok


def test_an_admin_finds_and_purges_a_subject_through_the_server(keyed: Keyed, tmp_path: Path) -> None:
    admin_joined(keyed, tmp_path)
    person = "cli.subject@dsr.example"
    ok(run("secret", "add", "acme/cli-person", "--generate", "--kind", "service", "--username", person))
    ok(run("secret", "add", "excl/cli-person", "--generate", "--kind", "service", "--username", person))
    found = json.loads(ok(run("subject", "find", person, "--json")).stdout)
    assert sorted((x["client"], x["secret"], x["field"]) for x in found) == [
        ("acme", "cli-person", "username"), ("excl", "cli-person", "username"),
    ]  # fmt: skip
    before = len(events(keyed.served))
    subject = ("purge", "subject", person, "--request", "DSR-14", "--yes")
    purged = json.loads(ok(run(*subject, "--vacuum", "--json")).stdout)
    assert [(r["kind"], r["request"], len(r["fingerprints"])) for r in purged] == [("subject", "DSR-14", 1)] * 2
    assert purged[0]["scrubbed"] is None  # the host vacuums once, after the last client's purge committed
    assert_vacuumed(purged[-1])
    actions = [e.action for e in events(keyed.served)[before:]]
    assert actions[-2:] == ["purge-subject"] * 2 and set(actions[:-2]) == {"subject-search"}
    refused(run("purge", "subject", person, "--request", "DSR-15", "--yes"), "no secret matches")
    stored = keyed.served.admin  # where the database is: the secrets are gone, the receipts verify
    with keyed.store.read() as s:
        assert all(s.get(m.Secret, r["secret_ids"][0]) is None for r in purged)
    assert all(stored.purge.verify_receipt(r["id"]).ok for r in purged)
    assert stored.audit.verify().ok


def test_an_admin_changes_the_settings_through_the_server(keyed: Keyed, tmp_path: Path) -> None:
    admin_joined(keyed, tmp_path)
    before = len(events(keyed.served))
    assert "Settings saved." in ok(run("settings", "--retention", "6", "--cryptoperiod", "300")).output
    refused(run("settings", "--retention", "0"), "retention")
    assert [e.action for e in events(keyed.served)[before:]] == ["settings", "settings"]
    with keyed.store.read() as s:  # where the database is: the row the admin signed
        info = s.get(m.VaultInfo, 1)
        assert info is not None and (info.retention_versions, info.cryptoperiod_days) == (6, 300)
        assert info.settings_signed_by == keyed.served.admin.keyholder.me().engineer_id
    assert keyed.served.admin.audit.verify().ok


def test_policy_adopt_through_the_server(keyed: Keyed, tmp_path: Path) -> None:
    """The unsigned policies are listed from the admin's machine and signed there as stored."""
    admin_joined(keyed, tmp_path)
    with keyed.store.read() as s:
        excl = s.scalars(select(m.ClientPolicy).where(m.ClientPolicy.exclusive.is_(True))).one()
        client_id, signature = excl.client_id, excl.signature
    with keyed.store.transaction() as s:  # a DBA loosens excl's policy: its signature no longer covers it
        s.execute(update(m.ClientPolicy).where(m.ClientPolicy.client_id == client_id).values(stale_days=40))
    before = len(events(keyed.served))
    result = ok(run("policy", "adopt", "--yes"))
    assert "excl" in result.stdout and "Signed" in result.stdout  # listed (slug opened here), then signed
    assert set(e.action for e in events(keyed.served)[before:]) == {"policy-set"}
    with keyed.store.read() as s:
        adopted = s.get(m.ClientPolicy, client_id)
        assert adopted is not None and adopted.signature != signature and adopted.stale_days == 40
    assert "nothing to adopt" in ok(run("policy", "adopt", "--yes")).stdout
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
    assert len(removed["rotations"]) >= 2 and {r["state"] for r in removed["rotations"]} == {"done"}
    assert isinstance(removed["at_risk"], list) and "report_on_host" not in removed  # the at-risk list made here
    refused(run("engineer", "remove", "bob", "--yes"), "already removed")
    actions = [e.action for e in events(keyed.served)[before:]]
    assert actions[:3] == ["engineer-invite", "engineer-key-rotate", "engineer-remove"]
    rotated = ["client-key-rotated"] * len(removed["rotations"])  # re-wrapped through the server, named by a listing
    assert sorted(a for a in actions[3:] if not a.startswith("report-")) == [*rotated, "client-list"]
    assert "report-at-risk" in actions  # the removal's at-risk list, on record on the server
    with keyed.store.read() as s:
        rows = {r.name: r for r in s.scalars(select(m.Engineer).where(m.Engineer.name.in_(("bob", "carol"))))}
        assert (rows["carol"].status, rows["carol"].key_record) == ("invited", None)
        assert rows["bob"].status == "disabled"
        bobs = s.scalars(select(m.Grant).where(m.Grant.engineer_id == rows["bob"].id)).all()
        assert bobs and all(g.revoked_at is not None and g.revocation for g in bobs)
        assert s.scalars(select(m.Rotation).where(m.Rotation.state == "running")).all() == []  # all run through
    assert keyed.served.admin.audit.verify().ok


def test_an_admins_reports_through_the_server(keyed: Keyed, tmp_path: Path) -> None:
    """``report access``/``at-risk``, ``status`` and ``report stale`` from the admin's machine: every
    reveal of the engineer's, each report's event on record on the server (tests/server/
    test_report_access_https.py compares them with the host's in-process reports)."""
    secret = joined(keyed, tmp_path)  # alice reveals, then her admin reports it on the same machine
    ok(run("unlock", "alice", "--keyring", "--passphrase-file", secret))
    ok(run("checkout", "acme/fw01", "--reason", "T-77", "--show"))
    ok(run("checkin", "acme/fw01"))
    ok(run("lock"))
    admin_joined(keyed, tmp_path)
    before = len(events(keyed.served))
    shown = json.loads(ok(run("report", "access", "alice", "--json")).output)
    with keyed.store.read() as s:
        alice = s.scalars(select(m.Engineer.id).where(m.Engineer.name == "alice")).one()
    revealed = [e.seq for e in events(keyed.served) if e.engineer_id == alice and e.action in ("reveal", "checkout")]
    assert [r["seq"] for r in shown] == revealed and shown, "alice revealed something in this module's world"
    at_risk = json.loads(ok(run("report", "at-risk", "alice", "--json")).output)
    unchanged = {(r["client"], r["secret"], r["field"]) for r in shown if not r["changed_since"]}
    assert {(r["client"], r["secret"], r["field"]) for r in at_risk} == unchanged
    assert "client(s)" in ok(run("status")).output
    ok(run("report", "stale"))
    refused(run("report", "access", "nobody"), "no engineer")
    ours = [e.action for e in events(keyed.served)[before:] if e.action.startswith("report-")]
    assert ours[:1] == ["report-access"] and "report-at-risk" in ours
    ok(run("lock"))
    ok(run("unlock", "alice", "--keyring", "--passphrase-file", secret))
    refused(run("report", "access", "alice"), "not an admin")
    assert keyed.served.admin.audit.verify().ok


def test_a_service_identity_from_invitation_to_checkout_by_cli(keyed: Keyed, tmp_path: Path) -> None:
    """An admin invites a service through the server; the script's machine enrols it with a key file
    (no passphrase asked), the admin confirms and grants it; then one command with ``--key-file``
    checks out, with no unlock, no keyring and no agent."""
    admin_joined(keyed, tmp_path)
    invited = ok(run("engineer", "invite", "cli-rmm", "--service")).output
    code = re.search(r"CV1-[A-Z0-9-]+", invited)
    assert code is not None and "--key-file FILE" in invited
    refused(run("engineer", "invite", "cli-both", "--service", "--admin"), "never an admin")
    key_file = tmp_path / "rmm.key"
    enrolled = ok(run("engineer", "enroll", "cli-rmm", "--key-file", str(key_file), input=code.group(0) + "\n"))
    assert "Passphrase" not in enrolled.output and key_file.stat().st_mode & 0o777 == 0o600
    fingerprint = re.search(r"\b[0-9a-f]{4}(?: [0-9a-f]{4}){7}\b", enrolled.stdout)
    assert fingerprint is not None
    ok(run("engineer", "confirm", "cli-rmm", "--fingerprint", fingerprint.group(0)))
    listed = {e["name"]: e["role"] for e in json.loads(ok(run("engineer", "list", "--json")).output)}
    assert listed["cli-rmm"] == "service" and listed["alice"] == "engineer"  # the listing through the server
    ok(run("grant", "cli-rmm", "acme"))
    ok(run("lock"))
    shown = ok(run("--key-file", str(key_file), "checkout", "acme/fw01", "--reason", "RMM 4711", "--show")).stdout
    assert "pw of acme/fw01" in shown
    ok(run("--key-file", str(key_file), "checkin", "acme/fw01"))
    with keyed.store.read() as s:
        row = s.scalars(select(m.Engineer).where(m.Engineer.name == "cli-rmm")).one()
    assert row.role == "service"
    assert [e.action for e in events(keyed.served) if e.engineer_id == row.id][-2:] == ["checkout", "checkin"]
    refused(run("--key-file", str(key_file), "engineer", "invite", "cli-eve"), "not an admin")
    key_file.chmod(0o644)
    refused(run("--key-file", str(key_file), "whoami"), "read by other users")


def test_an_admin_rotates_the_root_through_the_server(keyed: Keyed, tmp_path: Path) -> None:
    """``rotate root --shares`` with ``--server`` (last in the module: the organisation key changes); the
    stored state then checked through the library; an engineer refused with nothing written."""
    with keyed.store.read() as s:
        old = max(r.version for r in s.scalars(select(m.RootKey)))
    secret = joined(keyed, tmp_path)  # alice, an engineer, first
    ok(run("unlock", "alice", "--keyring", "--passphrase-file", secret))
    before = len(events(keyed.served))
    refused(run("rotate", "root"), "not an admin")
    assert len(events(keyed.served)) == before
    ok(run("lock"))
    admin_joined(keyed, tmp_path)
    shown = ok(run("rotate", "root", "--shares", "2-of-3")).output
    assert f"Rotated the recovery key (version {old + 1})" in shown and "NEW RECOVERY SHARES: any 2 of these 3" in shown
    me = keyed.served.admin.keyholder.me().engineer_id
    assert [(e.action, e.engineer_id, e.request_id is not None) for e in events(keyed.served)[before:]] == [
        ("root-key-rotate", me, True)
    ]
    with keyed.store.read() as s:
        states = {r.version: r.state for r in s.scalars(select(m.RootKey))}
        assert (states[old], states[old + 1]) == ("destroyed", "active")
        recovery = {
            r.recipient_id
            for r in s.scalars(select(m.ClientKeySeal).where(m.ClientKeySeal.recipient_kind == "recovery"))
        }
        assert recovery == {old + 1}
    assert "Rotated excl" in ok(run("rotate", "client", "excl")).output  # the new recovery key opens its key
    assert keyed.served.admin.audit.verify().ok
