"""The audit chain's authority for ``audit verify`` and ``report at-risk``, with no key material.

``AuditChainAuthority`` is driven alone, with public-key checks that look at the rows only.
It must check every field of a request before any SQL, refuse a caller (unknown, of a stale
key generation, not an admin for ``report-at-risk``) before any event row is read, read
only the whole chain (no filter, no limit, an end named), each request in a read unit of
its own that never takes the audit head's lock, and answer with rows, ids and links only.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from standins import recorded_statements

from vault.authority.audit_requests import EXPORT, LOG, EventQuery, PageRequest
from vault.authority.audit_verify import AuditChainAuthority
from vault.authority.audit_verify_requests import AT_RISK, VERIFY, PointsRequest
from vault.authority.policies_caller import CallerGate
from vault.authority.requests import Caller
from vault.crypto import chain
from vault.errors import AccessDenied, InvalidInput, Locked, UntrustedRecord
from vault.storage import models as m

# CallerGate's one statement reads the head row on SQLite (for a checkout's append); no event
READS_EVENTS = re.compile(r"\baudit_events\b", re.IGNORECASE)


class Checks:
    """Public-key checks that look at the rows only (the real ones verify signatures)."""

    def organisation_key(self, s: Any, current: bytes) -> None:
        pass

    def certificate(self, s: Any, row: Any) -> None:
        if row.certificate is None:
            raise UntrustedRecord("no certificate")

    def first_valid_grant(self, s: Any, grants: Any, engineer: Any, signers: Any) -> int:
        raise AssertionError("a verification names no client")


@dataclasses.dataclass
class Scene:
    team: Any
    authority: AuditChainAuthority
    admin: Caller
    alice: Caller
    head: int
    head_hash: bytes


@pytest.fixture(scope="module")
def scene(audit_world: Any) -> Scene:
    team = audit_world
    ids = {}
    with team.admin.store.transaction() as s:
        for name in ("root-admin", "alice"):
            ids[name] = Caller(
                *s.execute(select(m.Engineer.id, m.Engineer.key_generation).where(m.Engineer.name == name)).one()
            )
        head, head_hash = s.execute(select(m.AuditHead.seq, m.AuditHead.hash)).one()
    authority = AuditChainAuthority(team.admin.store, CallerGate(Checks()))
    return Scene(team, authority, ids["root-admin"], ids["alice"], head, head_hash)


@pytest.fixture
def statements(scene: Scene) -> Iterator[list[str]]:
    engine = scene.team.admin.store.engine
    with recorded_statements(engine) as seen:
        yield seen


def _chain(authority: AuditChainAuthority, caller: Caller, action: str, until: int, size: int) -> list[Any]:
    out: list[Any] = []
    after = 0
    while True:
        page = authority.page(PageRequest(EventQuery(action, caller), after=after, until=until, size=size))
        assert (page.after, page.until, page.restricted_to) == (after, until, None)
        out.extend(page.events)
        if not page.more:
            return out
        after = page.events[-1].seq


def test_an_engineer_reads_the_whole_chain_in_pages_of_any_size(scene: Scene) -> None:
    """``audit verify`` is any engineer's: alice is shown every engineer's events, not just hers."""
    for size in (1, 3, 2000):
        events = _chain(scene.authority, scene.alice, VERIFY, scene.head, size)
        assert [e.seq for e in events] == list(range(1, scene.head + 1)), size
        assert events[0].prev_hash == chain.GENESIS
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))
        assert {e.engineer_id for e in events} > {scene.alice.engineer_id}
    assert _chain(scene.authority, scene.admin, AT_RISK, scene.head, 5)[-1].hash == scene.head_hash


def test_a_page_ends_where_the_keyholder_said(scene: Scene) -> None:
    until = scene.head - 3
    events = _chain(scene.authority, scene.admin, VERIFY, until, 2)
    assert [e.seq for e in events] == list(range(1, until + 1))
    page = scene.authority.page(PageRequest(EventQuery(VERIFY, scene.admin), after=until - 1, until=until, size=5))
    assert page.until_hash == events[-1].hash and not page.more


def test_points_name_the_head_the_newest_event_and_the_events_asked_for(scene: Scene) -> None:
    points = scene.authority.points(PointsRequest(VERIFY, scene.alice, (2, 3, scene.head + 50)))
    assert (points.head_seq, points.head_hash, points.newest) == (scene.head, scene.head_hash, scene.head)
    assert [e.seq for e in points.events] == [2, 3]  # one that does not exist is left out
    assert points.events[1].prev_hash == points.events[0].hash


def test_an_engineer_is_refused_the_at_risk_chain_before_any_event_is_read(scene: Scene, statements: list[str]) -> None:
    requests = [
        lambda: scene.authority.page(PageRequest(EventQuery(AT_RISK, scene.alice), after=0, until=scene.head, size=5)),
        lambda: scene.authority.points(PointsRequest(AT_RISK, scene.alice, (1,))),
    ]
    for request in requests:
        statements.clear()
        with pytest.raises(AccessDenied, match="not an admin"):
            request()
        assert statements and not any(READS_EVENTS.search(s) for s in statements)


@pytest.mark.parametrize("who", ["unknown", "stale"])
def test_an_unknown_or_stale_caller_is_refused_before_any_event_is_read(
    scene: Scene, statements: list[str], who: str
) -> None:
    caller = Caller(10_000, 0) if who == "unknown" else Caller(scene.alice.engineer_id, scene.alice.key_generation + 1)
    with pytest.raises(Locked):
        scene.authority.page(PageRequest(EventQuery(VERIFY, caller), after=0, until=scene.head, size=5))
    with pytest.raises(Locked):
        scene.authority.points(PointsRequest(VERIFY, caller))
    assert statements and not any(READS_EVENTS.search(s) for s in statements)


BAD_PAGES = {
    "the log's action": PageRequest(EventQuery(LOG, Caller(1, 0)), after=0, until=5, size=5),
    "the export's action": PageRequest(EventQuery(EXPORT, Caller(1, 0)), after=0, until=5, size=5),
    "a filter by client": PageRequest(EventQuery(VERIFY, Caller(1, 0), client_id=1), after=0, until=5, size=5),
    "a filter by engineer": PageRequest(EventQuery(VERIFY, Caller(1, 0), engineer_id=1), after=0, until=5, size=5),
    "a filter by action": PageRequest(EventQuery(VERIFY, Caller(1, 0), actions=("reveal",)), after=0, until=5, size=5),
    "no end": PageRequest(EventQuery(VERIFY, Caller(1, 0)), after=0, until=None, size=5),
    "a limit": PageRequest(EventQuery(VERIFY, Caller(1, 0)), after=0, until=5, size=5, limit=2),
    "a start past the end": PageRequest(EventQuery(VERIFY, Caller(1, 0)), after=6, until=5, size=5),
    "a page too big": PageRequest(EventQuery(VERIFY, Caller(1, 0)), after=0, until=5, size=2001),
    "no caller": PageRequest(EventQuery(VERIFY, None), after=0, until=5, size=5),  # type: ignore[arg-type]
    "a caller of id 0": PageRequest(EventQuery(VERIFY, Caller(0, 0)), after=0, until=5, size=5),
}


@pytest.mark.parametrize("bad", list(BAD_PAGES), ids=list(BAD_PAGES))
def test_a_malformed_page_request_is_refused_before_any_sql(scene: Scene, statements: list[str], bad: str) -> None:
    with pytest.raises(InvalidInput):
        scene.authority.page(BAD_PAGES[bad])
    assert statements == []


@pytest.mark.parametrize(
    "request_",
    [
        PointsRequest("audit-log", Caller(1, 0)),
        PointsRequest(VERIFY, Caller(1, 0), (0,)),
        PointsRequest(VERIFY, Caller(1, 0), [1]),  # type: ignore[arg-type]
        PointsRequest(VERIFY, Caller(1, 0), tuple(range(1, 1002))),
        PointsRequest(VERIFY, Caller(1, -1)),
    ],
    ids=["action", "seq 0", "a list", "too many", "generation"],
)
def test_a_malformed_points_request_is_refused_before_any_sql(
    scene: Scene, statements: list[str], request_: PointsRequest
) -> None:
    with pytest.raises(InvalidInput):
        scene.authority.points(request_)
    assert statements == []


def test_no_request_takes_the_audit_heads_lock(scene: Scene, statements: list[str]) -> None:
    scene.authority.points(PointsRequest(AT_RISK, scene.admin, (1,)))
    _chain(scene.authority, scene.admin, AT_RISK, scene.head, 4)
    assert statements and not any("FOR UPDATE" in s.upper() or "IMMEDIATE" in s.upper() for s in statements)
