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
import datetime as dt
import re
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, update
from standins import recorded_statements

from vault.authority.requests import Caller
from vault.authority.secret_list import SecretListAuthority
from vault.authority.secret_requests import ListSecretsRequest, SecretPage
from vault.errors import AccessDenied, InvalidInput, Locked, NotFound, UntrustedRecord
from vault.service import rows as srows
from vault.service import secretparts
from vault.service.rows import EngineerRow, GrantRow
from vault.storage import models as m
from vault.storage.repositories import grants as grant_rows

PASSWORDS = {"acme/fw01": "list-authority-Pw-1", "acme/sw01": "list-authority-Pw-2", "beta/vpn": "list-authority-Pw-3"}
USER = "list-authority-user"
READS_A_TARGET = re.compile(r"\b(clients|secrets|secret_versions|client_keys|client_key_seals)\b", re.IGNORECASE)


class Checks:
    """The caller's checks on the rows only; a grant counts if its ledger head is unrevoked."""

    def organisation_key(self, s: Any, current: bytes) -> None:
        pass

    def certificate(self, s: Any, row: Any) -> None:
        if row.certificate is None:
            raise UntrustedRecord("no certificate")

    def first_valid_grant(self, s: Any, grants: Sequence[Any], engineer: Any, signers: Sequence[Any]) -> int:
        if not grants or grants[0].revoked_at is not None or grants[0].engineer_id != engineer.id:
            raise NotFound("no grant")
        return 0


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
    engine = scene.team.admin.store.engine
    with recorded_statements(engine) as seen:
        yield seen


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
    "another action": {"action": "secret-view"},
    "named flag an int": {"named": 1},
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


# -- a grant that ended between the keyholder's scope and the authority's read -----------------------


def test_a_listing_of_the_engineer_s_clients_drops_the_ids_no_longer_granted(scene: Scene) -> None:
    """No client named (``named=False``): an id whose grant ended since the keyholder read its
    scope is dropped, the others listed; naming that client is still refused."""
    (page,) = _pages(scene, _request(scene.alice, (scene.acme, scene.beta), named=False))
    assert page.secrets and {r.client_id for r in page.secrets} == {scene.acme}
    assert [c.id for c in page.clients] == [scene.acme]
    with scene.team.admin.store.transaction() as s:
        grant = s.scalars(select(m.Grant).where(m.Grant.engineer_id == scene.alice[0])).one()
        saved = (grant.id, grant.revoked_at)
        s.execute(update(m.Grant).where(m.Grant.id == grant.id).values(revoked_at=scene.team.clock()))
    try:
        (page,) = _pages(scene, _request(scene.alice, (scene.acme,), named=False))
        assert page.secrets == () and page.clients == () and page.sealed_keys == ()
        with pytest.raises(NotFound, match="no grant"):
            _pages(scene, _request(scene.alice, (scene.acme,), named=True))
    finally:
        with scene.team.admin.store.transaction() as s:
            s.execute(update(m.Grant).where(m.Grant.id == saved[0]).values(revoked_at=saved[1]))


# -- the real grant check (signatures), and nothing taken from the keyholder's memory ------------------


@dataclasses.dataclass
class Real:
    carol: Any  # granted acme for two days; her Vault's checks are the authority's (in-process)
    who: tuple[int, int]
    grant_id: int


@pytest.fixture(scope="module")
def real(scene: Scene) -> Real:
    team = scene.team
    carol = team.engineer("carol")
    team.admin.grants.grant("carol", "acme", until=team.clock() + dt.timedelta(days=2))
    with team.admin.store.transaction() as s:
        who = s.execute(select(m.Engineer.id, m.Engineer.key_generation).where(m.Engineer.name == "carol")).one()
        grant_id = s.scalars(select(m.Grant.id).where(m.Grant.engineer_id == who[0])).one()
    return Real(carol, (who[0], who[1]), grant_id)


def _real_authority(scene: Scene, real: Real) -> SecretListAuthority:
    return SecretListAuthority(scene.team.admin.store, secretparts._Checks(real.carol.secrets))


@pytest.fixture
def copied_onto_beta(scene: Scene, real: Real) -> Iterator[int]:
    """The DBA's insert: carol's acme grant copied, row for row, onto beta (its signature names acme)."""
    with scene.team.admin.store.transaction() as s:
        row = s.execute(select(m.Grant.__table__).where(m.Grant.id == real.grant_id)).mappings().one()
        forged = {k: v for k, v in row.items() if k != "id"} | {"client_id": scene.beta}
        inserted = s.execute(insert(m.Grant.__table__).values(**forged)).inserted_primary_key[0]
    try:
        yield int(inserted)
    finally:
        with scene.team.admin.store.transaction() as s:
            s.execute(delete(m.Grant).where(m.Grant.id == inserted))


def test_the_real_check_lists_carol_s_granted_client(scene: Scene, real: Real) -> None:
    """The control: the real grant check lets carol's genuine grant through."""
    (page,) = list(_real_authority(scene, real).pages(_request(real.who, (scene.acme,))))
    assert page.secrets and {r.client_id for r in page.secrets} == {scene.acme}


@pytest.mark.parametrize("named", [True, False])
def test_the_real_check_refuses_a_grant_row_a_dba_copied_onto_another_client(
    scene: Scene, real: Real, copied_onto_beta: int, statements: list[str], named: bool
) -> None:
    asked = (scene.beta,) if named else (scene.acme, scene.beta)
    statements.clear()
    with pytest.raises(UntrustedRecord):
        list(_real_authority(scene, real).pages(_request(real.who, asked, named=named)))
    assert not [st for st in statements if READS_A_TARGET.search(st)], statements


def test_a_grant_the_keyholder_remembers_does_not_authorise_the_authority(
    scene: Scene, real: Real, copied_onto_beta: int
) -> None:
    """The reviewer's repro: the forged beta row planted in carol's key cache as if verified
    (what an authority sharing that memory would trust). The authority reads and checks the
    ledger itself: beta's rows are not handed out."""
    carol = real.carol.secrets
    with scene.team.admin.store.read() as s:
        org = carol.trust.org_public(s)
        me = carol.trust.my_row(s)
        for ledger in grant_rows.ledgers(srows.connection(s), me.id, GrantRow._fields, EngineerRow._fields):
            if ledger.client_id == scene.beta:
                head, signer = GrantRow._make(ledger.grants[0]), EngineerRow._make(ledger.signers[0])
                carol.keys.client_keys.grants[scene.beta] = (head, signer, org, me.sealing_public, me.id)
    try:
        assert scene.beta in carol.keys.client_keys.grants  # the plant took
        with pytest.raises(UntrustedRecord):
            list(_real_authority(scene, real).pages(_request(real.who, (scene.beta,))))
    finally:
        carol.keys.client_keys.grants.clear()


def test_the_authority_writes_nothing_into_the_keyholder_s_grant_memory(scene: Scene, real: Real) -> None:
    """The cache the keyholder trusts holds only what the keyholder verified: a listing through
    the authority leaves it as it was."""
    grants = real.carol.secrets.keys.client_keys.grants
    grants.clear()
    (page,) = list(_real_authority(scene, real).pages(_request(real.who, (scene.acme,))))
    assert page.secrets
    assert dict(grants) == {}


def test_the_real_check_refuses_a_forged_grant_signature(scene: Scene, real: Real, statements: list[str]) -> None:
    """A DBA flips a bit of carol's grant signature: refused as untrusted, for a client named or not."""
    with scene.team.admin.store.transaction() as s:
        signature = s.scalars(select(m.Grant.signature).where(m.Grant.id == real.grant_id)).one()
        assert signature is not None
        forged = bytes([signature[0] ^ 1]) + signature[1:]
        s.execute(update(m.Grant).where(m.Grant.id == real.grant_id).values(signature=forged))
    try:
        for named in (True, False):
            statements.clear()
            with pytest.raises(UntrustedRecord):
                list(_real_authority(scene, real).pages(_request(real.who, (scene.acme,), named=named)))
            assert not [st for st in statements if READS_A_TARGET.search(st)], statements
    finally:
        with scene.team.admin.store.transaction() as s:
            s.execute(update(m.Grant).where(m.Grant.id == real.grant_id).values(signature=signature))


def test_the_real_check_refuses_an_extended_grant(scene: Scene, real: Real) -> None:
    """A DBA pushes carol's ``until`` a year out: the signature no longer covers it."""
    with scene.team.admin.store.transaction() as s:
        until = s.scalars(select(m.Grant.until).where(m.Grant.id == real.grant_id)).one()
        assert until is not None
        s.execute(update(m.Grant).where(m.Grant.id == real.grant_id).values(until=until + 365 * 86400))
    try:
        with pytest.raises(UntrustedRecord):
            list(_real_authority(scene, real).pages(_request(real.who, (scene.acme,))))
    finally:
        with scene.team.admin.store.transaction() as s:
            s.execute(update(m.Grant).where(m.Grant.id == real.grant_id).values(until=until))


def test_the_real_check_hides_an_expired_grant(scene: Scene, real: Real, statements: list[str]) -> None:
    """Carol's genuine grant past its end: a client named is refused before any row of it is
    read; her listing of her clients drops it."""
    clock = scene.team.clock
    saved = clock.now
    clock.advance(days=3)
    try:
        statements.clear()
        with pytest.raises(NotFound, match="no grant"):
            list(_real_authority(scene, real).pages(_request(real.who, (scene.acme,))))
        assert not [st for st in statements if READS_A_TARGET.search(st)], statements
        (page,) = list(_real_authority(scene, real).pages(_request(real.who, (scene.acme,), named=False)))
        assert page.secrets == () and page.clients == ()
    finally:
        clock.now = saved
