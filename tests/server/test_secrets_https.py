"""Secrets' adds and updates over HTTPS (issue 14 step 6): a draft, then a commit.

The ``keyed`` team (conftest.py): acme (a reason, not exclusive) and excl (exclusive) with
their secrets, alice granted both, bob excl, carol nothing, the server running with a
certified key. The keyholder drafts (``secrets.add_draft`` reserves the new secret's id;
``secrets.update_draft`` is on record as a ``secret-view``), verifies the rows, encrypts the
version for the id and number drafted and commits it with the draft's digest; the server
recomputes the draft under its locks (409 ``stale-draft`` if it changed), stores the version
and appends a format-3 ``secret-create`` / ``secret-update`` event in the same unit. A value
written so is read back through the server's checkout route. Raw requests are an insider's,
made from what the keyholder sent (``Sent``) and signed again (``signed_post``); every
refusal asserts its status, its problem and that nothing was written.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from server_harness import (
    CertificateFiles,
    Keyed,
    Sent,
    Served,
    database_state,
    events,
    keyholder,
    server_with,
    signed_post,
    without_nonces,
)
from sqlalchemy import func, select
from test_body_scan import Bodies, data_keys, forms, transport, word

from vault import Vault
from vault.authority.requests import Caller
from vault.authority.secret_draft_requests import STALE_DRAFT, SecretDraft
from vault.keyholder.checkouts import CheckoutKeyholder
from vault.server.layer import MasterKey, ServerLayer, is_layered
from vault.service.secretparts import over_https
from vault.service.secrets import Secrets
from vault.storage import models as m
from vault.storage.engine import Store
from vault.transport.https import HttpsTransport
from vault.wire import codec
from vault.wire.eventrequest import request_problem

ADD, ADD_DRAFT = "/v1/secrets/add", "/v1/secrets/add_draft"
UPDATE, UPDATE_DRAFT = "/v1/secrets/update", "/v1/secrets/update_draft"
REASON = "T-3001 rotate the firewall password"


def writer(served: Served, vault: Vault) -> tuple[Secrets, Sent]:
    """``vault``'s secrets with their writes through the server, and what they send."""
    https = HttpsTransport(served.url, vault.keyholder, ca_file=str(served.ca.ca_file))
    sent = Sent()
    https.client.event_hooks["request"].append(sent)
    return over_https(vault.secrets, https), sent


def read_back(served: Served, vault: Vault, ref: str) -> str:
    """The current password of ``ref``, revealed through the server (``checkouts.reveal``)."""
    holder, _ = keyholder(served, vault)
    return reveal(holder, ref)


def reveal(holder: CheckoutKeyholder, ref: str) -> str:
    return holder.checkout(ref, reason=REASON, field="password", version=None, hold=False, hold_for=None).value


def reservations(served: Served) -> int:
    store = Store(served.db_url)
    try:
        with store.read() as s:
            return int(s.scalar(select(func.count()).select_from(m.IdReservation)) or 0)
    finally:
        store.close()


def last_body(sent: Sent, path: str) -> Any:
    """The body of the last request ``sent`` carried to ``path``, decoded."""
    request = next(r for r in reversed(sent.requests) if r.url.path == path)
    return codec.open_envelope(request.content, path.removeprefix("/v1/").replace("/", ".")).body


def envelope(path: str, body: object) -> bytes:
    return codec.envelope(path.removeprefix("/v1/").replace("/", "."), body, os.urandom(codec.REQUEST_ID_BYTES))


def refused(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    problem: dict[str, Any] = response.json()
    assert problem["error"] == error
    return problem


def event_problem(vault: Vault, e: m.AuditEvent) -> str | None:
    public = vault.keyholder.my_signing_key().public
    return request_problem(
        e.engineer_id, e.key_generation, e.action, e.client_id, e.at_us, e.request_id,
        e.request_digest, e.request_sig, e.request_body, public,
    )  # fmt: skip


def test_an_engineer_adds_a_secret_through_the_server_and_it_reads_back(keyed: Keyed) -> None:
    served = keyed.served
    secrets, sent = writer(served, served.alice)
    before = len(events(served))
    info = secrets.add("acme/vpn01", password="a new vpn password", username="ops", kind="equipment")
    assert (info.name, info.version, info.username, info.kind) == ("vpn01", 1, "ops", "equipment")
    new = events(served)[before:]
    assert [e.action for e in new] == ["secret-create"]  # the draft reserved an id and wrote no event
    e = new[0]
    assert (e.server_key_version, json.loads(e.details_json)) == (1, {"kind": "equipment", "version": 1})
    commit = next(r for r in reversed(sent.requests) if r.url.path == ADD)
    assert e.request_body == commit.content and event_problem(served.alice, e) is None
    assert reservations(served) == 0  # used by the commit
    assert read_back(served, served.alice, "acme/vpn01") == "a new vpn password"
    assert served.admin.audit.verify().ok


def test_an_engineer_updates_a_secret_through_the_server_and_it_reads_back(keyed: Keyed) -> None:
    served = keyed.served
    secrets, _ = writer(served, served.alice)
    before = len(events(served))
    info = secrets.update("acme/fw01", password="the new fw01 password", username="admin")
    assert (info.version, info.username) == (2, "admin")
    new = events(served)[before:]
    assert [e.action for e in new] == ["secret-view", "secret-update"]  # the draft released the metadata
    assert json.loads(new[0].details_json) == {"fields": "public-only", "version": 1}
    assert json.loads(new[1].details_json) == {"version": 2, "password_changed": True}
    assert all(event_problem(served.alice, e) is None for e in new)
    assert read_back(served, served.alice, "acme/fw01") == "the new fw01 password"
    assert served.admin.audit.verify().ok


def test_an_admin_adds_and_updates_by_slug_tag_through_the_server(keyed: Keyed) -> None:
    served = keyed.served
    secrets, sent = writer(served, served.admin)
    secrets.add("excl/adm01", password="adm01 first")
    assert secrets.update("excl/adm01", password="adm01 second").version == 2
    target = last_body(sent, UPDATE).target
    assert target.client_id is None and target.slug_tag is not None  # an admin names the client by its tag
    assert read_back(served, served.admin, "excl/adm01") == "adm01 second"
    assert read_back(served, served.alice, "excl/adm01") == "adm01 second"  # alice is granted excl
    assert served.admin.audit.verify().ok


def test_the_draft_withholds_the_current_password_unless_the_update_keeps_it(keyed: Keyed) -> None:
    """A draft for a new password answers no password blob (no reveal without its event); one for an
    update that keeps it answers the blob, only with its ``secret-view`` of the password committed first
    (``password-kept``: the reports count it as a reveal), and the version stored keeps the value."""
    served = keyed.served
    secrets, sent = writer(served, served.alice)
    secrets.update("acme/fw02", password="fw02 second")
    draft = codec.open_envelope(
        signed_post(served, UPDATE_DRAFT, envelope(UPDATE_DRAFT, last_body(sent, UPDATE_DRAFT)), served.alice).content,
        "secrets.update_draft.response",
    ).body
    assert isinstance(draft, SecretDraft) and draft.rows.version is not None
    assert draft.rows.version.password_blob == b""  # no reveal without its event: a draft is a view
    before = len(events(served))
    secrets.update("acme/fw02", username="someone")  # the password kept
    kept = codec.open_envelope(
        signed_post(served, UPDATE_DRAFT, envelope(UPDATE_DRAFT, last_body(sent, UPDATE_DRAFT)), served.alice).content,
        "secrets.update_draft.response",
    ).body
    assert isinstance(kept, SecretDraft) and kept.rows.version is not None and kept.rows.version.password_blob != b""
    view, update = events(served)[before : before + 2]
    assert (view.action, json.loads(view.details_json or "{}")["fields"]) == ("secret-view", "password-kept")
    assert (update.action, json.loads(update.details_json or "{}")["password_changed"]) == ("secret-update", False)
    assert read_back(served, served.alice, "acme/fw02") == "fw02 second"


def test_a_stale_draft_digest_is_409_and_nothing_is_written(keyed: Keyed) -> None:
    served = keyed.served
    secrets, sent = writer(served, served.alice)
    secrets.update("excl/sw01", password="sw01 second")
    old_commit = last_body(sent, UPDATE)
    secrets.update("excl/sw01", password="sw01 third")  # the secret moved on since old_commit's draft
    before = database_state(served.db_url)
    for body in (old_commit, dataclasses.replace(last_body(sent, UPDATE), draft_digest=bytes(32))):
        problem = refused(signed_post(served, UPDATE, envelope(UPDATE, body), served.alice), 409, "ConcurrentChange")
        assert (problem["detail"], problem["code"]) == (STALE_DRAFT, "stale-draft")
        assert database_state(served.db_url) == before  # its nonce too: rolled back with the unit
    assert read_back(served, served.alice, "excl/sw01") == "sw01 third"


def fresh_draft(served: Served, sent: Sent, vault: Vault) -> SecretDraft:
    """A draft made now from the last update draft's body (a ``secret-view`` of its own)."""
    response = signed_post(served, UPDATE_DRAFT, envelope(UPDATE_DRAFT, last_body(sent, UPDATE_DRAFT)), vault)
    assert response.status_code == 200, response.text
    draft = codec.open_envelope(response.content, "secrets.update_draft.response").body
    assert isinstance(draft, SecretDraft)
    return draft


def test_a_version_for_another_number_secret_or_key_is_refused_and_nothing_is_written(keyed: Keyed) -> None:
    served = keyed.served
    secrets, sent = writer(served, served.alice)
    secrets.update("excl/sw02", password="sw02 second")
    commit = last_body(sent, UPDATE)
    draft = fresh_draft(served, sent, served.alice)
    current = dataclasses.replace(commit, draft_digest=draft.digest, new_version=dataclasses.replace(
        commit.new_version, version=draft.next_version))  # fmt: skip
    new = current.new_version
    header = new.wrapped_dek[:2] + (7).to_bytes(4, "big") + new.wrapped_dek[6:]
    other = another_secret_id(served, commit.secret_id)
    cases = [
        (dataclasses.replace(current, new_version=dataclasses.replace(new, version=new.version + 1)), 400, "number"),
        (dataclasses.replace(current, new_version=dataclasses.replace(new, version=new.version - 1)), 400, "number"),
        (dataclasses.replace(current, new_version=dataclasses.replace(new, key_version=7)), 400, "current key"),
        (dataclasses.replace(current, new_version=dataclasses.replace(new, wrapped_dek=header)), 400, "wrapped"),
        (dataclasses.replace(current, secret_id=other), 409, STALE_DRAFT),
    ]
    before = database_state(served.db_url)
    for body, status, why in cases:
        problem = refused(signed_post(served, UPDATE, envelope(UPDATE, body), served.alice), status,
                          "InvalidInput" if status == 400 else "ConcurrentChange")  # fmt: skip
        assert why in problem["detail"] or (why == "number" and "asked for" in problem["detail"])
        assert database_state(served.db_url) == before
    assert read_back(served, served.alice, "excl/sw02") == "sw02 second"


def another_secret_id(served: Served, exclude: int) -> int:
    store = Store(served.db_url)
    try:
        with store.read() as s:
            found = s.scalars(select(m.Secret.id).where(m.Secret.id != exclude).order_by(m.Secret.id)).first()
            assert found is not None
            return int(found)
    finally:
        store.close()


def test_a_replayed_add_commit_finds_no_reservation_and_nothing_is_written(keyed: Keyed) -> None:
    served = keyed.served
    secrets, sent = writer(served, served.alice)
    secrets.add("acme/db01", password="db01 first")
    body = last_body(sent, ADD)
    before = database_state(served.db_url)
    problem = refused(signed_post(served, ADD, envelope(ADD, body), served.alice), 409, "ConcurrentChange")
    assert problem["code"] == "stale-draft"
    assert database_state(served.db_url) == before


def test_another_engineers_reservation_is_not_theirs_to_commit(keyed: Keyed) -> None:
    """bob (granted excl) commits under the id alice's draft reserved: refused, nothing written."""
    served = keyed.served
    secrets, sent = writer(served, served.alice)
    secrets.add("excl/db02", password="db02 first")
    draft_body = last_body(sent, ADD_DRAFT)
    response = signed_post(served, ADD_DRAFT, envelope(ADD_DRAFT, dataclasses.replace(
        draft_body, target=dataclasses.replace(draft_body.target, name_tag=os.urandom(32)))), served.alice)  # fmt: skip
    assert response.status_code == 200, response.text
    draft = codec.open_envelope(response.content, "secrets.add_draft.response").body
    bob = served.bob.keyholder.me()
    commit = last_body(sent, ADD)
    body = dataclasses.replace(
        commit,
        target=dataclasses.replace(draft_body.target, caller=Caller(bob.engineer_id, bob.key_generation)),
        secret_id=draft.rows.secret.id,
        draft_digest=draft.digest,
    )
    before = database_state(served.db_url)
    problem = refused(signed_post(served, ADD, envelope(ADD, body), served.bob), 409, "ConcurrentChange")
    assert problem["code"] == "stale-draft"
    assert database_state(served.db_url) == before


@pytest.mark.parametrize("path", [ADD_DRAFT, UPDATE_DRAFT, ADD, UPDATE])
def test_an_engineer_without_a_grant_is_404_and_nothing_is_written(keyed: Keyed, path: str) -> None:
    served = keyed.served
    secrets, sent = writer(served, served.alice)
    ref = "acme/g-" + path.rsplit("/", 1)[1].replace("_", "-")
    secrets.add(ref, password="granted to alice")
    secrets.update(ref, password="granted to alice, 2")
    carol = keyed.carol.keyholder.me()
    body = last_body(sent, path)
    caller = Caller(carol.engineer_id, carol.key_generation)
    body = dataclasses.replace(body, target=dataclasses.replace(body.target, caller=caller))
    before = without_nonces(database_state(served.db_url))
    problem = refused(signed_post(served, path, envelope(path, body), keyed.carol), 404, "NotFound")
    assert problem["type"] == "urn:credvault:not-found"
    assert without_nonces(database_state(served.db_url)) == before


@pytest.mark.parametrize("path", [ADD_DRAFT, UPDATE_DRAFT, ADD, UPDATE])
def test_a_body_naming_another_caller_is_403_and_nothing_is_written(keyed: Keyed, path: str) -> None:
    served = keyed.served
    secrets, sent = writer(served, served.alice)
    ref = "excl/c-" + path.rsplit("/", 1)[1].replace("_", "-")
    secrets.add(ref, password="for alice")
    secrets.update(ref, password="for alice, 2")
    bob = served.bob.keyholder.me()
    body = last_body(sent, path)
    caller = Caller(bob.engineer_id, bob.key_generation)
    body = dataclasses.replace(body, target=dataclasses.replace(body.target, caller=caller))
    before = without_nonces(database_state(served.db_url))
    problem = refused(signed_post(served, path, envelope(path, body), served.alice), 403, "AccessDenied")
    assert problem["type"] == "urn:credvault:access-denied"
    assert without_nonces(database_state(served.db_url)) == before


def test_an_expired_reservation_is_refused_and_nothing_is_written(keyed: Keyed) -> None:
    served = keyed.served
    secrets, sent = writer(served, served.alice)
    secrets.add("acme/exp01", password="exp01 first")
    draft_body = dataclasses.replace(last_body(sent, ADD_DRAFT), target=dataclasses.replace(
        last_body(sent, ADD_DRAFT).target, name_tag=os.urandom(32)))  # fmt: skip
    response = signed_post(served, ADD_DRAFT, envelope(ADD_DRAFT, draft_body), served.alice)
    assert response.status_code == 200, response.text
    draft = codec.open_envelope(response.content, "secrets.add_draft.response").body
    with keyed.store.transaction() as s:  # five minutes pass
        held = s.get(m.IdReservation, ("secret", draft.rows.secret.id))
        assert held is not None and held.engineer_id == served.alice.keyholder.me().engineer_id
        held.expires_at = held.reserved_at
    commit = dataclasses.replace(
        last_body(sent, ADD), target=draft_body.target, secret_id=draft.rows.secret.id, draft_digest=draft.digest
    )
    before = database_state(served.db_url)
    problem = refused(signed_post(served, ADD, envelope(ADD, commit), served.alice), 409, "ConcurrentChange")
    assert problem["code"] == "stale-draft"
    assert database_state(served.db_url) == before


def test_each_draft_reserves_a_new_id_and_an_unused_one_is_never_handed_out_again(keyed: Keyed) -> None:
    served = keyed.served
    secrets, sent = writer(served, served.alice)
    secrets.add("acme/ids01", password="ids01")
    body = last_body(sent, ADD_DRAFT)
    body = dataclasses.replace(body, target=dataclasses.replace(body.target, name_tag=os.urandom(32)))
    reserved = []
    for _ in range(2):  # drafted, never committed: their ids are gaps
        response = signed_post(served, ADD_DRAFT, envelope(ADD_DRAFT, body), served.alice)
        assert response.status_code == 200, response.text
        reserved.append(codec.open_envelope(response.content, "secrets.add_draft.response").body.rows.secret.id)
    with keyed.store.transaction() as s:  # both lapse, and the next draft deletes them
        for held in s.scalars(select(m.IdReservation)):
            held.expires_at = held.reserved_at
    assert secrets.add("acme/ids02", password="ids02").version == 1
    with keyed.store.read() as s:
        newest = s.scalar(select(func.max(m.Secret.id)))
        left = s.scalar(select(func.count()).select_from(m.IdReservation))
    assert reserved[0] < reserved[1] < int(newest or 0) and left == 0


class Racing:
    """An ``HttpsTransport`` that lets another update land between the first draft and its commit."""

    def __init__(self, https: HttpsTransport, other: Secrets, ref: str) -> None:
        self.https, self.other, self.ref, self.raced = https, other, ref, False

    def call(self, name: str, body: object, request_id: bytes | None = None) -> object:
        if name == "secrets.update" and not self.raced:
            self.raced = True
            self.other.update(self.ref, password="the racing password")
        return self.https.call(name, body, request_id)


def test_a_stale_draft_is_drafted_once_more_by_the_keyholder(keyed: Keyed) -> None:
    served = keyed.served
    other, _ = writer(served, served.alice)
    https = HttpsTransport(served.url, served.alice.keyholder, ca_file=str(served.ca.ca_file))
    racing = Racing(https, other, "acme/fw02")
    secrets = over_https(served.alice.secrets, racing)  # type: ignore[arg-type]
    before = len(events(served))
    info = secrets.update("acme/fw02", password="the winning password")
    assert racing.raced
    new = events(served)[before:]
    # the racer's view and update, then this writer's first view (stale), its second view and its update
    assert [e.action for e in new] == ["secret-view", "secret-view", "secret-update", "secret-view", "secret-update"]
    assert [json.loads(e.details_json)["version"] for e in new if e.action == "secret-update"] == [
        info.version - 1,
        info.version,
    ]
    assert read_back(served, served.alice, "acme/fw02") == "the winning password"
    assert served.admin.audit.verify().ok


def test_no_body_of_an_add_and_an_update_holds_a_plaintext_or_a_key(keyed: Keyed) -> None:
    """The body scan (test_body_scan.py) over the secrets' write routes: drafts and commits."""
    served, bodies = keyed.served, Bodies()
    secrets = over_https(served.alice.secrets, transport(keyed, served.alice, bodies))
    meta = {"username": "scan-user-4711", "host": "scan-host.example.net", "note": "a note to scan 0815"}
    secrets.add("acme/scan01", password="scan01 first pw", **meta)
    secrets.update("acme/scan01", password="scan01 second pw", host=None, url="https://scan-url.example.net/login")
    assert len(bodies.seen) == 2 * 4  # two drafts, two commits, and their answers
    words = ["acme", "Acme Ltd", "acme/scan01", "scan01", "scan01 first pw", "scan01 second pw", *meta.values()]
    words.append("https://scan-url.example.net/login")
    session = served.alice.keyholder.me()
    keys = [session.signing_seed, session.sealing_private, *data_keys(keyed, served.alice)]
    keys += [key for key in served.alice.checkouts.keys.client_keys.values() if isinstance(key, bytes)]
    assert len(keys) >= 2 + 2 + 1  # the private keys, the new versions' data keys, acme's client key
    found = []
    for body in bodies.seen:
        found += [w for w in words if word(w).search(body)]
        found += [key[:4].hex() for key in keys for form in forms(key) if form in body]
    assert found == []


def resent(served: Served, sent: Sent, path: str, vault: Vault) -> tuple[bytes, httpx.Response]:
    """The last envelope ``sent`` carried to ``path``, sent again as it was under a new signature."""
    body = next(r for r in reversed(sent.requests) if r.url.path == path).content
    return body, signed_post(served, path, body, vault)


@pytest.mark.parametrize("path", [ADD, UPDATE])
def test_a_commit_sent_again_under_a_new_signature_is_answered_from_its_event(keyed: Keyed, path: str) -> None:
    """server.md §3 "Retries are not replays": the same envelope (same request id) of a committed
    add or update, under a new signature and nonce, is answered from its ``secret-create`` /
    ``secret-update``: that seq, the secret at the version stored, the version as the keyholder
    sent it; nothing appended or stored (its nonce aside); the chain verifies."""
    served = keyed.served
    secrets, sent = writer(served, served.alice)
    if path == ADD:
        info = secrets.add("acme/rt01", password="rt01 first", kind="service")
    else:
        info = secrets.update("excl/sw05", password="sw05 second")
    operation = path.removeprefix("/v1/").replace("/", ".")
    committed = events(served)[-1]
    before = without_nonces(database_state(served.db_url))
    body, response = resent(served, sent, path, served.alice)
    assert response.status_code == 200, response.text
    answer = codec.open_envelope(response.content, f"{operation}.response")
    request = codec.open_envelope(body, operation)
    assert answer.request_id == request.request_id == committed.request_id
    rows = answer.body
    assert (rows.seq, rows.secret.id, rows.secret.current_version) == (committed.seq, committed.secret_id, info.version)
    assert rows.version.wrapped_dek == request.body.new_version.wrapped_dek  # as the keyholder sent it
    assert rows.version.version == info.version and not rows.secret.must_change
    assert without_nonces(database_state(served.db_url)) == before
    assert served.admin.audit.verify().ok


@pytest.mark.parametrize("path", [ADD, UPDATE])
def test_a_commits_request_id_sent_again_with_another_body_is_409_and_nothing_is_written(
    keyed: Keyed, path: str
) -> None:
    served = keyed.served
    secrets, sent = writer(served, served.alice)
    if path == ADD:
        secrets.add("acme/rt02", password="rt02 first", kind="service")
    else:
        secrets.update("excl/sw05", password="sw05 third")
    operation = path.removeprefix("/v1/").replace("/", ".")
    opened = codec.open_envelope(next(r for r in reversed(sent.requests) if r.url.path == path).content, operation)
    changed = dataclasses.replace(opened.body, kind="equipment")
    body = codec.envelope(operation, changed, opened.request_id)
    before = database_state(served.db_url)
    response = signed_post(served, path, body, served.alice)
    assert response.status_code == 409, response.text
    assert (response.json()["error"], response.json()["code"]) == ("AlreadyExists", "request-id-reused")
    assert database_state(served.db_url) == before  # not even the nonce: the unit rolled back


# -- with the server layer (last in the module: the layer goes on its whole database) ------------


@pytest.fixture(scope="module")
def layered(keyed: Keyed, test_ca: CertificateFiles) -> Iterator[Served]:
    """A server with the layer (its master key) over the module's database, layered first."""
    layer = ServerLayer(MasterKey(1, os.urandom(32)))
    layer.layer_on(keyed.store)
    with server_with(keyed, test_ca, layer) as served:
        yield served


def stored_keys(keyed: Keyed, secret_id: int) -> list[bytes]:
    with keyed.store.read() as s:
        found = s.scalars(select(m.SecretVersion.wrapped_dek).where(m.SecretVersion.secret_id == secret_id))
        return [bytes(w) for w in found]


def test_through_a_layered_server_a_write_is_stored_under_the_layer_and_reads_back(
    keyed: Keyed, layered: Served
) -> None:
    secrets, sent = writer(layered, layered.alice)
    secrets.add("acme/lay01", password="lay01 first", username="ops")
    info = secrets.update("acme/lay01", password="lay01 second")  # the draft's version answered without the layer
    assert (info.version, info.username) == (2, "ops")
    secret_id = last_body(sent, UPDATE).secret_id
    keys = stored_keys(keyed, secret_id)
    assert len(keys) == 2 and all(is_layered(k) for k in keys)  # no database copy opens them
    assert last_body(sent, UPDATE).new_version.wrapped_dek not in keys
    assert read_back(layered, layered.alice, "acme/lay01") == "lay01 second"
    assert layered.admin.audit.verify().ok


def test_a_layered_server_refuses_a_data_key_that_is_not_a_wrapped_key(keyed: Keyed, layered: Served) -> None:
    secrets, sent = writer(layered, layered.alice)
    secrets.update("acme/lay01", password="lay01 third")
    commit = last_body(sent, UPDATE)
    draft = fresh_draft(layered, sent, layered.alice)
    new = commit.new_version
    short = dataclasses.replace(new, version=draft.next_version, wrapped_dek=new.wrapped_dek[:-1])  # header intact
    body = dataclasses.replace(commit, new_version=short, draft_digest=draft.digest)
    before = database_state(layered.db_url)
    problem = refused(signed_post(layered, UPDATE, envelope(UPDATE, body), layered.alice), 400, "InvalidInput")
    assert "not a wrapped data key" in problem["detail"]
    assert database_state(layered.db_url) == before
    assert read_back(layered, layered.alice, "acme/lay01") == "lay01 third"
