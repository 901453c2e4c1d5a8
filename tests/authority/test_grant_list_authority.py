"""The authority of ``grants.list``, run with no key material.

``GrantListAuthority`` is driven alone with the stand-in checks (rows only). It must refuse
ill-typed request fields before any SQL, refuse a caller whose session no longer matches
(another key generation) before any grant row is read, show an engineer only their own
rows whatever the request names, read set-based (a statement per kind of row, not per
grant), and write nothing.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from standins import Checks, recorded_statements

from vault.authority.grant_list import GrantListAuthority
from vault.authority.grant_requests import NO_ENGINEER, GrantListRequest
from vault.authority.requests import Caller
from vault.errors import InvalidInput, Locked, NotFound
from vault.storage import models as m
from vault.storage.rows import ROLE_ADMIN

READS_A_GRANT = re.compile(r"\bFROM grants\b|\bclient_key_seals\b|\bclients\b", re.IGNORECASE)
PIN = b"\x00" * 32


@pytest.fixture(scope="module")
def scene(module_team: Any) -> tuple[Any, dict[str, Any]]:
    team = module_team
    team.admin.clients.add("acme", "Acme Ltd")
    team.admin.clients.add("globex", "Globex Corp")
    team.engineer("alice")
    team.engineer("bob")
    for name, slug in (("alice", "acme"), ("alice", "globex"), ("bob", "acme")):
        team.admin.grants.grant(name, slug)
    with team.admin.store.read() as s:
        rows = s.scalars(select(m.Engineer)).all()
        ids: dict[str, Any] = {e.name: Caller(e.id, e.key_generation) for e in rows}
        ids["admin"] = next(Caller(e.id, e.key_generation) for e in rows if e.role == ROLE_ADMIN)
        ids["acme"] = s.scalars(select(m.Client.id).order_by(m.Client.id)).first()
    return team, ids


@pytest.fixture
def statements(scene: tuple[Any, dict[str, Any]]) -> Iterator[list[str]]:
    engine = scene[0].admin.store.engine
    with recorded_statements(engine) as seen:
        yield seen


def _authority(team: Any) -> GrantListAuthority:
    return GrantListAuthority(team.admin.store, Checks(None), team.clock)


def _events(team: Any) -> int:
    with team.admin.store.read() as s:
        return int(s.scalar(select(func.count()).select_from(m.AuditEvent)) or 0)


FORGED = {
    "not a list request": lambda i: ("grant-list", i["alice"]),
    "caller id zero": lambda i: GrantListRequest(Caller(0, 0), None, None, (), PIN),
    "engineer not a name": lambda i: GrantListRequest(i["admin"], 7, None, (), PIN),  # type: ignore[arg-type]
    "engineer name not valid": lambda i: GrantListRequest(i["admin"], "a b/c", None, (), PIN),
    "client by its slug": lambda i: GrantListRequest(i["admin"], None, "acme", (), PIN),  # type: ignore[arg-type]
    "client id zero": lambda i: GrantListRequest(i["admin"], None, 0, (), PIN),
    "known keys not pairs": lambda i: GrantListRequest(i["admin"], None, None, ((1,),), PIN),  # type: ignore[arg-type]
    "short pin": lambda i: GrantListRequest(i["admin"], None, None, (), b"\x00"),
    "action revoke": lambda i: dataclasses.replace(GrantListRequest(i["admin"], None, None, (), PIN), action="revoke"),
}


@pytest.mark.parametrize("case", list(FORGED))
def test_a_forged_request_field_is_refused_before_any_sql(
    scene: tuple[Any, dict[str, Any]], statements: list[str], case: str
) -> None:
    team, ids = scene
    statements.clear()
    with pytest.raises(InvalidInput):
        _authority(team).list(FORGED[case](ids))
    assert statements == []


def test_a_stale_session_is_refused_before_any_grant_row_is_read(
    scene: tuple[Any, dict[str, Any]], statements: list[str]
) -> None:
    """The caller's key generation has changed (rotated keys, or a replayed old request)."""
    team, ids = scene
    alice = ids["alice"]
    statements.clear()
    with pytest.raises(Locked):
        _authority(team).list(
            GrantListRequest(Caller(alice.engineer_id, alice.key_generation + 1), None, None, (), PIN)
        )
    reads = [st for st in statements if READS_A_GRANT.search(st)]
    assert statements and not reads, reads


def test_an_engineer_is_shown_only_their_own_grants_whatever_the_request_names(
    scene: tuple[Any, dict[str, Any]], statements: list[str]
) -> None:
    team, ids = scene
    before = _events(team)
    statements.clear()
    mine = _authority(team).list(GrantListRequest(ids["alice"], None, None, (), PIN))
    assert {g.row.engineer_id for g in mine.grants} == {ids["alice"].engineer_id} and len(mine.grants) == 2
    assert len(statements) < 15, "set-based: a statement per kind of row, not one per grant"
    bobs = _authority(team).list(GrantListRequest(ids["alice"], "bob", None, (), PIN))
    assert bobs.grants == () and bobs.engineers == ()
    one = _authority(team).list(GrantListRequest(ids["alice"], None, ids["acme"], (), PIN))
    assert [(g.row.engineer_id, g.row.client_id) for g in one.grants] == [(ids["alice"].engineer_id, ids["acme"])]
    assert [k.kind for k in mine.sealed_keys] == ["engineer"] * len(mine.sealed_keys)
    assert _events(team) == before, "a listing writes no event"


def test_an_admin_is_shown_every_grant_and_the_recovery_copies(scene: tuple[Any, dict[str, Any]]) -> None:
    team, ids = scene
    rows = _authority(team).list(GrantListRequest(ids["admin"], None, None, (), PIN))
    assert len(rows.grants) == 3 and {e.name for e in rows.engineers} >= {"alice", "bob"}
    assert rows.sealed_keys and {k.kind for k in rows.sealed_keys} == {"recovery"}
    with pytest.raises(NotFound, match=NO_ENGINEER):
        _authority(team).list(GrantListRequest(ids["admin"], "nobody", None, (), PIN))
