"""The settings' keyholder against an authority that returns tampered rows.

A real admin's (or engineer's) settings keyholder, whose transport hands the authority's
answers through a function that changes them: the insider is a DBA who rewrote the row
(the retention to 1, the cryptoperiod to a century), an engineer who signed the row with
their own certified key, or a compromised authority that answers with another signer,
another vault or a row other than the one signed. Settings that do not verify read as the
bounded defaults; an answer about anything else is refused. The first case is the control.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from vault import Vault
from vault.authority.settings_requests import CRYPTOPERIOD, RETENTION, SettingsRows
from vault.crypto.keyrecord import FLOOR as FAST_KDF
from vault.errors import InvalidInput, Locked, UntrustedRecord
from vault.keyholder.settings import Settings, SettingsKeyholder, signed_settings
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m

Tamper = Callable[[SettingsRows], SettingsRows]
ADMIN, ADMIN_PASS = "root-admin", "admin passphrase of this module"
DEFAULTS = Settings(10, 365, False)


def fixed_clock() -> Any:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return lambda: now


def _same(r: SettingsRows) -> SettingsRows:
    return r


class TamperingTransport:
    """Forwards to the real transport; reads and answers go through ``read`` / ``answer``."""

    def __init__(self, real: Any, read: Tamper = _same, answer: Tamper = _same) -> None:
        self.real, self.read_, self.answer = real, read, answer
        self.writes: list[Any] = []

    def read(self, request: Any) -> SettingsRows:
        return self.read_(self.real.read(request))

    def write(self, request: Any) -> SettingsRows:
        self.writes.append(request)
        return self.answer(self.real.write(request))


@dataclasses.dataclass
class Scene:
    admin: Vault
    alice: Vault
    alice_id: int


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("settings-keyholder") / "vault.db"
    url, clock = f"sqlite:///{path}", fixed_clock()
    admin, _ = Vault.create(url, admin=ADMIN, passphrase=ADMIN_PASS, clock=clock, kdf_params=FAST_KDF)
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    code = admin.engineers.invite("alice")
    mine = Vault.open(url, engineer="alice", clock=clock, kdf_params=FAST_KDF, sessions=MemorySessionStore())
    admin.engineers.confirm("alice", mine.engineers.enroll("alice", code, "pass of alice"))
    mine.close()
    admin.keys.set_retention(20)
    admin.keys.set_cryptoperiod(90)
    admin.close()
    return path


@pytest.fixture
def scene(template: Path, tmp_path: Path) -> Iterator[Scene]:
    for suffix in ("", "-wal"):
        if Path(f"{template}{suffix}").exists():
            shutil.copy(f"{template}{suffix}", tmp_path / f"vault.db{suffix}")
    url, clock = f"sqlite:///{tmp_path / 'vault.db'}", fixed_clock()
    admin = Vault.open(url, engineer=ADMIN, clock=clock, kdf_params=FAST_KDF, sessions=MemorySessionStore())
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    alice = Vault.open(url, engineer="alice", clock=clock, kdf_params=FAST_KDF, sessions=MemorySessionStore())
    alice.engineers.unlock("alice", "pass of alice")
    with admin.core.store.transaction() as s:
        alice_id = s.scalars(select(m.Engineer.id).where(m.Engineer.name == "alice")).one()
    yield Scene(admin, alice, alice_id)


def _holder(vault: Vault, read: Tamper = _same, answer: Tamper = _same) -> tuple[SettingsKeyholder, TamperingTransport]:
    holder = vault.keys._settings_keyholder()
    transport = TamperingTransport(holder.transport, read, answer)
    holder.transport = transport
    return holder, transport


def _row(scene: Scene) -> tuple[Any, ...]:
    with scene.admin.core.store.transaction() as s:
        info = s.get(m.VaultInfo, 1)
        assert info is not None
        events = s.scalar(select(func.count()).select_from(m.AuditEvent))
        return info.retention_versions, info.cryptoperiod_days, info.settings_signature, events


def _dba(scene: Scene, **values: Any) -> None:
    with scene.admin.core.store.transaction() as s:
        s.execute(update(m.VaultInfo).values(**values))


def _stored(r: SettingsRows, **changes: Any) -> SettingsRows:
    return dataclasses.replace(r, stored=r.stored._replace(**changes))


def test_the_control_the_signed_settings_apply_for_an_admin_and_an_engineer(scene: Scene) -> None:
    assert _holder(scene.admin)[0].get() == Settings(20, 90, True)
    assert _holder(scene.alice)[0].get() == Settings(20, 90, True)


@pytest.mark.parametrize(
    ("values", "applies"),
    [
        ({"retention_versions": 1}, Settings(10, 90, False)),  # all but one version pruned at each check-in
        ({"cryptoperiod_days": 36500}, Settings(20, 365, False)),  # a century: no old-key warning ever
        ({"cryptoperiod_days": 3650}, Settings(20, 365, False)),  # within bounds, but not what was signed
        ({"settings_signed_by": 999}, Settings(20, 90, False)),  # a signer who does not exist
        ({"settings_signature": None}, Settings(20, 90, False)),  # the row only moves towards the safer side
    ],
    ids=["retention-1", "cryptoperiod-century", "cryptoperiod-ten-years", "unknown-signer", "signature-dropped"],
)
def test_a_row_a_dba_rewrote_reads_as_the_bounded_defaults(scene: Scene, values: Any, applies: Settings) -> None:
    _dba(scene, **values)
    assert _holder(scene.alice)[0].get() == applies
    assert _holder(scene.admin)[0].get() == applies


def test_settings_an_engineer_signed_with_their_own_certified_key_read_as_the_defaults(scene: Scene) -> None:
    """Alice holds a certified key and database access: she signs retention 1 herself."""
    vid = scene.alice.core.vault_id()
    forged = signed_settings(scene.alice.keys.keys.my_signing_key().sign, vid, 1, 3650, scene.alice_id, 1_700_000_000)
    _dba(
        scene,
        retention_versions=1,
        cryptoperiod_days=3650,
        settings_signed_by=scene.alice_id,
        settings_signed_at=forged.signed_at,
        settings_signature=forged.signature,
    )
    assert _holder(scene.admin)[0].get() == DEFAULTS
    with scene.admin.core.store.read() as s:
        assert scene.admin.policy_check.settings(s) == DEFAULTS  # the pruning's and status's reader too


def test_an_answer_naming_an_engineer_as_signer_reads_as_the_defaults(scene: Scene) -> None:
    """A compromised authority hands the row with an engineer's row as its signer's."""

    def swap(r: SettingsRows) -> SettingsRows:
        assert r.signer is not None
        return dataclasses.replace(r, signer=r.signer._replace(role="engineer"))

    assert _holder(scene.alice, read=swap)[0].get() == Settings(20, 90, False)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda r: dataclasses.replace(r, vault_id=b"\x01" * 16), UntrustedRecord),
        (lambda r: dataclasses.replace(r, org_signing_public=b"\x02" * 32), UntrustedRecord),
        (lambda r: dataclasses.replace(r, me=r.me._replace(id=r.me.id + 100)), Locked),
        (lambda r: dataclasses.replace(r, stored=(20, 90, 1, 1, b"x")), UntrustedRecord),
        (lambda r: ("not", "an answer"), UntrustedRecord),
    ],
    ids=["other-vault", "other-org-key", "other-caller", "not-a-row", "not-an-answer"],
)
def test_an_answer_about_anything_else_is_refused(scene: Scene, change: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        _holder(scene.alice, read=change)[0].get()


def test_a_change_signs_the_other_setting_as_it_applies_not_as_a_dba_left_it(scene: Scene) -> None:
    """A DBA raised the cryptoperiod (unsigned): the admin's retention change must not sign it."""
    _dba(scene, cryptoperiod_days=3650)
    holder, transport = _holder(scene.admin)
    assert holder.set(RETENTION, 5) == Settings(5, 365, True)
    (request,) = transport.writes
    assert request.signed.cryptoperiod_days == 365 and request.changed == RETENTION
    assert _row(scene)[:2] == (5, 365)


def test_a_change_whose_answer_is_not_what_was_signed_is_refused(scene: Scene) -> None:
    holder, _ = _holder(scene.admin, answer=lambda r: _stored(r, retention_versions=1))
    with pytest.raises(UntrustedRecord, match="not the settings this keyholder signed"):
        holder.set(CRYPTOPERIOD, 30)


def test_a_change_read_over_a_forged_caller_row_signs_and_writes_nothing(scene: Scene) -> None:
    before = _row(scene)
    holder, transport = _holder(scene.admin, read=lambda r: dataclasses.replace(r, me=r.me._replace(role="engineer")))
    with pytest.raises(UntrustedRecord, match="invalid signature"):  # the role is certified
        holder.set(RETENTION, 3)
    assert transport.writes == [] and _row(scene) == before


@pytest.mark.parametrize(("name", "value"), [(RETENTION, 0), (RETENTION, 1001), (CRYPTOPERIOD, 3651), ("other", 5)])
def test_a_setting_out_of_bounds_is_refused_before_anything_is_read(scene: Scene, name: str, value: int) -> None:
    holder, transport = _holder(scene.admin, read=lambda r: pytest.fail("read"))  # type: ignore[arg-type,return-value]
    with pytest.raises(InvalidInput):
        holder.set(name, value)
    assert transport.writes == []


def test_an_engineer_cannot_change_the_settings(scene: Scene) -> None:
    before = _row(scene)
    holder, transport = _holder(scene.alice)
    with pytest.raises(Exception, match="not an admin"):
        holder.set(RETENTION, 1)
    assert transport.writes == [] and _row(scene) == before


def test_two_admins_changing_the_two_settings_at_once_keep_both_changes(scene: Scene) -> None:
    """Another admin's cryptoperiod lands between this admin's read and write: the write is
    refused as stale (ConcurrentChange), the public call runs again, reads the new row and
    signs the retention with the other admin's cryptoperiod, never the one it first read."""
    url = scene.admin.core.store.url
    other = Vault.open(url, engineer=ADMIN, clock=fixed_clock(), kdf_params=FAST_KDF, sessions=MemorySessionStore())
    other.engineers.unlock(ADMIN, ADMIN_PASS)
    reads: list[SettingsRows] = []

    def land_between(r: SettingsRows) -> SettingsRows:
        reads.append(r)
        if len(reads) == 1:
            other.keys.set_cryptoperiod(30)
        return r

    _, transport = _holder(scene.admin, read=land_between)
    scene.admin.keys.set_retention(5)
    assert [r.stored.cryptoperiod_days for r in reads] == [90, 30]
    assert [w.signed.cryptoperiod_days for w in transport.writes] == [90, 30]  # the first was refused
    assert _row(scene)[:2] == (5, 30)
    assert _holder(scene.alice)[0].get() == Settings(5, 30, True)
