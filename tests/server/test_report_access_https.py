"""``report access`` and ``report at-risk`` from an admin's machine through the team server (both engines).

The admin's ``RemoteVault.reports`` starts the report on the server (its ``report-access`` event on
record first, naming the engineer), reads the engineer's reveal events as its verified audit log,
and asks ``reports.access`` for the versions to compare, each page on record (and, on a layered
vault, naming the versions whose data keys leave) before it is answered. What it reports must be
what the in-process report on the host says. The attacks: an engineer's raw request (403, nothing
written), an unknown engineer (404, nothing written), and a database writer who plants a new
"current" version copied from another secret, to make a value look changed (hiding it from the
at-risk list): the copy does not open under the row it was moved to, so the value stays at risk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from served import ADMIN, ADMIN_PASS, ServedTeam, ServedVault
from sqlalchemy import select, update

from vault import Vault
from vault.authority.access_report_values import ACCESS, AccessAnswer, AccessReportRequest
from vault.authority.requests import Caller
from vault.authority.secrets import KEPT_REASON
from vault.errors import AccessDenied, NotFound
from vault.server.layer import is_layered
from vault.service import serverjoin
from vault.service.remote import RemoteVault
from vault.storage import models as m
from vault.storage.engine import Store
from vault.transport.https_calls import answer_of


@dataclass
class Reporting:
    team: ServedTeam
    host: Vault
    admin: RemoteVault
    bob: RemoteVault
    url: str


@pytest.fixture
def reporting(served_vault: ServedVault) -> Reporting:
    """bob revealed fw01 (unchanged since), checked out fw02 and checked in a new value, and saw
    fw03's username, changed since by the host admin."""
    team, host = served_vault.team, served_vault.admin
    host.clients.add("acme", "Acme Ltd")
    host.secrets.add("acme/fw01", password="pw of fw01", username="netadmin")
    host.secrets.add("acme/fw02", password="pw of fw02")
    host.secrets.add("acme/fw03", password="pw of fw03", username="olduser")
    bob = team.engineer("bob")
    host.grants.grant("bob", "acme")
    bob.checkouts.reveal("acme/fw01", reason="T-1")
    bob.checkouts.checkout("acme/fw02", reason="T-2")
    bob.checkouts.checkin("acme/fw02", new_password="pw of fw02, changed")
    bob.checkouts.reveal("acme/fw03", field="username", reason="T-3")
    host.secrets.update("acme/fw03", username="newuser")
    serverjoin.join(team.pin, host, ADMIN, ADMIN_PASS)
    team.passphrases[ADMIN] = ADMIN_PASS
    return Reporting(team, host, team.unlocked(ADMIN), bob, served_vault.url)


def _events(url: str) -> list[m.AuditEvent]:
    store = Store(url)
    try:
        with store.read() as s:
            return list(s.scalars(select(m.AuditEvent).order_by(m.AuditEvent.seq)))
    finally:
        store.close()


def _seen(records: list) -> list[tuple]:  # type: ignore[type-arg]
    return [(r.seq, r.client, r.secret, r.field, r.version, r.reason, r.changed_since) for r in records]


def test_the_report_through_the_server_is_the_report_on_the_host(reporting: Reporting) -> None:
    remote = reporting.admin.reports.access("bob")
    local = reporting.host.reports.access("bob")
    assert _seen(remote) == _seen(local)
    assert [(r.secret, r.field, r.changed_since) for r in remote] == [
        ("fw01", "password", False),
        ("fw02", "password", True),
        ("fw03", "username", True),
    ]
    at_risk = reporting.admin.reports.at_risk("bob")
    assert _seen(at_risk) == _seen(reporting.host.reports.at_risk("bob"))
    assert [(r.secret, r.field) for r in at_risk] == [("fw01", "password")]
    assert reporting.host.audit.verify().ok  # the report's format-3 events verify like every other


def test_the_reports_event_is_on_record_before_any_reveal_is_read(reporting: Reporting) -> None:
    before = len(_events(reporting.url))
    stream = reporting.admin.reports.access("bob", stream=True)
    first = next(stream)
    started = _events(reporting.url)[before]
    admin_id = reporting.admin.keyholder.me().engineer_id
    assert (started.action, started.engineer_id, json.loads(started.details_json)) == (
        ACCESS,
        admin_id,
        {"engineer": "bob"},
    )
    assert started.request_id is not None and started.server_key_version is not None
    assert first.secret == "fw01"
    rest = list(stream)
    assert len(rest) == 2
    page = _events(reporting.url)[before + 1]
    details = json.loads(page.details_json)
    assert (page.action, details["engineer"], details["reveals"]) == (ACCESS, "bob", 3)
    store = Store(reporting.url)
    try:
        with store.read() as s:
            layered = any(is_layered(v.wrapped_dek) for v in s.scalars(select(m.SecretVersion)))
    finally:
        store.close()
    assert layered == ("released" in details)  # a layered vault's keys leave only after their event
    if layered:
        assert len(details["released"]) == 5  # fw01 v1, fw02 v1 and v2, fw03 v1 and v2


def _request(vault: RemoteVault, engineer: str) -> AccessReportRequest:
    me = vault.keyholder.me()
    caller = Caller(me.engineer_id, me.key_generation)
    return AccessReportRequest(ACCESS, caller, engineer, (), (), me.org_signing_public)


def test_an_engineer_is_refused_and_nothing_is_written(reporting: Reporting) -> None:
    before = len(_events(reporting.url))
    with pytest.raises(AccessDenied, match="not an admin"):
        answer_of(reporting.bob.https, "reports.access", _request(reporting.bob, "bob"), AccessAnswer)
    with pytest.raises(AccessDenied):
        reporting.bob.reports.access("bob")
    assert len(_events(reporting.url)) == before


def test_an_unknown_engineer_is_not_found_and_nothing_is_written(reporting: Reporting) -> None:
    before = len(_events(reporting.url))
    with pytest.raises(NotFound, match="nobody"):
        reporting.admin.reports.access("nobody")
    with pytest.raises(NotFound, match="nobody"):
        answer_of(reporting.admin.https, "reports.access", _request(reporting.admin, "nobody"), AccessAnswer)
    assert len(_events(reporting.url)) == before


def test_a_planted_current_version_does_not_hide_a_value_at_risk(reporting: Reporting) -> None:
    """A database writer copies fw02's newest version into fw01 as its new current one, so that the
    password bob revealed looks changed. The copy is bound to fw02's row: it does not open as fw01's,
    and the admin's report keeps fw01 at risk, as the host's does."""
    store = Store(reporting.url)
    try:
        with store.transaction() as s:
            fw = {sec.id: sec for sec in s.scalars(select(m.Secret))}
            fw01, fw02 = sorted(fw)[0], sorted(fw)[1]
            row = s.get(m.SecretVersion, (fw02, fw[fw02].current_version))
            assert row is not None
            s.add(
                m.SecretVersion(
                    secret_id=fw01, version=2, key_version=row.key_version, wrapped_dek=row.wrapped_dek,
                    password_blob=row.password_blob, metadata_blob=row.metadata_blob,
                    created_by=row.created_by, created_at=row.created_at,
                )
            )  # fmt: skip
            s.flush()
            s.execute(update(m.Secret).where(m.Secret.id == fw01).values(current_version=2))
    finally:
        store.close()
    remote = reporting.admin.reports.access("bob")
    assert _seen(remote) == _seen(reporting.host.reports.access("bob"))
    assert (remote[0].field, remote[0].version, remote[0].changed_since) == ("password", 1, False)  # fw01: at risk
    assert remote[0].secret == f"(secret #{fw01})"  # its planted current version does not open: no name
    assert [(r.secret, r.changed_since) for r in reporting.admin.reports.at_risk("bob")] == [(remote[0].secret, False)]


def test_an_update_that_kept_the_password_counts_as_its_reveal(reporting: Reporting) -> None:
    """Through the server an update that keeps the password hands it to the updater's machine (the
    draft's ``password-kept`` view): both reports list it as a reveal of that version's password, so
    a modified client cannot read a password through an update and stay off the at-risk list."""
    reporting.bob.secrets.update("acme/fw01", note="a new note, the password kept")
    remote = reporting.admin.reports.access("bob")
    assert _seen(remote) == _seen(reporting.host.reports.access("bob"))
    kept = [r for r in remote if r.reason == KEPT_REASON]
    assert [(r.secret, r.field, r.version, r.changed_since) for r in kept] == [("fw01", "password", 1, False)]
    at_risk = reporting.admin.reports.at_risk("bob")
    assert [(r.secret, r.field, r.reason) for r in at_risk] == [("fw01", "password", KEPT_REASON)]
    assert reporting.host.audit.verify().ok
