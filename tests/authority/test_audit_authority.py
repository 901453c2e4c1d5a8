"""The audit log's authority, run with no key material at all.

The rows are made once per module and engine by the usual service calls (an admin adds a
client and a secret, grants alice, alice reveals and checks out, bob lists); then
``AuditAuthority`` is driven alone, with public-key checks that look at the rows only. No
client key, audit key or private key reaches it, yet it must check every field of a request
before any SQL, refuse a caller (unknown, stale, not an admin for ``report access``) before
any event row is read, keep an engineer to their own events whatever the filter says, and
answer pages that follow each other by keyset up to the head the first page found, with
ids, ciphertext and links only.
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

from vault.authority.audit import AuditAuthority
from vault.authority.audit_requests import ACCESS, EXPORT, LOG, EventQuery, PageRequest
from vault.authority.requests import Caller
from vault.errors import AccessDenied, InvalidInput, Locked, UntrustedRecord
from vault.storage import models as m

REASON = "T-audit-authority reason marker"
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
    team: Any
    authority: AuditAuthority
    admin: Caller
    alice: Caller
    bob: Caller
    client_id: int
    head: int


@pytest.fixture(scope="module")
def scene(audit_world: Any) -> Scene:
    team = audit_world
    admin = team.admin
    ids = {}
    with admin.store.transaction() as s:
        for name in ("root-admin", "alice", "bob"):
            ids[name] = Caller(
                *s.execute(select(m.Engineer.id, m.Engineer.key_generation).where(m.Engineer.name == name)).one()
            )
        client_id = s.scalar(select(m.Client.id).order_by(m.Client.id).limit(1))
        head = s.scalar(select(m.AuditHead.seq))
    return Scene(
        team, AuditAuthority(admin.store, Checks()), ids["root-admin"], ids["alice"], ids["bob"], client_id, head
    )


@pytest.fixture
def statements(scene: Scene) -> Iterator[list[str]]:
    engine = scene.team.admin.store.engine
    with recorded_statements(engine) as seen:
        yield seen


def _all(authority: AuditAuthority, query: EventQuery, size: int = 500, limit: int | None = None) -> list[Any]:
    request = PageRequest(query, after=0, until=None, size=size, limit=limit)
    out = []
    while True:
        page = authority.page(request)
        out.extend(page.events)
        if not page.more or not page.events:
            return out
        request = PageRequest(query, after=page.events[-1].seq, until=page.until, size=size)


# -- what a page holds ----------------------------------------------------------------------------


def test_pages_are_the_whole_chain_once_in_order_whatever_the_page_size(scene: Scene) -> None:
    for size in (1, 3, 500):
        events = _all(scene.authority, EventQuery(EXPORT, scene.admin), size=size)
        assert [e.seq for e in events] == list(range(1, scene.head + 1)), size
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))


def test_a_page_holds_ids_ciphertext_and_links_but_no_plaintext_detail(scene: Scene) -> None:
    events = _all(scene.authority, EventQuery(LOG, scene.admin))
    reveals = [e for e in events if e.action in ("reveal", "checkout")]
    assert reveals and all(e.details_blob and e.details_json is None for e in reveals)
    for e in events:
        for value in dataclasses.astuple(e) if dataclasses.is_dataclass(e) else tuple(e):
            assert not (isinstance(value, bytes) and REASON.encode() in value)
            assert not (isinstance(value, str) and REASON in value)


def test_a_stream_ends_at_the_head_its_first_page_found(scene: Scene) -> None:
    query = EventQuery(LOG, scene.admin)
    first = scene.authority.page(PageRequest(query, after=0, until=None, size=2))
    head = first.until
    scene.team.admin.clients.list()  # an event appended while the stream runs
    rest = _all_from(scene.authority, query, first)
    assert [e.seq for e in (*first.events, *rest)] == list(range(1, head + 1))
    scene.head = head + 1  # the module's chain grew by one (the other tests read it whole)


def _all_from(authority: AuditAuthority, query: EventQuery, first: Any) -> list[Any]:
    out: list[Any] = []
    page = first
    while page.more and page.events:
        page = authority.page(PageRequest(query, after=page.events[-1].seq, until=page.until, size=2))
        out.extend(page.events)
    return out


def test_a_limit_starts_where_the_newest_events_that_pass_the_filter_start(scene: Scene) -> None:
    every = _all(scene.authority, EventQuery(LOG, scene.admin))
    for limit in (1, 4, 10_000):
        got = _all(scene.authority, EventQuery(LOG, scene.admin), size=3, limit=limit)
        assert [e.seq for e in got] == [e.seq for e in every][-limit:]
    alices = _all(scene.authority, EventQuery(LOG, scene.admin, engineer_id=scene.alice.engineer_id), limit=2)
    assert [e.seq for e in alices] == [e.seq for e in every if e.engineer_id == scene.alice.engineer_id][-2:]


def test_filters_keep_only_what_was_asked_for(scene: Scene) -> None:
    by_client = _all(scene.authority, EventQuery(LOG, scene.admin, client_id=scene.client_id))
    assert by_client and {e.client_id for e in by_client} == {scene.client_id}
    reveals = _all(
        scene.authority,
        EventQuery(ACCESS, scene.admin, engineer_id=scene.alice.engineer_id, actions=("reveal", "checkout")),
    )
    assert {e.action for e in reveals} == {"reveal", "checkout"}
    assert {e.engineer_id for e in reveals} == {scene.alice.engineer_id}


# -- an engineer: their own events only ----------------------------------------------------------------


def test_an_engineer_reads_only_their_own_events_whatever_the_filter_says(scene: Scene) -> None:
    own = _all(scene.authority, EventQuery(LOG, scene.alice))
    assert own and {e.engineer_id for e in own} == {scene.alice.engineer_id}
    assert _all(scene.authority, EventQuery(LOG, scene.alice, engineer_id=scene.bob.engineer_id)) == []
    by_client = _all(scene.authority, EventQuery(EXPORT, scene.alice, client_id=scene.client_id))
    assert {e.engineer_id for e in by_client} == {scene.alice.engineer_id}


# -- refused before any event row is read ----------------------------------------------------------


def test_an_engineer_is_refused_report_access_before_any_event_row_is_read(scene: Scene, statements: list[str]) -> None:
    """A curious engineer asks the authority for another engineer's reveals directly."""
    query = EventQuery(ACCESS, scene.alice, engineer_id=scene.bob.engineer_id, actions=("reveal", "checkout"))
    with pytest.raises(AccessDenied):
        scene.authority.page(PageRequest(query, after=0, until=None, size=500))
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1 and not any(READS_EVENTS.search(s) for s in statements), statements


@pytest.mark.parametrize(
    "who",
    [
        lambda sc: Caller(sc.alice.engineer_id, sc.alice.key_generation + 1),  # keys rotated since the session
        lambda sc: Caller(99_999, 1),  # an engineer id that is no one's
    ],
    ids=["stale-generation", "unknown-engineer"],
)
def test_a_caller_who_is_not_the_session_is_refused_before_any_event_row_is_read(
    scene: Scene, statements: list[str], who: Any
) -> None:
    with pytest.raises(Locked):
        scene.authority.page(PageRequest(EventQuery(LOG, who(scene)), after=0, until=None, size=500))
    assert not any(READS_EVENTS.search(s) for s in statements), statements


def test_a_caller_whose_certificate_is_gone_is_refused_before_any_event_row_is_read(
    scene: Scene, statements: list[str]
) -> None:
    class NoCertificates(Checks):
        def certificate(self, s: Any, row: Any) -> None:
            raise UntrustedRecord("a DBA replaced the certificate")

    authority = AuditAuthority(scene.team.admin.store, NoCertificates())
    with pytest.raises(UntrustedRecord):
        authority.page(PageRequest(EventQuery(EXPORT, scene.admin), after=0, until=None, size=500))
    assert not any(READS_EVENTS.search(s) for s in statements), statements


FORGED = [
    ("negative-after", {"after": -1}),
    ("empty-page", {"size": 0}),
    ("huge-page", {"size": 10**7}),
    ("bool-size", {"size": True}),
    ("text-until", {"until": "12"}),
    ("limit-after-first-page", {"until": 3, "limit": 2}),
    ("zero-limit", {"limit": 0}),
    ("unknown-action", {"action": "audit-purge"}),
    ("bool-engineer", {"engineer_id": True}),
    ("zero-client", {"client_id": 0}),
    ("float-since", {"since_us": 1.5}),
    ("actions-list", {"actions": ["reveal"]}),
    ("many-actions", {"actions": ("reveal",) * 1000}),
    ("action-not-text", {"actions": (1,)}),
    ("access-without-engineer", {"action": ACCESS}),
    ("access-with-client", {"action": ACCESS, "engineer_id": 1, "client_id": 1}),
    ("caller-not-a-caller", {"caller": (1, 1)}),
    ("negative-generation", {"caller": Caller(1, -1)}),
]


@pytest.mark.parametrize("changes", [c for _, c in FORGED], ids=[n for n, _ in FORGED])
def test_ill_typed_request_fields_are_refused_before_any_sql(
    scene: Scene, statements: list[str], changes: dict[str, Any]
) -> None:
    query_fields = {"action", "caller", "client_id", "engineer_id", "since_us", "actions"}
    query = dataclasses.replace(EventQuery(LOG, scene.admin), **{k: v for k, v in changes.items() if k in query_fields})
    request = dataclasses.replace(
        PageRequest(query, after=0, until=None, size=500), **{k: v for k, v in changes.items() if k not in query_fields}
    )
    with pytest.raises(InvalidInput):
        scene.authority.page(request)
    assert statements == []


# -- the head, and the head a checkpoint is signed over ----------------------------------------------------


def test_the_head_needs_no_caller_and_a_checkpoints_head_comes_with_its_event(scene: Scene) -> None:
    from vault.authority.audit_requests import CHECKPOINT, HEAD, HeadRequest

    plain = scene.authority.head(HeadRequest(HEAD))
    assert plain.event is None and plain.seq >= 1 and len(plain.hash) == 32
    answer = scene.authority.head(HeadRequest(CHECKPOINT, scene.alice))
    assert answer.event is not None and (answer.event.seq, answer.event.hash) == (answer.seq, answer.hash)


def test_a_checkpoint_for_a_stale_caller_is_refused_before_the_head_is_read(
    scene: Scene, statements: list[str]
) -> None:
    from vault.authority.audit_requests import CHECKPOINT, HeadRequest

    stale = Caller(scene.alice.engineer_id, scene.alice.key_generation + 1)
    with pytest.raises(Locked):
        scene.authority.head(HeadRequest(CHECKPOINT, stale))
    assert not any(READS_EVENTS.search(s) for s in statements), statements
    statements.clear()
    for forged in (HeadRequest("audit-purge"), HeadRequest(CHECKPOINT, None), HeadRequest(CHECKPOINT, Caller(0, 1))):
        with pytest.raises(InvalidInput):
            scene.authority.head(forged)
    assert statements == []
