"""``reports.status`` and ``reports.stale`` over HTTPS (issue 14 step 6, the read routes).

Both reports are an admin's. On ``read_world`` (acme stale after a day, its secret last used
three days ago): the admin's reports through ``HttpsReportTransport`` equal the in-process
ones. Raw requests signed as an insider would sign them: an engineer asking for either report
is 403 before the authority reads a row (as in-process, where the authority refuses too);
the admin's body signed by an engineer is 403; a ``stale`` request sent to the ``status``
route, or a malformed body, is 400; nothing is written by any of them (``database_state``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from server_harness import ReadWorld, caller_of, database_state, envelope, signed_post, with_extra_field
from sqlalchemy import update

from vault.authority.report_requests import STALE, STATUS, ReportRequest
from vault.errors import AccessDenied
from vault.service.reports import https_report_keyholder
from vault.storage import models as m
from vault.storage.engine import Store


@pytest.fixture(scope="module")
def world(read_world: ReadWorld) -> ReadWorld:
    """``read_world`` with acme's secret last used three days ago (by the real clock: the
    server's), so that ``stale`` has a row."""
    store = Store(read_world.served.db_url)
    try:
        with store.transaction() as s:
            then = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
            s.execute(update(m.Secret).where(m.Secret.client_id == read_world.acme).values(last_used_at=then))
    finally:
        store.close()
    return read_world


def _request(vault: object, action: str) -> ReportRequest:
    me = vault.keyholder.me()  # type: ignore[attr-defined]
    return ReportRequest(action, caller_of(vault), (), me.org_signing_public)


def _path(action: str) -> str:
    return f"/v1/reports/{action}"


def test_status_over_https_is_the_in_process_status(world: ReadWorld) -> None:
    admin = world.served.admin
    https = world.https(admin)
    try:
        over_https = https_report_keyholder(admin.reports, https).status()
    finally:
        https.close()
    in_process = admin.reports.status()
    assert over_https == in_process
    assert (in_process.clients, in_process.secrets, in_process.engineers) == (2, 2, 4)


def test_stale_over_https_is_the_in_process_stale(world: ReadWorld) -> None:
    admin = world.served.admin
    https = world.https(admin)
    try:
        over_https = https_report_keyholder(admin.reports, https).stale()
    finally:
        https.close()
    in_process = admin.reports.stale()
    assert [(s.client, s.secret, s.stale_days) for s in over_https] == [("acme", "fw01", 1)]
    assert [(s.client, s.secret, s.last_used, s.stale_days) for s in over_https] == [
        (s.client, s.secret, s.last_used, s.stale_days) for s in in_process
    ]


@pytest.mark.parametrize("action", [STATUS, STALE])
@pytest.mark.parametrize("who", ["alice", "carol"])
def test_an_engineer_asking_for_a_report_is_403_and_nothing_is_written(world: ReadWorld, action: str, who: str) -> None:
    served = world.served
    vault = world.carol if who == "carol" else served.alice
    before = database_state(served.db_url)
    response = signed_post(served, _path(action), envelope(f"reports.{action}", _request(vault, action)), vault)
    assert response.status_code == 403, response.text
    assert response.json()["type"] == "urn:credvault:access-denied"
    assert database_state(served.db_url) == before
    with pytest.raises(AccessDenied):  # in-process, the same refusal
        getattr(vault.reports, action)()


def test_the_admins_body_signed_by_an_engineer_is_403_and_nothing_is_written(world: ReadWorld) -> None:
    served = world.served
    body = envelope("reports.status", _request(served.admin, STATUS))
    before = database_state(served.db_url)
    response = signed_post(served, _path(STATUS), body, served.alice)
    assert response.status_code == 403, response.text
    assert response.json()["type"] == "urn:credvault:access-denied"
    assert database_state(served.db_url) == before


@pytest.mark.parametrize("change", ["stale to the status route", "extra field", "pin too short", "a pair of three"])
def test_a_malformed_body_is_400_and_nothing_is_written(world: ReadWorld, change: str) -> None:
    served = world.served
    admin = served.admin
    request = _request(admin, STATUS)
    if change == "stale to the status route":
        body = envelope("reports.status", dataclasses.replace(request, action=STALE))
    elif change == "extra field":
        body = with_extra_field(envelope("reports.status", request))
    elif change == "pin too short":
        body = envelope("reports.status", dataclasses.replace(request, org_pin=b"\x01" * 31))
    else:
        body = envelope("reports.status", request).replace(
            b'"known_key_versions":[]', b'"known_key_versions":[[1,2,3]]'
        )
    before = database_state(served.db_url)
    response = signed_post(served, _path(STATUS), body, admin)
    assert response.status_code == 400, response.text
    assert response.json()["type"] == "urn:credvault:invalid-input"
    assert database_state(served.db_url) == before
