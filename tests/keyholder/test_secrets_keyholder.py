"""The secrets' keyholder against an authority that returns tampered rows.

Each case runs a real ``secrets.show`` / ``add`` / ``update`` of an engineer whose
transport hands the authority's draft (shown to the keyholder before the event is
written) and its answer through a function that changes them. Every change must be
refused with its error, before anything is decrypted (no secret field opens: counted at
``blobs.decrypt_secret_field``) and, since the keyholder refuses the draft, nothing
written (no event, no version). The first case, no change at all, is the control.
"""

from __future__ import annotations

import ast
import dataclasses
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from vault.authority.requests import ClientKeyRow, SealedClientKey
from vault.authority.secret_requests import SecretRows
from vault.crypto import blobs
from vault.errors import DecryptionFailed, IntegrityError, UntrustedRecord, VaultError
from vault.service import secretparts
from vault.service.rows import EngineerRow, VersionRow
from vault.storage import models as m

PW, OTHER_PW, USER = "fw01-Pw-keyholder", "sw01-Pw-keyholder", "fw-admin"
Tamper = Callable[[SecretRows], SecretRows]


def _same(r: SecretRows) -> SecretRows:
    return r


class TamperingTransport:
    """Forwards to the real transport; the draft and the answer go through ``tamper``.
    ``drop_key``: (cache, slot) emptied first, so the keyholder must open the sealed copy sent."""

    def __init__(self, real: Any, tamper: Tamper, drop_key: Any = None) -> None:
        self.real, self.tamper, self.drop_key = real, tamper, drop_key

    def _seal(self, seal: Any) -> Any:
        tamper = self.tamper

        class Seal:
            def admit(self, draft: SecretRows) -> None:
                seal.admit(tamper(draft))

            def encrypt(self, draft: SecretRows, version: int) -> Any:
                return seal.encrypt(tamper(draft), version)

        return Seal()

    def _request(self, request: Any) -> Any:
        if self.drop_key is None:
            return request
        cache, slot = self.drop_key
        cache.pop(slot, None)
        return dataclasses.replace(request, target=dataclasses.replace(request.target, known_key_versions=()))

    def read(self, request: Any, seal: Any) -> SecretRows:
        return self.tamper(self.real.read(self._request(request), self._seal(seal)))

    def add(self, request: Any, seal: Any) -> SecretRows:
        return self.tamper(self.real.add(self._request(request), self._seal(seal)))

    def update(self, request: Any, seal: Any) -> SecretRows:
        return self.tamper(self.real.update(self._request(request), self._seal(seal)))


@dataclasses.dataclass
class Scene:
    team: Any
    alice: Any
    client_id: int
    one: int  # acme/fw01
    two: int  # acme/sw01


@pytest.fixture
def scene(team: Any) -> Scene:
    team.admin.clients.add("acme", "Acme Ltd")
    team.admin.secrets.add("acme/fw01", password=PW, username=USER)
    team.admin.secrets.add("acme/sw01", password=OTHER_PW)
    alice = team.engineer("alice")
    team.admin.grants.grant("alice", "acme")
    with team.admin.store.transaction() as s:
        found = s.execute(select(m.Secret.id, m.Secret.client_id).order_by(m.Secret.id)).all()
    return Scene(team, alice, found[0][1], found[0][0], found[1][0])


def _tamper_with(scene: Scene, tamper: Tamper, *, drop_key: bool = False) -> None:
    keyholder = scene.alice.secrets._secret_keyholder()
    real = keyholder.transport
    while isinstance(real, TamperingTransport):
        real = real.real
    slot = (keyholder.cache, (scene.client_id, 1)) if drop_key else None
    keyholder.transport = TamperingTransport(real, tamper, slot)


def _state(scene: Scene) -> tuple[Any, ...]:
    with scene.team.admin.store.transaction() as s:
        head = s.scalar(select(m.AuditHead.seq))
        versions = s.scalar(select(func.count()).select_from(m.SecretVersion))
        secrets = s.scalar(select(func.count()).select_from(m.Secret))
    return head, versions, secrets


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The secret fields decrypted (successfully) while the test runs."""
    seen: list[str] = []
    real = blobs.decrypt_secret_field

    def counting(*args: Any, **kwargs: Any) -> bytes:
        value = real(*args, **kwargs)
        seen.append(args[-1])
        return value

    monkeypatch.setattr(blobs, "decrypt_secret_field", counting)
    yield seen


def _version(scene: Scene, secret_id: int) -> VersionRow:
    with scene.team.admin.store.transaction() as s:
        row = s.get(m.SecretVersion, (secret_id, 1))
        assert row is not None
        return VersionRow(row.version, row.key_version, row.wrapped_dek, row.password_blob, row.metadata_blob)


def _sealed_key(scene: Scene, **forged: Any) -> SealedClientKey:
    """Alice's genuine sealed copy of client key 1 with its signed record (``forged``: fields changed)."""
    with scene.team.admin.store.transaction() as s:
        ck = s.get(m.ClientKey, (scene.client_id, 1))
        alice = s.scalars(select(m.Engineer).where(m.Engineer.name == "alice")).one()
        copy = s.get(m.ClientKeySeal, (scene.client_id, 1, "engineer", alice.id))
        signer = s.get(m.Engineer, ck.signed_by) if ck is not None else None
        assert ck is not None and copy is not None and signer is not None
        record = ClientKeyRow(
            ck.client_id, ck.version, ck.fingerprint, ck.signed_at, ck.signed_by, ck.signature, ck.state
        )
        signer_row = EngineerRow(*(getattr(signer, f) for f in EngineerRow._fields))
        return SealedClientKey(dataclasses.replace(record, **forged), signer_row, "engineer", alice.id, copy.blob)


def _flip(value: bytes) -> bytes:
    return bytes([value[0] ^ 1]) + value[1:]


def test_the_untampered_answer_is_shown(scene: Scene, opened: list[str]) -> None:
    _tamper_with(scene, _same, drop_key=True)
    info = scene.alice.secrets.show("acme/fw01")
    assert (info.name, info.username) == ("fw01", USER) and opened == ["metadata"] * 2  # admitted, answered


def test_a_genuine_sealed_key_sent_with_the_answer_opens(scene: Scene) -> None:
    """The control of the forged record below: the same copy, unchanged, is accepted."""
    genuine = _sealed_key(scene)
    _tamper_with(scene, lambda r: dataclasses.replace(r, sealed_key=genuine), drop_key=True)
    assert scene.alice.secrets.show("acme/fw01").username == USER


def _cases(scene: Scene) -> dict[str, tuple[Tamper, type[VaultError], bool]]:
    two = _version(scene, scene.two)
    forged_print = _sealed_key(scene, fingerprint=b"\x00" * 32)  # read before the authority's unit begins
    forged_signature = _sealed_key(scene, signature=_flip(_sealed_key(scene).record.signature or b"\x00"))
    return {
        # the version row of another secret under this secret's id: its data key is bound to the other
        "swapped version between secrets": (lambda r: dataclasses.replace(r, version=two), DecryptionFailed, False),
        "swapped metadata blob between secrets": (
            lambda r: (
                dataclasses.replace(r, version=r.version._replace(metadata_blob=two.metadata_blob)) if r.version else r
            ),
            DecryptionFailed,
            False,
        ),
        "wrong key version": (
            lambda r: dataclasses.replace(r, version=r.version._replace(key_version=2)) if r.version else r,
            DecryptionFailed,
            False,
        ),
        "forged client-key fingerprint": (
            lambda r: dataclasses.replace(r, sealed_key=forged_print),
            UntrustedRecord,
            True,
        ),
        "forged client-key signature": (
            lambda r: dataclasses.replace(r, sealed_key=forged_signature),
            UntrustedRecord,
            True,
        ),
        "another secret's name tag": (
            lambda r: dataclasses.replace(r, secret=r.secret._replace(name_tag=b"\x05" * 32)),
            UntrustedRecord,
            False,
        ),
        "another engineer's grant": (
            lambda r: (
                dataclasses.replace(r, grant=r.grant._replace(engineer_id=r.grant.engineer_id + 100)) if r.grant else r
            ),
            UntrustedRecord,
            False,
        ),
    }


CASES = [
    "swapped version between secrets",
    "swapped metadata blob between secrets",
    "wrong key version",
    "forged client-key fingerprint",
    "forged client-key signature",
    "another secret's name tag",
    "another engineer's grant",
]


@pytest.mark.parametrize("case", CASES)
def test_a_tampered_view_is_refused_before_anything_is_decrypted(scene: Scene, opened: list[str], case: str) -> None:
    tamper, error, drop = _cases(scene)[case]
    _tamper_with(scene, tamper, drop_key=drop)
    before = _state(scene)
    with pytest.raises(error) as raised:
        scene.alice.secrets.show("acme/fw01")
    assert opened == [], f"decrypted {opened} before refusing"
    assert USER not in str(raised.value) and PW not in str(raised.value)
    assert _state(scene) == before, "a refused view wrote its event"


@pytest.mark.parametrize("case", CASES)
def test_a_tampered_update_is_refused_and_writes_nothing(scene: Scene, opened: list[str], case: str) -> None:
    tamper, error, drop = _cases(scene)[case]
    _tamper_with(scene, tamper, drop_key=drop)
    before = _state(scene)
    with pytest.raises(error):
        scene.alice.secrets.update("acme/fw01", password="new-Pw-after-tamper")
    assert opened == []
    assert _state(scene) == before


def test_an_add_under_a_forged_write_key_writes_nothing(scene: Scene) -> None:
    forged = _sealed_key(scene, fingerprint=b"\x00" * 32)
    _tamper_with(scene, lambda r: dataclasses.replace(r, write_key=forged), drop_key=True)
    before = _state(scene)
    with pytest.raises(UntrustedRecord):
        scene.alice.secrets.add("acme/new01", password="new-Pw-1")
    assert _state(scene) == before


def test_an_add_answered_with_other_ciphertext_is_refused(scene: Scene) -> None:
    """The answer (after the commit) claims other blobs than the keyholder encrypted."""
    two = _version(scene, scene.two)

    def answer_other(r: SecretRows) -> SecretRows:
        return dataclasses.replace(r, version=two) if r.version is not None else r

    _tamper_with(scene, answer_other)
    with pytest.raises(UntrustedRecord, match="not the version this keyholder wrote"):
        scene.alice.secrets.add("acme/new01", password="new-Pw-1")


def test_a_version_asked_out_of_turn_is_not_encrypted(scene: Scene) -> None:
    """The authority asks the keyholder to encrypt for a draft it did not show first."""
    keyholder = scene.alice.secrets._secret_keyholder()
    real = keyholder.transport

    class Skipping:
        def update(self, request: Any, seal: Any) -> SecretRows:
            class Shown:
                def admit(self, draft: SecretRows) -> None:
                    seal.admit(draft)

                def encrypt(self, draft: SecretRows, version: int) -> Any:
                    return seal.encrypt(dataclasses.replace(draft, kind="changed"), version)

            return real.update(request, Shown())

    keyholder.transport = Skipping()
    before = _state(scene)
    with pytest.raises(UntrustedRecord, match="did not admit"):
        scene.alice.secrets.update("acme/fw01", password="new-Pw-2")
    assert _state(scene) == before


def _reachable_text(root: Any) -> list[bytes]:
    """Every str and bytes reachable from ``root`` through instances, containers, functions'
    closures and bound methods (not through modules, classes or a function's globals)."""
    seen: set[int] = set()
    found: list[bytes] = []
    todo = [root]
    while todo:
        value = todo.pop()
        if id(value) in seen or isinstance(value, (type, types.ModuleType)):
            continue
        seen.add(id(value))
        if isinstance(value, str):
            found.append(value.encode("utf-8", "surrogatepass"))
        elif isinstance(value, (bytes, bytearray)):
            found.append(bytes(value))
        elif isinstance(value, types.FunctionType):
            todo.extend(cell.cell_contents for cell in value.__closure__ or () if cell.cell_contents is not None)
            todo.extend(value.__defaults__ or ())
        elif isinstance(value, types.MethodType):
            todo.extend((value.__self__, value.__func__))
        elif isinstance(value, dict):
            todo.extend(value.keys())
            todo.extend(value.values())
        elif isinstance(value, (list, tuple, set, frozenset)):
            todo.extend(value)
        elif hasattr(value, "__dict__"):
            todo.append(vars(value))
        elif hasattr(value, "__slots__"):
            todo.extend(getattr(value, n) for n in value.__slots__ if hasattr(value, n))
        elif isinstance(value, types.CellType):
            todo.append(value.cell_contents)
    return found


def _keeping_the_seal(scene: Scene) -> list[Any]:
    """The seals the keyholder hands to the authority, kept for inspection after the call."""
    kept: list[Any] = []

    def keep(r: SecretRows) -> SecretRows:
        return r

    _tamper_with(scene, keep)
    transport = scene.alice.secrets._secret_keyholder().transport
    real_seal = transport._seal

    def seal(s: Any) -> Any:
        kept.append(s)
        return real_seal(s)

    transport._seal = seal
    return kept


def test_the_seal_holds_no_plaintext_after_an_update(scene: Scene) -> None:
    kept = _keeping_the_seal(scene)
    scene.alice.secrets.update("acme/fw01", username="new-user-kept", note="note-kept-here")  # the password kept
    scene.alice.secrets.update("acme/fw01", password="brand-new-Pw-9")
    scene.alice.secrets.show("acme/fw01")
    scene.alice.secrets.add("acme/new01", password="added-Pw-7", username="added-user")
    assert len(kept) == 4
    texts = [t for seal in kept for t in _reachable_text(seal)]
    for plain in (PW, USER, "new-user-kept", "note-kept-here", "brand-new-Pw-9", "added-Pw-7", "added-user", "fw01"):
        assert not [t for t in texts if plain.encode() in t], plain


def test_the_keyholder_of_secrets_checks_without_assert() -> None:
    """``assert`` vanishes under ``python -O``: every check raises an error of vault/errors.py."""
    source = Path(__file__).parents[2] / "vault" / "keyholder" / "secrets.py"
    tree = ast.parse(source.read_text())
    assert [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Assert)] == []


def test_an_add_or_update_without_a_write_key_is_refused(scene: Scene) -> None:
    _tamper_with(scene, lambda r: dataclasses.replace(r, write_key=None))
    before = _state(scene)
    with pytest.raises(UntrustedRecord, match="no client key"):
        scene.alice.secrets.add("acme/new01", password="new-Pw-1")
    with pytest.raises(UntrustedRecord, match="no client key"):
        scene.alice.secrets.update("acme/fw01", password="new-Pw-2")
    assert _state(scene) == before


def test_an_add_asked_for_a_first_version_other_than_1_is_not_encrypted(scene: Scene) -> None:
    keyholder = scene.alice.secrets._secret_keyholder()
    real = keyholder.transport

    class Renumbering:
        def add(self, request: Any, seal: Any) -> SecretRows:
            class Shown:
                def admit(self, draft: SecretRows) -> None:
                    seal.admit(draft)

                def encrypt(self, draft: SecretRows, version: int) -> Any:
                    return seal.encrypt(draft, 5)

            return real.add(request, Shown())

    keyholder.transport = Renumbering()
    before = _state(scene)
    with pytest.raises(UntrustedRecord, match="first version"):
        scene.alice.secrets.add("acme/new01", password="new-Pw-1")
    assert _state(scene) == before


# -- the client key a new value goes under ----------------------------------------------------------------


def _key_moved_back(scene: Scene) -> None:
    """Alice holds client-key version 1 of acme (a view before the rotation) and 2 (a view
    after it); then a writer of the database makes version 1 current again and undoes its
    destruction (neither column is signed)."""
    assert scene.alice.secrets.show("acme/fw01").username == USER
    scene.team.admin.keys.rotate_client("acme")
    assert scene.alice.secrets.show("acme/sw01").name == "sw01"
    with scene.team.admin.store.transaction() as s:
        s.execute(update(m.Client).where(m.Client.id == scene.client_id).values(current_key_version=1))
        s.execute(
            update(m.ClientKey)
            .where(m.ClientKey.client_id == scene.client_id, m.ClientKey.version == 1)
            .values(state="retiring", destroyed_at=None)
        )


@pytest.fixture
def wrapped(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The client-key versions a data key was wrapped under while the test runs."""
    seen: list[int] = []
    real = blobs.wrap_data_key

    def counting(key: bytes, version: int, *args: Any) -> bytes:
        seen.append(version)
        return real(key, version, *args)

    monkeypatch.setattr(blobs, "wrap_data_key", counting)
    return seen


def test_a_client_key_moved_back_is_refused_by_the_authority(scene: Scene, wrapped: list[int]) -> None:
    """The control of the next test: the authority itself refuses a current key that is not
    the newest admin-signed version."""
    _key_moved_back(scene)
    wrapped.clear()  # the rotation's re-wrapping
    before = _state(scene)
    with pytest.raises(IntegrityError, match="not its newest admin-signed key version") as caught:
        scene.alice.secrets.add("acme/new01", password="new-Pw-1")
    assert type(caught.value) is IntegrityError and wrapped == [] and _state(scene) == before


@pytest.mark.parametrize("operation", ["add", "update"])
def test_a_write_key_older_than_one_verified_is_refused_and_nothing_is_encrypted(
    scene: Scene, wrapped: list[int], monkeypatch: pytest.MonkeyPatch, operation: str
) -> None:
    """A compromised authority (here: one that trusts the clients row, as a DBA moved it)
    names client-key version 1 for a new value, though the keyholder verified version 2:
    the old key is refused before any data key is made, and nothing is written."""
    _key_moved_back(scene)
    monkeypatch.setattr(secretparts._Checks, "current_key_version", lambda self, s, client: client.current_key_version)
    wrapped.clear()  # the rotation's re-wrapping
    before = _state(scene)
    with pytest.raises(UntrustedRecord, match="older than version 2") as caught:
        if operation == "add":
            scene.alice.secrets.add("acme/new01", password="new-Pw-1")
        else:
            scene.alice.secrets.update("acme/fw01", password="new-Pw-2")
    assert type(caught.value) is UntrustedRecord and "new-Pw" not in str(caught.value)
    assert wrapped == [], "a data key was wrapped under the older client key"
    assert _state(scene) == before


def test_a_new_value_goes_under_the_newest_key(scene: Scene, wrapped: list[int]) -> None:
    """The control: after the rotation, untampered, a new value is wrapped under version 2."""
    scene.team.admin.keys.rotate_client("acme")
    wrapped.clear()  # the rotation's re-wrapping
    scene.alice.secrets.update("acme/fw01", password="new-Pw-3")
    scene.alice.secrets.add("acme/new01", password="new-Pw-4")
    assert wrapped == [2, 2]
