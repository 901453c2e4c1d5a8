"""``secret list``'s keyholder against an authority that returns tampered pages.

A compromised authority (or a DBA between it and the keyholder) changes the pages of a
real listing on their way: a secret of a client alice holds no grant for slipped in, a
name blob swapped between secrets, a secret whose current version is missing dressed up
with another version, a page repeated, a forged client-key record, another engineer's
row. Each must be refused with its error before any of it is opened (no metadata
decrypted: counted at ``blobs.decrypt_secret_field`` and ``blobs.SecretOpener.field``)
and without a ``secret-list`` event. The scene is made once per module: the listings change nothing but the event count.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from vault.authority.secret_requests import ListedSecretRow, SecretPage
from vault.crypto import blobs
from vault.errors import DecryptionFailed, IntegrityError, Locked, NotFound, UntrustedRecord, VaultError
from vault.service import secretparts
from vault.storage import models as m
from vault.storage.rows import ClientRow, VersionRow

Tamper = Callable[[list[SecretPage]], list[SecretPage]]
PASSWORDS = {"acme/fw01": "list-kh-Pw-1", "acme/sw01": "list-kh-Pw-2", "beta/vpn": "list-kh-Pw-3"}


@dataclasses.dataclass
class Scene:
    team: Any
    alice: Any  # granted acme only
    acme: int
    beta: int
    rows: dict[int, ListedSecretRow]  # every secret, as the authority lists it to the admin
    beta_client: ClientRow


@pytest.fixture(scope="module")
def scene(module_team: Any) -> Scene:
    team = module_team
    team.admin.clients.add("acme", "Acme Ltd")
    team.admin.clients.add("beta", "Beta Ltd")
    for ref, password in PASSWORDS.items():
        team.admin.secrets.add(ref, password=password, username="kh-user")
    team.admin.secrets.update("acme/sw01", password="list-kh-Pw-2b")  # sw01 has versions 1 and 2
    alice = team.engineer("alice")
    team.admin.grants.grant("alice", "acme")
    pages = _real(team.admin)
    rows = {r.secret_id: r for p in pages for r in p.secrets}
    clients = {c.id: c for p in pages for c in p.clients}
    acme, beta = rows[min(rows)].client_id, rows[max(rows)].client_id
    return Scene(team, alice, acme, beta, rows, clients[beta])


def _real(vault: Any) -> list[SecretPage]:
    """The pages the untampered authority answers ``vault``'s listing of every client it may see."""
    seen: list[SecretPage] = []
    keyholder = vault.secrets._list_keyholder()
    real = keyholder.transport

    class Keeping:
        def list_secrets(self, request: Any) -> Iterator[SecretPage]:
            for page in real.list_secrets(request):
                seen.append(page)
                yield page

    keyholder.transport = Keeping()
    try:
        vault.secrets.list()
    finally:
        keyholder.transport = real
    return seen


class TamperingTransport:
    """Forwards the listing to the real transport; its pages go through ``tamper``.
    ``cache``: the keyholder's client keys, emptied once the request is built (which then
    names none as held), so that the keys must come with the pages and be opened from them."""

    def __init__(self, real: Any, tamper: Tamper, cache: Any = None) -> None:
        self.real, self.tamper, self.cache = real, tamper, cache

    def list_secrets(self, request: Any) -> Iterator[SecretPage]:
        if self.cache is not None:
            for slot in list(self.cache):
                self.cache.pop(slot)
            request = dataclasses.replace(request, known_key_versions=())
        return iter(self.tamper(list(self.real.list_secrets(request))))


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The secret fields decrypted (successfully) while the test runs."""
    seen: list[str] = []
    real = blobs.decrypt_secret_field

    def counting(*args: Any, **kwargs: Any) -> bytes:
        value = real(*args, **kwargs)
        seen.append(args[-1])
        return value

    real_field = blobs.SecretOpener.field  # a listing's batch of secrets opens them here

    def counting_field(opener: blobs.SecretOpener, *args: Any) -> bytes:
        value = real_field(opener, *args)
        seen.append(args[-1])
        return value

    monkeypatch.setattr(blobs, "decrypt_secret_field", counting)
    monkeypatch.setattr(blobs.SecretOpener, "field", counting_field)
    yield seen


def _lists(scene: Scene) -> int:
    with scene.team.admin.store.transaction() as s:
        found = s.scalar(select(func.count()).select_from(m.AuditEvent).where(m.AuditEvent.action == "secret-list"))
        return int(found or 0)


def _listing(scene: Scene, vault: Any, tamper: Tamper, client: str | None = "acme", drop_keys: bool = False) -> Any:
    keyholder = vault.secrets._list_keyholder()
    real = keyholder.transport
    keyholder.transport = TamperingTransport(real, tamper, keyholder.secrets.cache if drop_keys else None)
    try:
        return vault.secrets.list(client)
    finally:
        keyholder.transport = real


def _refused(
    scene: Scene,
    tamper: Tamper,
    error: type[VaultError],
    opened: list[str],
    *,
    match: str | None = None,
    drop_keys: bool = False,
) -> None:
    before = _lists(scene)
    with pytest.raises(error, match=match) as raised:
        _listing(scene, scene.alice, tamper, drop_keys=drop_keys)
    assert opened == [], f"decrypted {opened} before refusing"
    assert not [p for p in PASSWORDS.values() if p in str(raised.value)]
    assert _lists(scene) == before, "a secret-list event was written for a listing refused"


def _first(pages: list[SecretPage], **changes: Any) -> list[SecretPage]:
    return [dataclasses.replace(pages[0], **changes), *pages[1:]]


def test_the_untampered_listing_is_opened(scene: Scene, opened: list[str]) -> None:
    """The control of every case below."""
    before = _lists(scene)
    assert [i.name for i in _listing(scene, scene.alice, lambda p: p)] == ["fw01", "sw01"]
    assert [i.name for i in _listing(scene, scene.alice, lambda p: p, drop_keys=True)] == ["fw01", "sw01"]
    assert opened == ["metadata"] * 4 and _lists(scene) == before + 2


def test_a_page_with_a_secret_of_a_client_not_granted_is_refused(scene: Scene, opened: list[str]) -> None:
    """The authority adds beta's client row and secret to alice's listing of acme."""
    vpn = next(r for r in scene.rows.values() if r.client_id == scene.beta)

    def slip_in(pages: list[SecretPage]) -> list[SecretPage]:
        p = pages[0]
        return _first(pages, clients=(*p.clients, scene.beta_client), secrets=(vpn, *p.secrets))

    _refused(scene, slip_in, UntrustedRecord, opened)


def test_a_secret_of_a_client_not_sent_is_refused(scene: Scene, opened: list[str]) -> None:
    """The same secret slipped in without its client row."""
    vpn = next(r for r in scene.rows.values() if r.client_id == scene.beta)
    _refused(scene, lambda pages: _first(pages, secrets=(vpn, *pages[0].secrets)), UntrustedRecord, opened)


def test_a_client_row_under_another_id_does_not_open(scene: Scene, opened: list[str]) -> None:
    """beta's slug blob under acme's id: the blob is bound to its client, it does not open."""

    def moved(pages: list[SecretPage]) -> list[SecretPage]:
        clients = tuple(c._replace(slug_blob=scene.beta_client.slug_blob) for c in pages[0].clients)
        return _first(pages, clients=clients)

    _refused(scene, moved, DecryptionFailed, opened)


def _swap_name_blobs(pages: list[SecretPage]) -> list[SecretPage]:
    """The first secret's metadata blob is the second's (the DBA swaps two name blobs)."""
    a, b = pages[0].secrets[:2]
    assert a.version is not None and b.version is not None
    swapped = dataclasses.replace(a, version=a.version._replace(metadata_blob=b.version.metadata_blob))
    return _first(pages, secrets=(swapped, *pages[0].secrets[1:]))


def test_a_swapped_name_blob_is_refused(scene: Scene, opened: list[str]) -> None:
    _refused(scene, _swap_name_blobs, DecryptionFailed, opened)


def _current_missing(pages: list[SecretPage]) -> list[SecretPage]:
    """sw01's current version (2) reported missing, as if the row were deleted."""
    rows = tuple(dataclasses.replace(r, version=None) if r.current_version == 2 else r for r in pages[0].secrets)
    return _first(pages, secrets=rows)


def test_a_missing_current_version_is_reported_as_damaged(scene: Scene) -> None:
    """The control of the two below: the keyholder reports it (and writes no event)."""
    before = _lists(scene)
    with pytest.raises(IntegrityError, match="damaged: its current version 2 is missing"):
        _listing(scene, scene.alice, _current_missing)
    assert _lists(scene) == before


def test_a_missing_current_version_hidden_behind_an_older_one_is_refused(scene: Scene, opened: list[str]) -> None:
    """The authority (or a DBA) hides the missing row with version 1 of the same secret, a
    genuine ciphertext that opens: the keyholder refuses a version that is not the current one."""
    sw01 = next(r for r in scene.rows.values() if r.current_version == 2)
    with scene.team.admin.store.transaction() as s:
        v1 = s.get(m.SecretVersion, (sw01.secret_id, 1))
        assert v1 is not None
        old = VersionRow(v1.version, v1.key_version, v1.wrapped_dek, v1.password_blob, v1.metadata_blob)

    def hide(pages: list[SecretPage]) -> list[SecretPage]:
        return _first(pages, secrets=(dataclasses.replace(sw01, version=old),))

    _refused(scene, hide, UntrustedRecord, opened, match="another version than the secret's current one")


def test_a_missing_current_version_hidden_behind_another_secret_s_is_refused(scene: Scene, opened: list[str]) -> None:
    """... or with fw01's version, renumbered as sw01's current one: its data key is bound to fw01."""
    fw01, sw01 = sorted(scene.rows.values(), key=lambda r: r.secret_id)[:2]
    assert fw01.version is not None

    def hide(pages: list[SecretPage]) -> list[SecretPage]:
        forged = dataclasses.replace(sw01, version=fw01.version._replace(version=2))  # type: ignore[union-attr]
        rows = [r for r in pages[0].secrets if r.secret_id != sw01.secret_id]
        return _first(pages, secrets=(forged, *rows))

    _refused(scene, hide, DecryptionFailed, opened)


def test_a_repeated_page_is_refused(scene: Scene) -> None:
    with pytest.raises(UntrustedRecord, match="repeated or out of order"):
        _listing(scene, scene.alice, lambda pages: [*pages, dataclasses.replace(pages[0], clients=())])


def test_no_page_at_all_is_refused(scene: Scene) -> None:
    with pytest.raises(UntrustedRecord, match="no page"):
        _listing(scene, scene.alice, lambda pages: [])


def test_a_forged_client_key_record_is_refused(scene: Scene, opened: list[str]) -> None:
    """alice's keys must come with the page (none held): the record's signature is forged."""

    def forge(pages: list[SecretPage]) -> list[SecretPage]:
        keys = pages[0].sealed_keys
        assert keys, "the page carries no sealed key"
        record = keys[0].record
        signature = record.signature or b"\x00"
        forged = dataclasses.replace(
            keys[0], record=dataclasses.replace(record, signature=bytes([signature[0] ^ 1]) + signature[1:])
        )
        return _first(pages, sealed_keys=(forged, *keys[1:]))

    _refused(scene, forge, UntrustedRecord, opened, drop_keys=True)


def test_a_client_key_of_another_fingerprint_is_refused(scene: Scene, opened: list[str]) -> None:
    def forge(pages: list[SecretPage]) -> list[SecretPage]:
        key = pages[0].sealed_keys[0]
        forged = dataclasses.replace(key, record=dataclasses.replace(key.record, fingerprint=b"\x00" * 32))
        return _first(pages, sealed_keys=(forged, *pages[0].sealed_keys[1:]))

    _refused(scene, forge, UntrustedRecord, opened, drop_keys=True)


def test_a_forged_client_key_record_on_a_later_page_is_refused(scene: Scene, opened: list[str]) -> None:
    """The keys a page carries are verified on that page, however many secrets an earlier page
    opened under the same client-key version: the authority splits the listing in two and
    sends, with the second secret, a forged record of the key the first page sent genuine."""

    def split(pages: list[SecretPage]) -> list[SecretPage]:
        page = pages[0]
        assert len(pages) == 1 and len(page.secrets) == 2 and page.sealed_keys, "one page, two secrets, their keys"
        key = page.sealed_keys[0]
        signature = key.record.signature or b"\x00"
        forged = dataclasses.replace(
            key, record=dataclasses.replace(key.record, signature=bytes([signature[0] ^ 1]) + signature[1:])
        )
        first = dataclasses.replace(page, secrets=page.secrets[:1])
        return [first, dataclasses.replace(page, clients=(), secrets=page.secrets[1:], sealed_keys=(forged,))]

    before = _lists(scene)
    with pytest.raises(UntrustedRecord):
        _listing(scene, scene.alice, split, drop_keys=True)
    assert opened == ["metadata"], "the second secret was opened under a key its page sent forged"
    assert _lists(scene) == before


def test_another_engineer_s_row_is_refused(scene: Scene, opened: list[str]) -> None:
    _refused(scene, lambda pages: _first(pages, me=pages[0].me._replace(id=pages[0].me.id + 50)), Locked, opened)


def test_pages_that_disagree_on_the_caller_are_refused(scene: Scene) -> None:
    admin_pages = _real(scene.team.admin)

    def mixed(pages: list[SecretPage]) -> list[SecretPage]:
        return [*pages, dataclasses.replace(admin_pages[0], clients=(), secrets=())]

    with pytest.raises(UntrustedRecord, match="disagree"):
        _listing(scene, scene.alice, mixed)


# -- a grant revoked between the keyholder's scope and the authority's read -------------------------------


@pytest.fixture(scope="module")
def erin(scene: Scene) -> Any:
    """An engineer granted acme (beta is granted in each test, then revoked mid-listing)."""
    vault = scene.team.engineer("erin")
    scene.team.admin.grants.grant("erin", "acme")
    return vault


def _revoking_beta_after_scope(scene: Scene, monkeypatch: pytest.MonkeyPatch) -> None:
    """An admin's revocation of erin's beta grant lands between the keyholder's scope (its own
    read unit) and the authority's read."""
    real = secretparts._ListLookup.scope

    def racing(self: Any, slug: str | None) -> Any:
        scope = real(self, slug)
        scene.team.admin.grants.revoke("erin", "beta")
        return scope

    monkeypatch.setattr(secretparts._ListLookup, "scope", racing)


def test_a_grant_revoked_mid_listing_drops_that_client_from_the_listing_of_every_client(
    scene: Scene, erin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No client named: the listing goes on with the clients still granted (never fails whole)."""
    scene.team.admin.grants.grant("erin", "beta")
    assert sorted(i.name for i in erin.secrets.list()) == ["fw01", "sw01", "vpn"]  # the control
    _revoking_beta_after_scope(scene, monkeypatch)
    before = _lists(scene)
    listed = erin.secrets.list()
    assert sorted(i.name for i in listed) == ["fw01", "sw01"]
    assert {i.client for i in listed} == {"acme"}
    assert _lists(scene) == before + 1


def test_a_grant_revoked_mid_listing_refuses_the_listing_that_names_its_client(
    scene: Scene, erin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    scene.team.admin.grants.grant("erin", "beta")
    _revoking_beta_after_scope(scene, monkeypatch)
    before = _lists(scene)
    with pytest.raises(NotFound, match="no grant"):
        erin.secrets.list("beta")
    assert _lists(scene) == before, "a secret-list event was written for a listing refused"
