"""The CLI against a team server (docs/server.md §6, §8 step 7): the engineer pins the server,
moves their key record off the shared database once, and then works with no database URL.

Each command runs through click's ``CliRunner`` in a home of its own (``CREDVAULT_HOME``) with
an in-memory keyring; what it did is then checked in the server's database through the library.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from cli_harness import joined, ok, passfile, refused, run
from memory_keyring import MemoryKeyring
from server_harness import Keyed, events

from vault.service import config
from vault.service.serverpins import KeyRecordFile, ServerPins


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "home"
    monkeypatch.setenv("CREDVAULT_HOME", str(home))
    for name in ("CREDVAULT_DB", "CREDVAULT_SERVER", "CREDVAULT_ENGINEER", "CREDVAULT_SESSION_TTL"):
        monkeypatch.delenv(name, raising=False)
    previous = keyring.get_keyring()
    keyring.set_keyring(MemoryKeyring())
    yield home
    keyring.set_keyring(previous)


def test_trust_shows_the_fingerprints_and_pins_the_server(keyed: Keyed, home: Path) -> None:
    served = keyed.served
    result = ok(run("server", "trust", served.url, "--ca-file", str(served.ca.ca_file), "--yes"))
    assert keyed.served.admin.vault_id().hex()[:16] in result.output
    assert "server key" in result.output
    from vault.crypto import signing
    from vault.storage import models as m

    with keyed.store.read() as s:
        info = s.get(m.VaultInfo, 1)
        assert info is not None
        printed_by_init = signing.org_fingerprint(info.org_signing_public)[:8].hex()  # as `init` shows it
    assert printed_by_init in result.output
    assert ServerPins.load().get(served.url).server_key == (keyed.key.version, keyed.key.public)
    assert config.LocalConfig.load().server == served.url


def test_trust_without_a_person_to_compare_pins_nothing(keyed: Keyed, home: Path) -> None:
    served = keyed.served
    refused(run("server", "trust", served.url, "--ca-file", str(served.ca.ca_file)), "nothing was pinned")
    assert ServerPins.load().pins == {}


def test_trust_with_another_ca_reaches_nothing(keyed: Keyed, home: Path, tmp_path: Path) -> None:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from served import name

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    other = (
        x509.CertificateBuilder().subject_name(name("other CA")).issuer_name(name("other CA"))
        .public_key(key.public_key()).serial_number(1).not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(key, hashes.SHA256())
    )  # fmt: skip
    path = tmp_path / "other-ca.pem"
    path.write_bytes(other.public_bytes(serialization.Encoding.PEM))
    refused(run("server", "trust", keyed.served.url, "--ca-file", str(path), "--yes"), "could not be reached")
    assert ServerPins.load().pins == {}


def test_an_engineer_works_through_the_server_with_no_database(keyed: Keyed, home: Path, tmp_path: Path) -> None:
    secret = joined(keyed, tmp_path)
    assert KeyRecordFile.path(keyed.served.admin.vault_id(), "alice").stat().st_mode & 0o077 == 0
    before = len(events(keyed.served))
    ok(run("unlock", "alice", "--keyring", "--passphrase-file", secret))
    who = json.loads(ok(run("whoami", "--json")).output)
    assert (who["engineer"], who["role"]) == ("alice", "engineer")
    shown = ok(run("checkout", "acme/fw02", "--reason", "T-900 cli", "--show"))
    assert "pw of acme/fw02" in shown.output
    listed = ok(run("checkouts", "--json"))
    assert [(c["client"], c["secret"]) for c in json.loads(listed.output)] == [("acme", "fw02")]
    ok(run("checkin", "acme/fw02"))
    ok(run("secret", "add", "acme/cli-added", "--kind", "equipment", "--password-stdin", input="pw cli added\n"))
    assert "pw cli added" in ok(run("checkout", "acme/cli-added", "--reason", "T-903", "--show")).output
    ok(run("checkin", "acme/cli-added"))
    grants = json.loads(ok(run("grants", "--json")).output)
    assert sorted(g["client"] for g in grants) == ["acme", "excl"]
    actions = [(e.action, e.engineer_id, e.request_id is not None) for e in events(keyed.served)[before:]]
    alice = keyed.served.alice.keyholder.me().engineer_id
    assert actions == [
        ("checkout", alice, True), ("checkin", alice, True),
        ("secret-create", alice, True), ("checkout", alice, True), ("checkin", alice, True),
    ]  # fmt: skip
    ok(run("lock"))
    refused(run("checkout", "acme/fw02", "--reason", "T-901", "--show"), "locked")


def test_a_command_not_served_says_where_to_run_it(keyed: Keyed, home: Path, tmp_path: Path) -> None:
    secret = joined(keyed, tmp_path)
    ok(run("unlock", "alice", "--keyring", "--passphrase-file", secret))
    backup, keys = tmp_path / "vault.backup", tmp_path / "keys.json"
    backup.write_text("{}\n", encoding="utf-8")
    keys.write_text("{}\n", encoding="utf-8")
    restore = ("backup", "restore", str(backup), "--keys", str(keys), "--admin", "alice")
    stderr = refused(run(*restore), "not served through a team server", "host operation")
    assert "--db" in stderr


def test_an_unpinned_server_is_refused_before_any_passphrase(keyed: Keyed, home: Path) -> None:
    refused(run("--server", keyed.served.url, "--as", "alice", "whoami"), "not pinned", "server trust")


def test_server_and_db_together_are_refused(keyed: Keyed, home: Path) -> None:
    refused(run("--server", keyed.served.url, "--db", keyed.served.db_url, "whoami"), "not both")


def test_the_agent_serves_checkouts_through_the_server(keyed: Keyed, home: Path, tmp_path: Path) -> None:
    secret = joined(keyed, tmp_path)
    ok(run("unlock", "alice", "--passphrase-file", secret))  # into an agent (a process of its own)
    try:
        before = len(events(keyed.served))
        shown = ok(run("checkout", "acme/fw01", "--reason", "T-902 agent", "--show"))
        assert "pw of acme/fw01" in shown.output
        ok(run("checkin", "acme/fw01"))
        assert [e.action for e in events(keyed.served)[before:]] == ["checkout", "checkin"]
    finally:
        ok(run("lock"))


def test_keygen_makes_a_private_key_file_an_admin_certifies(team, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from vault.server.keyfile import read_server_keys
    from vault.storage import models as m

    path = tmp_path / "server-key.json"
    ok(run("server", "keygen", str(path)))
    assert path.stat().st_mode & 0o777 == 0o600
    made = read_server_keys(path)
    assert made.master is not None and made.signing.version == 1
    refused(run("server", "keygen", str(path)), "never replaced")
    assert read_server_keys(path).signing.public == made.signing.public  # the file kept
    admin = team.admin.engineer_name
    secret = tmp_path / "admin.pass"
    secret.write_text(team.passphrases[admin] + "\n", encoding="utf-8")
    secret.chmod(0o600)
    ok(run("--db", team.url, "--as", admin, "--passphrase-file", str(secret), "server", "certify", str(path)))
    with team.admin.store.read() as s:
        rows = list(s.scalars(select(m.ServerKey)))
    assert [(r.version, r.signing_public, r.state) for r in rows] == [(1, made.signing.public, "active")]


def test_only_an_admin_certifies_a_server_key(keyed: Keyed, home: Path, tmp_path: Path) -> None:
    path = tmp_path / "server-key.json"
    ok(run("server", "keygen", str(path)))
    secret = passfile(tmp_path, "bob")
    refused(
        run("--db", keyed.served.db_url, "--as", "bob", "--passphrase-file", secret, "server", "certify", str(path))
    )


def test_an_admin_works_on_the_servers_host_with_its_key_file(keyed: Keyed, home: Path, tmp_path: Path) -> None:
    import base64

    key_file = tmp_path / "server-key.json"
    seed = base64.urlsafe_b64encode(keyed.key.key.seed).rstrip(b"=").decode("ascii")
    key_file.write_text(json.dumps({"version": keyed.key.version, "signing_seed": seed}), encoding="utf-8")
    key_file.chmod(0o600)
    admin = keyed.served.admin.engineer_name
    assert admin is not None
    secret = tmp_path / "admin.pass"
    secret.write_text("admin passphrase ✓\n", encoding="utf-8")
    secret.chmod(0o600)
    base = ["--db", keyed.served.db_url, "--as", admin, "--passphrase-file", str(secret)]
    before = len(events(keyed.served))
    stderr = refused(run(*base, "client", "add", "cli-hosted", "--name", "CLI Hosted"), "team server")
    assert "--server-key" in stderr
    assert [e.action for e in events(keyed.served)[before:]] == ["unlock"]  # its own unlock, nothing else
    ok(run(*base, "--server-key", str(key_file), "client", "add", "cli-hosted", "--name", "CLI Hosted"))
    ok(run(*base, "--server-key", str(key_file), "grant", "bob", "cli-hosted"))
    # a reveal on the host goes through the server's own pipeline in this process (server/host.py)
    shown = ok(run(*base, "--server-key", str(key_file), "checkout", "acme/fw01", "--reason", "T-5 host", "--show"))
    assert "pw of acme/fw01" in shown.output
    ok(run(*base, "--server-key", str(key_file), "checkin", "acme/fw01"))
    added = [e for e in events(keyed.served)[before:] if e.action != "unlock"]
    assert [e.action for e in added] == ["client-create", "grant", "checkout", "checkin"]
    assert all(e.server_key_version == keyed.key.version and e.request_id for e in added)
    assert keyed.served.admin.audit.verify().ok


def test_a_new_engineer_enrols_through_the_server_and_checks_out(
    keyed: Keyed, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's team path: the admin invites on the server's host; dora pins the server, enrols
    through it (no database), reads her fingerprint; the admin confirms and grants; she checks out."""
    import re

    import vault.crypto.keyrecord as keyrecord

    monkeypatch.setattr(keyrecord, "DEFAULT_PARAMS", keyrecord.FLOOR)
    admin = keyed.served.admin
    admin.core.server_key = keyed.key  # the admin works on the server's host (--server-key)
    try:
        code = admin.engineers.invite("dora")
        code_file, secret = tmp_path / "code", passfile(tmp_path, "dora")
        code_file.write_text(code + "\n", encoding="utf-8")
        code_file.chmod(0o600)
        ok(run("server", "trust", keyed.served.url, "--ca-file", str(keyed.served.ca.ca_file), "--yes"))
        before = len(events(keyed.served))
        enrolled = ok(run("engineer", "enroll", "dora", "--code-file", str(code_file), "--passphrase-file", secret))
        found = re.search(r"\b[0-9a-f]{4}(?: [0-9a-f]{4}){7}\b", enrolled.output)
        assert found is not None, enrolled.output
        assert code not in enrolled.output
        assert [e.action for e in events(keyed.served)[before:]] == ["enroll"]
        assert KeyRecordFile.path(admin.vault_id(), "dora").exists()
        admin.engineers.confirm("dora", found.group(0))
        admin.grants.grant("dora", "acme")
    finally:
        admin.core.server_key = None
    ok(run("unlock", "dora", "--keyring", "--passphrase-file", secret))
    assert "pw of acme/fw01" in ok(run("checkout", "acme/fw01", "--reason", "T-904 first day", "--show")).output
    ok(run("checkin", "acme/fw01"))
    assert [c["slug"] for c in json.loads(ok(run("client", "list", "--json")).output)] == ["acme"]
    assert admin.audit.verify().ok


def test_enrolment_through_an_unpinned_server_asks_for_nothing(keyed: Keyed, home: Path) -> None:
    result = run("--server", keyed.served.url, "engineer", "enroll", "dora")
    refused(result, "not pinned")
    assert "Enrolment code" not in result.output


def test_an_admin_grants_and_revokes_through_the_server(keyed: Keyed, home: Path, tmp_path: Path) -> None:
    """``credvault grant``/``revoke`` with no database: a draft and a signed commit each (format 3)."""
    admin = keyed.served.admin.engineer_name
    assert admin is not None
    served = keyed.served
    ok(run("server", "trust", served.url, "--ca-file", str(served.ca.ca_file), "--yes"))
    secret = tmp_path / "admin.pass"
    secret.write_text("admin passphrase ✓\n", encoding="utf-8")
    secret.chmod(0o600)
    ok(run("--db", served.db_url, "server", "join", served.url, admin, "--passphrase-file", str(secret)))
    ok(run("unlock", admin, "--keyring", "--passphrase-file", str(secret)))
    before = len(events(served))
    granted = ok(run("grant", "carol", "acme", "--until", "8h", "--reason", "T-950"))
    assert "Granted carol access to acme" in granted.output
    assert "Revoked 1 grant of carol for acme" in ok(run("revoke", "carol", "acme")).output
    refused(run("revoke", "carol", "acme"), "holds no grant")
    me = keyed.served.admin.keyholder.me().engineer_id
    actions = [(e.action, e.engineer_id, e.request_id is not None) for e in events(served)[before:]]
    assert actions == [("grant", me, True), ("revoke", me, True)]
    assert keyed.served.admin.audit.verify().ok
