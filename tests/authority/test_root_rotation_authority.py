"""The root rotation's authority, driven alone: who may call it, and what it stores.

``RootRotationAuthority`` is the one the Vault builds (its roster check and recorder are
the in-process adapters); the keyholder's seal is a spy or a forger. It must refuse an
engineer who is not an admin before any row of the roster, the root keys or a client is
read (and never show the seal anything), refuse ill-typed fields before any SQL, and store
nothing of a plan that is not for the draft it showed.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from standins import recorded_statements

from vault.authority.requests import Caller
from vault.authority.root_rotation import RootRotationAuthority
from vault.authority.root_rotation_requests import ClientPage, RootDraft, RootRotateRequest
from vault.errors import AccessDenied, InvalidInput, UntrustedRecord
from vault.storage import models as m

# What a root rotation reads beyond the caller's own read (which names the root version only).
READS_A_TARGET = re.compile(
    r"\b(org_keys|clients|client_keys|client_key_seals|engineer_keys|root_seals|audit_events)\b", re.I
)


class SpySeal:
    """Notes what the authority shows; ``plan`` answers through ``make`` (None: refuses)."""

    def __init__(self, make: Any = None) -> None:
        self.make = make
        self.drafts: list[RootDraft] = []
        self.pages: list[ClientPage] = []

    def plan(self, draft: RootDraft) -> Any:
        self.drafts.append(draft)
        if self.make is None:
            raise UntrustedRecord("the spy makes nothing")
        return self.make(draft)

    def reseal(self, page: ClientPage) -> Any:
        self.pages.append(page)
        raise UntrustedRecord("the spy re-seals nothing")


@dataclasses.dataclass
class Scene:
    team: Any
    admin: Caller
    bob: Caller
    pin: bytes


def _caller(team: Any, name: str) -> Caller:
    with team.admin.store.transaction() as s:
        row = s.execute(select(m.Engineer.id, m.Engineer.key_generation).where(m.Engineer.name == name)).one()
    return Caller(int(row[0]), int(row[1]))


@pytest.fixture
def scene(team: Any) -> Scene:
    admin = team.admin
    admin.clients.add("acme", "Acme Ltd")
    admin.secrets.add("acme/s0", password="acme-Pw-0")
    team.engineer("bob")
    with admin.store.transaction() as s:
        pin = s.scalar(select(m.VaultInfo.org_signing_public))
    return Scene(team, _caller(team, admin.engineer_name), _caller(team, "bob"), bytes(pin))


def _authority(scene: Scene) -> RootRotationAuthority:
    authority = scene.team.admin.root_rotator.keyholder.transport.authority
    assert isinstance(authority, RootRotationAuthority)
    return authority


def _state(scene: Scene) -> tuple[Any, ...]:
    with scene.team.admin.store.transaction() as s:
        roots = s.execute(select(m.RootKey.version, m.RootKey.state).order_by(m.RootKey.version)).all()
        orgs = s.scalar(select(func.count()).select_from(m.OrgKey))
        seals = s.execute(
            select(m.ClientKeySeal.client_id, m.ClientKeySeal.version, m.ClientKeySeal.recipient_id)
        ).all()
        root_seals = s.execute(select(m.RootSeal.root_version, m.RootSeal.engineer_id)).all()
        tags = s.execute(select(m.Client.id, m.Client.slug_tag)).all()
        head = s.scalar(select(m.AuditHead.seq))
    return tuple(roots), orgs, sorted(seals), sorted(root_seals), sorted(tags), head


@pytest.fixture
def statements(scene: Scene) -> Iterator[list[str]]:
    engine = scene.team.admin.store.engine
    with recorded_statements(engine) as seen:
        yield seen


def test_an_engineer_calling_the_authority_directly_is_refused_before_any_row_is_read(
    scene: Scene, statements: list[str]
) -> None:
    """The insider: bob, a certified engineer, builds the request himself and hands the
    authority his own seal, hoping to be shown the roster and the sealed root copies."""
    before = _state(scene)
    seal = SpySeal(make=lambda draft: pytest.fail("a non-admin's seal was asked to plan"))
    statements.clear()
    with pytest.raises(AccessDenied, match="not an admin"):
        _authority(scene).rotate(RootRotateRequest(scene.bob, scene.pin, None), seal)
    assert seal.drafts == [] and seal.pages == []
    assert [q for q in statements if READS_A_TARGET.search(q)] == []
    assert _state(scene) == before


@pytest.mark.parametrize(
    "changes",
    [
        {"caller": None},
        {"caller": Caller(0, 1)},
        {"org_pin": b"short"},
        {"shares": (1, 5)},
        {"shares": (3, 2)},
        {"shares": "3-of-5"},
        {"action": "client-key-rotate"},
    ],
    ids=repr,
)
def test_ill_typed_fields_are_refused_before_any_sql(scene: Scene, statements: list[str], changes: Any) -> None:
    request = dataclasses.replace(RootRotateRequest(scene.admin, scene.pin, None), **changes)
    statements.clear()
    with pytest.raises(InvalidInput):
        _authority(scene).rotate(request, SpySeal())
    assert statements == []


def test_a_refused_plan_writes_nothing(scene: Scene) -> None:
    before = _state(scene)
    seal = SpySeal()
    with pytest.raises(UntrustedRecord, match="makes nothing"):
        _authority(scene).rotate(RootRotateRequest(scene.admin, scene.pin, None), seal)
    [draft] = seal.drafts
    assert draft.identity.me.id == scene.admin.engineer_id and draft.root.sealed is not None
    assert seal.pages == []
    assert _state(scene) == before


def test_a_plan_for_another_version_is_not_stored(scene: Scene) -> None:
    """A keyholder (or a forger in the seal's place) answering a plan that does not follow
    the draft: another root version, or a bundle sealed to an engineer who is not an admin."""
    real = scene.team.admin.root_rotator.keyholder
    before = _state(scene)
    forgeries = {
        "another root version": lambda plan, d: dataclasses.replace(plan, root_version=plan.root_version + 1),
        "the bundle sealed to bob": lambda plan, d: dataclasses.replace(
            plan, root_seals=(*plan.root_seals, (scene.bob.engineer_id, plan.root_seals[0][1]))
        ),
        "a certificate for a row not shown": lambda plan, d: dataclasses.replace(
            plan, certificates=(*plan.certificates, (10_000, b"\x00" * 64))
        ),
        "the link not signed by the current key": lambda plan, d: dataclasses.replace(
            plan, org_signature=b"\x00" * 64
        ),
    }
    for case, forge in forgeries.items():

        class Forging:
            def __init__(self, inner: Any) -> None:
                self.inner = inner

            def plan(self, draft: RootDraft) -> Any:
                return forge(self.inner.plan(draft), draft)

            def reseal(self, page: ClientPage) -> Any:
                return self.inner.reseal(page)

        transport = real.transport
        original = transport.rotate_root
        transport.rotate_root = lambda request, seal, unit=None, o=original: o(request, Forging(seal), unit)
        try:
            with pytest.raises(UntrustedRecord):
                scene.team.admin.keys.rotate_root()
        finally:
            transport.rotate_root = original
        assert _state(scene) == before, case
    assert scene.team.admin.keys.rotate_root().root_version == before[0][-1][0] + 1  # the control
