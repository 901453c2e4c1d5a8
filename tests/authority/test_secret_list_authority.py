"""``secret list``'s authority, run with no key material at all.

The rows are made once per module by the usual service calls (an admin adds two clients
and their secrets, grants alice acme; bob holds no grant); then ``SecretListAuthority`` is
driven alone, its checks a stand-in that reads the rows only. It must refuse a caller who
may not list (an engineer asking for a client they hold no grant for, or for every client)
before any client or secret row is read, refuse an ill-typed request before any SQL, and
answer keyset pages of ids and ciphertext: each client row and each sealed key once, a
secret whose current version row is missing listed without one (never passed over).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import event, select, update

from vault.authority.requests import Caller
from vault.authority.secret_list import SecretListAuthority
from vault.authority.secret_requests import ListSecretsRequest, SecretPage
from vault.errors import AccessDenied, InvalidInput, Locked, NotFound, UntrustedRecord
from vault.storage import models as m

PASSWORDS = {"acme/fw01": "list-authority-Pw-1", "acme/sw01": "list-authority-Pw-2", "beta/vpn": "list-authority-Pw-3"}
USER = "list-authority-user"
READS_A_TARGET = re.compile(r"\b(clients|secrets|secret_versions|client_keys|client_key_seals)\b", re.IGNORECASE)


class Checks:
    """The caller's checks on the rows only, and the granted clients from the grant rows."""

    def organisation_key(self, s: Any, current: bytes) -> None:
        pass

    def certificate(self, s: Any, row: Any) -> None:
        if row.certificate is None:
            raise UntrustedRecord("no certificate")

    def granted_client_ids(self, s: Any, me: Any) -> Sequence[int]:
        found = s.execute(select(m.Grant.client_id).where(m.Grant.engineer_id == me.id, m.Grant.revoked_at.is_(None)))
        return sorted({r[0] for r in found})


@dataclasses.dataclass
class Scene:
    team: Any
    acme: int
    beta: int
    secrets: dict[int, int]  # secret id -> client id
    admin: tuple[int, int]
    alice: tuple[int, int]  # granted acme
    bob: tuple[int, int]  # no grant


@pytest.fixture(scope="module")
def scene(module_team: Any) -> Scene:
    team = module_team
    team.admin.clients.add("acme", "Acme Ltd")
    team.admin.clients.add("beta", "Beta Ltd")
    for ref, password in PASSWORDS.items():
        team.admin.secrets.add(ref, password=password, username=USER)
    team.engineer("alice")
    team.engineer("bob")
    team.admin.grants.grant("alice", "acme")
    with team.admin.store.transaction() as s:
        ids = dict(s.execute(select(m.Secret.id, m.Secret.client_id)).all())
        who = {r[0]: (r[1], r[2]) for r in s.execute(select(m.Engineer.name, m.Engineer.id, m.Engineer.key_generation))}
    acme, beta = ids[min(ids)], ids[max(ids)]
    return Scene(team, acme, beta, ids, who["root-admin"], who["alice"], who["bob"])


def _authority(scene: Scene, page: int = 500) -> SecretListAuthority:
    return SecretListAuthority(scene.team.admin.store, Checks(), page=page)


def _request(who: tuple[int, int], client_ids: tuple[int, ...] | None, **changes: Any) -> ListSecretsRequest:
    request = ListSecretsRequest(Caller(*who), client_ids, (), b"\x00" * 32)
    return dataclasses.replace(request, **changes)


@pytest.fixture
def statements(scene: Scene) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    engine = scene.team.admin.store.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def _pages(scene: Scene, request: ListSecretsRequest, page: int = 500) -> list[SecretPage]:
    return list(_authority(scene, page).pages(request))


def _bytes(value: Any) -> Iterator[bytes]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _bytes(getattr(value, f.name))
    elif isinstance(value, tuple):
        for item in value:
            yield from _bytes(item)
    elif isinstance(value, bytes):
        yield value
    elif isinstance(value, str):
        yield value.encode()


# -- who may list ---------------------------------------------------------------------------------------


def test_an_engineer_naming_a_client_without_a_grant_is_refused_before_any_row_of_it_is_read(
    scene: Scene, statements: list[str]
) -> None:
    """An engineer with database-free access to the transport (bob) names acme's id."""
    statements.clear()
    with pytest.raises(NotFound, match="no grant"):
        _pages(scene, _request(scene.bob, (scene.acme,)))
    assert statements, "the authority read nothing"
    assert not [st for st in statements if READS_A_TARGET.search(st)], statements


def test_an_engineer_naming_a_granted_and_another_client_is_refused(scene: Scene, statements: list[str]) -> None:
    statements.clear()
    with pytest.raises(NotFound, match="no grant"):
        _pages(scene, _request(scene.alice, (scene.acme, scene.beta)))
    assert not [st for st in statements if READS_A_TARGET.search(st)], statements


def test_an_engineer_asking_for_every_client_is_refused_before_any_row_is_read(
    scene: Scene, statements: list[str]
) -> None:
    statements.clear()
    with pytest.raises(AccessDenied, match="not an admin"):
        _pages(scene, _request(scene.alice, None))
    assert not [st for st in statements if READS_A_TARGET.search(st)], statements


def test_a_caller_of_an_old_key_generation_is_refused_before_any_row_is_read(
    scene: Scene, statements: list[str]
) -> None:
    statements.clear()
    with pytest.raises(Locked):
        _pages(scene, _request((scene.alice[0], scene.alice[1] + 1), (scene.acme,)))
    assert not [st for st in statements if READS_A_TARGET.search(st)], statements


FORGED: dict[str, dict[str, Any]] = {
    "caller not a Caller": {"caller": (1, 0)},
    "engineer id zero": {"caller": Caller(0, 0)},
    "key generation a bool": {"caller": Caller(1, True)},
    "client ids a list": {"client_ids": [1]},
    "client id zero": {"client_ids": (0,)},
    "client id text": {"client_ids": ("1",)},
    "known versions not pairs": {"known_key_versions": ((1, 1, 1),)},
    "known version zero": {"known_key_versions": ((1, 0),)},
    "organisation key short": {"org_pin": b"\x00" * 31},
}


@pytest.mark.parametrize("case", FORGED)
def test_a_forged_request_field_is_refused_before_any_sql(scene: Scene, statements: list[str], case: str) -> None:
    request = dataclasses.replace(_request(scene.alice, (scene.acme,)), **FORGED[case])
    statements.clear()
    with pytest.raises(InvalidInput):
        _pages(scene, request)
    assert statements == []


# -- what is answered -------------------------------------------------------------------------------------


def test_an_engineer_gets_the_secrets_of_the_clients_named_in_id_order(scene: Scene) -> None:
    (page,) = _pages(scene, _request(scene.alice, (scene.acme,)))
    acme = sorted(sid for sid, cid in scene.secrets.items() if cid == scene.acme)
    assert [r.secret_id for r in page.secrets] == acme and {r.client_id for r in page.secrets} == {scene.acme}
    assert [c.id for c in page.clients] == [scene.acme]
    assert page.me.id == scene.alice[0]
    assert all(r.version is not None and r.version.version == r.current_version for r in page.secrets)
    # the client key they need, with its signed record and alice's sealed copy, once
    assert [(k.record.client_id, k.record.version, k.kind, k.recipient_id) for k in page.sealed_keys] == [
        (scene.acme, 1, "engineer", scene.alice[0])
    ]


def test_the_answer_is_ids_and_ciphertext_only(scene: Scene) -> None:
    pages = _pages(scene, _request(scene.admin, None))
    found = b"".join(_bytes(pages))
    for plain in (*PASSWORDS.values(), USER, "fw01", "sw01", "acme", "beta"):
        assert plain.encode() not in found, plain


def test_an_admin_lists_every_client_in_keyset_pages_each_client_and_key_once(
    scene: Scene, statements: list[str]
) -> None:
    statements.clear()
    pages = _pages(scene, _request(scene.admin, None), page=1)
    assert len(pages) == len(scene.secrets)  # one secret a page, each page one statement
    secrets = [r.secret_id for p in pages for r in p.secrets]
    assert secrets == sorted(scene.secrets)
    assert sorted(c.id for p in pages for c in p.clients) == [scene.acme, scene.beta]  # each once
    keys = [(k.record.client_id, k.record.version) for p in pages for k in p.sealed_keys]
    assert sorted(keys) == [(scene.acme, 1), (scene.beta, 1)] and all(
        k.kind == "recovery" for p in pages for k in p.sealed_keys
    )
    selects = [st for st in statements if re.search(r"\bFROM secrets\b", st, re.IGNORECASE)]
    assert len(selects) <= len(scene.secrets) + 1  # a statement per page, never one per row


def test_keys_the_keyholder_holds_are_not_sent(scene: Scene) -> None:
    known = ((scene.acme, 1),)
    (page,) = _pages(scene, _request(scene.alice, (scene.acme,), known_key_versions=known))
    assert page.sealed_keys == ()


def test_an_empty_listing_is_one_page_with_the_caller_s_row(scene: Scene) -> None:
    (page,) = _pages(scene, _request(scene.alice, ()))
    assert page.secrets == () and page.clients == () and page.me.id == scene.alice[0]


def test_a_secret_without_its_current_version_is_listed_not_passed_over(scene: Scene) -> None:
    """The insider deletes the current version row: the listing still carries the secret (no
    version), so the keyholder can report it, instead of leaving it out."""
    target = min(sid for sid, cid in scene.secrets.items() if cid == scene.acme)
    with scene.team.admin.store.transaction() as s:
        s.execute(update(m.Secret).where(m.Secret.id == target).values(current_version=7))
    try:
        (page,) = _pages(scene, _request(scene.alice, (scene.acme,)))
        listed = {r.secret_id: r for r in page.secrets}
        assert target in listed and listed[target].version is None and listed[target].current_version == 7
        assert all(r.version is not None for sid, r in listed.items() if sid != target)
    finally:
        with scene.team.admin.store.transaction() as s:
            s.execute(update(m.Secret).where(m.Secret.id == target).values(current_version=1))


def test_a_revoked_grant_ends_the_listing(scene: Scene) -> None:
    """The control of the grant check: alice's grant revoked in the rows, her listing is refused."""
    with scene.team.admin.store.transaction() as s:
        grant = s.scalars(select(m.Grant).where(m.Grant.engineer_id == scene.alice[0])).one()
        saved = (grant.id, grant.revoked_at)
        s.execute(update(m.Grant).where(m.Grant.id == grant.id).values(revoked_at=scene.team.clock()))
    try:
        with pytest.raises(NotFound):
            _pages(scene, _request(scene.alice, (scene.acme,)))
    finally:
        with scene.team.admin.store.transaction() as s:
            s.execute(update(m.Grant).where(m.Grant.id == saved[0]).values(revoked_at=saved[1]))
    assert _pages(scene, _request(scene.alice, (scene.acme,)))[0].secrets

