"""The read routes over a layered vault (issue 14 step 5 with step 6's reads): no key without an event.

The ``keyed`` team (conftest.py) layered by a server holding a master key, as ``credvault
serve`` layers it before it listens. The reads that answer version rows (``checkouts.list``'s
``ListedCheckout.version``, ``reports.status``/``stale``'s ``SecretState``) append no event, so
the server releases nothing: every data key they answer is still layered (server.md §7, "a
password blob without an event"). The keyholder then cannot open the names it would show and
refuses the listing (one opaque error) instead of showing anything; nothing is written. Until
a listing's event names the versions it releases (server.md §5), these reads do not work over
HTTPS on a layered vault.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
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
    keyholder,
    loopback_socket,
    running,
    signed_post,
)
from sqlalchemy import update

from vault.authority.report_requests import STALE, STATUS, ReportRequest
from vault.authority.requests import ListRequest
from vault.crypto.labels import BLOB_SERVER_LAYER
from vault.errors import DecryptionFailed
from vault.server.app import build_app
from vault.server.layer import MasterKey, ServerLayer
from vault.server.running import ServeOptions
from vault.service.checkouts import https_checkin_keyholder
from vault.storage import models as m
from vault.storage.engine import Store
from vault.wire import codec
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


def _without_nonces(state: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in state.items() if k != "request_nonces"}


def test_the_checkout_listing_answers_only_layered_keys_and_the_keyholder_refuses_it(layered: Served) -> None:
    alice = layered.alice
    request = ListRequest(caller_of(alice), (), alice.keyholder.me().org_signing_public)
    before = _without_nonces(database_state(layered.db_url))
    answer = _answer(layered, "/v1/checkouts/list", "checkouts.list", request, alice)
    assert answer.checkouts and all(c.version.wrapped_dek[1] == BLOB_SERVER_LAYER for c in answer.checkouts)  # type: ignore[attr-defined]
    holder, _ = keyholder(layered, alice)
    with pytest.raises(DecryptionFailed):  # the opaque error: the layered key opens under no client key
        https_checkin_keyholder(holder).list()
    assert _without_nonces(database_state(layered.db_url)) == before  # a read: its nonces only


@pytest.mark.parametrize("action", [STATUS, STALE])
def test_the_reports_answer_only_layered_keys(layered: Served, action: str) -> None:
    admin = layered.admin
    request = ReportRequest(action, caller_of(admin), (), admin.keyholder.me().org_signing_public)
    before = _without_nonces(database_state(layered.db_url))
    answer = _answer(layered, f"/v1/reports/{action}", f"reports.{action}", request, admin)
    assert answer.secrets and all(s.wrapped_dek[1] == BLOB_SERVER_LAYER for s in answer.secrets)  # type: ignore[attr-defined]
    assert _without_nonces(database_state(layered.db_url)) == before
