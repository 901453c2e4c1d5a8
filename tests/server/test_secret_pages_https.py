"""``secret list`` through the server in bounded pages (``secrets.list_page``).

The ``keyed`` team (conftest.py), acme given more secrets here (through the server, by alice) so
that a listing spans pages. The client walks the pages one request each, each page on record
(a ``secret-list`` event, the first with a whole listing's facts, a later one naming its cursor
``after``) before it is answered; the keyholder verifies each page. The server caps a page; a
cursor is only a position, so one sent by another engineer answers their own scope after it and
nothing else. A server whose cursor does not move forward is refused. Both engines.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from server_harness import (
    CertificateFiles,
    Keyed,
    Served,
    caller_of,
    database_state,
    envelope,
    events,
    server_with,
    signed_post,
    without_nonces,
)
from sqlalchemy import select

from vault import Vault
from vault.authority.secret_draft_requests import WITHHELD
from vault.authority.secret_requests import (
    ListedSecretRow,
    ListSecretsRequest,
    SecretListPage,
    SecretPage,
    SecretPageRequest,
)
from vault.crypto.labels import BLOB_DATA_KEY
from vault.errors import UntrustedRecord
from vault.server import secret_read_routes
from vault.server.layer import MasterKey, ServerLayer
from vault.service.secretparts import over_https
from vault.storage import models as m
from vault.storage.engine import Store
from vault.transport import https_secrets
from vault.transport.https import HttpsTransport
from vault.transport.https_secrets import HttpsSecretTransport
from vault.wire import codec

PAGE_PATH = "/v1/secrets/list_page"
ACME, EXCL = 1, 2
ACME_SECRETS = 10  # with pages of 4: two full pages and a half


def secret_ids(served: Served, *client_ids: int) -> list[int]:
    store = Store(served.db_url)
    try:
        with store.read() as s:
            query = select(m.Secret.id).where(m.Secret.client_id.in_(client_ids)).order_by(m.Secret.id)
            return list(s.scalars(query))
    finally:
        store.close()


class Lister:
    """``vault``'s secrets through the server, each ``secrets.list_page`` answer kept."""

    def __init__(self, served: Served, vault: Vault) -> None:
        vault.keyholder.me()
        self.https = HttpsTransport(served.url, vault.keyholder, ca_file=str(served.ca.ca_file))
        self.pages: list[SecretListPage] = []
        call = self.https.call

        def kept(name: str, body: object, request_id: bytes | None = None) -> object:
            answer = call(name, body, request_id)
            if name == "secrets.list_page":
                assert isinstance(answer, SecretListPage)
                self.pages.append(answer)
            return answer

        self.https.call = kept  # type: ignore[method-assign]
        self.secrets = over_https(vault.secrets, self.https)

    def close(self) -> None:
        self.https.close()


@pytest.fixture(scope="module")
def paged(keyed: Keyed) -> Keyed:
    """acme with ``ACME_SECRETS`` secrets (the new ones added through the server by alice)."""
    served = keyed.served
    lister = Lister(served, served.alice)
    try:
        for n in range(ACME_SECRETS - len(secret_ids(served, ACME))):
            lister.secrets.add(f"acme/page{n:02d}", password=f"pw {n}")
    finally:
        lister.close()
    assert len(secret_ids(served, ACME)) == ACME_SECRETS
    return keyed


@pytest.fixture
def lister(paged: Keyed) -> Any:
    opened: list[Lister] = []

    def make(vault: Vault) -> Lister:
        opened.append(Lister(paged.served, vault))
        return opened[-1]

    yield make
    for item in opened:
        item.close()


def test_two_and_a_half_pages_list_every_secret_once_in_order(
    paged: Keyed, lister: Callable[[Vault], Lister], monkeypatch: pytest.MonkeyPatch
) -> None:
    served = paged.served
    whole = [(i.client, i.name) for i in lister(served.alice).secrets.list("acme")]  # one page of 250
    monkeypatch.setattr(https_secrets, "LIST_PAGE", 4)
    alice = lister(served.alice)
    before = len(events(served))
    listed = alice.secrets.list("acme")
    assert [(i.client, i.name) for i in listed] == whole and len(whole) == ACME_SECRETS
    ids = secret_ids(served, ACME)
    assert [[r.secret_id for r in p.page.secrets] for p in alice.pages] == [ids[:4], ids[4:8], ids[8:]]
    assert [p.next_after for p in alice.pages] == [ids[3], ids[7], None]
    new = events(served)[before:]
    me = served.alice.keyholder.me().engineer_id
    assert [(e.action, e.engineer_id, e.client_id) for e in new] == [("secret-list", me, ACME)] * 3
    assert [e.seq for e in new] == [p.seq for p in alice.pages]  # each page answered once its event committed
    assert [json.loads(e.details_json) if e.details_json else None for e in new] == [
        None, {"after": ids[3]}, {"after": ids[7]},
    ]  # fmt: skip
    assert served.admin.audit.verify().ok


def test_a_listing_of_every_granted_client_pages_across_clients(
    paged: Keyed, lister: Callable[[Vault], Lister], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages of 3 over acme and excl: a client's row sent again on a later page is taken once."""
    served = paged.served
    whole = [(i.client, i.name) for i in lister(served.alice).secrets.list()]
    monkeypatch.setattr(https_secrets, "LIST_PAGE", 3)
    alice = lister(served.alice)
    assert [(i.client, i.name) for i in alice.secrets.list()] == whole
    ids = secret_ids(served, ACME, EXCL)
    assert [r.secret_id for p in alice.pages for r in p.page.secrets] == ids
    assert len(alice.pages) == len(ids) // 3 + 1  # the last one short (perhaps empty)
    again = [c.id for p in alice.pages for c in p.page.clients]
    assert sorted(set(again)) == [ACME, EXCL] and len(again) > 2  # rows sent again on later pages


def test_a_page_too_large_for_its_answer_is_trimmed_and_the_listing_goes_on_after_it(
    paged: Keyed, lister: Callable[[Vault], Lister], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server keeps a page's encoding within ``PAGE_BYTES``: fewer secrets than asked, the
    cursor after the last one kept, each page's event naming what it answered."""
    served = paged.served
    whole = [(i.client, i.name) for i in lister(served.alice).secrets.list("acme")]  # one page: about 5.6 KB
    monkeypatch.setattr(secret_read_routes, "PAGE_BYTES", 2500)
    alice = lister(served.alice)
    before = len(events(served))
    assert [(i.client, i.name) for i in alice.secrets.list("acme")] == whole
    sizes = [len(p.page.secrets) for p in alice.pages]
    assert len(sizes) > 2 and sum(sizes) == ACME_SECRETS and all(n >= 1 for n in sizes)
    assert all(len(codec.encode(p.page)) <= 2500 for p in alice.pages if len(p.page.secrets) > 1)
    ids = secret_ids(served, ACME)
    assert [r.secret_id for p in alice.pages for r in p.page.secrets] == ids
    cursors = [p.page.secrets[-1].secret_id for p in alice.pages[:-1]]
    assert [p.next_after for p in alice.pages] == [*cursors, None]
    new = events(served)[before:]
    assert [json.loads(e.details_json) if e.details_json else None for e in new] == [
        None, *({"after": c} for c in cursors)
    ]  # fmt: skip


def page_body(vault: Vault, client_ids: tuple[int, ...] | None, named: bool, after: int, limit: int) -> bytes:
    me = vault.keyholder.me()
    request = SecretPageRequest(caller_of(vault), client_ids, (), me.org_signing_public, named, after, limit)
    return envelope("secrets.list_page", request)


def answer_of(response: httpx.Response) -> SecretListPage:
    assert response.status_code == 200, response.text
    body = codec.open_envelope(response.content, "secrets.list_page.response").body
    assert isinstance(body, SecretListPage)
    return body


def test_the_server_caps_a_page_whatever_the_request_asks(paged: Keyed, monkeypatch: pytest.MonkeyPatch) -> None:
    served = paged.served
    monkeypatch.setattr(secret_read_routes, "MAX_LIST_PAGE", 3)
    page = answer_of(signed_post(served, PAGE_PATH, page_body(served.alice, (ACME,), True, 0, 10**6), served.alice))
    ids = secret_ids(served, ACME)
    assert [r.secret_id for r in page.page.secrets] == ids[:3] and page.next_after == ids[2]
    assert all(r.version is not None and r.version.password_blob == WITHHELD for r in page.page.secrets)


def test_a_cursor_sent_by_another_engineer_answers_only_their_own_scope(paged: Keyed) -> None:
    served = paged.served
    cursor = secret_ids(served, ACME)[3]  # alice's second page of acme starts after it
    before = without_nonces(database_state(served.db_url))
    named = signed_post(served, PAGE_PATH, page_body(served.bob, (ACME,), True, cursor, 4), served.bob)
    assert named.status_code == 404 and named.json()["error"] == "NotFound"  # acme is not his
    assert without_nonces(database_state(served.db_url)) == before
    mine = answer_of(signed_post(served, PAGE_PATH, page_body(served.bob, (ACME, EXCL), False, cursor, 50), served.bob))
    assert [r.secret_id for r in mine.page.secrets] == [i for i in secret_ids(served, EXCL) if i > cursor]
    assert {c.id for c in mine.page.clients} <= {EXCL} and mine.next_after is None
    e = events(served)[-1]
    assert (e.action, e.engineer_id, json.loads(e.details_json)) == (
        "secret-list", served.bob.keyholder.me().engineer_id, {"clients": 1, "after": cursor},
    )  # fmt: skip
    carol = answer_of(signed_post(served, PAGE_PATH, page_body(paged.carol, (ACME, EXCL), False, cursor, 50),
                                  paged.carol))  # fmt: skip
    assert carol.page.secrets == () and carol.page.clients == ()


@pytest.mark.parametrize(("after", "limit", "signer", "status"),
                         [(-1, 4, "alice", 400), (0, 0, "alice", 400), (0, 4, "bob", 403)])  # fmt: skip
def test_a_page_request_out_of_range_or_for_another_caller_writes_nothing(
    paged: Keyed, after: int, limit: int, signer: str, status: int
) -> None:
    served = paged.served
    before = without_nonces(database_state(served.db_url))
    sent_by = served.alice if signer == "alice" else served.bob
    answer = signed_post(served, PAGE_PATH, page_body(served.alice, (ACME,), True, after, limit), sent_by)
    assert answer.status_code == status
    assert without_nonces(database_state(served.db_url)) == before


# --- a server whose cursor does not move forward ----------------------------------------------------


class _Answers:
    def __init__(self, *answers: SecretListPage) -> None:
        self.answers = list(answers)

    def call(self, name: str, body: object, request_id: bytes | None = None) -> object:
        assert name == "secrets.list_page"
        return self.answers.pop(0)


def _page(*secret_ids: int) -> SecretPage:
    import datetime as dt

    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    rows = tuple(ListedSecretRow(1, i, "other", 1, at, at, None) for i in secret_ids)
    return SecretPage(b"v", b"o", (), None, (), rows, ())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rows", "cursor"), [((7, 8), 6), ((7, 8), 5), ((7, 9), 8)], ids=["not-moving", "backwards", "behind-its-rows"]
)
def test_a_cursor_that_does_not_move_past_the_page_is_refused(rows: tuple[int, ...], cursor: int) -> None:
    request = ListSecretsRequest(caller=None, client_ids=(1,), known_key_versions=(), org_pin=b"")  # type: ignore[arg-type]
    answers = _Answers(SecretListPage(1, _page(3, 4, 5, 6), 6), SecretListPage(2, _page(*rows), cursor))
    pages = HttpsSecretTransport(answers).list_secrets(request)
    assert [r.secret_id for r in next(pages).secrets] == [3, 4, 5, 6]
    with pytest.raises(UntrustedRecord, match="does not start after"):
        next(pages)


def test_a_page_over_the_codecs_default_limit_is_taken(paged: Keyed, lister: Callable[[Vault], Lister]) -> None:
    """A page of 250 secrets is larger than an answer's default 64 KiB: the client decodes a
    listing's page up to ``RESPONSE_LIMITS`` (a listing of this size failed as one answer)."""
    served = paged.served
    alice = lister(served.alice)
    for n in range(160 - len(secret_ids(served, EXCL))):
        alice.secrets.add(f"excl/bulk{n:03d}", password=f"pw {n}")
    alice.pages.clear()
    listed = alice.secrets.list("excl")
    assert len(listed) == 160 and len(alice.pages) == 1
    assert len(codec.encode(alice.pages[0])) > codec.MAX_BYTES


# --- on a layered vault (last in the module: the layer goes on its whole database) ---------------------


def test_each_page_on_a_layered_vault_releases_exactly_the_versions_its_own_event_names(
    paged: Keyed, test_ca: CertificateFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    layer = ServerLayer(MasterKey(1, os.urandom(32)))
    layer.layer_on(paged.store)
    monkeypatch.setattr(https_secrets, "LIST_PAGE", 4)
    with server_with(paged, test_ca, layer) as served:
        alice = Lister(served, served.alice)
        try:
            before = len(events(served))
            listed = alice.secrets.list("acme")
        finally:
            alice.close()
        assert len(listed) == ACME_SECRETS and len(alice.pages) == 3  # pages of 4
        new = events(served)[before:]
        for event, answer in zip(new, alice.pages, strict=True):
            rows = answer.page.secrets
            assert all(r.version is not None and r.version.wrapped_dek[1] == BLOB_DATA_KEY for r in rows)
            released = json.loads(event.details_json)["released"]
            assert released == sorted([r.client_id, r.secret_id, r.version.version] for r in rows if r.version)
        assert served.admin.audit.verify().ok


def test_the_unpaged_listing_of_more_than_a_page_is_refused_and_writes_nothing(
    paged: Keyed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An insider's raw ``secrets.list`` (the route before pages) of a client with more secrets than a
    page: refused (400) before its event, so the server never builds an unbounded answer; within a
    page it is answered as before."""
    from server_harness import caller_of

    from vault.authority.secret_requests import ListSecretsRequest

    served, alice = paged.served, paged.served.alice
    me = alice.keyholder.me()
    body = envelope("secrets.list", ListSecretsRequest(caller_of(alice), (ACME,), (), me.org_signing_public, True))
    monkeypatch.setattr(secret_read_routes, "MAX_LIST_PAGE", ACME_SECRETS - 1)
    state = without_nonces(database_state(served.db_url))
    refused = signed_post(served, "/v1/secrets/list", body, alice)
    assert refused.status_code == 400 and "by pages" in refused.text
    assert without_nonces(database_state(served.db_url)) == state
    monkeypatch.setattr(secret_read_routes, "MAX_LIST_PAGE", ACME_SECRETS)
    body = envelope("secrets.list", ListSecretsRequest(caller_of(alice), (ACME,), (), me.org_signing_public, True))
    answered = signed_post(served, "/v1/secrets/list", body, alice)
    assert answered.status_code == 200
    listing = codec.open_envelope(answered.content, "secrets.list.response").body
    assert sum(len(p.secrets) for p in listing.pages) == ACME_SECRETS
