"""The keyholder of the expired-grant sweep against a DBA and a compromised authority.

A real ``grants.maintain`` of the admin runs through the real authority, or through a
transport that changes the draft (shown inside the authority's unit of work) or the
answer. The admin signs the revocation of a grant only if its own checks say it has
ended: a DBA who moves a live grant's end into the past, or an authority whose clock is
ahead, must not get the admin's signature on the revocation of a grant that is live.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select, update

from vault.authority.grant_requests import SweepRows, SweepSigned, revocation_fields
from vault.crypto import signing
from vault.crypto.labels import LABEL_SIG_GRANT_REVOCATION
from vault.errors import Locked, UntrustedRecord
from vault.service import clientparts
from vault.storage import models as m
from vault.storage.rows import GrantRow

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _same(value: Any) -> Any:
    return value


class TamperingTransport:
    """Forwards to the real transport, the draft through ``draft``, the answer through ``answer``;
    notes what the keyholder signed."""

    def __init__(
        self,
        real: Any,
        draft: Callable[[SweepRows], SweepRows] = _same,
        answer: Callable[[SweepRows], SweepRows] = _same,
    ) -> None:
        self.real, self.draft, self.answer = real, draft, answer
        self.signed: list[SweepSigned] = []

    def sweep(self, request: Any, seal: Any) -> SweepRows:
        change, signed = self.draft, self.signed

        class Seal:
            def sign(self, draft: SweepRows) -> SweepSigned:
                signed.append(seal.sign(change(draft)))
                return signed[-1]

        return self.answer(self.real.sweep(request, Seal()))  # type: ignore[no-any-return]


def _use(team: Any, transport: TamperingTransport, authority_clock: Any = None) -> TamperingTransport:
    admin = team.admin
    keyholder = clientparts.grant_sweep_keyholder(admin.core, admin.trust, admin.journal)
    if authority_clock is not None:
        keyholder.transport.authority.clock = authority_clock  # type: ignore[attr-defined]
    transport.real = keyholder.transport
    keyholder.transport = transport
    admin.ledger._sweeper = keyholder
    return transport


def _grant(team: Any, name: str) -> m.Grant:
    with team.admin.store.read() as s:
        engineer = s.scalars(select(m.Engineer).where(m.Engineer.name == name)).one()
        return s.scalars(select(m.Grant).where(m.Grant.engineer_id == engineer.id)).one()


def _copies(team: Any) -> int:
    with team.admin.store.read() as s:
        return int(
            s.scalar(
                select(func.count()).select_from(m.ClientKeySeal).where(m.ClientKeySeal.recipient_kind == "engineer")
            )
            or 0
        )


def _state(team: Any) -> tuple[Any, ...]:
    with team.admin.store.read() as s:
        grants = s.execute(select(m.Grant.id, m.Grant.until, m.Grant.revoked_at).order_by(m.Grant.id)).all()
        events = s.scalar(select(func.count()).select_from(m.AuditEvent))
    return tuple(grants), _copies(team), events


@pytest.fixture
def acme(team: Any) -> Any:
    team.admin.clients.add("acme", "Acme Ltd")
    team.engineer("alice")
    return team


def test_an_ended_grant_is_revoked_under_the_admin_s_signature(acme: Any) -> None:
    """The control: the sweep as before the split (the acting admin signs the revocation)."""
    transport = _use(acme, TamperingTransport(None))
    acme.admin.grants.grant("alice", "acme", until=acme.clock() + dt.timedelta(minutes=5))
    acme.clock.advance(minutes=10)
    assert acme.admin.grants.maintain() == 1
    row = _grant(acme, "alice")
    with acme.admin.store.read() as s:
        me = s.get(m.Engineer, row.revoked_by)
        assert me is not None and me.name == acme.admin.engineer_name and me.signing_public is not None
    plain = GrantRow(*(getattr(row, f) for f in GrantRow._fields))
    signing.verify(
        me.signing_public,
        row.revocation,
        LABEL_SIG_GRANT_REVOCATION,
        *revocation_fields(acme.admin.vault_id(), plain),
        what="the revocation",
    )
    assert [len(s.revocations) for s in transport.signed] == [1] and _copies(acme) == 0
    assert acme.admin.grants.maintain() == 0


def test_a_dba_forged_expiry_gets_no_signed_revocation_of_a_live_grant(acme: Any) -> None:
    """The DBA moves alice's live grant's end into the past. Before the split the admin's
    session signed its revocation; now the grant's signature (covering its end) no longer
    verifies, so the keyholder signs nothing for it."""
    transport = _use(acme, TamperingTransport(None))
    acme.admin.grants.grant("alice", "acme")
    grant_id = _grant(acme, "alice").id
    with acme.admin.store.transaction() as s:
        s.execute(update(m.Grant).where(m.Grant.id == grant_id).values(until=int(acme.clock().timestamp()) - 60))
    acme.admin.grants.maintain()
    (signed,) = transport.signed
    assert signed.revocations == (), "the admin signed the revocation of a grant that has not ended"
    row = _grant(acme, "alice")
    assert (row.revoked_at, row.revoked_by, row.revocation) == (None, None, None)
    newest = acme.admin.audit.log()[-1]
    assert newest.action == "grants-expired" and newest.details is not None
    assert newest.details["grants"] == 0 and newest.details["not_verified"] == 1
    events = _state(acme)[2]
    assert acme.admin.grants.maintain() == 0 and _state(acme)[2] == events, "nothing done: no event each time"
    assert _grant(acme, "alice").revocation is None


def test_an_authority_clock_ahead_gets_no_signed_revocation_of_a_live_grant(acme: Any) -> None:
    """The authority's clock runs ahead (within the slack), so it names alice's grant as ended:
    by the keyholder's clock it has not, so it is neither revoked nor its copies deleted."""
    transport = _use(acme, TamperingTransport(None), authority_clock=lambda: acme.clock() + dt.timedelta(seconds=200))
    acme.admin.grants.grant("alice", "acme", until=acme.clock() + dt.timedelta(seconds=100))
    acme.admin.grants.maintain()
    (signed,) = transport.signed
    assert signed == SweepSigned((), ())
    assert _grant(acme, "alice").revoked_at is None and _copies(acme) == 1


def test_revocations_dated_away_from_the_keyholder_s_clock_are_refused(acme: Any) -> None:
    acme.admin.grants.grant("alice", "acme", until=acme.clock() + dt.timedelta(minutes=5))
    transport = _use(acme, TamperingTransport(None), authority_clock=lambda: acme.clock() + dt.timedelta(hours=1))
    before = _state(acme)
    with pytest.raises(UntrustedRecord, match="dates the revocations"):
        acme.admin.grants.maintain()
    assert transport.signed == [] and _state(acme) == before


def _other_engineer(draft: SweepRows) -> SweepRows:
    ledger = draft.ledgers[0]
    moved = tuple(g._replace(engineer_id=g.engineer_id + 1) for g in ledger.grants)
    return dataclasses.replace(draft, ledgers=(dataclasses.replace(ledger, grants=moved),))


DRAFTS: dict[str, Callable[[SweepRows], SweepRows]] = {
    "a grant of another engineer in the ledger": _other_engineer,
    "a ledger named twice": lambda d: dataclasses.replace(d, ledgers=d.ledgers * 2),
    "a grant without its signer": lambda d: dataclasses.replace(
        d, ledgers=(dataclasses.replace(d.ledgers[0], signers=()),)
    ),
    "the caller's row is the engineer's": lambda d: dataclasses.replace(d, me=d.ledgers[0].engineer),
    "another vault": lambda d: dataclasses.replace(d, vault_id=b"\x00" * 16),
}


@pytest.mark.parametrize("case", list(DRAFTS))
def test_a_tampered_draft_is_refused_and_nothing_is_signed_or_written(acme: Any, case: str) -> None:
    acme.admin.grants.grant("alice", "acme", until=acme.clock() + dt.timedelta(minutes=5))
    acme.clock.advance(minutes=10)
    transport = _use(acme, TamperingTransport(None, draft=DRAFTS[case]))
    before = _state(acme)
    with pytest.raises((UntrustedRecord, Locked)):
        acme.admin.grants.maintain()
    assert transport.signed == [] and _state(acme) == before


def _revocation_cleared(answer: SweepRows) -> SweepRows:
    ledger = answer.ledgers[0]
    cleared = tuple(g._replace(revocation=None) for g in ledger.grants)
    return dataclasses.replace(answer, ledgers=(dataclasses.replace(ledger, grants=cleared),))


ANSWERS: dict[str, Callable[[SweepRows], SweepRows]] = {
    "a revocation not stored": _revocation_cleared,
    "copies left behind": lambda a: dataclasses.replace(a, ledgers=(dataclasses.replace(a.ledgers[0], copies=(1,)),)),
    "no event": lambda a: dataclasses.replace(a, seq=0),
    "a ledger left out": lambda a: dataclasses.replace(a, ledgers=()),
}


@pytest.mark.parametrize("case", list(ANSWERS))
def test_a_sweep_the_authority_claims_but_did_not_store_is_not_reported_done(acme: Any, case: str) -> None:
    acme.admin.grants.grant("alice", "acme", until=acme.clock() + dt.timedelta(minutes=5))
    acme.clock.advance(minutes=10)
    _use(acme, TamperingTransport(None, answer=ANSWERS[case]))
    with pytest.raises(UntrustedRecord):
        acme.admin.grants.maintain()
