"""The authority of the expired-grant sweep (``grants.maintain``), run with no key of its own.

``GrantSweepAuthority`` is driven alone with the stand-in checks, a recorder, and a seal
standing in for the admin's keyholder (it signs with the admin's signing key what a test
tells it to). It must refuse anyone but an admin before any grant row is read, refuse
ill-typed request fields before any SQL, ask the seal nothing when no grant has expired,
and store only revocations that are the caller's signatures over rows of its draft that
are unrevoked and past their end, and delete copies only of the ledgers it read.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from standins import Checks, recorded_statements

from vault.authority.grant_requests import SweepRequest, SweepRows, SweepSigned, revocation_fields
from vault.authority.grant_sweep import GrantSweepAuthority
from vault.authority.requests import Caller
from vault.crypto.labels import LABEL_SIG_GRANT_REVOCATION
from vault.errors import AccessDenied, InvalidInput
from vault.storage import models as m
from vault.storage.rows import ROLE_ADMIN, GrantRow

READS_A_GRANT = re.compile(r"\buntil\b|\bclient_key_seals\b", re.IGNORECASE)
PIN = b"\x00" * 32

Decide = Callable[[SweepRows, Any], SweepSigned]


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def append(self, s: Any, action: str, *, client_id: Any, public: Any = None) -> int:
        self.events.append((action, public))
        return 5000 + len(self.events)


def _sign(draft: SweepRows, key: Any, grant: GrantRow) -> bytes:
    row = grant._replace(revoked_at=draft.revoked_at, revoked_by=draft.me.id)
    return bytes(key.sign(LABEL_SIG_GRANT_REVOCATION, *revocation_fields(draft.vault_id, row)))


def _everything(draft: SweepRows, key: Any) -> SweepSigned:
    """What an honest keyholder signs when every row verifies: each row past its end, every ledger."""
    now = int(draft.revoked_at.timestamp())
    rows = [g for ledger in draft.ledgers for g in ledger.grants if g.until is not None and g.until <= now]
    return SweepSigned(
        tuple((g.id, _sign(draft, key, g)) for g in rows if g.revoked_at is None),
        tuple((ledger.engineer_id, ledger.client_id) for ledger in draft.ledgers),
    )


class Seal:
    def __init__(self, key: Any, decide: Decide = _everything) -> None:
        self.key, self.decide = key, decide
        self.drafts: list[SweepRows] = []

    def sign(self, draft: SweepRows) -> SweepSigned:
        self.drafts.append(draft)
        return self.decide(draft, self.key)


def _callers(team: Any) -> dict[str, Caller]:
    with team.admin.store.read() as s:
        rows = s.scalars(select(m.Engineer)).all()
        out = {e.name: Caller(e.id, e.key_generation) for e in rows}
        out["admin"] = next(Caller(e.id, e.key_generation) for e in rows if e.role == ROLE_ADMIN)
    return out


def _state(team: Any) -> tuple[Any, ...]:
    with team.admin.store.read() as s:
        grants = s.execute(select(m.Grant.id, m.Grant.revoked_at, m.Grant.revocation).order_by(m.Grant.id)).all()
        seals = s.scalar(select(func.count()).select_from(m.ClientKeySeal))
        events = s.scalar(select(func.count()).select_from(m.AuditEvent))
    return tuple(grants), seals, events


@pytest.fixture
def expired(team: Any) -> Any:
    """alice's grant for acme ended five minutes ago; bob's for acme is live (the sessions last 15 minutes)."""
    team.admin.clients.add("acme", "Acme Ltd")
    team.engineer("alice")
    team.engineer("bob")
    team.admin.grants.grant("alice", "acme", until=team.clock() + dt.timedelta(minutes=5))
    team.admin.grants.grant("bob", "acme")
    team.clock.advance(minutes=10)
    return team


def _authority(team: Any) -> tuple[GrantSweepAuthority, Recorder]:
    recorder = Recorder()
    return GrantSweepAuthority(team.admin.store, Checks(None), recorder, team.clock), recorder


@pytest.fixture
def statements(team: Any) -> Iterator[list[str]]:
    with recorded_statements(team.admin.store.engine) as seen:
        yield seen


def test_an_engineer_is_refused_before_any_grant_row_is_read(expired: Any, statements: list[str]) -> None:
    before, (authority, recorder) = _state(expired), _authority(expired)
    seal = Seal(expired.admin.keyholder.my_signing_key())
    statements.clear()
    with pytest.raises(AccessDenied, match="not an admin"):
        authority.sweep(SweepRequest(_callers(expired)["alice"], PIN), seal)
    assert statements, "the authority read nothing"
    # the caller's own read (``authorise``) joins the grants of client 0, which no client is
    reads = [st for st in statements if READS_A_GRANT.search(st) and "vault_info" not in st]
    assert not reads, reads
    assert seal.drafts == [] and recorder.events == [] and _state(expired) == before


FORGED = {
    "not a sweep request": lambda c: ("grants-expired", c),
    "caller id zero": lambda c: SweepRequest(Caller(0, 0), PIN),
    "short pin": lambda c: SweepRequest(c, b"\x00"),
    # another event in the admin's name: a sweep journalled as a revoke of every grant
    "action revoke": lambda c: dataclasses.replace(SweepRequest(c, PIN), action="revoke"),
}


@pytest.mark.parametrize("case", list(FORGED))
def test_a_forged_request_field_is_refused_before_any_sql(expired: Any, statements: list[str], case: str) -> None:
    request = FORGED[case](_callers(expired)["admin"])
    authority, recorder = _authority(expired)
    seal = Seal(expired.admin.keyholder.my_signing_key())
    statements.clear()
    with pytest.raises(InvalidInput):
        authority.sweep(request, seal)
    assert statements == [] and seal.drafts == [] and recorder.events == []


def test_with_nothing_expired_the_keyholder_is_asked_nothing(team: Any) -> None:
    team.admin.clients.add("acme", "Acme Ltd")
    team.engineer("alice")
    team.admin.grants.grant("alice", "acme")
    authority, recorder = _authority(team)
    seal = Seal(team.admin.keyholder.my_signing_key())
    answer = authority.sweep(SweepRequest(_callers(team)["admin"], PIN), seal)
    assert answer.seq == 0 and answer.ledgers == () and seal.drafts == [] and recorder.events == []


def test_the_sweep_stores_the_revocations_signed_and_deletes_the_copies_named(expired: Any) -> None:
    authority, recorder = _authority(expired)
    seal = Seal(expired.admin.keyholder.my_signing_key())
    admin = _callers(expired)["admin"]
    answer = authority.sweep(SweepRequest(admin, PIN), seal)
    (draft,) = seal.drafts
    (ledger,) = draft.ledgers
    assert ledger.engineer_id == _callers(expired)["alice"].engineer_id and ledger.copies == (1,)
    assert [g.revoked_at for g in ledger.grants] == [None], "the draft shows the ledger before the change"
    assert recorder.events == [("grants-expired", {"grants": 1, "sealed_copies_deleted": 1})]
    (after,) = answer.ledgers
    assert answer.seq == 5001 and after.copies == ()
    assert [(g.revoked_by, g.revocation is not None) for g in after.grants] == [(admin.engineer_id, True)]
    with expired.admin.store.read() as s:
        bob = _callers(expired)["bob"].engineer_id
        assert s.get(m.ClientKeySeal, (ledger.client_id, 1, "engineer", bob)) is not None, "bob's live grant stays"


def _live_grant_too(draft: SweepRows, key: Any, team: Any) -> SweepSigned:
    """A keyholder that signs the revocation of bob's live grant as well (not in the draft)."""
    with team.admin.store.read() as s:
        row = s.scalars(select(m.Grant).where(m.Grant.revoked_at.is_(None)).order_by(m.Grant.id.desc())).first()
        live = GrantRow(*(getattr(row, f) for f in GrantRow._fields))
    signed = _everything(draft, key)
    return dataclasses.replace(signed, revocations=(*signed.revocations, (live.id, _sign(draft, key, live))))


FORGED_SEALS: dict[str, Callable[[Any], Decide]] = {
    "a revocation signed by another key": lambda team: (
        lambda d, k: SweepSigned(tuple((g.id, b"\x11" * 64) for ledger in d.ledgers for g in ledger.grants), ())
    ),
    "the revocation of a live grant outside the draft": lambda team: lambda d, k: _live_grant_too(d, k, team),
    "a grant revoked twice": lambda team: (
        lambda d, k: dataclasses.replace(_everything(d, k), revocations=_everything(d, k).revocations * 2)
    ),
    "copies of a ledger the sweep did not read": lambda team: (
        lambda d, k: dataclasses.replace(_everything(d, k), drop=((999, 999),))
    ),
    "revocations not a tuple": lambda team: lambda d, k: SweepSigned([], ()),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("case", list(FORGED_SEALS))
def test_a_forged_sweep_is_refused_and_nothing_is_written(expired: Any, case: str) -> None:
    before = _state(expired)
    authority, recorder = _authority(expired)
    seal = Seal(expired.admin.keyholder.my_signing_key(), FORGED_SEALS[case](expired))
    with pytest.raises(InvalidInput):
        authority.sweep(SweepRequest(_callers(expired)["admin"], PIN), seal)
    assert len(seal.drafts) == 1 and recorder.events == [] and _state(expired) == before
