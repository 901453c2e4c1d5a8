"""The clients' reads over HTTPS: ``clients.list`` and ``clients.show`` (format-3 events).

The ``keyed`` team (conftest.py): acme and excl, alice granted both, bob excl, carol nothing.
The server appends ``client-list`` / ``client-view`` keeping the engineer's signed request and
commits it before it answers; the in-process keyholder admits the answer after. An engineer is
answered only the clients whose grant the server verifies (not even a count of the others).
What the keyholder shows is what the database holds: each client's slug and name (opened by the
admin in-process), key version and secret count. Raw requests are an insider's (``signed_post``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_harness import (
    Keyed,
    Served,
    caller_of,
    database_state,
    envelope,
    events,
    signed_post,
    with_extra_field,
)
from sqlalchemy import delete, func, select

from vault import Vault
from vault.authority.client_requests import ListRequest, ShowRequest
from vault.errors import DecryptionFailed, UntrustedRecord
from vault.keyholder.clients import ClientKeyholder
from vault.records import ClientInfo
from vault.service import serverjoin
from vault.service.clientparts import https_client_keyholder
from vault.service.remote import RemoteVault
from vault.service.remote_reads import remote_client_keyholder
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m
from vault.storage.engine import Store
from vault.transport.https import HttpsTransport
from vault.transport.https_clients import HttpsClientTransport
from vault.wire.eventrequest import request_problem

LIST_PATH, SHOW_PATH = "/v1/clients/list", "/v1/clients/show"


def keyholder(served: Served, vault: Vault) -> ClientKeyholder:
    https = HttpsTransport(served.url, vault.keyholder, ca_file=str(served.ca.ca_file))
    vault.keyholder.me()
    return https_client_keyholder(vault.clients, https)


def stored(served: Served, *slugs: str) -> list[ClientInfo]:
    """``ClientInfo`` of each client as the database holds it (slug and name opened by the admin)."""
    admin = served.admin
    with admin.core.store.read() as s:
        out = []
        for client in s.scalars(select(m.Client).order_by(m.Client.id)):
            slug = admin.clients.slug(s, client)
            if slug not in slugs:
                continue
            name = admin.clients.keys.client_field(s, client, client.name_blob, "name").decode()
            count = s.scalar(select(func.count()).select_from(m.Secret).where(m.Secret.client_id == client.id))
            out.append(ClientInfo(slug, name, client.current_key_version, int(count or 0), client.created_at))
    return sorted(out, key=lambda c: c.slug)


def problem_of(vault: Vault, e: m.AuditEvent) -> str | None:
    return request_problem(
        e.engineer_id, e.key_generation, e.action, e.client_id, e.at_us, e.request_id,
        e.request_digest, e.request_sig, e.request_body, vault.keyholder.my_signing_key().public,
    )  # fmt: skip


def refused(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    problem: dict[str, Any] = response.json()
    assert problem["error"] == error
    return problem


def test_an_engineer_lists_their_granted_clients_through_the_server(keyed: Keyed) -> None:
    served = keyed.served
    before = len(events(served))
    assert keyholder(served, served.alice).list() == stored(served, "acme", "excl")
    assert keyholder(served, served.bob).list() == stored(served, "excl")
    new = events(served)[before:]
    assert [(e.action, e.client_id, json.loads(e.details_json)) for e in new] == [
        ("client-list", None, {"count": 2}),
        ("client-list", None, {"count": 1}),
    ]
    assert all(e.request_id is not None and e.server_key_version == keyed.key.version for e in new)
    assert problem_of(served.alice, new[0]) is None and problem_of(served.bob, new[1]) is None
    assert served.admin.audit.verify().ok


def test_an_admin_lists_every_client_through_the_server(keyed: Keyed) -> None:
    served = keyed.served
    assert keyholder(served, served.admin).list() == stored(served, "acme", "excl")
    assert json.loads(events(served)[-1].details_json) == {"count": 2}


def test_show_through_the_server_is_the_stored_client(keyed: Keyed) -> None:
    served = keyed.served
    before = len(events(served))
    assert [keyholder(served, served.alice).show("excl")] == stored(served, "excl")
    assert [keyholder(served, served.admin).show("acme")] == stored(served, "acme")  # by slug tag
    new = events(served)[before:]
    assert [(e.action, e.client_id, e.details_json) for e in new] == [
        ("client-view", 2, None),
        ("client-view", 1, None),
    ]
    assert problem_of(served.alice, new[0]) is None and problem_of(served.admin, new[1]) is None
    assert served.admin.audit.verify().ok


def test_carol_without_a_grant_lists_nothing_and_is_404_for_a_client(keyed: Keyed) -> None:
    served, carol = keyed.served, keyed.carol
    assert keyholder(served, carol).list() == []
    assert json.loads(events(served)[-1].details_json) == {"count": 0}  # not even a count of the others
    me = carol.keyholder.me()
    body = ShowRequest(caller_of(carol), 1, None, (), me.org_signing_public)
    before = database_state(served.db_url)
    refused(signed_post(served, SHOW_PATH, envelope("clients.show", body), carol), 404, "NotFound")
    assert database_state(served.db_url) == before


def test_a_grant_the_server_cannot_verify_is_not_listed(keyed: Keyed) -> None:
    """A grant row for carol written into the database (no admin signed it): the server refuses
    her listing rather than answer acme's row or count; nothing is written."""
    served, carol = keyed.served, keyed.carol
    me = carol.keyholder.me()
    store = Store(served.db_url)
    try:
        with store.transaction() as s:
            alices = s.scalars(select(m.Grant).where(m.Grant.client_id == 1).order_by(m.Grant.id)).first()
            assert alices is not None
            columns = {c.key: getattr(alices, c.key) for c in m.Grant.__table__.columns if c.key != "id"}
            s.add(m.Grant(**{**columns, "engineer_id": me.engineer_id}))
        body = ListRequest(caller_of(carol), (), me.org_signing_public)
        before = database_state(served.db_url)
        response = signed_post(served, LIST_PATH, envelope("clients.list", body), carol)
        assert response.status_code == 500, response.text
        assert response.json()["error"] == "UntrustedRecord" and b"slug_blob" not in response.content
        assert database_state(served.db_url) == before
    finally:
        with store.transaction() as s:
            s.execute(delete(m.Grant).where(m.Grant.engineer_id == me.engineer_id))
        store.close()


# -- raw requests: an insider's ------------------------------------------------------------------------


def _bodies(vault: Vault) -> dict[str, object]:
    me = vault.keyholder.me()
    return {
        LIST_PATH: ListRequest(caller_of(vault), (), me.org_signing_public),
        SHOW_PATH: ShowRequest(caller_of(vault), 1, None, (), me.org_signing_public),
    }


@pytest.mark.parametrize("path", [LIST_PATH, SHOW_PATH])
def test_a_body_naming_another_caller_is_403_and_nothing_is_written(keyed: Keyed, path: str) -> None:
    served = keyed.served
    body = dataclasses.replace(_bodies(served.bob)[path], caller=caller_of(served.alice))  # type: ignore[type-var]
    before = database_state(served.db_url)
    name = path.removeprefix("/v1/").replace("/", ".")
    refused(signed_post(served, path, envelope(name, body), served.bob), 403, "AccessDenied")
    assert database_state(served.db_url) == before


@pytest.mark.parametrize("change", ["extra-field", "other-action", "string-id", "other-route-value"])
@pytest.mark.parametrize("path", [LIST_PATH, SHOW_PATH])
def test_a_malformed_body_is_400_and_nothing_is_written(keyed: Keyed, path: str, change: str) -> None:
    served, alice = keyed.served, keyed.served.alice
    bodies = _bodies(alice)
    name = path.removeprefix("/v1/").replace("/", ".")
    body = bodies[path]
    document = json.loads(envelope(name, body))
    if change == "other-action":
        data = envelope(name, dataclasses.replace(body, action="client-create"))  # type: ignore[type-var]
    elif change == "string-id":
        document["body"]["caller"]["engineer_id"] = str(document["body"]["caller"]["engineer_id"])
        data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    elif change == "other-route-value":
        other = LIST_PATH if path == SHOW_PATH else SHOW_PATH
        other_name = other.removeprefix("/v1/").replace("/", ".")
        document["body"] = json.loads(envelope(other_name, bodies[other]))["body"]
        data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    else:
        data = with_extra_field(envelope(name, body))
    before = database_state(served.db_url)
    refused(signed_post(served, path, data, alice), 400, "InvalidInput")
    assert database_state(served.db_url) == before


class _Swapping:
    """An insider between the keyholder and the server: the answer's first two clients' slug blobs swapped."""

    def __init__(self, https: HttpsTransport) -> None:
        self.https = https

    def call(self, name: str, body: object, request_id: bytes | None = None) -> object:
        answer: Any = self.https.call(name, body, request_id)
        first, second, *rest = answer.clients
        swapped = (
            dataclasses.replace(first, slug_blob=second.slug_blob),
            dataclasses.replace(second, slug_blob=first.slug_blob),
        )
        return dataclasses.replace(answer, clients=(*swapped, *rest))


def test_a_tampered_answer_is_refused_by_the_keyholder_after_its_event(keyed: Keyed) -> None:
    """Admitting after the event (docs/server.md §4): the keyholder refuses the answer whole,
    the event of the listing already on record."""
    served = keyed.served
    holder = keyholder(served, served.alice)
    https = HttpsTransport(served.url, served.alice.keyholder, ca_file=str(served.ca.ca_file))
    holder.transport = HttpsClientTransport(_Swapping(https))
    before = len(events(served))
    with pytest.raises((DecryptionFailed, UntrustedRecord)):
        holder.list()
    assert [e.action for e in events(served)[before:]] == ["client-list"]
    https.close()


# -- with no database on the engineer's machine ---------------------------------------------------------


def test_the_store_less_client_keyholder_lists_and_shows_through_the_server(
    keyed: Keyed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDVAULT_HOME", str(tmp_path / "home"))
    served = keyed.served
    identity = serverjoin.trust(served.url, str(served.ca.ca_file))
    pin = serverjoin.pin(served.url, identity, str(served.ca.ca_file))
    serverjoin.join(pin, served.bob, "bob", "pass of bob")
    remote = RemoteVault(pin, engineer="bob", sessions=MemorySessionStore(), clock=served.bob.clock)
    try:
        remote.engineers.unlock("bob", "pass of bob")
        keys = remote.keyholder
        contexts = remote.checkouts.keyholder.lookup.context
        clients = remote_client_keyholder(
            keys, keys.client_keys, remote.https, contexts, lambda: keys.slugs, served.bob.clock
        )
        assert clients.list() == stored(served, "excl")
        assert keys.slugs == {"excl": 2}  # the listing's hints
        assert clients.show("excl") == stored(served, "excl")[0]
    finally:
        remote.close()
    assert served.admin.audit.verify().ok
