"""An admin's search for a data subject and its purge through the team server (both engines).

The admin works from a machine with no database (``RemoteVault``): the server answers every client's
rows page by page, each page on record first (``subject-search``) and its data keys' layer removed
after; the admin's machine opens everything and matches the query (the server never sees it); then
per client with a match a draft (its receipt's id reserved, nothing released), the receipt signed over
the commit's request id with the data keys the search opened fingerprinted, and a commit the server
checks in full (caller, reservation, draft digest, fingerprints, signature) before it deletes, counts
what survives and stores the receipt with its format-3 ``purge-subject`` event in the same unit. The
attacks are raw signed requests by insiders with valid keys, and a secret changed between the steps:
each refused, nothing deleted.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import pytest
from remote_admin_harness import Stop, caller, post, remote
from served import ADMIN_PASS  # the suite's first admin's passphrase
from server_harness import Keyed, database_state, events, server_with, without_nonces
from sqlalchemy import select

from vault.authority import purge_subject_drafts
from vault.authority.purge_requests import SUBJECT
from vault.authority.purge_subject_values import (
    FIND,
    PurgeSubjectCommit,
    PurgeSubjectDraftRequest,
    SubjectPage,
    SubjectSearchRequest,
)
from vault.crypto.labels import LABEL_SIG_RECEIPT_V3
from vault.errors import AccessDenied, ConcurrentChange, NotFound, UntrustedRecord
from vault.server.layer import MasterKey, ServerLayer
from vault.service.remote import RemoteVault
from vault.service.subjects import _Match, _needle
from vault.storage import models as m

pytestmark = pytest.mark.usefixtures("cli_home")

ADMIN = "root-admin"
NAMES = iter(f"sj{n}" for n in range(100))


def subject_clients(world: Keyed, admin: RemoteVault, person: str) -> tuple[str, str]:
    """Two new clients, each with a secret naming ``person`` (two versions in the first) and one that
    does not, added by carol through the server: their slugs."""
    slugs = next(NAMES), next(NAMES)
    carol = remote(world, world.carol, "carol", "pass of carol")
    for n, slug in enumerate(slugs):
        admin.clients.add(slug, f"{slug} Ltd")
        admin.grants.grant("carol", slug)
        carol.secrets.add(f"{slug}/vpn", password=f"vpn of {slug}", username=f"{person}", note="remote access")
        carol.secrets.add(f"{slug}/fw", password=f"fw of {slug}", username="fw-admin")
        if n == 0:
            carol.secrets.update(f"{slug}/vpn", password=f"vpn 2 of {slug}")
    carol.close()
    return slugs


def names_of(world: Keyed, client_id: int) -> int:
    with world.store.read() as s:
        return len(list(s.scalars(select(m.Secret.id).where(m.Secret.client_id == client_id))))


def query_in_store(world: Keyed, query: str) -> bool:
    """Whether ``query`` appears in any event the server kept (its public facts, its request bodies)."""
    needle = query.encode("utf-8")
    with world.store.read() as s:
        for e in s.scalars(select(m.AuditEvent)):
            if needle in (e.request_body or b"") or query in (e.details_json or ""):
                return True
    return False


class _Capturing:
    """The purge transport's calls, except that the commit is kept, not sent."""

    def __init__(self, https: Any) -> None:
        self.https = https
        self.commit: tuple[PurgeSubjectCommit, bytes] | None = None

    def call(self, name: str, body: object, request_id: bytes | None = None) -> object:
        if name == "purge.subject":
            assert isinstance(body, PurgeSubjectCommit) and request_id is not None
            self.commit = (body, request_id)
            raise Stop
        return self.https.call(name, body, request_id)


def captured(admin: RemoteVault, query: str) -> tuple[PurgeSubjectCommit, bytes]:
    """The commit ``admin``'s keyholder signs for the first client of a real subject purge (not sent)."""
    transport = admin.purge.transport
    capture = _Capturing(transport.https)
    original, transport.https = transport.https, capture
    try:
        with pytest.raises(Stop):
            admin.subjects.purge(query, request="DSR-J1")
    finally:
        transport.https = original
    assert capture.commit is not None
    return capture.commit


# -- an admin's search and purge of a subject ----------------------------------------------------------


def test_an_admin_finds_and_purges_a_subject_with_no_database(world: Keyed, admin: RemoteVault) -> None:
    person = "jane.roe@subject.example"
    first, second = subject_clients(world, admin, person)
    ids = [admin.checkouts.context(slug).client_id for slug in (first, second)]
    found = admin.subjects.find(person)
    host = world.served.admin.subjects.keyholder  # the in-process search (its select: the host appends no event)
    assert found == host.select(_Match(_needle(person)))[0]  # as in-process, field by field
    assert sorted((x.client, x.secret, x.version, x.field) for x in found) == [
        (first, "vpn", 1, "username"), (first, "vpn", 2, "username"), (second, "vpn", 1, "username"),
    ]  # fmt: skip
    mark = len(events(world.served))
    report = admin.subjects.report(person)
    assert report["matches"] == [x.to_json() for x in found] and report["generated_by"] == ADMIN
    [searched] = events(world.served)[mark:]
    assert (searched.action, json.loads(searched.details_json or "")["purpose"]) == ("subject-search", "report")
    before = len(events(world.served))
    receipts = admin.subjects.purge(person, request="DSR-2026-J1")
    assert [(r.kind, r.request, r.client_id, len(r.secret_ids)) for r in receipts] == [
        (SUBJECT, "DSR-2026-J1", ids[0], 1), (SUBJECT, "DSR-2026-J1", ids[1], 1),
    ]  # fmt: skip
    assert [len(r.fingerprints) for r in receipts] == [2, 1]
    assert [names_of(world, c) for c in ids] == [1, 1]  # each client's fw lives
    added = [(e.action, e.client_id, e.request_id is not None) for e in events(world.served)[before:]]
    assert added[0] == ("subject-search", None, True) and set(added[:-2]) == {("subject-search", None, True)}
    assert added[-2:] == [("purge-subject", ids[0], True), ("purge-subject", ids[1], True)]
    for r in receipts:
        assert admin.purge.verify_receipt(r.id).ok  # through the server
        assert world.served.admin.purge.verify_receipt(r.id).ok  # where the database is
    assert not query_in_store(world, person) and not query_in_store(world, "jane.roe")
    assert admin.subjects.find(person) == []
    with pytest.raises(NotFound):
        admin.subjects.purge(person, request="DSR-2026-J2")
    assert world.served.admin.audit.verify().ok


def test_an_engineers_search_draft_and_commit_are_refused_with_nothing_written(
    world: Keyed, admin: RemoteVault
) -> None:
    person = "eng.refused@subject.example"
    subject_clients(world, admin, person)
    commit, request_id = captured(admin, person)
    served, alice = world.served, world.served.alice
    pin = commit.org_pin
    before = without_nonces(database_state(served.db_url))
    search = SubjectSearchRequest(caller(alice), pin, FIND, "", 0)
    answer = post(world, "purge.subject_search", search, alice)
    assert answer.status_code == 403 and answer.json()["error"] == "AccessDenied"
    as_admin = SubjectSearchRequest(caller(served.admin), pin, FIND, "", 0)
    assert post(world, "purge.subject_search", as_admin, alice).status_code == 403  # another caller than the signer
    draft = PurgeSubjectDraftRequest(caller(alice), commit.client_id, commit.secret_ids, "DSR-9", pin)
    assert post(world, "purge.subject_draft", draft, alice).status_code == 403
    as_alice = dataclasses.replace(commit, caller=caller(alice))
    assert post(world, "purge.subject", as_alice, alice, request_id).status_code == 403
    assert post(world, "purge.subject", commit, alice, request_id).status_code == 403
    carol = remote(world, world.carol, "carol", "pass of carol")
    with pytest.raises(AccessDenied):
        carol.subjects.find(person)
    with pytest.raises(AccessDenied):
        carol.subjects.purge(person, request="DSR-J9")
    carol.close()
    assert without_nonces(database_state(served.db_url)) == before


def test_forged_changed_and_replayed_commits_are_refused_with_nothing_deleted(world: Keyed, admin: RemoteVault) -> None:
    """A receipt signed by another key than the caller's, fewer or reordered fingerprints, a commit
    re-signed for another request, another reference or other secrets than drafted; the commit as
    signed once, then its replay."""
    person = "forged.commit@subject.example"
    subject_clients(world, admin, person)
    commit, request_id = captured(admin, person)
    served = world.served
    before = without_nonces(database_state(served.db_url))
    other = dataclasses.replace(
        commit, signature=served.alice.keyholder.my_signing_key().sign(LABEL_SIG_RECEIPT_V3, b"x")
    )
    answer = post(world, "purge.subject", other, served.admin, request_id)
    assert answer.status_code == 403 and answer.json()["error"] == "AccessDenied"
    fewer = dataclasses.replace(commit, fingerprints=commit.fingerprints[1:])
    assert post(world, "purge.subject", fewer, served.admin, request_id).status_code == 403
    swapped = dataclasses.replace(commit, fingerprints=commit.fingerprints[::-1])
    assert post(world, "purge.subject", swapped, served.admin, request_id).status_code == 403
    assert post(world, "purge.subject", commit, served.admin).status_code == 403  # signed for another request
    for changed in (
        dataclasses.replace(commit, request_ref="DSR-other"),
        dataclasses.replace(commit, secret_ids=(*commit.secret_ids, commit.secret_ids[-1] + 1)),
    ):
        answer = post(world, "purge.subject", changed, served.admin, request_id)
        assert answer.status_code == 409 and answer.json()["code"] == "stale-draft"
    assert without_nonces(database_state(served.db_url)) == before
    assert post(world, "purge.subject", commit, served.admin, request_id).status_code == 200  # as signed
    after = without_nonces(database_state(served.db_url))
    assert post(world, "purge.subject", commit, served.admin, request_id).status_code in (401, 409)  # replayed
    assert without_nonces(database_state(served.db_url)) == after


def test_a_secret_changed_since_the_search_or_the_draft_is_refused(world: Keyed, admin: RemoteVault) -> None:
    """A new version between the draft and the commit: 409; between the search and the draft: refused
    on the admin's machine (a data key it did not search). Nothing deleted either way."""
    person = "changed.since@subject.example"
    first, _ = subject_clients(world, admin, person)
    commit, request_id = captured(admin, person)
    carol = remote(world, world.carol, "carol", "pass of carol")
    carol.secrets.update(f"{first}/vpn", password="third of vpn")
    before = without_nonces(database_state(world.served.db_url))
    answer = post(world, "purge.subject", commit, world.served.admin, request_id)
    assert answer.status_code == 409 and answer.json()["code"] == "stale-draft"
    assert without_nonces(database_state(world.served.db_url)) == before

    transport = admin.purge.transport
    original = transport.https

    class _UpdatedAfterSearch:
        def call(self, name: str, body: object, request_id: bytes | None = None) -> object:
            if name == "purge.subject_draft":
                carol.secrets.update(f"{first}/vpn", password="fourth of vpn")
            return original.call(name, body, request_id)

    transport.https = _UpdatedAfterSearch()
    try:
        with pytest.raises(ConcurrentChange):
            admin.subjects.purge(person, request="DSR-J3")
    finally:
        transport.https = original
        carol.close()
    client_id = admin.checkouts.context(first).client_id
    assert names_of(world, client_id) == 2
    with world.store.read() as s:
        assert s.scalar(select(m.PurgeReceipt.id).where(m.PurgeReceipt.client_id == client_id)) is None


class _Pages:
    """The admin's ``HttpsTransport`` for the search, each page answered as ``change`` makes it."""

    def __init__(self, https: Any, change: Any) -> None:
        self.https, self.change, self.pages = https, change, 0

    def call(self, name: str, body: object, request_id: bytes | None = None) -> object:
        found = self.https.call(name, body, request_id)
        if name != "purge.subject_search":
            return found
        self.pages += 1
        return self.change(self.pages, found)


def test_the_search_pages_through_every_client(
    world: Keyed, admin: RemoteVault, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One client a page (``PAGE_BYTES`` made tiny): every client searched, one ``subject-search`` event
    a page; pages a server repeats, leaves empty while saying more follow, or answers for another caller
    are refused on the admin's machine before anything is searched."""
    person = "paged.subject@subject.example"
    subject_clients(world, admin, person)
    monkeypatch.setattr(purge_subject_drafts, "PAGE_BYTES", 1)
    with world.store.read() as s:
        clients = len(list(s.scalars(select(m.Client.id))))
    mark = len(events(world.served))
    pages = _Pages(admin.subjects.https, lambda n, page: page)
    admin.subjects.https = pages
    found = admin.subjects.find(person)
    assert len(found) == 3 and pages.pages == clients
    assert [e.action for e in events(world.served)[mark:]] == ["subject-search"] * clients

    def repeated(n: int, page: SubjectPage) -> SubjectPage:
        kept.append(page)
        return kept[0] if n == 2 else page

    def empty(n: int, page: SubjectPage) -> SubjectPage:
        return dataclasses.replace(page, rows=dataclasses.replace(page.rows, clients=())) if n == 2 else page

    def other_caller(n: int, page: SubjectPage) -> SubjectPage:
        me = page.rows.me._replace(name="someone else")
        return dataclasses.replace(page, rows=dataclasses.replace(page.rows, me=me)) if n == 2 else page

    for change in (repeated, empty, other_caller):
        kept: list[SubjectPage] = []
        admin.subjects.https = _Pages(pages.https, change)
        with pytest.raises(UntrustedRecord):
            admin.subjects.find(person)


# -- last: the module's vault goes under a server layer ---------------------------------------------------


def test_a_subject_purge_through_a_layered_server(world: Keyed, admin: RemoteVault, test_ca: Any) -> None:
    person = "layered.subject@subject.example"
    subject_clients(world, admin, person)
    layer = ServerLayer(MasterKey(1, os.urandom(32)))
    layer.layer_on(world.store)
    with server_with(world, test_ca, layer) as layered:
        mine = remote(dataclasses.replace(world, served=layered), world.served.admin, ADMIN, ADMIN_PASS)
        assert len(mine.subjects.find(person)) == 3
        receipts = mine.subjects.purge(person, request="DSR-J4")
        assert [len(r.fingerprints) for r in receipts] == [2, 1]
        assert all(mine.purge.verify_receipt(r.id).ok for r in receipts)
        assert mine.subjects.find(person) == []
        mine.close()
    ids = [r.client_id for r in receipts]
    assert [names_of(world, c) for c in ids] == [1, 1]
