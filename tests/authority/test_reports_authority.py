"""The authority's half of ``report access`` (and so of ``report at-risk``), with no key material.

``report access`` asks the audit authority for one engineer's reveal events
(``EventQuery(ACCESS, ...)``). Only an admin may: an engineer asking directly is refused
after one statement (their own row), before any event row is read, whichever engineer
and whatever events they name. An admin's pages hold that engineer's reveals only, with
no plaintext (the reasons are sealed), and no ``report access`` names a client.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from standins import recorded_statements

from vault.authority.audit import AuditAuthority
from vault.authority.audit_requests import ACCESS, REVEAL_ACTIONS, EventQuery, PageRequest
from vault.authority.report_requests import ReportRequest
from vault.authority.reports import ReportAuthority
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
    with recorded_statements(scene.store.engine) as seen:
        yield seen


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


# -- status and stale (authority/reports.py) ----------------------------------------------------

READS_TARGETS = re.compile(
    r"\b(clients|secrets|secret_versions|client_policies|client_keys|client_key_seals|rotations|engineer_keys"
    r"|alembic_version)\b",
    re.IGNORECASE,
)


def _reports(scene: Scene) -> Any:
    return ReportAuthority(scene.store, Checks(), lambda: dt.datetime.now(dt.UTC))


def _pin(scene: Scene) -> bytes:
    with scene.store.read() as s:
        return bytes(s.scalar(select(m.VaultInfo.org_signing_public)))


@pytest.mark.parametrize("action", ["status", "stale"])
@pytest.mark.parametrize("caller", ["alice", "bob"])
def test_an_engineer_asking_for_status_or_stale_is_refused_before_any_row_is_read(
    scene: Scene, statements: list[str], caller: str, action: str
) -> None:
    """An engineer with a certified key and database access sends the report request
    themselves: refused after their own row, before any client, secret, policy or key row
    (and before the schema's revision) is read."""
    authority, pin = _reports(scene), _pin(scene)
    statements.clear()
    with pytest.raises(AccessDenied, match="not an admin"):
        getattr(authority, action)(ReportRequest(action, scene.callers[caller], (), pin))
    catalog = re.compile(r"sqlite_master|pg_catalog|information_schema|pg_class|pg_namespace", re.IGNORECASE)
    rows_read = [s for s in statements if s.lstrip().upper().startswith("SELECT") and not catalog.search(s)]
    assert len(rows_read) == 1 and not READS_TARGETS.search(rows_read[0]), rows_read  # the caller's own row


def test_forged_report_requests_are_refused_before_any_sql(scene: Scene, statements: list[str]) -> None:
    authority, pin = _reports(scene), _pin(scene)
    admin = scene.callers["root-admin"]
    statements.clear()
    forged: list[tuple[str, Any]] = [
        ("status", ReportRequest("stale", admin, (), pin)),  # another action under this one's name
        ("stale", ReportRequest("status", admin, (), pin)),
        ("status", ReportRequest("status", (admin.engineer_id, admin.key_generation), (), pin)),  # not a Caller
        ("status", ReportRequest("status", Caller(0, 0), (), pin)),  # no such engineer id
        ("status", ReportRequest("status", admin, (), pin[:16])),  # a short pin
        ("status", ReportRequest("status", admin, ((1, 0),), pin)),  # a version below 1
        ("status", ReportRequest("status", admin, ((1, True),), pin)),  # a bool is not a version
        ("stale", ReportRequest("stale", admin, [(1, 1)], pin)),  # not a tuple
        ("status", EventQuery(ACCESS, admin, engineer_id=1)),  # another noun's request
    ]
    for action, request in forged:
        with pytest.raises(InvalidInput):
            getattr(authority, action)(request)
    assert statements == []


def test_status_answers_ciphertext_ids_and_counts_only(scene: Scene, statements: list[str]) -> None:
    authority, pin = _reports(scene), _pin(scene)
    statements.clear()
    rows = authority.status(ReportRequest("status", scene.callers["root-admin"], (), pin))
    with scene.store.read() as s:
        ids = list(s.scalars(select(m.Client.id).order_by(m.Client.id)))
        secrets = s.scalar(select(func.count()).select_from(m.Secret))
    assert [c.id for c in rows.clients] == ids and rows.counts is not None
    assert (rows.counts.clients, rows.counts.secrets) == (len(ids), secrets)
    assert rows.sealed_keys and {k.kind for k in rows.sealed_keys} == {"recovery"}  # copies, never a key
    text = repr(rows) + "".join(repr(c) for c in rows.clients)
    assert "acme" not in text and "globex" not in text
    for client in rows.clients:
        assert b"acme" not in client.slug_blob and b"globex" not in client.slug_blob
    # set-based: a handful of statements, none per client
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) < 20
    held = tuple((k.record.client_id, k.record.version) for k in rows.sealed_keys)
    again = authority.status(ReportRequest("status", scene.callers["root-admin"], held, pin))
    assert again.sealed_keys == ()  # what the keyholder holds is not sent again
