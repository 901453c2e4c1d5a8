"""The policies' authority, run with no key material at all.

The rows are made once per module (an admin, a client with a signed policy, an engineer
granted it and one not) and copied per test; ``PolicyAuthority`` is then driven alone: its
caller checks are the stand-in that reads only the rows (``standins.Checks``), its
recorder notes the events, and the keyholder's seal is a fake that returns what the test
gives it. The attacks are an insider's: an engineer asking for an admin's operation, a
caller without a grant, a request forged field by field, a keyholder seal (a compromised
client) that signs for another client, as another engineer, or out of bounds.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from standins import Checks, recorded_statements

from vault import Vault
from vault.authority.policies import PolicyAuthority
from vault.authority.policy_requests import (
    ADOPT,
    GET,
    MISSING_CLIENT,
    SET,
    UNSIGNED,
    PolicyRequest,
    PolicyRows,
    SignedPolicy,
)
from vault.authority.requests import Caller
from vault.crypto.keyrecord import FLOOR as FAST_KDF
from vault.errors import AccessDenied, InvalidInput, NotFound, UntrustedRecord
from vault.service.policies import Policy
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m
from vault.storage.rows import PolicyRow

READS_A_TARGET = re.compile(r"\b(clients|client_policies)\b", re.IGNORECASE)
PIN = b"\x00" * 32

ADMIN, ADMIN_PASS = "root-admin", "admin passphrase of this module"


def fixed_clock() -> Any:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return lambda: now


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, int | None, dict[str, Any] | None]] = []

    def append(self, s: Any, action: str, *, client_id: Any, secret_id: Any, details: Any) -> int:
        self.events.append((action, client_id, details))
        return 500 + len(self.events)


class FakeSeal:
    """A keyholder's seal without a key: notes the drafts, returns what ``make`` builds."""

    def __init__(self, make: Any = None, refuse: bool = False) -> None:
        self.make, self.refuse = make, refuse
        self.drafts: list[PolicyRows] = []

    def sign(self, draft: PolicyRows) -> Sequence[SignedPolicy]:
        self.drafts.append(draft)
        if self.refuse:
            raise UntrustedRecord("the keyholder refuses this draft")
        return self.make(draft) if self.make else []


@dataclasses.dataclass
class Scene:
    store: Any
    clock: Any
    client_id: int
    other_id: int
    admin: tuple[int, int]
    alice: tuple[int, int]  # granted acme
    bob: tuple[int, int]  # no grant


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A vault file with its rows made once per module (the tests copy it)."""
    path = tmp_path_factory.mktemp("policies") / "vault.db"
    clock = fixed_clock()
    admin, _ = Vault.create(f"sqlite:///{path}", admin=ADMIN, passphrase=ADMIN_PASS, clock=clock, kdf_params=FAST_KDF)
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    admin.clients.add("acme", "Acme Ltd")
    admin.clients.add("beta", "Beta Ltd")
    for name in ("alice", "bob"):
        code = admin.engineers.invite(name)
        mine = Vault.open(
            f"sqlite:///{path}", engineer=name, clock=clock, kdf_params=FAST_KDF, sessions=MemorySessionStore()
        )
        admin.engineers.confirm(name, mine.engineers.enroll(name, code, f"pass of {name}"))
        mine.close()
    admin.grants.grant("alice", "acme")
    admin.policies.set("acme", reason_required=False, stale_days=30)
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
        clients = sorted(s.scalars(select(m.Client.id)))
    yield Scene(store, fixed_clock(), clients[0], clients[1], ids[ADMIN], ids["alice"], ids["bob"])


@pytest.fixture
def statements(scene: Scene) -> Iterator[list[str]]:
    with recorded_statements(scene.store.engine) as seen:
        yield seen


def _authority(scene: Scene, recorder: Recorder) -> PolicyAuthority:
    return PolicyAuthority(scene.store, Checks(Policy(True, True, True, 120, None, False)), recorder, scene.clock)


def _stored(scene: Scene) -> list[Any]:
    with scene.store.transaction() as s:
        return [tuple(r) for r in s.execute(select(m.ClientPolicy.__table__)).all()]


def _signed(client_id: int, signer: int, **changes: Any) -> SignedPolicy:
    row = PolicyRow(True, True, False, 60, None, signer, 1_700_000_000, b"\x5a" * 64)
    return SignedPolicy(client_id, row._replace(**changes), json.dumps({"exclusive": True}))


@pytest.mark.parametrize("action", [SET, ADOPT, UNSIGNED])
def test_an_engineer_is_refused_every_admin_operation_before_any_policy_or_client_row_is_read(
    scene: Scene, statements: list[str], action: str
) -> None:
    recorder, seal, before = Recorder(), FakeSeal(), _stored(scene)
    request = PolicyRequest(action, Caller(*scene.alice), scene.client_id if action == SET else None, PIN)
    statements.clear()
    with pytest.raises(AccessDenied, match="not an admin"):
        if action == UNSIGNED:
            _authority(scene, recorder).read(request)
        else:
            _authority(scene, recorder).write(request, seal)
    assert statements, "the authority read nothing"
    assert not [st for st in statements if READS_A_TARGET.search(st)], statements
    assert seal.drafts == [] and recorder.events == [] and _stored(scene) == before


def test_an_engineer_without_a_grant_is_refused_the_policy_before_the_client_is_read(
    scene: Scene, statements: list[str]
) -> None:
    statements.clear()
    with pytest.raises(NotFound, match="no grant"):
        _authority(scene, Recorder()).read(PolicyRequest(GET, Caller(*scene.bob), scene.client_id, PIN))
    assert not [st for st in statements if READS_A_TARGET.search(st)], statements


def test_a_caller_of_an_old_key_generation_is_refused(scene: Scene, statements: list[str]) -> None:
    engineer_id, generation = scene.admin
    with pytest.raises(Exception, match="changed since this session"):
        _authority(scene, Recorder()).read(
            PolicyRequest(GET, Caller(engineer_id, generation + 1), scene.client_id, PIN)
        )
    assert not [st for st in statements if READS_A_TARGET.search(st)], statements


def _forged(scene: Scene) -> list[Any]:
    good = PolicyRequest(SET, Caller(*scene.admin), scene.client_id, PIN)
    return [
        dataclasses.replace(good, action="policy-drop"),
        dataclasses.replace(good, client_id="1"),
        dataclasses.replace(good, client_id=True),
        dataclasses.replace(good, client_id=0),
        dataclasses.replace(good, client_id=None),
        dataclasses.replace(good, caller=None),
        dataclasses.replace(good, caller=Caller(True, 0)),
        dataclasses.replace(good, caller=Caller(scene.admin[0], -1)),
        dataclasses.replace(good, org_pin=b"short"),
        dataclasses.replace(good, action=ADOPT),  # adopt names no client
        ("not", "a request"),
    ]


@pytest.mark.parametrize("index", range(11))
def test_a_forged_request_is_refused_before_any_sql(scene: Scene, statements: list[str], index: int) -> None:
    request = _forged(scene)[index]
    statements.clear()
    seal = FakeSeal()
    with pytest.raises(InvalidInput):
        _authority(scene, Recorder()).write(request, seal)
    assert statements == [] and seal.drafts == []


def test_get_answers_the_stored_row_as_stored_even_when_a_dba_relaxed_it(scene: Scene) -> None:
    """The authority does not judge a policy: the keyholder does, from the row as stored."""
    with scene.store.transaction() as s:
        s.execute(update(m.ClientPolicy).where(m.ClientPolicy.client_id == scene.client_id).values(exclusive=False))
    answer = _authority(scene, Recorder()).read(PolicyRequest(GET, Caller(*scene.alice), scene.client_id, PIN))
    (p,) = answer.policies
    assert p.client_id == scene.client_id and p.stored is not None and p.stored.exclusive is False
    assert p.signer is not None and p.signer.id == p.stored.signed_by == scene.admin[0]
    assert answer.me.id == scene.alice[0] and answer.seq == 0


def test_an_unknown_client_is_not_found(scene: Scene) -> None:
    with pytest.raises(NotFound, match=MISSING_CLIENT):
        _authority(scene, Recorder()).read(PolicyRequest(GET, Caller(*scene.admin), 999_999, PIN))


def test_set_stores_exactly_what_the_keyholder_signed_and_appends_one_event(scene: Scene) -> None:
    recorder = Recorder()
    seal = FakeSeal(lambda draft: [_signed(scene.client_id, scene.admin[0])])
    answer = _authority(scene, recorder).write(PolicyRequest(SET, Caller(*scene.admin), scene.client_id, PIN), seal)
    (draft,) = seal.drafts
    assert [p.client_id for p in draft.policies] == [scene.client_id] and draft.seq == 0
    assert recorder.events == [("policy-set", scene.client_id, {"exclusive": True})]
    (p,) = answer.policies
    assert p.stored == _signed(scene.client_id, scene.admin[0]).row and answer.seq == 501


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda sc: [_signed(sc.other_id, sc.admin[0])], id="for-a-client-not-shown"),
        pytest.param(lambda sc: [_signed(sc.client_id, sc.alice[0])], id="signed-by-another-engineer"),
        pytest.param(lambda sc: [_signed(sc.client_id, sc.admin[0], checkout_minutes=0)], id="no-checkout-length"),
        pytest.param(lambda sc: [_signed(sc.client_id, sc.admin[0], stale_days=-1)], id="negative-stale-days"),
        pytest.param(lambda sc: [_signed(sc.client_id, sc.admin[0], exclusive=1)], id="a-flag-that-is-a-number"),
        pytest.param(lambda sc: [_signed(sc.client_id, sc.admin[0], signature=b"")], id="no-signature"),
        pytest.param(lambda sc: [_signed(sc.client_id, sc.admin[0])] * 2, id="two-policies-for-a-set"),
        pytest.param(
            lambda sc: [dataclasses.replace(_signed(sc.client_id, sc.admin[0]), details_json='{"a": [1]}')],
            id="details-that-are-not-flat",
        ),
    ],
)
def test_a_compromised_keyholder_seal_cannot_store_another_policy(scene: Scene, forge: Any) -> None:
    recorder, before = Recorder(), _stored(scene)
    seal = FakeSeal(lambda draft: forge(scene))
    with pytest.raises(InvalidInput):
        _authority(scene, recorder).write(PolicyRequest(SET, Caller(*scene.admin), scene.client_id, PIN), seal)
    assert _stored(scene) == before


def test_a_refusing_keyholder_leaves_everything_as_it_was(scene: Scene) -> None:
    recorder, before = Recorder(), _stored(scene)
    with pytest.raises(UntrustedRecord):
        _authority(scene, recorder).write(
            PolicyRequest(SET, Caller(*scene.admin), scene.client_id, PIN), FakeSeal(refuse=True)
        )
    assert recorder.events == [] and _stored(scene) == before


def test_adopt_shows_every_stored_policy_and_signs_only_those_returned(scene: Scene) -> None:
    recorder = Recorder()
    seal = FakeSeal(lambda draft: [_signed(scene.other_id, scene.admin[0])])
    answer = _authority(scene, recorder).write(PolicyRequest(ADOPT, Caller(*scene.admin), None, PIN), seal)
    (draft,) = seal.drafts
    assert [p.client_id for p in draft.policies] == [scene.client_id, scene.other_id]
    assert [p.client_id for p in answer.policies] == [scene.other_id]
    assert [e[1] for e in recorder.events] == [scene.other_id]
