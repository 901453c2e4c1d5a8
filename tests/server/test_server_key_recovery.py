"""After every copy of the server key file is lost: ``serve recover-key`` and ``server certify --recover``.

The master keys come back from a key export made on the server's host (sealed to the admins and
the recovery key); the signing key cannot, so a new version is made and an admin certifies it.
No server key is left to sign that event, so it is the admin's own ``server-key-recover``, in
format 2 — the one action besides a local unlock that ``audit verify`` accepts in format 2
after format 3 (``journal.LOCAL_ACTIONS``). Then a server on the new file serves the vault, and
an engineer's machine pinned to the lost key takes the new version with its certificate under
the pinned organisation key. Both engines.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from served import ADMIN, ADMIN_PASS, CertificateFiles, ServedTeam, ServedVault, serving
from sqlalchemy import select, update

from vault import Vault
from vault.crypto.keyrecord import FLOOR
from vault.errors import ConfigurationError, InvalidInput
from vault.server import keyfile_rotation
from vault.server.keyfile import read_server_keys
from vault.server.layer import ServerLayer
from vault.service.remote import RemoteVault
from vault.service.serverkeys import certify_server_key
from vault.service.serverpins import ServerPins
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m

PASSWORD = "recovered pw 1138"


@dataclass
class Lost:
    team: ServedTeam
    admin: Vault
    url: str
    keys: Path  # the key export made on the host before the loss
    ca: CertificateFiles
    folder: Path


@pytest.fixture
def lost(served_vault: ServedVault) -> Lost:
    team, admin, folder = served_vault.team, served_vault.admin, served_vault.folder
    admin.clients.add("acme", "Acme Ltd")
    admin.secrets.add("acme/fw01", password=PASSWORD, kind="equipment")
    bob = team.engineer("bob")
    admin.grants.grant("bob", "acme")
    assert bob.checkouts.checkout("acme/fw01", reason="T-1 before the loss").value == PASSWORD
    bob.checkouts.checkin("acme/fw01")
    admin.backups.export_keys(folder / "vault.keys")  # on the host: it carries the master key
    admin.core.server_key = admin.core.host_layer = admin.core.host_server = None  # the file is gone
    return Lost(team, admin, served_vault.url, folder / "vault.keys", served_vault.ca, folder)


def run(*args: str) -> Result:
    from vault.cli.main import cli

    return CliRunner().invoke(cli, list(args))


def admin_args(lost: Lost) -> list[str]:
    secret = lost.folder / "admin.pass"
    if not secret.exists():
        secret.write_text(ADMIN_PASS + "\n", encoding="utf-8")
        secret.chmod(0o600)
    return ["--db", lost.url, "--as", ADMIN, "--passphrase-file", str(secret)]


def recovered(lost: Lost) -> Path:
    out = lost.folder / "recovered-key.json"
    given = ["--keys", str(lost.keys), "--admin", ADMIN, "--out", str(out)]
    result = run(*admin_args(lost), "serve", "recover-key", *given)
    assert result.exit_code == 0, result.output
    assert "server key version 2" in result.output and "server certify" in result.output
    assert out.stat().st_mode & 0o077 == 0
    return out


def server_key_versions(lost: Lost) -> list[tuple[int, str]]:
    with lost.team.server_store.read() as s:
        return [(k.version, k.state) for k in s.scalars(select(m.ServerKey).order_by(m.ServerKey.version))]


def test_a_recovered_key_file_certified_with_recover_serves_the_vault_again(lost: Lost, clock) -> None:  # type: ignore[no-untyped-def]
    out = recovered(lost)
    keys = read_server_keys(out)
    assert keys.signing.version == 2 and keys.master is not None
    refused = run(*admin_args(lost), "server", "certify", str(out))  # the old way needs the lost key
    assert refused.exit_code != 0 and "Traceback" not in refused.output
    assert "--recover" in refused.output  # the hint names the way out
    assert server_key_versions(lost) == [(1, "active")]
    certified = run(*admin_args(lost), "server", "certify", str(out), "--recover")
    assert certified.exit_code == 0, certified.output
    assert server_key_versions(lost) == [(1, "retired"), (2, "active")]
    with lost.team.server_store.read() as s:
        last = s.scalars(select(m.AuditEvent).order_by(m.AuditEvent.seq.desc()).limit(1)).one()
    assert (last.action, last.server_key_version, last.signature is not None) == ("server-key-recover", None, True)
    assert lost.admin.audit.verify().ok
    layer = ServerLayer(keys.master, keys.previous)
    with serving(lost.team.server_store, keys.signing, layer, clock, lost.ca) as (url, _pin):
        old_pin = dataclasses.replace(lost.team.pin, url=url)  # bob's machine pinned server key 1
        assert old_pin.server_key is not None and old_pin.server_key[0] == 1
        pins = ServerPins.load()
        pins.pin(old_pin, replace=True)  # (``serving`` pinned this URL afresh: bob's machine has the old pin)
        pins.save()
        bob = RemoteVault(old_pin, engineer="bob", sessions=MemorySessionStore(), clock=clock)
        try:
            bob.engineers.unlock("bob", lost.team.passphrases["bob"])
            assert bob.checkouts.checkout("acme/fw01", reason="T-2 after the recovery").value == PASSWORD
            bob.checkouts.checkin("acme/fw01")
            assert bob.pin.server_key is not None and bob.pin.server_key[0] == 2  # re-pinned with its certificate
        finally:
            bob.close()
    assert lost.admin.audit.verify().ok


def test_a_recover_event_whose_signature_a_dba_changed_fails_verification(lost: Lost) -> None:
    out = recovered(lost)
    key = read_server_keys(out).signing
    certify_server_key(lost.admin, key.version, key.public, recover=True)
    with lost.team.server_store.transaction() as s:
        seq = s.scalar(select(m.AuditEvent.seq).where(m.AuditEvent.action == "server-key-recover"))
        s.execute(update(m.AuditEvent).where(m.AuditEvent.seq == seq).values(signature=bytes(64)))
    result = lost.admin.audit.verify()
    assert not result.ok and result.first_bad_seq == seq


def test_a_format_2_event_of_another_action_after_format_3_is_still_a_downgrade(lost: Lost) -> None:
    """What the new action opens is that action only: a DBA who relabels the recover event as an
    ordinary certification (a format-2 event the verifier refuses after format 3) is caught."""
    out = recovered(lost)
    key = read_server_keys(out).signing
    certify_server_key(lost.admin, key.version, key.public, recover=True)
    assert lost.admin.audit.verify().ok
    with lost.team.server_store.transaction() as s:
        s.execute(
            update(m.AuditEvent).where(m.AuditEvent.action == "server-key-recover").values(action="server-key-certify")
        )
    assert not lost.admin.audit.verify().ok


def test_recovery_is_refused_where_it_would_write_a_wrong_file(lost: Lost, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no server master key"):
        keyfile_rotation.write_recovered(tmp_path / "a.json", (), lost.url)
    with pytest.raises(ConfigurationError, match="do not open"):
        keyfile_rotation.write_recovered(tmp_path / "b.json", ((1, bytes(32)),), lost.url)  # an export of another key
    exists = tmp_path / "c.json"
    exists.write_text("{}", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="exists"):
        keyfile_rotation.write_recovered(exists, ((1, bytes(32)),), lost.url)
    assert not (tmp_path / "a.json").exists() and not (tmp_path / "b.json").exists()
    assert exists.read_text(encoding="utf-8") == "{}"


def test_recover_on_a_vault_that_never_had_a_server_key_is_refused(team) -> None:  # type: ignore[no-untyped-def]
    from vault.crypto.serverkey import ServerSigningKey

    key = ServerSigningKey.generate(1)
    head = team.admin.audit.head()
    with pytest.raises(InvalidInput, match="no server key to recover"):
        certify_server_key(team.admin, 1, key.public, recover=True)
    assert team.admin.audit.head() == head


def test_a_root_rotation_after_the_recovery_re_certifies_the_recovered_key(lost: Lost, clock) -> None:  # type: ignore[no-untyped-def]
    """The recover event vouches for its key as a certification does: a root rotation carries it
    over under the new organisation key (left out, no server could sign after the rotation)."""
    from vault.authority.server_keys import stored_rows
    from vault.keyholder.serverkeys import verified_server_keys
    from vault.server.host import on_host

    out = recovered(lost)
    keys = read_server_keys(out)
    certify_server_key(lost.admin, keys.signing.version, keys.signing.public, recover=True)
    on_host(lost.admin, keys)  # the admin on the host with the recovered file
    try:
        lost.admin.keys.rotate_root()
        with lost.team.server_store.read() as s:
            org = lost.admin.trust.org_public(s)
            vault_id = lost.admin.core.vid(s)
            assert 2 in verified_server_keys(stored_rows(s), vault_id, org)
        assert lost.admin.audit.verify().ok
    finally:
        lost.admin.core.server_key = lost.admin.core.host_layer = lost.admin.core.host_server = None


def test_a_recover_event_signed_by_an_engineer_is_refused_and_vouches_for_nothing(lost: Lost) -> None:
    """An insider with an engineer's key and the database signs a ``server-key-recover`` of their own
    (the authority would refuse it: they write it by hand through the journal). Its signature is
    valid, but its signer is no admin the chain made: ``audit verify`` names it (and, being a
    problem of the key-event pass, it vouches for no key at a root rotation)."""
    bob = Vault.open(lost.url, engineer="bob", sessions=MemorySessionStore(), kdf_params=FLOOR)
    try:
        bob.engineers.unlock("bob", lost.team.passphrases["bob"])  # a local unlock: allowed in format 2
        assert lost.admin.audit.verify().ok
        out = recovered(lost)
        key = read_server_keys(out).signing
        with bob.core.store.transaction() as s:
            event = bob.journal.append(
                s, "server-key-recover", public={"version": 2, "signing_public": key.public.hex()}
            )
            seq = event.seq
    finally:
        bob.close()
    result = lost.admin.audit.verify()
    assert not result.ok and result.first_bad_seq == seq
    assert "not signed by an admin" in (result.problem or "")
