"""The grants' keyholder against a compromised authority.

Each case runs a real ``grants.grant`` / ``grants.revoke`` of the admin whose transport
hands the draft (shown to the keyholder inside the authority's unit of work) or the answer
through a function that changes it. A changed draft must be refused before anything is
signed or sealed, and nothing written; a changed answer (a revoke or grant the authority
says it made but did not store) must not be reported as done.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from vault.authority.grant_requests import GrantRows
from vault.crypto import sealing, signing
from vault.crypto.labels import LABEL_SIG_GRANT_REVOCATION
from vault.errors import LookupMismatch, UntrustedRecord, VaultError
from vault.keyholder.grants import revocation_fields
from vault.storage import models as m
from vault.storage.rows import GrantRow

Tamper = Callable[[GrantRows], GrantRows]
# The keyholder's checks are the same on either engine (the authority's tests run on both):
# SQLite only, to keep the suite fast.
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _same(r: GrantRows) -> GrantRows:
    return r


class TamperingTransport:
    """Forwards to the real transport; the draft goes through ``draft``, the answer through ``answer``."""

    def __init__(self, real: Any, draft: Tamper = _same, answer: Tamper = _same) -> None:
        self.real, self.draft, self.answer = real, draft, answer
        self.asked: list[str] = []

    def _seal(self, seal: Any) -> Any:
        change, asked = self.draft, self.asked

        class Seal:
            def admit(self, draft: GrantRows) -> None:
                seal.admit(change(draft))

            def revocations(self, draft: GrantRows) -> Any:
                asked.append("revocations")
                return seal.revocations(change(draft))

            def sign_grant(self, draft: GrantRows, grant: Any) -> Any:
                asked.append("sign")
                return seal.sign_grant(change(draft), grant)

            def seal_copies(self, draft: GrantRows) -> Any:
                asked.append("seal")
                return seal.seal_copies(change(draft))

            def private_details(self, client_id: int, action: str) -> Any:
                return seal.private_details(client_id, action)

        return Seal()

    def grant(self, request: Any, seal: Any) -> GrantRows:
        return self.answer(self.real.grant(request, self._seal(seal)))

    def revoke(self, request: Any, seal: Any) -> GrantRows:
        return self.answer(self.real.revoke(request, self._seal(seal)))


@pytest.fixture
def admin(team: Any) -> Any:
    team.admin.clients.add("acme", "Acme Ltd")
    team.admin.clients.add("globex", "Globex Corp")
    team.engineer("alice")
    team.engineer("bob")
    team.admin.grants.grant("alice", "acme")
    return team.admin


def _use(admin: Any, transport: TamperingTransport) -> TamperingTransport:
    keyholder = admin.grants._grant_keyholder()
    transport.real = keyholder.transport
    keyholder.transport = transport
    return transport


def _state(admin: Any) -> tuple[Any, ...]:
    with admin.store.transaction() as s:
        grants = s.execute(select(m.Grant.id, m.Grant.revoked_at).order_by(m.Grant.id)).all()
        seals = s.scalar(select(func.count()).select_from(m.ClientKeySeal))
        events = s.scalar(select(func.count()).select_from(m.AuditEvent))
    return tuple(grants), seals, events


def test_the_untampered_grant_and_revoke_are_the_control(admin: Any) -> None:
    transport = _use(admin, TamperingTransport(None))
    assert admin.grants.grant("bob", "acme").state == "active"
    assert admin.grants.revoke("bob", "acme") == 1
    assert transport.asked == ["revocations", "sign", "seal", "revocations"]


def _bob(admin: Any) -> m.Engineer:
    with admin.store.transaction() as s:
        row = s.scalars(select(m.Engineer).where(m.Engineer.name == "bob")).one()
        s.expunge(row)
        return row


DRAFTS: dict[str, tuple[Tamper, type[VaultError]]] = {
    # an insider swapped bob's public key for one they hold: nothing may be sealed to it
    "the engineer's sealing key swapped": (
        lambda r: dataclasses.replace(
            r, engineer=r.engineer._replace(sealing_public=sealing.KeyPair(os.urandom(32)).public)
        ),
        UntrustedRecord,
    ),
    "another engineer than the one named": (
        lambda r: dataclasses.replace(r, engineer=r.engineer._replace(name="mallory")),
        UntrustedRecord,
    ),
    "another client than the slug's": (lambda r: dataclasses.replace(r, client_id=r.client_id + 1), LookupMismatch),
    "the new grant for another engineer": (
        lambda r: (
            dataclasses.replace(r, new_grant=r.new_grant._replace(engineer_id=r.new_grant.engineer_id + 7))
            if r.new_grant
            else r
        ),
        UntrustedRecord,
    ),
    "the new grant with another end": (
        lambda r: dataclasses.replace(r, new_grant=r.new_grant._replace(until=1)) if r.new_grant else r,
        UntrustedRecord,
    ),
    # a grant dated by the authority where the admin never signed one: backdated (to sit before
    # a revocation in the ledger's order) or in the future
    "the new grant backdated ten days": (
        lambda r: (
            dataclasses.replace(r, new_grant=r.new_grant._replace(signed_at=r.new_grant.signed_at - 864_000))
            if r.new_grant
            else r
        ),
        UntrustedRecord,
    ),
    "the new grant dated an hour ahead": (
        lambda r: (
            dataclasses.replace(r, new_grant=r.new_grant._replace(signed_at=r.new_grant.signed_at + 3600))
            if r.new_grant
            else r
        ),
        UntrustedRecord,
    ),
    "a client-key record with a forged fingerprint": (
        lambda r: dataclasses.replace(
            r,
            client_keys=tuple(
                dataclasses.replace(k, record=dataclasses.replace(k.record, fingerprint=b"\x00" * 32))
                for k in r.client_keys
            ),
        ),
        UntrustedRecord,
    ),
}


@pytest.mark.parametrize("case", list(DRAFTS))
def test_a_tampered_grant_draft_is_refused_before_anything_is_signed_or_sealed(admin: Any, case: str) -> None:
    change, error = DRAFTS[case]
    admin.keyholder.client_keys.clear()  # every client key must come, verified, with the draft
    transport = _use(admin, TamperingTransport(None, draft=change))
    before = _state(admin)
    with pytest.raises(error):
        admin.grants.grant("bob", "acme")
    assert transport.asked == [], "the keyholder signed or sealed for a draft it should have refused"
    assert _state(admin) == before


def test_a_revoke_draft_naming_another_engineer_s_grant_is_refused(admin: Any) -> None:
    admin.grants.grant("bob", "globex")
    with admin.store.transaction() as s:
        bob_grant = s.scalars(select(m.Grant).where(m.Grant.client_id != 1)).one()
        row = tuple(getattr(bob_grant, f) for f in ("id", "engineer_id", "client_id"))
    transport = _use(
        admin,
        TamperingTransport(
            None,
            draft=lambda r: dataclasses.replace(
                r, grants=(*r.grants, r.grants[0]._replace(id=row[0], engineer_id=row[1], client_id=row[2]))
            ),
        ),
    )
    before = _state(admin)
    with pytest.raises(UntrustedRecord):
        admin.grants.revoke("alice", "acme")
    assert transport.asked == [] and _state(admin) == before


ANSWERS: dict[str, Tamper] = {
    "the rows left unrevoked": lambda r: dataclasses.replace(
        r, grants=tuple(g._replace(revoked_at=None, revoked_by=None, revocation=None) for g in r.grants)
    ),
    "a revocation not this admin's": lambda r: dataclasses.replace(
        r, grants=tuple(g._replace(revocation=b"\x00" * 64) for g in r.grants)
    ),
    "a grant left out": lambda r: dataclasses.replace(r, grants=()),
    "the key copies left behind": lambda r: dataclasses.replace(r, copies=(1,)),
}


@pytest.mark.parametrize("case", list(ANSWERS))
def test_a_revoke_the_authority_claims_but_did_not_store_is_not_reported_done(admin: Any, case: str) -> None:
    _use(admin, TamperingTransport(None, answer=ANSWERS[case]))
    with pytest.raises(UntrustedRecord):
        admin.grants.revoke("alice", "acme")


GRANT_ANSWERS: dict[str, Tamper] = {
    "the grant unsigned": lambda r: (
        dataclasses.replace(r, new_grant=r.new_grant._replace(signature=None)) if r.new_grant else r
    ),
    "the grant under another event": lambda r: dataclasses.replace(r, seq=r.seq + 1),
    "no copy sealed to the engineer": lambda r: dataclasses.replace(r, copies=()),
    "no new grant at all": lambda r: dataclasses.replace(r, new_grant=None),
}


@pytest.mark.parametrize("case", list(GRANT_ANSWERS))
def test_a_grant_the_authority_claims_but_did_not_store_is_not_reported_done(admin: Any, case: str) -> None:
    _use(admin, TamperingTransport(None, answer=GRANT_ANSWERS[case]))
    with pytest.raises(UntrustedRecord):
        admin.grants.grant("bob", "acme")


def test_a_revocation_signed_here_verifies_under_the_layout_trust_signs(admin: Any) -> None:
    """One layout for a revocation's signature: the keyholder's (``revocation_fields``) is the
    one ``Trust.revoke_grant`` signs (the sweep's keyholder signs the same ``revocation_fields``)."""
    assert admin.grants.revoke("alice", "acme") == 1
    with admin.store.transaction() as s:
        row = s.scalars(select(m.Grant)).one()
        me = s.get(m.Engineer, row.revoked_by)
        plain = GrantRow(*(getattr(row, f) for f in GrantRow._fields))
        assert revocation_fields(admin.vault_id(), plain) == admin.trust._revocation_fields(s, row)
        assert me is not None and me.signing_public is not None
        signing.verify(
            me.signing_public,
            row.revocation,
            LABEL_SIG_GRANT_REVOCATION,
            *revocation_fields(admin.vault_id(), plain),
            what="the revocation",
        )


def test_the_grant_s_reason_never_crosses_to_the_authority_in_clear(admin: Any) -> None:
    """A DBA or an engineer who reads the requests the authority is sent (logs of the team
    server, a compromised authority) learns that a grant has a reason, never its text; the
    reason is in the event's details all the same, sealed, and opens for the admin."""
    reason = "ticket-SECRET-REASON-4711"
    sent: list[Any] = []

    class Spy(TamperingTransport):
        def grant(self, request: Any, seal: Any) -> GrantRows:
            sent.append(request)
            return super().grant(request, seal)

    _use(admin, Spy(None))
    admin.grants.grant("bob", "acme", reason=reason)
    (request,) = sent
    assert request.has_reason is True
    seen = repr(request) + repr(vars(request)) + repr(dataclasses.astuple(request))
    assert reason not in seen and "SECRET" not in seen
    with admin.store.transaction() as s:
        stored = s.scalars(
            select(m.AuditEvent).where(m.AuditEvent.action == "grant").order_by(m.AuditEvent.seq.desc())
        ).first()
        assert (
            stored is not None
            and reason.encode() not in (stored.details_blob or b"") + (stored.details_json or "").encode()
        )
    (event,) = [e for e in admin.audit.log(client="acme") if e.action == "grant" and e.details["engineer"] == "bob"]
    assert event.details["reason"] == reason and event.seq == stored.seq


def test_an_unknown_engineer_is_reported_before_an_unknown_client(admin: Any) -> None:
    """The error precedence of the one-process vault: the engineer first, then whether they
    are an admin, then the client (a typo in both names reports the engineer's)."""
    from vault.errors import InvalidInput, NotFound

    before = _state(admin)
    with pytest.raises(NotFound, match="no engineer named 'nobody'"):
        admin.grants.grant("nobody", "nonexistent")
    with pytest.raises(NotFound, match="no engineer named 'nobody'"):
        admin.grants.revoke("nobody", "nonexistent")
    with pytest.raises(InvalidInput, match="is an admin and can already read every client"):
        admin.grants.grant(admin.engineer_name, "nonexistent")
    with pytest.raises(NotFound, match="no client 'nonexistent'"):
        admin.grants.grant("bob", "nonexistent")
    with pytest.raises(NotFound, match="no client 'nonexistent'"):
        admin.grants.revoke("bob", "nonexistent")
    assert _state(admin) == before
