"""The authority's half of ``report access`` (and so of ``report at-risk``), with no key material.

``report access`` asks the audit authority for one engineer's reveal events
(``EventQuery(ACCESS, ...)``). Only an admin may: an engineer asking directly is refused
after one statement (their own row), before any event row is read, whichever engineer
and whatever events they name. An admin's pages hold that engineer's reveals only, with
no plaintext (the reasons are sealed), and no ``report access`` names a client.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, select

from vault.authority.audit import AuditAuthority
from vault.authority.audit_requests import ACCESS, REVEAL_ACTIONS, EventQuery, PageRequest
from vault.authority.requests import Caller
from vault.errors import AccessDenied, InvalidInput, UntrustedRecord
from vault.storage import models as m

REASON = "T-audit-authority reason marker"  # the fixture's (tests/conftest.py, AUDIT_REASON)
READS_EVENTS = re.compile(r"\baudit_events\b|\baudit_head\b", re.IGNORECASE)


class Checks:
    """Public-key checks that look at the rows only (the real ones verify signatures)."""

    def organisation_key(self, s: Any, current: bytes) -> None:
        pass

    def certificate(self, s: Any, row: Any) -> None:
        if row.certificate is None:
            raise UntrustedRecord("no certificate")


@dataclasses.dataclass
class Scene:
    authority: AuditAuthority
    store: Any
    callers: dict[str, Caller]


@pytest.fixture(scope="module")
def scene(audit_world: Any) -> Scene:
    callers = {}
    with audit_world.admin.store.read() as s:
        for name, engineer_id, generation in s.execute(
            select(m.Engineer.name, m.Engineer.id, m.Engineer.key_generation)
        ):
            callers[name] = Caller(engineer_id, generation)
    return Scene(AuditAuthority(audit_world.admin.store, Checks()), audit_world.admin.store, callers)


@pytest.fixture
def statements(scene: Scene) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(scene.store.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(scene.store.engine, "before_cursor_execute", count)


def _access(scene: Scene, caller: str, engineer: str, actions: tuple[str, ...] | None = REVEAL_ACTIONS) -> list[Any]:
    query = EventQuery(ACCESS, scene.callers[caller], engineer_id=scene.callers[engineer].engineer_id, actions=actions)
    request = PageRequest(query, after=0, until=None, size=3)
    out: list[Any] = []
    while True:
        page = scene.authority.page(request)
        out.extend(page.events)
        if not page.more or not page.events:
            return out
        request = PageRequest(query, after=page.events[-1].seq, until=page.until, size=3)


@pytest.mark.parametrize(
    ("caller", "engineer", "actions"),
    [
        ("alice", "bob", REVEAL_ACTIONS),  # another engineer's reveals
        ("alice", "alice", REVEAL_ACTIONS),  # even their own: the report is an admin's
        ("bob", "root-admin", None),  # every event of the admin
    ],
    ids=["another-engineer", "their-own", "the-admin-unfiltered"],
)
def test_an_engineer_asking_for_report_access_is_refused_before_any_event_row_is_read(
    scene: Scene, statements: list[str], caller: str, engineer: str, actions: Any
) -> None:
    with pytest.raises(AccessDenied, match="not an admin"):
        _access(scene, caller, engineer, actions)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1 and not any(READS_EVENTS.search(s) for s in statements), statements


def test_report_access_holds_only_that_engineers_reveals_sealed(scene: Scene) -> None:
    alices = _access(scene, "root-admin", "alice")
    assert {e.action for e in alices} == {"reveal", "checkout"}
    assert {e.engineer_id for e in alices} == {scene.callers["alice"].engineer_id}
    assert all(e.details_blob and REASON.encode() not in e.details_blob for e in alices)
    bobs = _access(scene, "root-admin", "bob")
    assert {e.engineer_id for e in bobs} == {scene.callers["bob"].engineer_id} and not {e.seq for e in bobs} & {
        e.seq for e in alices
    }


def test_report_access_names_one_engineer_and_no_client(scene: Scene, statements: list[str]) -> None:
    admin = scene.callers["root-admin"]
    for query in (
        EventQuery(ACCESS, admin, actions=REVEAL_ACTIONS),
        EventQuery(ACCESS, admin, client_id=1, engineer_id=scene.callers["alice"].engineer_id),
    ):
        with pytest.raises(InvalidInput):
            scene.authority.page(PageRequest(query, after=0, until=None, size=3))
    assert statements == []
