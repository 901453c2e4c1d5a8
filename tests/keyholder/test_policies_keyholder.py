"""The policies' keyholder against an authority that returns tampered rows.

A real admin's (or engineer's) ``vault.policies`` call, whose transport hands the
authority's draft and answer through a function that changes them: the insider is a DBA
who rewrote a stored row, or a compromised authority that answers for another client,
with another signer or another caller row. A stored policy that does not verify reads as
the strict one (every check on); an answer about anything else is refused, and a refused
change signs and writes nothing. The first case, no change at all, is the control.
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
from vault.authority.policy_requests import PolicyRows
from vault.crypto.keyrecord import FLOOR as FAST_KDF
from vault.errors import IntegrityError, Locked, UntrustedRecord
from vault.records import PolicyInfo
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m

Tamper = Callable[[PolicyRows], PolicyRows]
STRICT = (True, True, True, False)  # reason, exclusive, rotate, signed

ADMIN, ADMIN_PASS = "root-admin", "admin passphrase of this module"


def fixed_clock() -> Any:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return lambda: now


def _same(r: PolicyRows) -> PolicyRows:
    return r


class TamperingTransport:
    """Forwards to the real transport; drafts and answers go through ``tamper``."""

    def __init__(self, real: Any, tamper: Tamper = _same, answer: Tamper = _same) -> None:
        self.real, self.tamper, self.answer = real, tamper, answer

    def read(self, request: Any) -> PolicyRows:
        return self.tamper(self.answer(self.real.read(request)))

    def write(self, request: Any, seal: Any) -> PolicyRows:
        tamper = self.tamper

        class Seal:
            def sign(self, draft: PolicyRows) -> Any:
                return seal.sign(tamper(draft))

        return self.answer(self.real.write(request, Seal()))


@dataclasses.dataclass
class Scene:
    admin: Vault
    alice: Vault
    acme: int
    beta: int
    alice_id: int


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("policies-keyholder") / "vault.db"
    url, clock = f"sqlite:///{path}", fixed_clock()
    admin, _ = Vault.create(url, admin=ADMIN, passphrase=ADMIN_PASS, clock=clock, kdf_params=FAST_KDF)
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    admin.clients.add("acme", "Acme Ltd")
    admin.clients.add("beta", "Beta Ltd")
    code = admin.engineers.invite("alice")
    mine = Vault.open(url, engineer="alice", clock=clock, kdf_params=FAST_KDF, sessions=MemorySessionStore())
    admin.engineers.confirm("alice", mine.engineers.enroll("alice", code, "pass of alice"))
    mine.close()
    admin.grants.grant("alice", "acme")
    admin.policies.set("acme", reason_required=False, exclusive=False, rotate_after_checkout=False, stale_days=30)
    admin.policies.set("beta", reason_required=True, exclusive=False, rotate_after_checkout=False)
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
        acme, beta = sorted(s.scalars(select(m.Client.id)))
        alice_id = s.scalars(select(m.Engineer.id).where(m.Engineer.name == "alice")).one()
    yield Scene(admin, alice, acme, beta, alice_id)


def _tamper(vault: Vault, tamper: Tamper = _same, answer: Tamper = _same) -> None:
    holder = vault.policies.keyholder
    holder.transport = TamperingTransport(holder.transport, tamper, answer)


def _flags(p: PolicyInfo) -> tuple[bool, bool, bool, bool]:
    return (p.reason_required, p.exclusive, p.rotate_after_checkout, p.signed)


def _state(scene: Scene) -> tuple[Any, ...]:
    with scene.admin.core.store.transaction() as s:
        policies = tuple(tuple(r) for r in s.execute(select(m.ClientPolicy.__table__)).all())
        return policies, s.scalar(select(func.count()).select_from(m.AuditEvent))


def _policy(r: PolicyRows, **changes: Any) -> PolicyRows:
    (p,) = r.policies
    return dataclasses.replace(r, policies=(dataclasses.replace(p, **changes),))


def test_the_control_an_untampered_answer_applies_the_signed_policy(scene: Scene) -> None:
    _tamper(scene.alice)
    shown = scene.alice.policies.get("acme")
    assert _flags(shown) == (False, False, False, True) and shown.stale_days == 30


def test_a_policy_a_dba_relaxed_in_its_row_reads_as_the_strict_one(scene: Scene) -> None:
    with scene.admin.core.store.transaction() as s:
        s.execute(update(m.ClientPolicy).where(m.ClientPolicy.client_id == scene.beta).values(reason_required=False))
    assert _flags(scene.admin.policies.get("beta")) == STRICT


def test_another_clients_signed_policy_answered_for_this_one_reads_as_strict(scene: Scene) -> None:
    """A compromised authority answers beta's query with acme's relaxed, genuinely signed row."""
    acme = scene.admin.policies.keyholder.transport.read  # the real answer for acme, taken once

    def swap(r: PolicyRows) -> PolicyRows:
        if r.policies[0].client_id != scene.beta:
            return r
        real = acme(dataclasses.replace(_request_for(scene, r), client_id=scene.acme))
        return _policy(r, stored=real.policies[0].stored, signer=real.policies[0].signer)

    _tamper(scene.admin, answer=swap)
    assert _flags(scene.admin.policies.get("beta")) == STRICT


def _request_for(scene: Scene, r: PolicyRows) -> Any:
    from vault.authority.policy_requests import GET, PolicyRequest
    from vault.authority.requests import Caller

    return PolicyRequest(GET, Caller(r.me.id, r.me.key_generation), scene.beta, r.org_signing_public)


def test_a_policy_whose_signer_is_swapped_for_an_engineer_reads_as_strict(scene: Scene) -> None:
    def engineer_signs(r: PolicyRows) -> PolicyRows:
        (p,) = r.policies
        assert p.stored is not None and p.signer is not None
        forged = p.signer._replace(role="engineer")
        return _policy(r, signer=forged)

    _tamper(scene.alice, answer=engineer_signs)
    assert _flags(scene.alice.policies.get("acme")) == STRICT


@pytest.mark.parametrize(
    ("change", "error"),
    [
        pytest.param(lambda sc, r: _policy(r, client_id=sc.beta), UntrustedRecord, id="another-client"),
        pytest.param(lambda sc, r: _policy(r, slug_blob=b"\x01other slug"), UntrustedRecord, id="another-slug"),
        pytest.param(lambda sc, r: dataclasses.replace(r, policies=r.policies * 2), UntrustedRecord, id="two-answers"),
        pytest.param(
            lambda sc, r: dataclasses.replace(r, me=r.me._replace(id=r.me.id + 1)), Locked, id="another-caller"
        ),
        pytest.param(
            lambda sc, r: dataclasses.replace(r, me=r.me._replace(certificate=b"\x00" * 64)),
            UntrustedRecord,
            id="forged-caller-certificate",
        ),
        pytest.param(
            lambda sc, r: dataclasses.replace(r, org_signing_public=b"\x07" * 32), UntrustedRecord, id="another-org-key"
        ),
        pytest.param(lambda sc, r: dataclasses.replace(r, vault_id=b"\x09" * 16), UntrustedRecord, id="another-vault"),
    ],
)
def test_an_answer_about_anything_else_is_refused(scene: Scene, change: Any, error: type[Exception]) -> None:
    _tamper(scene.alice, answer=lambda r: change(scene, r))
    with pytest.raises(error):
        scene.alice.policies.get("acme")


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda sc, r: _policy(r, client_id=sc.beta), id="a-draft-of-another-client"),
        pytest.param(lambda sc, r: dataclasses.replace(r, policies=()), id="a-draft-of-no-client"),
        pytest.param(lambda sc, r: dataclasses.replace(r, me=r.me._replace(role="engineer")), id="a-caller-not-admin"),
    ],
)
def test_a_set_over_a_forged_draft_signs_and_writes_nothing(scene: Scene, change: Any) -> None:
    before = _state(scene)
    _tamper(scene.admin, tamper=lambda r: change(scene, r))
    with pytest.raises(UntrustedRecord):
        scene.admin.policies.set("acme", exclusive=True)
    assert _state(scene) == before


def test_a_set_whose_answer_is_not_what_was_signed_is_refused(scene: Scene) -> None:
    def relax(r: PolicyRows) -> PolicyRows:
        (p,) = r.policies
        assert p.stored is not None
        return _policy(r, stored=p.stored._replace(exclusive=False))

    _tamper(scene.admin, answer=relax)
    with pytest.raises(UntrustedRecord):
        scene.admin.policies.set("acme", exclusive=True)


def test_adopt_signs_nothing_when_the_draft_is_not_what_the_admin_reviewed(scene: Scene) -> None:
    with scene.admin.core.store.transaction() as s:  # an unsigned row, as after an upgrade
        s.execute(update(m.ClientPolicy).where(m.ClientPolicy.client_id == scene.beta).values(signature=None))
    shown = scene.admin.policies.unsigned()
    assert [p.client for p in shown] == ["beta"]
    before = _state(scene)

    def relaxed_since(r: PolicyRows) -> PolicyRows:
        policies = tuple(
            dataclasses.replace(p, stored=p.stored._replace(reason_required=False))
            if p.client_id == scene.beta and p.stored is not None
            else p
            for p in r.policies
        )
        return dataclasses.replace(r, policies=policies)

    _tamper(scene.admin, tamper=relaxed_since)
    with pytest.raises(IntegrityError, match="changed since they were shown"):
        scene.admin.policies.adopt(shown)
    assert _state(scene) == before
