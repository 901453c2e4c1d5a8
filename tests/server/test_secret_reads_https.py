"""The secrets' everyday reads over HTTPS: ``secrets.show``, ``secrets.history``, ``secrets.list``.

The ``keyed`` team (conftest.py): acme and excl with their secrets, alice granted both, bob
excl, carol nothing, the server running with a certified key. Each read appends a format-3
event that keeps the engineer's signed request and commits it before the answer; the answer
withholds every password blob; the keyholder (the in-process one) verifies the answer after.
What it shows is what the in-process call makes of the same rows: the metadata the admin
stored (``KEYED_METADATA``), the versions and names as the database holds them. Last in the
module, a layered server: the layer comes off exactly the versions the committed event names,
and nothing is released when the event's commit fails. Raw requests are an insider's
(``signed_post``); each refusal asserts its status and that nothing was written.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_harness import (
    KEYED_METADATA,
    CertificateFiles,
    Keyed,
    Served,
    asgi_call,
    caller_of,
    database_state,
    envelope,
    events,
    keyid_of,
    server_with,
    signed_headers,
    signed_post,
    ticking,
    with_extra_field,
)
from sqlalchemy import event as sa_event
from sqlalchemy import select

from vault import Vault
from vault.authority.secret_requests import HISTORY, VIEW, ListSecretsRequest, ReadRequest, SecretTarget
from vault.crypto import signing
from vault.crypto.labels import BLOB_DATA_KEY, BLOB_SERVER_LAYER, LABEL_TAG_SECRET_NAME
from vault.crypto.serverkey import ServerSigningKey
from vault.errors import NotFound
from vault.server.app import build_app
from vault.server.layer import MasterKey, ServerLayer
from vault.service import serverjoin
from vault.service.remote import RemoteVault
from vault.service.remote_reads import grant_client_ids, remote_secret_keyholders
from vault.service.secretparts import over_https
from vault.service.secrets import Secrets, opened_history, opened_info
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m
from vault.storage.engine import Store
from vault.transport.https import HttpsTransport
from vault.wire import codec
from vault.wire.eventrequest import request_problem
from vault.wire.nonces import DbNonceStore

SHOW, HISTORY_PATH, LIST_PATH = "/v1/secrets/show", "/v1/secrets/history", "/v1/secrets/list"


def reader(served: Served, vault: Vault) -> Secrets:
    """``vault``'s secrets through the server (``secretparts.over_https``)."""
    return over_https(vault.secrets, HttpsTransport(served.url, vault.keyholder, ca_file=str(served.ca.ca_file)))


def secrets_of(served: Served, *client_ids: int) -> list[m.Secret]:
    store = Store(served.db_url)
    try:
        with store.read() as s:
            query = select(m.Secret).where(m.Secret.client_id.in_(client_ids)).order_by(m.Secret.id)
            return list(s.scalars(query))
    finally:
        store.close()


def problem_of(vault: Vault, e: m.AuditEvent) -> str | None:
    return request_problem(
        e.engineer_id, e.key_generation, e.action, e.client_id, e.at_us, e.request_id,
        e.request_digest, e.request_sig, e.request_body, vault.keyholder.my_signing_key().public,
    )  # fmt: skip


def target(vault: Vault, client: int, name: str) -> SecretTarget:
    """What the keyholder sends for ``client``'s secret ``name`` (its lookup key opened in-process)."""
    me = vault.keyholder.me()
    with vault.core.store.read() as s:
        row = s.get(m.Client, client)
        assert row is not None
        lookup_key = vault.secrets.lookup_key(s, row)
    tag = signing.lookup_tag(lookup_key, LABEL_TAG_SECRET_NAME, name)
    return SecretTarget(caller_of(vault), client, None, tag, (), me.org_signing_public)


def refused(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    problem: dict[str, Any] = response.json()
    assert problem["error"] == error
    return problem


def answer_of(response: httpx.Response, name: str) -> Any:
    assert response.status_code == 200, response.text
    return codec.open_envelope(response.content, f"{name}.response").body


# -- the reads, as an engineer makes them ---------------------------------------------------------


def test_show_through_the_server_is_the_stored_metadata_and_on_record_first(keyed: Keyed) -> None:
    served = keyed.served
    before = len(events(served))
    info = reader(served, served.alice).show("acme/fw01")
    stored = KEYED_METADATA["acme/fw01"]
    assert (info.client, info.name, info.version) == ("acme", "fw01", 1)
    assert (info.username, info.url, info.note) == (stored["username"], stored["url"], stored["note"])
    assert "pw of acme/fw01" not in repr(info.__dict__)
    new = events(served)[before:]
    assert [(e.action, e.client_id, e.request_id is not None) for e in new] == [("secret-view", 1, True)]
    assert json.loads(new[0].details_json) == {"fields": "public-only", "version": 1}
    assert new[0].details_blob is None and new[0].server_key_version == keyed.key.version
    assert problem_of(served.alice, new[0]) is None
    assert served.admin.audit.verify().ok


def test_an_admin_shows_by_slug_tag_through_the_server(keyed: Keyed) -> None:
    served = keyed.served
    info = reader(served, served.admin).show("excl/sw01")
    assert (info.host, info.username) == (KEYED_METADATA["excl/sw01"]["host"], KEYED_METADATA["excl/sw01"]["username"])
    e = events(served)[-1]
    assert (e.action, e.client_id) == ("secret-view", 2)
    assert json.loads(e.request_body)["body"]["target"]["client_id"] is None  # asked by its slug tag
    assert problem_of(served.admin, e) is None


def test_the_answer_withholds_the_password_blob(keyed: Keyed) -> None:
    served, alice = keyed.served, keyed.served.alice
    body = ReadRequest(VIEW, target(alice, 1, "fw01"))
    answer = answer_of(signed_post(served, SHOW, envelope("secrets.show", body), alice), "secrets.show")
    assert answer.version.password_blob == b"" and answer.version.metadata_blob
    assert answer.seq == events(served)[-1].seq


def test_history_through_the_server_lists_the_stored_versions(keyed: Keyed) -> None:
    served = keyed.served
    writes = reader(served, served.alice)
    writes.update("acme/fw02", password="fw02 second")  # through the server: the vault is keyed
    before = len(events(served))
    versions = writes.history("acme/fw02")
    secret = next(s for s in secrets_of(served, 1) if s.current_version == 2)
    store = Store(served.db_url)
    try:
        with store.read() as s:
            rows = list(s.scalars(select(m.SecretVersion).where(m.SecretVersion.secret_id == secret.id)))
            names = {e.id: e.name for e in s.scalars(select(m.Engineer))}
    finally:
        store.close()
    expected = [
        (v.version, v.key_version, names[v.created_by], v.version == 2) for v in sorted(rows, key=lambda r: r.version)
    ]
    assert [(v.version, v.key_version, v.created_by, v.current) for v in versions] == expected
    assert [v.created_by for v in versions] == ["root-admin", "alice"]
    new = events(served)[before:]
    assert [(e.action, e.secret_id) for e in new] == [("secret-history", secret.id)]
    assert json.loads(new[0].details_json) == {"version": 2}
    assert problem_of(served.alice, new[0]) is None


def test_an_engineer_lists_the_secrets_of_their_granted_clients_only(keyed: Keyed) -> None:
    served = keyed.served
    before = len(events(served))
    listed = reader(served, served.alice).list()
    assert [(i.client, i.name) for i in listed] == sorted(
        ({1: "acme", 2: "excl"}[s.client_id], _name(served, s)) for s in secrets_of(served, 1, 2)
    )
    fw01 = next(i for i in listed if (i.client, i.name) == ("acme", "fw01"))
    assert (fw01.username, fw01.url) == (KEYED_METADATA["acme/fw01"]["username"], KEYED_METADATA["acme/fw01"]["url"])
    bob = reader(served, served.bob).list()
    assert {i.client for i in bob} == {"excl"} and len(bob) == len(secrets_of(served, 2))
    named = reader(served, served.alice).list("excl")
    assert [i.name for i in named] == [i.name for i in listed if i.client == "excl"]
    new = events(served)[before:]
    assert [(e.action, e.engineer_id, e.client_id) for e in new] == [
        ("secret-list", served.alice.keyholder.me().engineer_id, None),
        ("secret-list", served.bob.keyholder.me().engineer_id, None),
        ("secret-list", served.alice.keyholder.me().engineer_id, 2),
    ]
    assert [json.loads(e.details_json) if e.details_json else None for e in new] == [
        {"clients": 2},
        {"clients": 1},
        None,
    ]
    assert all(problem_of(v, e) is None for v, e in zip((served.alice, served.bob, served.alice), new, strict=True))
    assert served.admin.audit.verify().ok


def test_an_admin_lists_every_secret_through_the_server(keyed: Keyed) -> None:
    served = keyed.served
    listed = reader(served, served.admin).list()
    assert len(listed) == len(secrets_of(served, 1, 2)) and {i.client for i in listed} == {"acme", "excl"}
    e = events(served)[-1]
    assert (e.action, e.client_id, json.loads(e.details_json)) == ("secret-list", None, {"clients": 2})
    assert problem_of(served.admin, e) is None


def _name(served: Served, secret: m.Secret) -> str:
    """The secret's name, opened by the admin in-process (its metadata under the client key)."""
    admin = served.admin
    with admin.core.store.read() as s:
        client = s.get(m.Client, secret.client_id)
        row = s.get(m.SecretVersion, (secret.id, secret.current_version))
        assert client is not None and row is not None
        return str(admin.secrets.open(s, client, secret, row).metadata["name"])


def test_carol_without_a_grant_lists_nothing_and_is_404_for_a_client_named(keyed: Keyed) -> None:
    served, carol = keyed.served, keyed.carol
    assert reader(served, carol).list() == []
    assert json.loads(events(served)[-1].details_json) == {"clients": 0}
    me = carol.keyholder.me()
    for named in (True, False):
        body = ListSecretsRequest(caller_of(carol), (1, 2), (), me.org_signing_public, named)
        before = database_state(served.db_url)
        response = signed_post(served, LIST_PATH, envelope("secrets.list", body), carol)
        if named:  # a client named without a grant: refused before any secret is read
            refused(response, 404, "NotFound")
            assert database_state(served.db_url) == before
        else:  # her clients: the ids she has no grant for are dropped, not even counted
            listing = answer_of(response, "secrets.list")
            assert [p.secrets for p in listing.pages] == [()] and [p.clients for p in listing.pages] == [()]
    with pytest.raises(NotFound):
        reader(served, carol).show("acme/fw01")  # no grant: her lookup finds no such client


@pytest.mark.parametrize("path", [SHOW, HISTORY_PATH])
def test_a_read_of_a_client_without_a_grant_is_404_and_nothing_is_written(keyed: Keyed, path: str) -> None:
    served, carol, alice = keyed.served, keyed.carol, keyed.served.alice
    action = VIEW if path == SHOW else HISTORY
    body = ReadRequest(action, dataclasses.replace(target(alice, 1, "fw01"), caller=caller_of(carol)))
    name = path.removeprefix("/v1/").replace("/", ".")
    before = database_state(served.db_url)
    refused(signed_post(served, path, envelope(name, body), carol), 404, "NotFound")
    assert database_state(served.db_url) == before


# -- raw requests: an insider's ------------------------------------------------------------------------


def _bodies(keyed: Keyed) -> dict[str, object]:
    alice = keyed.served.alice
    me = alice.keyholder.me()
    return {
        SHOW: ReadRequest(VIEW, target(alice, 1, "fw01")),
        HISTORY_PATH: ReadRequest(HISTORY, target(alice, 1, "fw01")),
        LIST_PATH: ListSecretsRequest(caller_of(alice), (1,), (), me.org_signing_public, True),
    }


@pytest.mark.parametrize("path", [SHOW, HISTORY_PATH, LIST_PATH])
def test_a_body_naming_another_caller_is_403_and_nothing_is_written(keyed: Keyed, path: str) -> None:
    served = keyed.served
    body = _bodies(keyed)[path]
    bob = caller_of(served.bob)
    if isinstance(body, ReadRequest):
        body = dataclasses.replace(body, target=dataclasses.replace(body.target, caller=bob))
    else:
        body = dataclasses.replace(body, caller=bob)
    before = database_state(served.db_url)
    name = path.removeprefix("/v1/").replace("/", ".")
    refused(signed_post(served, path, envelope(name, body), served.alice), 403, "AccessDenied")
    assert database_state(served.db_url) == before


@pytest.mark.parametrize("change", ["extra-field", "other-action", "other-route-value", "float"])
@pytest.mark.parametrize("path", [SHOW, HISTORY_PATH, LIST_PATH])
def test_a_malformed_body_is_400_and_nothing_is_written(keyed: Keyed, path: str, change: str) -> None:
    served = keyed.served
    bodies = _bodies(keyed)
    name = path.removeprefix("/v1/").replace("/", ".")
    body = bodies[path]
    if change == "other-action":
        data = envelope(name, dataclasses.replace(body, action="secret-update"))  # type: ignore[type-var]
    elif change == "other-route-value":  # another route's value under this route's name
        other = bodies[LIST_PATH] if path != LIST_PATH else bodies[SHOW]
        document = json.loads(envelope(name, body))
        document["body"] = json.loads(envelope("secrets.list" if path != LIST_PATH else "secrets.show", other))["body"]
        data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    elif change == "float":
        document = json.loads(envelope(name, body))
        caller = document["body"]["caller"] if path == LIST_PATH else document["body"]["target"]["caller"]
        caller["engineer_id"] = 1.5
        data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    else:
        data = with_extra_field(envelope(name, body))
    before = database_state(served.db_url)
    refused(signed_post(served, path, data, served.alice), 400, "InvalidInput")
    assert database_state(served.db_url) == before


# -- with no database on the engineer's machine ---------------------------------------------------------


def test_the_store_less_keyholders_show_and_list_through_the_server(
    keyed: Keyed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDVAULT_HOME", str(tmp_path / "home"))
    served = keyed.served
    identity = serverjoin.trust(served.url, str(served.ca.ca_file))
    pin = serverjoin.pin(served.url, identity, str(served.ca.ca_file))
    serverjoin.join(pin, served.alice, "alice", "pass of alice")
    remote = RemoteVault(pin, engineer="alice", sessions=MemorySessionStore(), clock=ticking(served.alice.clock))
    try:
        remote.engineers.unlock("alice", "pass of alice")
        keys, cache = remote.keyholder, remote.keyholder.client_keys
        lookup = remote.checkouts.keyholder.lookup
        granted = grant_client_ids(keys, cache, remote.https)
        secrets, listing = remote_secret_keyholders(
            keys, cache, remote.https, lookup.context, granted, served.alice.clock
        )
        info = opened_info(secrets.show("acme/fw01"))
        assert info == reader(served, served.alice).show("acme/fw01")  # the Vault's record, through the server
        assert opened_history(secrets.history("acme/fw02")) == reader(served, served.alice).history("acme/fw02")
        assert granted() == (1, 2)
        scope, listed = listing.listed(None, Secrets.info)
        assert scope.client_ids == (1, 2)
        assert sorted(listed, key=lambda i: (i.client, i.name)) == reader(served, served.alice).list()
        _, named = listing.list("excl")
        assert {n.slug for n in named} == {"excl"}
    finally:
        remote.close()
    assert served.admin.audit.verify().ok


# -- with the server layer (last in the module: the layer goes on its whole database) --------------------


@dataclass
class Layered:
    served: Served
    layer: ServerLayer
    key: ServerSigningKey


@pytest.fixture(scope="module")
def layered(keyed: Keyed, test_ca: CertificateFiles) -> Iterator[Layered]:
    layer = ServerLayer(MasterKey(1, os.urandom(32)))
    layer.layer_on(keyed.store)
    with server_with(keyed, test_ca, layer) as served:
        yield Layered(served, layer, keyed.key)


@pytest.mark.parametrize("path", [SHOW, HISTORY_PATH])
def test_a_layered_read_releases_the_one_version_its_committed_event_names(layered: Layered, path: str) -> None:
    served, alice = layered.served, layered.served.alice
    body = _bodies_for(alice)[path]
    name = path.removeprefix("/v1/").replace("/", ".")
    before = len(events(served))
    answer = answer_of(signed_post(served, path, envelope(name, body), alice), name)
    assert answer.version.wrapped_dek[1] == BLOB_DATA_KEY  # released: the layer is off
    assert answer.version.password_blob == b""
    new = events(served)[before:]
    assert [e.action for e in new] == [body.action] and answer.seq == new[0].seq  # type: ignore[attr-defined]
    facts = json.loads(new[0].details_json)
    assert facts["released"] == [[answer.client.id, answer.secret.id, answer.version.version]]
    assert problem_of(alice, new[0]) is None
    info = reader(served, alice).show("acme/fw01")  # the keyholder opens what was released
    assert info.username == KEYED_METADATA["acme/fw01"]["username"]
    assert served.admin.audit.verify().ok


def test_a_layered_listing_releases_exactly_the_versions_its_event_names(layered: Layered) -> None:
    served, bob = layered.served, layered.served.bob
    me = bob.keyholder.me()
    body = ListSecretsRequest(caller_of(bob), (1, 2), (), me.org_signing_public, False)  # acme is not his
    before = len(events(served))
    listing = answer_of(signed_post(served, LIST_PATH, envelope("secrets.list", body), bob), "secrets.list")
    rows = [r for p in listing.pages for r in p.secrets]
    assert rows and {r.client_id for r in rows} == {2}
    assert all(r.version.wrapped_dek[1] == BLOB_DATA_KEY and r.version.password_blob == b"" for r in rows)
    new = events(served)[before:]
    assert [e.action for e in new] == ["secret-list"]
    facts = json.loads(new[0].details_json)
    assert facts == {"clients": 1, "released": sorted([r.client_id, r.secret_id, r.version.version] for r in rows)}
    assert problem_of(bob, new[0]) is None
    assert {i.client for i in reader(served, bob).list()} == {"excl"}
    assert served.admin.audit.verify().ok


def _fail_event_commits(store: Store) -> None:
    """Every commit of a unit that appends an audit event fails, as a lost database would (the
    append is a Core INSERT: the statement marks its connection, the commit then fails)."""
    error = store.engine.dialect.loaded_dbapi.OperationalError
    appended = "test.appended"

    def mark(conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO AUDIT_EVENTS"):
            conn.info[appended] = True

    def commit(conn: Any) -> None:
        if conn.info.pop(appended, False):
            raise error("injected: the commit failed")

    sa_event.listen(store.engine, "before_cursor_execute", mark)
    sa_event.listen(store.engine, "rollback", lambda conn: conn.info.pop(appended, None))
    sa_event.listen(store.engine, "commit", commit)


@pytest.mark.parametrize("path", [SHOW, HISTORY_PATH, LIST_PATH])
def test_a_failed_commit_releases_nothing(layered: Layered, path: str) -> None:
    served, alice = layered.served, layered.served.alice
    store = Store(served.db_url)
    try:
        _fail_event_commits(store)
        url = "http://127.0.0.1:8443"
        app = build_app(
            store, public_url=url, nonce_store=DbNonceStore(store), server_key=layered.key, layer=layered.layer
        )
        body = _bodies_for(alice)[path]
        name = path.removeprefix("/v1/").replace("/", ".")
        data = envelope(name, body)
        headers = signed_headers(
            served, path, data, key=alice.keyholder.my_signing_key(), keyid=keyid_of(alice), authority="127.0.0.1:8443"
        )
        before = database_state(served.db_url)
        response = asgi_call(app, "POST", path, data, headers)
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "StoreUnavailable"
        assert database_state(served.db_url) == before  # no event, no nonce
        assert b"wrapped_dek" not in response.content
    finally:
        store.close()


def _bodies_for(alice: Vault) -> dict[str, object]:
    me = alice.keyholder.me()
    return {
        SHOW: ReadRequest(VIEW, target(alice, 1, "fw01")),
        HISTORY_PATH: ReadRequest(HISTORY, target(alice, 1, "fw01")),
        LIST_PATH: ListSecretsRequest(caller_of(alice), (1, 2), (), me.org_signing_public, False),
    }


def test_a_layered_database_copy_opens_nothing_the_listing_did_not_release(layered: Layered) -> None:
    store = Store(layered.served.db_url)
    try:
        with store.read() as s:
            stored = [bytes(k) for k in s.scalars(select(m.SecretVersion.wrapped_dek))]
    finally:
        store.close()
    assert stored and all(k[1] == BLOB_SERVER_LAYER for k in stored)  # a read changed no stored key
