"""The settings' authority, run with no key material at all.

The rows are made once per module (an admin who signed the settings, an engineer) and
copied per test; ``SettingsAuthority`` is then driven alone: its caller checks are the
stand-in that reads only the rows (``standins.Checks``) and its recorder notes the events.
The attacks are an insider's: an engineer sending an admin's signed-looking change, a
request forged field by field, a change signed as another admin, out of bounds, or over a
row that changed since it was read (a stale read replayed over another admin's change).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from standins import Checks, recorded_statements

from vault import Vault
from vault.authority.requests import Caller
from vault.authority.settings import SettingsAuthority
from vault.authority.settings_requests import CRYPTOPERIOD, GET, RETENTION, SET, SettingsRequest, SettingsRow
from vault.crypto.keyrecord import FLOOR as FAST_KDF
from vault.errors import AccessDenied, ConcurrentChange, InvalidInput
from vault.service.policies import Policy
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m

READS_THE_SETTINGS = re.compile(r"\b(retention_versions|cryptoperiod_days|settings_signature)\b", re.IGNORECASE)
PIN = b"\x00" * 32
SIGNATURE = b"\x5a" * 64
ADMIN, ADMIN_PASS = "root-admin", "admin passphrase of this module"


def fixed_clock() -> Any:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return lambda: now


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, int | None, dict[str, Any] | None]] = []

    def append(self, s: Any, action: str, *, client_id: Any, secret_id: Any, public: Any) -> int:
        self.events.append((action, client_id, public))
        return 700 + len(self.events)


@dataclasses.dataclass
class Scene:
    store: Any
    admin: tuple[int, int]
    alice: tuple[int, int]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("settings") / "vault.db"
    clock = fixed_clock()
    admin, _ = Vault.create(f"sqlite:///{path}", admin=ADMIN, passphrase=ADMIN_PASS, clock=clock, kdf_params=FAST_KDF)
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    code = admin.engineers.invite("alice")
    mine = Vault.open(
        f"sqlite:///{path}", engineer="alice", clock=clock, kdf_params=FAST_KDF, sessions=MemorySessionStore()
    )
    admin.engineers.confirm("alice", mine.engineers.enroll("alice", code, "pass of alice"))
    mine.close()
    admin.keys.set_retention(20)
    admin.close()
    return path


@pytest.fixture
def scene(template: Path, tmp_path: Path) -> Iterator[Scene]:
    for suffix in ("", "-wal"):
        if Path(f"{template}{suffix}").exists():
            shutil.copy(f"{template}{suffix}", tmp_path / f"vault.db{suffix}")
    vault = Vault.open(
        f"sqlite:///{tmp_path / 'vault.db'}", clock=fixed_clock(), kdf_params=FAST_KDF, sessions=MemorySessionStore()
    )
    store = vault.core.store
    with store.transaction() as s:
        ids = {e.name: (e.id, e.key_generation) for e in s.scalars(select(m.Engineer))}
    yield Scene(store, ids[ADMIN], ids["alice"])


@pytest.fixture
def statements(scene: Scene) -> Iterator[list[str]]:
    with recorded_statements(scene.store.engine) as seen:
        yield seen


def _authority(scene: Scene, recorder: Recorder) -> SettingsAuthority:
    return SettingsAuthority(scene.store, Checks(Policy(True, True, True, 120, None, False)), recorder, fixed_clock())


def _stored(scene: Scene) -> SettingsRow:
    with scene.store.transaction() as s:
        info = s.get(m.VaultInfo, 1)
        assert info is not None
        return SettingsRow(
            info.retention_versions,
            info.cryptoperiod_days,
            info.settings_signed_by,
            info.settings_signed_at,
            info.settings_signature,
        )


def _change(scene: Scene, caller: tuple[int, int], **changes: Any) -> SettingsRequest:
    new = SettingsRow(3, 90, caller[0], 1_700_000_000, SIGNATURE)._replace(**changes)
    return SettingsRequest(SET, Caller(*caller), PIN, new, _stored(scene), RETENTION)


def test_get_answers_the_row_as_stored_even_when_a_dba_rewrote_it(scene: Scene) -> None:
    """The authority does not judge the settings: the keyholder does, from the row as stored."""
    with scene.store.transaction() as s:
        s.execute(update(m.VaultInfo).values(retention_versions=1))
    answer = _authority(scene, Recorder()).read(SettingsRequest(GET, Caller(*scene.alice), PIN))
    assert answer.stored.retention_versions == 1 and answer.stored.signed_by == scene.admin[0]
    assert answer.signer is not None and answer.signer.id == scene.admin[0]
    assert answer.me.id == scene.alice[0] and answer.seq == 0


def test_an_engineer_is_refused_a_change_before_the_settings_are_read(scene: Scene, statements: list[str]) -> None:
    recorder, before = Recorder(), _stored(scene)
    request = _change(scene, scene.alice)
    statements.clear()
    with pytest.raises(AccessDenied, match="not an admin"):
        _authority(scene, recorder).write(request)
    assert statements, "the authority read nothing"
    assert not [st for st in statements if READS_THE_SETTINGS.search(st)], statements
    assert recorder.events == [] and _stored(scene) == before


def test_a_caller_of_an_old_key_generation_is_refused(scene: Scene, statements: list[str]) -> None:
    engineer_id, generation = scene.admin
    request = _change(scene, (engineer_id, generation + 1), signed_by=engineer_id)
    statements.clear()
    with pytest.raises(Exception, match="changed since this session"):
        _authority(scene, Recorder()).write(request)
    assert not [st for st in statements if READS_THE_SETTINGS.search(st)], statements


def _forged(scene: Scene) -> list[Any]:
    good = _change(scene, scene.admin)
    assert good.signed is not None
    return [
        dataclasses.replace(good, action="settings-drop"),
        dataclasses.replace(good, caller=None),
        dataclasses.replace(good, caller=Caller(True, 0)),
        dataclasses.replace(good, org_pin=b"short"),
        dataclasses.replace(good, changed="retention"),
        dataclasses.replace(good, changed=None),
        dataclasses.replace(good, signed=None),
        dataclasses.replace(good, replaces=None),
        dataclasses.replace(good, signed=(3, 90, scene.admin[0], 1, SIGNATURE)),  # not a row value
        dataclasses.replace(good, signed=good.signed._replace(signed_by=scene.alice[0])),  # as another engineer
        dataclasses.replace(good, signed=good.signed._replace(signed_at=None)),
        dataclasses.replace(good, signed=good.signed._replace(signature=None)),
        dataclasses.replace(good, signed=good.signed._replace(signature=b"short")),
        dataclasses.replace(good, signed=good.signed._replace(retention_versions=0)),  # prunes everything
        dataclasses.replace(good, signed=good.signed._replace(retention_versions=True)),
        dataclasses.replace(good, signed=good.signed._replace(cryptoperiod_days=36500)),  # a century
        dataclasses.replace(good, signed=good.signed._replace(cryptoperiod_days="90")),
        SettingsRequest(GET, Caller(*scene.admin), PIN),  # a read sent as a write
        ("not", "a request"),
    ]


@pytest.mark.parametrize("index", range(19))
def test_a_forged_change_is_refused_before_any_sql(scene: Scene, statements: list[str], index: int) -> None:
    request, recorder, before = _forged(scene)[index], Recorder(), _stored(scene)
    statements.clear()
    with pytest.raises(InvalidInput):
        _authority(scene, recorder).write(request)
    assert statements == [] and recorder.events == [] and _stored(scene) == before


def test_a_change_is_stored_as_signed_with_one_event_naming_the_setting(scene: Scene) -> None:
    recorder = Recorder()
    request = dataclasses.replace(_change(scene, scene.admin), changed=CRYPTOPERIOD)
    written = _authority(scene, recorder).write(request)
    assert _stored(scene) == request.signed == written.stored
    assert recorder.events == [("settings", None, {CRYPTOPERIOD: 90})]
    assert written.seq == 701 and written.signer is not None and written.signer.id == scene.admin[0]


def test_a_change_over_a_row_changed_since_it_was_read_stores_nothing(scene: Scene) -> None:
    """Another admin's change (or a DBA's) landed between the read and the write: the stale
    read is not replayed over it; the keyholder reads again and signs again."""
    request, recorder = _change(scene, scene.admin), Recorder()
    with scene.store.transaction() as s:
        s.execute(update(m.VaultInfo).values(cryptoperiod_days=30))
    before = _stored(scene)
    with pytest.raises(ConcurrentChange, match="changed since they were read"):
        _authority(scene, recorder).write(request)
    assert recorder.events == [] and _stored(scene) == before
