"""The server keys' authority (vault/authority/server_keys.py), run with no engineer key.

The rows are made once per module (an admin, an engineer alice) and copied per test; the
vault's organisation key is then replaced by one this module holds (the caller checks are the
stand-in that reads only the rows, ``standins.Checks``), so that certificates can be made here.
The insiders: an engineer who is not an admin, a certificate made under another organisation
key (a retired one a removed admin kept) or over other fields, a version that skips or repeats,
a key certified twice, a request forged field by field.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from standins import Checks

from vault import Vault
from vault.authority.requests import Caller
from vault.authority.server_keys import CERTIFY, ServerKeyAuthority, ServerKeyRequest, ServerKeyRow, stored_rows
from vault.crypto import serverkey
from vault.crypto.keyrecord import FLOOR as FAST_KDF
from vault.crypto.serverkey import ServerSigningKey
from vault.crypto.signing import SigningKey
from vault.errors import AccessDenied, AlreadyExists, InvalidInput
from vault.service.policies import Policy
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m

ADMIN, ADMIN_PASS = "root-admin", "admin passphrase of this module"
ORG = SigningKey(bytes([11]) * 32)
AT = 1_733_400_000


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any] | None]] = []

    def append(self, s: Any, action: str, *, client_id: Any, secret_id: Any, public: Any) -> int:
        self.events.append((action, public))
        return 900 + len(self.events)


@dataclasses.dataclass
class Scene:
    store: Any
    vault_id: bytes
    admin: Caller
    alice: Caller


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("server-keys") / "vault.db"
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    url = f"sqlite:///{path}"
    admin, _ = Vault.create(url, admin=ADMIN, passphrase=ADMIN_PASS, clock=lambda: now, kdf_params=FAST_KDF)
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    code = admin.engineers.invite("alice")
    mine = Vault.open(url, engineer="alice", clock=lambda: now, kdf_params=FAST_KDF, sessions=MemorySessionStore())
    admin.engineers.confirm("alice", mine.engineers.enroll("alice", code, "pass of alice"))
    mine.close()
    with admin.store.transaction() as s:
        s.get(m.VaultInfo, 1).org_signing_public = ORG.public
    admin.close()
    return path


@pytest.fixture
def scene(template: Path, tmp_path: Path) -> Iterator[Scene]:
    for suffix in ("", "-wal"):
        if Path(f"{template}{suffix}").exists():
            shutil.copy(f"{template}{suffix}", tmp_path / f"vault.db{suffix}")
    vault = Vault.open(f"sqlite:///{tmp_path / 'vault.db'}", kdf_params=FAST_KDF, sessions=MemorySessionStore())
    with vault.core.store.transaction() as s:
        ids = {e.name: Caller(e.id, e.key_generation) for e in s.scalars(select(m.Engineer))}
        vault_id = s.get(m.VaultInfo, 1).vault_id
    yield Scene(vault.core.store, vault_id, ids[ADMIN], ids["alice"])
    vault.close()


def _row(scene: Scene, key: ServerSigningKey, *, org: SigningKey = ORG, **change: Any) -> ServerKeyRow:
    certificate = serverkey.certify(org, scene.vault_id, key.version, key.public, AT)
    return ServerKeyRow(key.version, key.public, AT, certificate)._replace(**change)


def _certify(scene: Scene, row: ServerKeyRow, caller: Caller | None = None, recorder: Recorder | None = None) -> int:
    authority = ServerKeyAuthority(
        scene.store, Checks(Policy(True, True, True, 120, None, False)), recorder or Recorder()
    )
    return authority.certify(ServerKeyRequest(caller or scene.admin, row))


def _stored(scene: Scene) -> list[ServerKeyRow]:
    with scene.store.read() as s:
        return stored_rows(s)


def test_an_admins_certified_key_is_stored_active_with_its_event(scene: Scene) -> None:
    recorder, first, second = Recorder(), ServerSigningKey.generate(1), ServerSigningKey.generate(2)
    assert _certify(scene, _row(scene, first), recorder=recorder) == 901
    assert _certify(scene, _row(scene, second), recorder=recorder) == 902
    assert [(r.version, r.signing_public, r.state) for r in _stored(scene)] == [
        (1, first.public, "retired"),
        (2, second.public, "active"),
    ]
    assert recorder.events == [
        (CERTIFY, {"version": 1, "signing_public": first.public.hex()}),
        (CERTIFY, {"version": 2, "signing_public": second.public.hex()}),
    ]


def test_an_engineer_who_is_not_an_admin_is_refused_before_anything_is_stored(scene: Scene) -> None:
    recorder = Recorder()
    with pytest.raises(AccessDenied):
        _certify(scene, _row(scene, ServerSigningKey.generate(1)), scene.alice, recorder)
    assert _stored(scene) == [] and recorder.events == []


@pytest.mark.parametrize(
    "forge",
    [
        lambda scene, key: _row(scene, key, org=SigningKey(bytes([12]) * 32)),  # a retired or rogue org key
        lambda scene, key: _row(scene, key, certified_at=AT + 1),
        lambda scene, key: _row(scene, key, signing_public=ServerSigningKey.generate(1).public),
        lambda scene, key: _row(scene, ServerSigningKey(2, key.key), version=1),
    ],
    ids=["another organisation key", "another time", "public key swapped", "another version"],
)
def test_a_certificate_that_does_not_verify_is_refused(scene: Scene, forge: Any) -> None:
    recorder = Recorder()
    with pytest.raises(InvalidInput, match="does not verify"):
        _certify(scene, forge(scene, ServerSigningKey.generate(1)), recorder=recorder)
    assert _stored(scene) == [] and recorder.events == []


def test_versions_are_contiguous_and_a_key_is_certified_once(scene: Scene) -> None:
    key = ServerSigningKey.generate(1)
    with pytest.raises(InvalidInput, match="version 1 comes next"):
        _certify(scene, _row(scene, ServerSigningKey.generate(2)))
    _certify(scene, _row(scene, key))
    with pytest.raises(InvalidInput, match="version 2 comes next"):
        _certify(scene, _row(scene, ServerSigningKey.generate(1)))
    with pytest.raises(AlreadyExists):
        _certify(scene, _row(scene, ServerSigningKey(2, key.key)))
    with scene.store.read() as s:
        assert s.scalar(select(func.count()).select_from(m.ServerKey)) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"version": True},
        {"version": 0},
        {"version": 2**31},
        {"certified_at": -1},
        {"certified_at": "now"},
        {"signing_public": bytes(31)},
        {"certificate": bytes(63)},
        {"certificate": None},
        {"state": "retired"},
    ],
)
def test_a_request_forged_field_by_field_is_refused_before_any_sql(scene: Scene, change: dict[str, Any]) -> None:
    row = _row(scene, ServerSigningKey.generate(1))._replace(**change)
    with pytest.raises(InvalidInput):
        ServerKeyAuthority(None, None, Recorder()).certify(ServerKeyRequest(scene.admin, row))  # type: ignore[arg-type]


def test_a_request_that_is_not_one_is_refused() -> None:
    with pytest.raises(InvalidInput):
        ServerKeyAuthority(None, None, Recorder()).certify("certify")  # type: ignore[arg-type]
