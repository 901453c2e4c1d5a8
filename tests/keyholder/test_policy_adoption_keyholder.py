"""The adoption of a departing admin's policies and settings, against a tampering authority,
and its authority called directly.

An admin's removal re-signs, as the removing admin, what the departing admin signed. The
keyholder is shown the rows as stored (``DepartingDraft``) inside the removal's unit of
work; a draft a compromised authority (or a DBA's rows) changed must get nothing re-signed
that the departing admin did not sign, and a draft of another engineer refuses the removal
whole. A non-admin calling the authority directly is refused before any row is read.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import event, select

from vault.authority.policy_adoption import AdoptDepartingRequest, DepartingDraft
from vault.authority.requests import Caller
from vault.errors import AccessDenied, UntrustedRecord
from vault.storage import models as m


class TamperingTransport:
    def __init__(self, real: Any, tamper: Callable[[DepartingDraft], DepartingDraft]) -> None:
        self.real, self.tamper = real, tamper

    def adopt(self, request: Any, seal: Any, unit: Any) -> Any:
        tamper = self.tamper

        class Seal:
            def adopt(self, draft: DepartingDraft) -> Any:
                return seal.adopt(tamper(draft))

        return self.real.adopt(request, Seal(), unit)


@pytest.fixture
def scene(team: Any) -> Any:
    admin = team.admin
    admin2 = team.engineer("admin2", role="admin")
    team.engineer("bob")
    admin.clients.add("acme", "Acme")
    admin2.policies.set("acme", reason_required=False, exclusive=False)
    return team


def _tamper_with(team: Any, tamper: Callable[[DepartingDraft], DepartingDraft]) -> None:
    adoption = team.admin.policies.adoption
    adoption.transport = TamperingTransport(adoption.transport, tamper)


def _signed_by(team: Any) -> Any:
    with team.admin.store.transaction() as s:
        return s.scalar(select(m.Engineer.name).join(m.ClientPolicy, m.ClientPolicy.signed_by == m.Engineer.id))


def test_a_draft_of_another_engineer_refuses_the_removal(scene: Any) -> None:
    """The authority shows bob's row as the departing engineer's: nothing is signed, and the
    removal (one unit of work) writes nothing."""
    with scene.admin.store.transaction() as s:
        bob = s.scalars(select(m.Engineer).where(m.Engineer.name == "bob")).one()
        bob_id = bob.id
    _tamper_with(scene, lambda d: dataclasses.replace(d, departing=d.departing._replace(id=bob_id, name="bob")))
    with pytest.raises(UntrustedRecord, match="another engineer"):
        scene.admin.engineers.remove("admin2")
    with scene.admin.store.transaction() as s:
        assert s.scalar(select(m.Engineer.status).where(m.Engineer.name == "admin2")) == "active"
    assert _signed_by(scene) == "admin2"


def test_values_changed_in_the_draft_are_not_adopted(scene: Any) -> None:
    """The authority shows acme's policy relaxed further than admin2 signed it (checkout time
    doubled): its signature does not cover that, so it is not re-signed."""
    _tamper_with(
        scene,
        lambda d: dataclasses.replace(
            d,
            policies=tuple(
                dataclasses.replace(p, stored=p.stored._replace(checkout_minutes=p.stored.checkout_minutes * 2))
                for p in d.policies
            ),
        ),
    )
    scene.admin.engineers.remove("admin2")
    assert _signed_by(scene) == "admin2"  # left as stored
    assert not scene.admin.policies.get("acme").signed


def test_a_departing_row_with_swapped_keys_in_the_draft_is_not_trusted(scene: Any) -> None:
    """The draft's departing row has its keys swapped (a DBA's key): its certificate does not
    verify, so nothing it 'signed' is adopted."""
    _tamper_with(
        scene, lambda d: dataclasses.replace(d, departing=d.departing._replace(signing_public=b"\x07" * 32))
    )
    scene.admin.engineers.remove("admin2")
    assert _signed_by(scene) == "admin2"


def test_the_control_adopts(scene: Any) -> None:
    _tamper_with(scene, lambda d: d)
    scene.admin.engineers.remove("admin2")
    assert _signed_by(scene) == scene.admin.engineer_name
    assert scene.admin.policies.get("acme").signed


def test_an_engineer_calling_the_authority_directly_is_refused_before_any_row_is_read(scene: Any) -> None:
    with scene.admin.store.transaction() as s:
        row = s.execute(select(m.Engineer.id, m.Engineer.key_generation).where(m.Engineer.name == "bob")).one()
        departing = s.scalar(select(m.Engineer.id).where(m.Engineer.name == "admin2"))
        pin = s.scalar(select(m.VaultInfo.org_signing_public))
    authority = scene.admin.policies.adoption.transport.authority
    seen: list[str] = []
    engine = scene.admin.store.engine

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    class Spy:
        def adopt(self, draft: DepartingDraft) -> Any:
            pytest.fail("a non-admin's seal was shown a draft")

    request = AdoptDepartingRequest(Caller(int(row[0]), int(row[1])), int(departing), bytes(pin))
    event.listen(engine, "before_cursor_execute", count)
    try:
        with pytest.raises(AccessDenied, match="not an admin"), scene.admin.store.transaction() as s:
            authority.adopt(request, Spy(), s=s)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert [q for q in seen if re.search(r"\bclient_policies\b|\bclients\b", q)] == []
    assert _signed_by(scene) == "admin2"
