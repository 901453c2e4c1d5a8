"""The reports' keyholder: ``report access`` and ``report at-risk`` on pages it verified, and
an engineer refused an admin report before any event row is read.

The attacks are a compromised authority's (or a DBA's) on the pages of one engineer's
reveals: another engineer's reveal slipped in (their access charged to this one, a value
this one never saw marked at risk), a reveal's sealed reason swapped with another's. Each
is refused (IntegrityError naming the event) and nothing of it is reported.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, select

from vault.authority.audit_requests import EventPage, PageRequest
from vault.errors import AccessDenied, IntegrityError
from vault.storage import models as m
from vault.storage.repositories import audit as event_rows

READS_THE_LOG = re.compile(r"\b(audit_events|audit_head|secrets|secret_versions|clients)\b", re.IGNORECASE)


class Tampering:
    def __init__(self, real: Any, edit: Any) -> None:
        self.real, self.edit = real, edit

    def page(self, request: PageRequest) -> EventPage:
        return self.edit(self.real.page(request))

    def head(self, request: Any) -> Any:
        return self.real.head(request)


@pytest.fixture
def statements(audit_world: Any) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    engines = [v.store.engine for v in (audit_world.admin, audit_world.alice)]
    for engine in engines:
        event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", count)


@pytest.mark.parametrize(
    "report",
    [
        lambda v: v.reports.access("bob"),
        lambda v: list(v.reports.access("bob", stream=True)),
        lambda v: v.reports.at_risk("bob"),
    ],
    ids=["access", "access-streamed", "at-risk"],
)
def test_an_engineer_is_refused_an_admin_report_before_any_event_row_is_read(
    audit_world: Any, statements: list[str], report: Any
) -> None:
    head = audit_world.admin.audit.head()
    statements.clear()
    with pytest.raises(AccessDenied):
        report(audit_world.alice)
    assert statements and not any(READS_THE_LOG.search(s) for s in statements), statements
    assert audit_world.admin.audit.head() == head  # and nothing was appended


def _genuine(vault: Any, **where: Any) -> Any:
    with vault.store.read() as s:
        rows = event_rows.chained_page(s.info["connection"], 0, 10**9, 10**4)
    return next(r for r in rows if all(getattr(r, k) == v for k, v in where.items()))


def _engineer_id(vault: Any, name: str) -> int:
    with vault.store.read() as s:
        return int(s.scalar(select(m.Engineer.id).where(m.Engineer.name == name)))


def test_at_risk_with_another_engineers_reveal_slipped_in_is_refused(
    audit_world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bob's reveal of globex/sw01 charged to alice would send someone to change a value
    she never saw, and hide nothing: still, the report is refused, not printed."""
    admin = audit_world.admin
    honest = admin.reports.at_risk("alice")
    assert {(r.client, r.secret) for r in honest} == {("acme", "fw01")}
    bobs = _genuine(admin, engineer_id=_engineer_id(admin, "bob"), action="reveal")
    keyholder = admin.audit.keyholder
    slip = Tampering(
        keyholder.transport,
        lambda p: dataclasses.replace(p, events=tuple(sorted([*p.events, bobs], key=lambda e: e.seq))),
    )
    monkeypatch.setattr(keyholder, "transport", slip)
    with pytest.raises(IntegrityError, match=f"event {bobs.seq}: it is not of the engineer asked for"):
        admin.reports.at_risk("alice")


def test_report_access_with_a_reason_swapped_between_reveals_is_refused(
    audit_world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DBA moves one reveal's sealed details (reason, field, version) onto another."""
    admin = audit_world.admin

    def swap(page: EventPage) -> EventPage:
        events = list(page.events)
        if len(events) >= 2:
            events[1] = events[1]._replace(details_blob=events[0].details_blob)
        return dataclasses.replace(page, events=tuple(events))

    keyholder = admin.audit.keyholder
    monkeypatch.setattr(keyholder, "transport", Tampering(keyholder.transport, swap))
    shown = []
    with pytest.raises(IntegrityError, match="its contents were changed"):
        for record in admin.reports.access("alice", stream=True):
            shown.append(record)
    assert shown == []
