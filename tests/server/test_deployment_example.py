"""docs/examples/server_key.py, the stand-in docs/deployment.md §3 and §8 give for the missing
commands: the key file it writes is what ``credvault serve`` reads, it never overwrites one,
its master-key rotation keeps the old key as previous, and its certification stores a row
that the server key's verifier believes (on both engines)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy import select

from vault.crypto.serverkey import verify_certificate
from vault.errors import ConfigurationError, UntrustedRecord, WrongPassphrase
from vault.server.keyfile import read_server_keys
from vault.storage import models as m
from vault.storage.engine import Store

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "examples" / "server_key.py"


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("server_key_example", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_new_writes_an_owner_only_file_that_serve_reads(script: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "server-key.json"
    script.main(["new", str(path)])
    assert path.stat().st_mode & 0o777 == 0o600
    keys = read_server_keys(path)
    assert keys.signing.version == 1 and keys.master is not None and keys.master.version == 1
    assert keys.previous == ()


def test_new_never_overwrites_a_key_file(script: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "server-key.json"
    script.main(["new", str(path)])
    before = path.read_bytes()
    with pytest.raises(SystemExit, match="never overwritten"):
        script.main(["new", str(path)])
    assert path.read_bytes() == before


def test_rotate_master_keeps_the_old_key_as_previous(script: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "server-key.json"
    script.main(["new", str(path)])
    old = read_server_keys(path)
    script.main(["rotate-master", str(path)])
    new = read_server_keys(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert new.master is not None and old.master is not None
    assert new.master.version == 2 and new.master.key != old.master.key
    assert [(k.version, k.key) for k in new.previous] == [(1, old.master.key)]
    assert new.signing.key.seed == old.signing.key.seed  # the signing key is not rotated by it
    script.main(["rotate-master", str(path)])
    again = read_server_keys(path)
    assert again.master is not None and again.master.version == 3
    assert [k.version for k in again.previous] == [1, 2]
    assert not list(tmp_path.glob("*.new"))


def test_rotate_master_refuses_a_file_others_may_read(script: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "server-key.json"
    script.main(["new", str(path)])
    path.chmod(0o644)
    before = path.read_bytes()
    with pytest.raises(ConfigurationError, match="may be read by others"):
        script.main(["rotate-master", str(path)])
    assert path.read_bytes() == before and json.loads(before)["master_version"] == 1


def test_certify_stores_a_certificate_under_the_organisation_key(  # type: ignore[no-untyped-def]
    script: ModuleType, team, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, passphrase = tmp_path / "server-key.json", tmp_path / "admin.pass"
    script.main(["new", str(path)])
    public = capsys.readouterr().out.split("signing public key: ")[1].strip()
    admin = team.admin.engineer_name
    passphrase.write_text(team.passphrases[admin] + "\n")
    script.main(["certify", "--db", team.url, "--admin", admin, "--passphrase-file", str(passphrase), public])
    store = Store(team.url)
    try:
        with store.read() as s:
            row = s.execute(select(m.ServerKey)).scalar_one()
            info = s.execute(select(m.VaultInfo)).scalar_one()
            actions = s.scalars(select(m.AuditEvent.action)).all()
    finally:
        store.close()
    signing = read_server_keys(path).signing
    assert bytes(row.signing_public) == signing.public and row.version == 1 and row.state == "active"
    org, vault_id, certificate = bytes(info.org_signing_public), bytes(info.vault_id), bytes(row.certificate)
    verify_certificate(org, certificate, vault_id, 1, signing.public, row.certified_at)
    with pytest.raises(UntrustedRecord):  # the control: the certificate names this key, no other
        verify_certificate(org, certificate, vault_id, 1, bytes(32 * [7]), row.certified_at)
    assert actions[-1] == "server-key-certify"


def test_certify_with_a_wrong_passphrase_stores_nothing(script: ModuleType, team, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    passphrase = tmp_path / "admin.pass"
    passphrase.write_text("not the admin's passphrase\n")
    public = "RH9oD63FjS2wgq_iURVhiKOigNvgTQ0wYEfyqK-ibuk"
    args = ["--db", team.url, "--admin", team.admin.engineer_name, "--passphrase-file", str(passphrase), public]
    with pytest.raises(WrongPassphrase):
        script.main(["certify", *args])
    store = Store(team.url)
    try:
        with store.read() as s:
            assert s.execute(select(m.ServerKey)).first() is None
    finally:
        store.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
