"""The clients' keyholder against an authority that returns tampered rows, and against
rows an insider planted in the database.

Each case runs a real ``clients.list`` / ``clients.show`` of an engineer (or the admin)
whose transport hands the authority's draft (shown to the keyholder before the event is
written) through a function that changes it. Every change must be refused, before the
client it concerns is opened (counted at ``blobs.decrypt_client_field``) and with no event
written. The first case, no change at all, is the control.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from vault.authority.client_requests import ClientEntry, ClientRows
from vault.crypto import blobs, sealing, signing
from vault.crypto.labels import LABEL_CLIENT_KEY_SEAL, LABEL_SIG_GRANT
from vault.errors import DecryptionFailed, UntrustedRecord, VaultError
from vault.keyholder.trust import grant_fields
from vault.storage import models as m
from vault.storage.rows import EngineerRow, GrantRow

Tamper = Callable[[ClientRows], ClientRows]


class TamperingTransport:
    """Forwards to the real transport; the draft and the answer go through ``tamper``."""

    def __init__(self, real: Any, tamper: Tamper) -> None:
        self.real, self.tamper = real, tamper

    def _seal(self, seal: Any) -> Any:
        tamper = self.tamper

        class Seal:
            def admit(self, draft: ClientRows) -> None:
                seal.admit(tamper(draft))

        return Seal()

    def show(self, request: Any, seal: Any) -> ClientRows:
        return self.tamper(self.real.show(request, self._seal(seal)))

    def list(self, request: Any, seal: Any) -> ClientRows:
        return self.tamper(self.real.list(request, self._seal(seal)))


@dataclasses.dataclass
class Scene:
    team: Any
    alice: Any  # granted acme
    bob: Any  # no grant
    acme: int
    globex: int


@pytest.fixture(scope="module")
def scene(module_team: Any) -> Scene:
    team = module_team
    team.admin.clients.add("acme", "Acme Ltd")
    team.admin.clients.add("globex", "Globex Corp")
    alice = team.engineer("alice")
    bob = team.engineer("bob")
    team.admin.grants.grant("alice", "acme")
    with team.admin.store.transaction() as s:
        acme, globex = s.scalars(select(m.Client.id).order_by(m.Client.id)).all()
    return Scene(team, alice, bob, acme, globex)


@contextlib.contextmanager
def _tamper_with(vault: Any, tamper: Tamper) -> Iterator[None]:
    keyholder = vault.clients._client_keyholder()
    real = keyholder.transport
    keyholder.transport = TamperingTransport(real, tamper)
    keyholder.cache.clear()  # nothing held: every key must come, verified, with the answer
    try:
        yield
    finally:
        keyholder.transport = real
        keyholder.cache.clear()


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """The client fields decrypted (successfully) while the test runs: (client id, purpose)."""
    seen: list[tuple[int, str]] = []
    real = blobs.decrypt_client_field

    def counting(key: bytes, version: int, blob: bytes, client_id: int, purpose: str) -> bytes:
        value = real(key, version, blob, client_id, purpose)
        seen.append((client_id, purpose))
        return value

    monkeypatch.setattr(blobs, "decrypt_client_field", counting)
    return seen


def _events(scene: Scene) -> int:
    with scene.team.admin.store.transaction() as s:
        return int(s.scalar(select(func.count()).select_from(m.AuditEvent)) or 0)


def _entry(
    scene: Scene, client_id: int, grant: GrantRow | None = None, signer: EngineerRow | None = None
) -> ClientEntry:
    with scene.team.admin.store.transaction() as s:
        c = s.get(m.Client, client_id)
        assert c is not None
        return ClientEntry(c.id, c.slug_blob, c.name_blob, c.current_key_version, c.created_at, 0, grant, signer)


def _grant_row(scene: Scene, engineer: str, client_id: int) -> tuple[GrantRow, EngineerRow]:
    with scene.team.admin.store.transaction() as s:
        me = s.scalars(select(m.Engineer).where(m.Engineer.name == engineer)).one()
        g = s.scalars(select(m.Grant).where(m.Grant.engineer_id == me.id, m.Grant.client_id == client_id)).one()
        signer = s.get(m.Engineer, g.granted_by)
        return GrantRow(*(getattr(g, f) for f in GrantRow._fields)), EngineerRow(
            *(getattr(signer, f) for f in EngineerRow._fields)
        )


def test_the_untampered_list_and_show_are_the_control(scene: Scene, opened: list[tuple[int, str]]) -> None:
    with _tamper_with(scene.alice, lambda r: r):
        assert [c.slug for c in scene.alice.clients.list()] == ["acme"]
        assert scene.alice.clients.show("acme").name == "Acme Ltd"
    assert (scene.acme, "slug") in opened and all(client == scene.acme for client, _ in opened)


def _refused(
    scene: Scene,
    vault: Any,
    tamper: Tamper,
    error: type[VaultError],
    opened: list[tuple[int, str]],
    *,
    show: str | None = None,
) -> None:
    before = _events(scene)
    with _tamper_with(vault, tamper), pytest.raises(error):
        vault.clients.show(show) if show else vault.clients.list()
    assert _events(scene) == before, "a refused answer wrote its event"


def test_a_client_without_a_grant_added_to_the_list_is_refused_unopened(
    scene: Scene, opened: list[tuple[int, str]]
) -> None:
    """A compromised authority answers alice's ``client list`` with globex, which she holds no grant for."""
    globex = _entry(scene, scene.globex)
    _refused(
        scene, scene.alice, lambda r: dataclasses.replace(r, clients=(*r.clients, globex)), UntrustedRecord, opened
    )
    assert not [c for c, _ in opened if c == scene.globex], "globex was opened"


FORGERIES = ["alice's grant as it is", "alice's grant relabelled as bob's", "signed over another sealing key"]


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_grant_signed_for_another_engineer_or_key_is_refused(
    scene: Scene, opened: list[tuple[int, str]], forgery: str
) -> None:
    """bob is answered with acme under a grant that is genuine, but not his: alice's row as it
    is, alice's signed row relabelled as his, or a row an admin signed for him over a
    sealing key that is not his current one (another key generation's)."""
    grant, signer = _grant_row(scene, "alice", scene.acme)
    with scene.bob.store.transaction() as s:
        bob = s.scalars(select(m.Engineer).where(m.Engineer.name == "bob")).one()
    forged = grant if forgery == FORGERIES[0] else grant._replace(engineer_id=bob.id)
    if forgery == FORGERIES[2]:
        other_key = sealing.KeyPair(os.urandom(32)).public
        vid = scene.team.admin.vault_id()
        admin_key = scene.team.admin.keyholder.my_signing_key()
        forged = forged._replace(signature=admin_key.sign(LABEL_SIG_GRANT, *grant_fields(vid, forged, other_key)))
    entry = _entry(scene, scene.acme, forged, signer)
    _refused(scene, scene.bob, lambda r: dataclasses.replace(r, clients=(entry,)), UntrustedRecord, opened)
    assert opened == []


def test_a_grant_relabelled_for_another_client_is_refused(scene: Scene, opened: list[tuple[int, str]]) -> None:
    """alice's signed grant for acme, shown as hers for globex: its signature covers acme."""
    grant, signer = _grant_row(scene, "alice", scene.acme)
    entry = _entry(scene, scene.globex, grant._replace(client_id=scene.globex), signer)
    _refused(scene, scene.alice, lambda r: dataclasses.replace(r, clients=(*r.clients, entry)), UntrustedRecord, opened)
    assert not [c for c, _ in opened if c == scene.globex]


def test_a_swapped_slug_blob_is_refused(scene: Scene, opened: list[tuple[int, str]]) -> None:
    """The admin's list with acme's slug blob swapped for globex's: bound to its row, it does not open."""

    def swap(r: ClientRows) -> ClientRows:
        first, second = r.clients
        return dataclasses.replace(r, clients=(dataclasses.replace(first, slug_blob=second.slug_blob), second))

    _refused(scene, scene.team.admin, swap, DecryptionFailed, opened)


def test_a_show_answered_for_another_client_is_refused(scene: Scene, opened: list[tuple[int, str]]) -> None:
    globex = _entry(scene, scene.globex)
    _refused(
        scene, scene.team.admin, lambda r: dataclasses.replace(r, clients=(globex,)), VaultError, opened, show="acme"
    )
    assert not [c for c, _ in opened if c == scene.globex]


def test_an_answer_that_is_not_the_admitted_draft_is_refused(scene: Scene) -> None:
    """The authority shows the keyholder one draft and answers another (a client slipped in after the admit)."""
    globex = _entry(scene, scene.globex)
    keyholder = scene.alice.clients._client_keyholder()
    real = keyholder.transport

    class After:
        def list(self, request: Any, seal: Any) -> ClientRows:
            answer = real.list(request, seal)
            return dataclasses.replace(answer, clients=(*answer.clients, globex))

    keyholder.transport = After()
    try:
        with pytest.raises(UntrustedRecord, match="not the draft"):
            scene.alice.clients.list()
    finally:
        keyholder.transport = real


def test_a_grant_row_and_a_sealed_copy_planted_in_the_database_are_never_used(scene: Scene) -> None:
    """bob, with write access to the database, inserts a grant for himself for globex (no
    admin signature) and a copy of a key of his own making sealed to him: his list and show
    refuse it, and nothing of globex opens for him. Run last: it changes the module's rows."""
    with scene.team.admin.store.transaction() as s:
        bob = s.scalars(select(m.Engineer).where(m.Engineer.name == "bob")).one()
        vid = scene.team.admin.vault_id()
        s.add(
            m.Grant(
                engineer_id=bob.id,
                client_id=scene.globex,
                granted_by=1,
                signed_at=1,
                until=None,
                created_at=scene.team.clock(),
                seq=1,
                signature=b"\x00" * 64,
            )
        )
        fake_key = blobs.new_key()
        context = (LABEL_CLIENT_KEY_SEAL, vid, scene.globex, 1, "engineer", bob.id)
        s.add(
            m.ClientKeySeal(
                client_id=scene.globex,
                version=1,
                recipient_kind="engineer",
                recipient_id=bob.id,
                blob=sealing.seal(bob.sealing_public, 1, fake_key, context),
            )
        )
    before = _events(scene)
    with pytest.raises(UntrustedRecord):
        scene.bob.clients.list()
    with pytest.raises(UntrustedRecord):
        scene.bob.clients.show("globex")
    assert _events(scene) == before
    assert signing.client_key_fingerprint(fake_key) not in {
        signing.client_key_fingerprint(k) for k in scene.bob.keyholder.client_keys.values()
    }
