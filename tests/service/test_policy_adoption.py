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


@pytest.fixture
def team(team3):  # type: ignore[no-untyped-def]
    """In each of ``team3``'s modes: SQLite, PostgreSQL, through a team server."""
    return team3


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


# -- an admin's removal adopts what the departing admin signed ----------------------------


def _signers(db):  # type: ignore[no-untyped-def]
    rows = db.all(select(m.ClientPolicy.client_id, m.ClientPolicy.signed_by).order_by(m.ClientPolicy.client_id))
    info = db.all(select(m.VaultInfo.settings_signed_by))[0][0]
    return [tuple(r) for r in rows], info


def test_an_admins_removal_adopts_the_policies_and_settings_they_signed(team, db):  # type: ignore[no-untyped-def]
    """admin2 signed globex's relaxed policy and the settings; once admin2 is removed, they
    still apply: the removing admin re-signed them (inside the removal's unit of work)."""
    admin = team.admin
    admin2 = team.engineer("admin2", role="admin")
    admin.clients.add("acme", "Acme")
    admin.clients.add("globex", "Globex")
    admin2.policies.set("globex", reason_required=False, exclusive=False)
    admin2.keys.set_retention(4)
    admin.secrets.add("globex/fw", password="globex-pw")
    me = db.scalar(select(m.Engineer.id).where(m.Engineer.name == admin.engineer_name))
    departing = db.scalar(select(m.Engineer.id).where(m.Engineer.name == "admin2"))
    policies, settings = _signers(db)
    assert departing in [by for _, by in policies] and settings == departing
    admin.engineers.remove("admin2")
    policies, settings = _signers(db)
    assert all(by == me for _, by in policies) and settings == me
    policy = admin.policies.get("globex")
    assert (policy.signed, policy.reason_required, policy.exclusive) == (True, False, False)
    assert admin.checkouts.reveal("globex/fw") == "globex-pw"  # no reason needed: still the relaxed policy
    assert admin.audit.verify().ok


def test_a_policy_planted_in_the_departing_admins_name_is_not_adopted(team, db):  # type: ignore[no-untyped-def]
    """The insider (a DBA) relaxes acme's policy in admin2's name before admin2 is removed,
    hoping the removal's adoption re-signs it: the signature does not cover the new values,
    so it is not re-signed and the strict policy applies."""
    admin = team.admin
    admin2 = team.engineer("admin2", role="admin")
    admin.clients.add("acme", "Acme")
    admin2.policies.set("acme", reason_required=True, exclusive=True)
    db.run(update(m.ClientPolicy).values(reason_required=False, exclusive=False))
    departing = db.scalar(select(m.Engineer.id).where(m.Engineer.name == "admin2"))
    admin.engineers.remove("admin2")
    [(_, by)], _ = _signers(db)
    assert by == departing  # left as stored: not adopted
    policy = admin.policies.get("acme")
    assert (policy.signed, policy.reason_required, policy.exclusive) == (False, True, True)
