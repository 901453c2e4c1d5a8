"""Access reports (issue 3): what an engineer revealed, why, and what is still at risk."""

from __future__ import annotations

import pytest

from vault.errors import AccessDenied, NotFound


@pytest.fixture
def team(team3):  # type: ignore[no-untyped-def]
    """In each of ``team3``'s modes: SQLite, PostgreSQL, through a team server."""
    return team3


REF, PW = "acme/fw01", "acme-pw-1"
OTHER_REF = "acme/sw01"


@pytest.fixture
def world(team):  # type: ignore[no-untyped-def]
    """acme with two secrets; alice and bob hold grants."""
    team.admin.clients.add("acme", "Acme Ltd")
    team.admin.secrets.add(REF, password=PW, username="fw-admin")
    team.admin.secrets.add(OTHER_REF, password="sw-pw-1")
    alice, bob = team.engineer("alice"), team.engineer("bob")
    team.admin.grants.grant("alice", "acme")
    team.admin.grants.grant("bob", "acme")
    return team, alice, bob


def _summary(records):  # type: ignore[no-untyped-def]
    return [(r.client, r.secret, r.field, r.version, r.reason, r.changed_since) for r in records]


def test_the_access_report_lists_each_reveal_and_whether_it_changed_since(world):
    team, alice, bob = world
    alice.checkouts.reveal(REF, reason="T-1 first look")
    alice.checkouts.checkout(REF, reason="T-2 login", field="username")
    alice.checkouts.checkout(OTHER_REF, reason="T-3")
    bob.checkouts.reveal(REF, reason="T-9 bob's")  # someone else's reveal
    team.admin.checkouts.reveal(REF, reason="T-0 admin's")
    alice.secrets.list("acme")  # listing is not revealing
    alice.secrets.show(REF)

    report = team.admin.reports.access("alice")
    assert _summary(report) == [
        ("acme", "fw01", "password", 1, "T-1 first look", False),
        ("acme", "fw01", "username", 1, "T-2 login", False),
        ("acme", "sw01", "password", 1, "T-3", False),
    ]
    assert [r.seq for r in report] == sorted(r.seq for r in report)
    assert all(r.at == team.clock() for r in report)
    assert team.admin.audit.log()[-1].action == "report-access"

    team.admin.secrets.update(REF, note="moved to rack 4")  # metadata only: the password is the same
    assert [r.changed_since for r in team.admin.reports.access("alice")] == [False, False, False]
    team.admin.secrets.update(REF, password="acme-pw-2")
    assert [r.changed_since for r in team.admin.reports.access("alice")] == [True, False, False]
    team.admin.secrets.update(REF, username="fw-root")
    assert [r.changed_since for r in team.admin.reports.access("alice")] == [True, True, False]
    assert [r.version for r in team.admin.reports.access("bob")] == [1]


def test_the_at_risk_report_lists_only_values_that_have_not_changed(world):
    team, alice, _bob = world
    alice.checkouts.reveal(REF, reason="T-1")
    alice.checkouts.reveal(OTHER_REF, reason="T-2")
    alice.checkouts.reveal(OTHER_REF, reason="T-3 again")
    at_risk = team.admin.reports.at_risk("alice")
    assert [(r.secret, r.reason) for r in at_risk] == [("fw01", "T-1"), ("sw01", "T-3 again")]  # one per value
    assert team.admin.audit.log()[-1].action == "report-at-risk"

    team.admin.secrets.update(REF, password="acme-pw-2")
    assert [r.secret for r in team.admin.reports.at_risk("alice")] == ["sw01"]
    alice.checkouts.reveal(REF, reason="T-4 the new one")
    assert [(r.secret, r.version) for r in team.admin.reports.at_risk("alice")] == [("fw01", 2), ("sw01", 1)]
    team.admin.secrets.update(REF, password="acme-pw-3")
    team.admin.secrets.update(OTHER_REF, password="sw-pw-2")
    assert team.admin.reports.at_risk("alice") == []
    assert team.admin.reports.at_risk("bob") == []


def test_a_later_reveal_of_an_old_version_does_not_hide_a_current_value_at_risk(world):
    team, alice, _bob = world
    team.admin.secrets.update(REF, password="acme-pw-2")
    alice.checkouts.reveal(REF, reason="T-1 current")  # sees acme-pw-2, still current
    alice.checkouts.reveal(REF, reason="T-2 history", version=1)
    assert [(r.secret, r.version) for r in team.admin.reports.at_risk("alice")] == [("fw01", 2)]


def test_reports_are_for_admins_only(world):
    team, alice, _bob = world
    alice.checkouts.reveal(REF, reason="T-1")
    head = team.admin.audit.head()
    for call in (
        lambda: alice.reports.access("alice"),
        lambda: alice.reports.at_risk("alice"),
        lambda: alice.reports.access("bob"),
    ):  # fmt: skip
        with pytest.raises(AccessDenied):
            call()
    assert team.admin.audit.head() == head
    with pytest.raises(NotFound):
        team.admin.reports.access("nobody")
    assert team.admin.reports.access("root-admin") == []
