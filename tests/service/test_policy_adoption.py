"""Adopting stored policies after the upgrade to signed policies (revision 0008).

An upgraded vault's policies carry no signature, so each reads as the strict policy until
an admin signs it. ``unsigned_policies`` lists them as stored; ``adopt_policies`` signs
exactly the list the admin reviewed, and nothing if a row changed in between (a database
writer relaxing a policy after the review gets nothing signed).
"""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from vault.errors import AccessDenied, IntegrityError
from vault.storage import models as m

REASON = "T-1 adoption test"


@pytest.fixture
def upgraded(team, db):  # type: ignore[no-untyped-def]
    """Two clients whose policies lost their signatures, as after the upgrade to 0008."""
    team.admin.clients.add("acme", "Acme")
    team.admin.clients.add("globex", "Globex")
    team.admin.policies.set("globex", reason_required=False, exclusive=False, rotate_after_checkout=False)
    team.admin.secrets.add("globex/fw", password="globex-pw")
    db.run(update(m.ClientPolicy).values(signature=None, signed_by=None, signed_at=None))
    return team, db


def test_unsigned_policies_are_listed_as_stored_and_adopted_as_shown(upgraded):
    team, db = upgraded
    admin = team.admin
    assert admin.policies.get("globex").exclusive  # unsigned: the strict policy applies
    pending = admin.policies.unsigned()
    assert [(p.client, p.signed) for p in pending] == [("acme", False), ("globex", False)]
    globex = pending[1]
    assert (globex.reason_required, globex.exclusive, globex.rotate_after_checkout) == (False, False, False)
    before = db.scalar(select(m.AuditHead.seq))
    signed = admin.policies.adopt(pending)
    assert [p.client for p in signed] == ["acme", "globex"] and all(p.signed for p in signed)
    policy = admin.policies.get("globex")
    assert (policy.signed, policy.reason_required, policy.exclusive) == (True, False, False)
    assert admin.checkouts.reveal("globex/fw") == "globex-pw"  # no reason needed: the adopted policy applies
    events = db.all(select(m.AuditEvent.action, m.AuditEvent.client_id).where(m.AuditEvent.seq > before))
    assert [a for a, _ in events][:2] == ["policy-set", "policy-set"]
    assert admin.policies.unsigned() == []
    assert admin.audit.verify().ok


def test_a_row_relaxed_after_the_review_gets_nothing_signed(upgraded):
    team, db = upgraded
    pending = team.admin.policies.unsigned()
    db.run(update(m.ClientPolicy).values(reason_required=False))  # the insider, after the review
    with pytest.raises(IntegrityError, match="changed since they were shown"):
        team.admin.policies.adopt(pending)
    assert not team.admin.policies.get("acme").signed
    assert db.scalar(select(m.ClientPolicy.signature).where(m.ClientPolicy.signature.is_not(None))) is None


def test_an_out_of_range_row_is_not_offered(upgraded):
    team, db = upgraded
    db.run(update(m.ClientPolicy).where(m.ClientPolicy.client_id == 1).values(checkout_minutes=10**9))
    assert [p.client for p in team.admin.policies.unsigned()] == ["globex"]


def test_only_an_admin_adopts(upgraded):
    team, _db = upgraded
    alice = team.engineer("alice")
    with pytest.raises(AccessDenied):
        alice.policies.unsigned()
    with pytest.raises(AccessDenied):
        alice.policies.adopt([])
