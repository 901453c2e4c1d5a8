"""The read routes over a layered vault (issue 14 step 5 with step 6's reads): no key without an event.

The ``keyed`` team (conftest.py) layered by a server holding a master key, as ``credvault
serve`` layers it before it listens. ``checkouts.list`` appends a ``checkout-list`` event
naming the versions it releases, commits it, and only then answers those data keys without the
layer (``vault/server/releases.py``). The reports (``reports.status``/``stale``'s
``SecretState``) append no event, so the server releases nothing: every data key they answer is
still layered (server.md §7, "a password blob without an event"), which the keyholder cannot
open; nothing is written. They work over HTTPS on a layered vault once they release the same way.
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
from sqlalchemy import update

from vault.authority.report_requests import STALE, STATUS, ReportRequest
from vault.authority.requests import ListRequest
from vault.crypto.labels import BLOB_DATA_KEY, BLOB_SERVER_LAYER
from vault.server.app import build_app
from vault.server.layer import MasterKey, ServerLayer
from vault.server.running import ServeOptions
from vault.service.checkouts import https_checkin_keyholder
from vault.storage import models as m
from vault.storage.engine import Store
from vault.wire import codec
from vault.wire.eventrequest import request_problem
from vault.wire.nonces import DbNonceStore


@pytest.fixture(scope="module")
def layered(keyed: Keyed, test_ca: CertificateFiles) -> Iterator[Served]:
    """A server with a master key over ``keyed``'s database, layered first; alice holds acme/fw01."""
    layer = ServerLayer(MasterKey(1, os.urandom(32)))
    layer.layer_on(keyed.store)
    with keyed.store.transaction() as s:  # rows for the reports (as stored: the server verifies no policy)
        week = dt.datetime.now(dt.UTC) - dt.timedelta(days=7)
        s.execute(update(m.Secret).values(last_used_at=week, must_change=True))
        s.execute(update(m.ClientPolicy).values(stale_days=1))
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



@pytest.mark.parametrize("action", [STATUS, STALE])
def test_the_reports_answer_only_layered_keys(layered: Served, action: str) -> None:
    admin = layered.admin
    request = ReportRequest(action, caller_of(admin), (), admin.keyholder.me().org_signing_public)
    before = without_nonces(database_state(layered.db_url))
    answer = _answer(layered, f"/v1/reports/{action}", f"reports.{action}", request, admin)
    assert answer.secrets and all(s.wrapped_dek[1] == BLOB_SERVER_LAYER for s in answer.secrets)  # type: ignore[attr-defined]
    assert without_nonces(database_state(layered.db_url)) == before
