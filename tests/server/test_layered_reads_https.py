"""The read routes over a layered vault (issue 14 step 5 with step 6's reads): no key without an event.

The ``keyed`` team (conftest.py) layered by a server holding a master key, as ``credvault
serve`` layers it before it listens; every secret flagged to be changed and last used a week
ago, every client's policy re-signed by the admin with a stale-after of one day, so that both
reports name secrets. ``checkouts.list`` appends a ``checkout-list`` event naming the versions
it releases, commits it, and only then answers those data keys without the layer; the reports
(``reports.status``/``stale``: each named secret's current version, whose name is under its
data key) append ``report-status``/``report-stale`` the same way (``vault/server/releases.py``).
A listing or report that names nothing layered appends nothing; an engineer asking for a report
is refused before anything is read, appended or released.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from collections.abc import Iterator

import pytest
from server_harness import (
    CertificateFiles,
    Keyed,
    Served,
    caller_of,
    database_state,
    envelope,
    events,
    keyholder,
    loopback_socket,
    running,
    signed_post,
    without_nonces,
)
from sqlalchemy import select, update

from vault.authority.policy import policy_fields
from vault.authority.report_requests import STALE, STATUS, ReportRequest
from vault.authority.requests import ListRequest
from vault.crypto.labels import BLOB_DATA_KEY, BLOB_SERVER_LAYER, LABEL_SIG_POLICY
from vault.server.app import build_app
from vault.server.layer import MasterKey, ServerLayer
from vault.server.running import ServeOptions
from vault.service.checkouts import https_checkin_keyholder
from vault.service.reports import https_report_keyholder
from vault.storage import models as m
from vault.storage.engine import Store
from vault.transport.https import HttpsTransport
from vault.wire import codec
from vault.wire.eventrequest import request_problem
from vault.wire.nonces import DbNonceStore


@pytest.fixture(scope="module")
def layered(keyed: Keyed, test_ca: CertificateFiles) -> Iterator[Served]:
    """A server with a master key over ``keyed``'s database, layered first; alice holds acme/fw01."""
    layer = ServerLayer(MasterKey(1, os.urandom(32)))
    layer.layer_on(keyed.store)
    admin = keyed.served.admin
    with keyed.store.transaction() as s:  # rows for the reports; the policies signed as an admin signs them
        week = dt.datetime.now(dt.UTC) - dt.timedelta(days=7)
        s.execute(update(m.Secret).values(last_used_at=week, must_change=True))
        vault_id, me = s.get(m.VaultInfo, 1).vault_id, admin.keyholder.me()  # type: ignore[union-attr]
        for policy in s.scalars(select(m.ClientPolicy)):
            policy.stale_days, policy.signed_by = 1, me.engineer_id
            policy.signed_at = int(dt.datetime.now(dt.UTC).timestamp())
            fields = policy_fields(vault_id, policy.client_id, policy)
            policy.signature = admin.keyholder.my_signing_key().sign(LABEL_SIG_POLICY, *fields)
    store, sock = Store(keyed.served.db_url), loopback_socket()
    port = sock.getsockname()[1]
    url = f"https://127.0.0.1:{port}"
    app = build_app(store, public_url=url, nonce_store=DbNonceStore(store), server_key=keyed.key, layer=layer)
    options = ServeOptions(
        keyed.served.db_url, bind=f"127.0.0.1:{port}", tls_cert=str(test_ca.cert_file), tls_key=str(test_ca.key_file)
    )
    try:
        with running(app, options, sock):
            served = dataclasses.replace(keyed.served, url=url, port=port)
            holder, _ = keyholder(served, served.alice)
            holder.checkout("acme/fw01", reason="T-9 layered", field="password", version=None, hold=True, hold_for=None)
            yield served
    finally:
        store.close()


def _answer(served: Served, path: str, name: str, body: object, vault: object) -> object:
    response = signed_post(served, path, envelope(name, body), vault)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    return codec.open_envelope(response.content, f"{name}.response").body


def test_the_checkout_listing_is_on_record_before_it_releases_its_keys(layered: Served) -> None:
    """``checkouts.list`` on a layered vault: one format-3 ``checkout-list`` event naming the
    versions released (alice's own hold only), committed before the answer, whose keys then come
    without the layer; the keyholder shows the listing; the chain and the kept request verify."""
    alice = layered.alice
    request = ListRequest(caller_of(alice), (), alice.keyholder.me().org_signing_public)
    before = events(layered)
    answer = _answer(layered, "/v1/checkouts/list", "checkouts.list", request, alice)
    listed = answer.checkouts  # type: ignore[attr-defined]
    assert listed and all(c.version.wrapped_dek[1] == BLOB_DATA_KEY for c in listed)
    new = events(layered)[len(before) :]
    assert [e.action for e in new] == ["checkout-list"]
    released = json.loads(new[0].details_json)["released"]
    assert released == sorted([c.client.id, c.secret.id, c.version.version] for c in listed)
    assert {c.engineer_id for c in listed} == {alice.keyholder.me().engineer_id}  # her own, nobody else's
    public = alice.keyholder.my_signing_key().public
    e = new[0]
    problem = request_problem(
        e.engineer_id, e.key_generation, e.action, e.client_id, e.at_us, e.request_id,
        e.request_digest, e.request_sig, e.request_body, public,
    )  # fmt: skip
    assert problem is None
    holder, _ = keyholder(layered, alice)
    shown = https_checkin_keyholder(holder).list()
    assert [(c.client, c.secret) for c in shown] == [("acme", "fw01")]
    assert layered.admin.audit.verify().ok


def test_a_listing_with_nothing_layered_to_release_appends_nothing(layered: Served) -> None:
    carol = layered.bob  # bob holds nothing checked out in this module
    request = ListRequest(caller_of(carol), (), carol.keyholder.me().org_signing_public)
    before = without_nonces(database_state(layered.db_url))
    answer = _answer(layered, "/v1/checkouts/list", "checkouts.list", request, carol)
    assert answer.checkouts == ()  # type: ignore[attr-defined]
    assert without_nonces(database_state(layered.db_url)) == before  # a read: its nonce only


def _released(event: m.AuditEvent) -> list[list[int]]:
    return json.loads(event.details_json)["released"]  # type: ignore[no-any-return]


def _request_verifies(event: m.AuditEvent, vault: object) -> bool:
    public = vault.keyholder.my_signing_key().public  # type: ignore[attr-defined]
    e = event
    problem = request_problem(
        e.engineer_id, e.key_generation, e.action, e.client_id, e.at_us, e.request_id,
        e.request_digest, e.request_sig, e.request_body, public,
    )  # fmt: skip
    return problem is None


def _stored_deks(served: Served) -> dict[tuple[int, int], bytes]:
    store = Store(served.db_url)
    try:
        with store.read() as s:
            found = s.execute(select(m.SecretVersion.secret_id, m.SecretVersion.version, m.SecretVersion.wrapped_dek))
            return {(secret, version): bytes(dek) for secret, version, dek in found}
    finally:
        store.close()


@pytest.mark.parametrize("action", [STATUS, STALE])
def test_a_report_is_on_record_before_it_releases_exactly_the_versions_it_names(layered: Served, action: str) -> None:
    """``reports.status``/``stale`` on a layered vault: one format-3 ``report-<action>`` event whose
    ``released`` is exactly the (client, secret, version) of every secret the answer names, each
    answered without the layer; nothing else written (the stored keys keep their layer); its kept
    request verifies and so does the chain."""
    admin = layered.admin
    request = ReportRequest(action, caller_of(admin), (), admin.keyholder.me().org_signing_public)
    before, stored = without_nonces(database_state(layered.db_url)), _stored_deks(layered)
    old = events(layered)
    answer = _answer(layered, f"/v1/reports/{action}", f"reports.{action}", request, admin)
    named = answer.secrets  # type: ignore[attr-defined]
    assert len(named) >= 2 and all(x.wrapped_dek[1] == BLOB_DATA_KEY for x in named)
    new = events(layered)[len(old) :]
    assert [e.action for e in new] == [f"report-{action}"]
    assert _released(new[0]) == sorted([x.client_id, x.id, x.version] for x in named)
    assert new[0].engineer_id == admin.keyholder.me().engineer_id and new[0].client_id is None
    assert _request_verifies(new[0], admin)
    after = without_nonces(database_state(layered.db_url))
    assert {k: v for k, v in after.items() if k not in ("audit_events", "audit_head")} == {
        k: v for k, v in before.items() if k not in ("audit_events", "audit_head")
    }
    assert _stored_deks(layered) == stored and all(dek[1] == BLOB_SERVER_LAYER for dek in stored.values())
    assert admin.audit.verify().ok


def test_the_admins_reports_over_https_show_the_names_on_a_layered_vault(layered: Served) -> None:
    """The keyholder opens every name the reports name (none reported damaged, stale not refused)."""
    admin = layered.admin
    https = HttpsTransport(layered.url, admin.keyholder, ca_file=str(layered.ca.ca_file))
    try:
        holder = https_report_keyholder(admin.reports, https)
        status, stale = holder.status(), holder.stale()
    finally:
        https.close()
    refs = ["acme/fw01", "acme/fw02", "excl/sw01", "excl/sw02", "excl/sw03", "excl/sw04", "excl/sw05"]
    assert status.must_change == refs
    assert not [w for w in status.warnings if "does not open" in w or "does not verify" in w]
    assert sorted(f"{x.client}/{x.secret}" for x in stale) == [r for r in refs if r != "acme/fw01"]  # fw01 used
    assert admin.audit.verify().ok


@pytest.mark.parametrize("action", [STATUS, STALE])
@pytest.mark.parametrize("who", ["alice", "bob"])
def test_an_engineer_asking_for_a_report_gets_no_key_and_nothing_is_written(
    layered: Served, action: str, who: str
) -> None:
    """Both reports are an admin's: an engineer (alice holds grants, bob one) is refused 403 before
    the authority reads a row, so no event is appended and no key is released, whatever the
    grants; a body naming the admin but signed by the engineer likewise."""
    engineer = layered.alice if who == "alice" else layered.bob
    before = without_nonces(database_state(layered.db_url))  # a read's nonce is stored before it is answered
    for caller in (engineer, layered.admin):
        request = ReportRequest(action, caller_of(caller), (), engineer.keyholder.me().org_signing_public)
        response = signed_post(layered, f"/v1/reports/{action}", envelope(f"reports.{action}", request), engineer)
        assert response.status_code == 403, response.text
        assert response.json()["type"] == "urn:credvault:access-denied"
        assert b"wrapped_dek" not in response.content
    assert without_nonces(database_state(layered.db_url)) == before


def test_a_report_that_names_no_layered_version_appends_nothing(layered: Served) -> None:
    """``status`` with no secret flagged: nothing to release, so no event (a read: its nonce only)."""
    admin = layered.admin
    store = Store(layered.db_url)
    try:
        with store.transaction() as s:
            s.execute(update(m.Secret).values(must_change=False))
        request = ReportRequest(STATUS, caller_of(admin), (), admin.keyholder.me().org_signing_public)
        before = without_nonces(database_state(layered.db_url))
        answer = _answer(layered, "/v1/reports/status", "reports.status", request, admin)
        assert answer.secrets == ()  # type: ignore[attr-defined]
        assert without_nonces(database_state(layered.db_url)) == before
    finally:
        with store.transaction() as s:
            s.execute(update(m.Secret).values(must_change=True))
        store.close()
