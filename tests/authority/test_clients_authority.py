"""The clients' authority (``client show`` / ``client list``), run with no key material.

The rows are made once per module (an admin adds two clients and a secret, grants alice
one of them; bob holds no grant); then ``ClientAuthority`` is driven alone: its
public-key checks are the stand-in of ``standins.py`` (rows only), its recorder notes the
events instead of signing them, and the keyholder's seal is a fake that notes what it is
shown. No client key or private key reaches it, yet it must refuse a caller before any
row of a client is read, show the keyholder the draft before the event, and answer with
ids and ciphertext only.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from standins import Checks, recorded_statements

from vault.authority.client_requests import (
    CLIENT_LIST,
    CLIENT_VIEW,
    MISSING_CLIENT,
    ClientRows,
    ListRequest,
    ShowRequest,
)
from vault.authority.clients import ClientAuthority
from vault.authority.requests import Caller
from vault.errors import AccessDenied, InvalidInput, Locked, NotFound, UntrustedRecord
from vault.storage import models as m

READS_A_CLIENT = re.compile(r"\b(clients|secrets|client_keys|client_key_seals)\b", re.IGNORECASE)
PIN = b"\x00" * 32


class Recorder:
    """Notes each event appended (nothing signed: no key here)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int | None, Any]] = []

    def append(self, s: Any, action: str, *, client_id: Any, public: Any = None, details: Any = None) -> int:
        self.events.append((action, client_id, public))
        return 2000 + len(self.events)


class FakeSeal:
    def __init__(self, recorder: Recorder, refuse: bool = False) -> None:
        self.recorder, self.refuse = recorder, refuse
        self.drafts: list[ClientRows] = []
        self.events_when_admitted: list[int] = []

    def admit(self, draft: ClientRows) -> None:
        self.drafts.append(draft)
        self.events_when_admitted.append(len(self.recorder.events))
        if self.refuse:
            raise UntrustedRecord("the keyholder refuses this answer")


@dataclasses.dataclass
class Scene:
    team: Any
    acme: int
    globex: int
    admin: tuple[int, int]
    alice: tuple[int, int]  # granted acme
    bob: tuple[int, int]  # no grant


@pytest.fixture(scope="module")
def scene(module_team: Any) -> Scene:
    team = module_team
    team.admin.clients.add("acme", "Acme Ltd")
    team.admin.clients.add("globex", "Globex Corp")
    team.admin.secrets.add("acme/fw01", password="authority-client-Pw-1")
    team.engineer("alice")
    team.engineer("bob")
    team.admin.grants.grant("alice", "acme")
    with team.admin.store.transaction() as s:
        acme, globex = s.scalars(select(m.Client.id).order_by(m.Client.id)).all()
        ids = {e.name: (e.id, e.key_generation) for e in s.scalars(select(m.Engineer))}
    return Scene(team, acme, globex, ids[team.admin.engineer_name], ids["alice"], ids["bob"])


@pytest.fixture
def statements(scene: Scene) -> Iterator[list[str]]:
    engine = scene.team.admin.store.engine
    with recorded_statements(engine) as seen:
        yield seen


def _authority(scene: Scene, recorder: Recorder) -> ClientAuthority:
    return ClientAuthority(scene.team.admin.store, Checks(None), recorder, scene.team.clock)


def _events(scene: Scene) -> int:
    with scene.team.admin.store.transaction() as s:
        return int(s.scalar(select(func.count()).select_from(m.AuditEvent)) or 0)


def _show(scene: Scene, who: tuple[int, int], **changes: Any) -> ShowRequest:
    return dataclasses.replace(ShowRequest(Caller(*who), scene.acme, None, (), PIN), **changes)


def test_a_caller_without_a_grant_is_refused_before_any_client_row_is_read(scene: Scene, statements: list[str]) -> None:
    recorder = Recorder()
    seal = FakeSeal(recorder)
    statements.clear()
    with pytest.raises(NotFound, match="no grant"):
        _authority(scene, recorder).show(_show(scene, scene.bob), seal)
    assert statements, "the authority read nothing"
    assert not [st for st in statements if READS_A_CLIENT.search(st)], statements
    assert seal.drafts == [] and recorder.events == []


def test_an_engineer_cannot_name_a_client_by_its_slug_tag(scene: Scene, statements: list[str]) -> None:
    recorder = Recorder()
    statements.clear()
    with pytest.raises(AccessDenied):
        _authority(scene, recorder).show(
            _show(scene, scene.alice, client_id=None, slug_tag=b"\x01" * 32), FakeSeal(recorder)
        )
    assert not [st for st in statements if READS_A_CLIENT.search(st)], statements
    assert recorder.events == []


@pytest.mark.parametrize("call", ["show", "list"])
def test_a_caller_of_an_old_key_generation_is_refused_before_any_client_is_read(
    scene: Scene, statements: list[str], call: str
) -> None:
    recorder = Recorder()
    stale = Caller(scene.alice[0], scene.alice[1] + 1)
    request: Any = _show(scene, scene.alice, caller=stale) if call == "show" else ListRequest(stale, (), PIN)
    statements.clear()
    with pytest.raises(Locked):
        getattr(_authority(scene, recorder), call)(request, FakeSeal(recorder))
    assert not [st for st in statements if READS_A_CLIENT.search(st)], statements
    assert recorder.events == []


def _leaves(value: Any) -> Iterator[Any]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _leaves(getattr(value, f.name))
    elif isinstance(value, tuple):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def _no_plaintext(answer: ClientRows) -> None:
    for leaf in _leaves(answer):
        raw = leaf.encode() if isinstance(leaf, str) else leaf
        if isinstance(raw, bytes):
            for plain in (b"acme", b"Acme Ltd", b"globex", b"Globex Corp", b"authority-client-Pw-1"):
                assert plain not in raw


def test_a_show_answers_its_grant_and_ciphertext_after_its_event(scene: Scene) -> None:
    recorder = Recorder()
    seal = FakeSeal(recorder)
    answer = _authority(scene, recorder).show(_show(scene, scene.alice), seal)
    assert recorder.events == [(CLIENT_VIEW, scene.acme, None)]
    assert seal.events_when_admitted == [0], "the keyholder saw the draft before the event was appended"
    assert answer.seq == 2001 and dataclasses.replace(answer, seq=0) == seal.drafts[0]
    (entry,) = answer.clients
    assert (entry.id, entry.secrets) == (scene.acme, 1)
    assert entry.grant is not None and (entry.grant.engineer_id, entry.grant.client_id) == (scene.alice[0], scene.acme)
    assert [k.record.version for k in answer.sealed_keys] == [1] and answer.sealed_keys[0].kind == "engineer"
    _no_plaintext(answer)


def test_a_key_the_keyholder_holds_is_not_sent_again(scene: Scene) -> None:
    recorder = Recorder()
    answer = _authority(scene, recorder).show(_show(scene, scene.alice, known_key_versions=(1,)), FakeSeal(recorder))
    assert answer.sealed_keys == ()


def test_an_engineer_s_list_names_only_the_clients_of_their_ledgers(scene: Scene) -> None:
    recorder = Recorder()
    seal = FakeSeal(recorder)
    answer = _authority(scene, recorder).list(ListRequest(Caller(*scene.alice), ((scene.acme, 1),), PIN), seal)
    assert [e.id for e in answer.clients] == [scene.acme] and answer.sealed_keys == ()
    assert seal.events_when_admitted == [0] and recorder.events == [(CLIENT_LIST, None, {"count": 1})]
    nothing = _authority(scene, recorder).list(ListRequest(Caller(*scene.bob), (), PIN), FakeSeal(recorder))
    assert nothing.clients == () and recorder.events[-1] == (CLIENT_LIST, None, {"count": 0})


def test_an_admin_s_list_names_every_client_with_the_recovery_copies(scene: Scene) -> None:
    recorder = Recorder()
    answer = _authority(scene, recorder).list(ListRequest(Caller(*scene.admin), (), PIN), FakeSeal(recorder))
    assert [e.id for e in answer.clients] == [scene.acme, scene.globex]
    assert all(e.grant is None for e in answer.clients)
    assert {(k.record.client_id, k.kind) for k in answer.sealed_keys} == {
        (scene.acme, "recovery"),
        (scene.globex, "recovery"),
    }
    _no_plaintext(answer)


@pytest.mark.parametrize("call", ["show", "list"])
def test_a_refused_draft_writes_no_event(scene: Scene, call: str) -> None:
    before, recorder = _events(scene), Recorder()
    seal = FakeSeal(recorder, refuse=True)
    request: Any = _show(scene, scene.alice) if call == "show" else ListRequest(Caller(*scene.alice), (), PIN)
    with pytest.raises(UntrustedRecord):
        getattr(_authority(scene, recorder), call)(request, seal)
    assert len(seal.drafts) == 1 and recorder.events == [] and _events(scene) == before


def test_a_missing_client_is_said_by_its_marker(scene: Scene) -> None:
    recorder = Recorder()
    request = _show(scene, scene.admin, client_id=None, slug_tag=b"\x09" * 32)
    with pytest.raises(NotFound, match=MISSING_CLIENT):
        _authority(scene, recorder).show(request, FakeSeal(recorder))
    assert recorder.events == []


FORGED = {
    "engineer id as text": lambda s: ("show", _show(s, s.alice, caller=Caller("1", 0))),  # type: ignore[arg-type]
    "negative key generation": lambda s: ("list", ListRequest(Caller(s.alice[0], -1), (), PIN)),
    "short pin": lambda s: ("show", _show(s, s.alice, org_pin=b"\x00" * 5)),
    "id and tag both": lambda s: ("show", _show(s, s.alice, slug_tag=b"\x01" * 32)),
    "long slug tag": lambda s: ("show", _show(s, s.admin, client_id=None, slug_tag=b"\x01" * 64)),
    "client id zero": lambda s: ("show", _show(s, s.alice, client_id=0)),
    "known version as text": lambda s: ("show", _show(s, s.alice, known_key_versions=("1",))),
    "known pair not a pair": lambda s: ("list", ListRequest(Caller(*s.alice), ((1, 1, 1),), PIN)),
    "known as a list": lambda s: ("list", ListRequest(Caller(*s.alice), [(1, 1)], PIN)),  # type: ignore[arg-type]
    "not a request": lambda s: ("show", ListRequest(Caller(*s.alice), (), PIN)),
    # a grantee names another action so that a ``revoke`` is journalled in their name
    "show with action revoke": lambda s: ("show", _show(s, s.alice, action="revoke")),
    "show with action client-list": lambda s: ("show", _show(s, s.alice, action=CLIENT_LIST)),
    "list with action grant": lambda s: (
        "list",
        dataclasses.replace(ListRequest(Caller(*s.alice), (), PIN), action="grant"),
    ),
    "list with action not text": lambda s: (
        "list",
        dataclasses.replace(ListRequest(Caller(*s.alice), (), PIN), action=7),
    ),
}


@pytest.mark.parametrize("case", list(FORGED))
def test_a_forged_request_field_is_refused_before_any_sql(scene: Scene, statements: list[str], case: str) -> None:
    recorder = Recorder()
    seal = FakeSeal(recorder)
    call, request = FORGED[case](scene)
    statements.clear()
    with pytest.raises(InvalidInput):
        getattr(_authority(scene, recorder), call)(request, seal)
    assert statements == [] and seal.drafts == [] and recorder.events == []


def test_a_grantee_s_show_forged_as_a_revoke_takes_no_one_s_access(team: Any) -> None:
    """The reviewer's repro: alice, a grantee, sends ``client show`` with action ``revoke``.
    Were it journalled, the audit log would doubt every grant of the client and the next
    rotation would seal the new key to nobody: bob would lose access to what alice cannot take."""
    if not team.url.startswith("sqlite"):
        pytest.skip("the end-to-end repro runs on SQLite (the FORGED cases cover both engines)")
    admin = team.admin
    admin.clients.add("acme", "Acme Ltd")
    admin.secrets.add("acme/fw01", password="Pw-fw01-xyz")
    alice, bob = team.engineer("alice"), team.engineer("bob")
    admin.grants.grant("alice", "acme")
    admin.grants.grant("bob", "acme")
    kh = alice.clients._client_keyholder()
    real = kh.transport

    class Forging:
        def show(self, r: Any, seal: Any) -> Any:
            return real.show(dataclasses.replace(r, action="revoke"), seal)

        def list(self, r: Any, seal: Any) -> Any:
            return real.list(r, seal)

    kh.transport = Forging()
    with pytest.raises(InvalidInput):
        alice.clients.show("acme")
    assert [e for e in admin.audit.log() if e.action == "revoke"] == []
    admin.keys.rotate_client("acme")
    bob.close()
    bob = team.open("bob")
    bob.engineers.unlock("bob", team.passphrases["bob"])
    assert bob.checkouts.reveal("acme/fw01", reason="after") == "Pw-fw01-xyz"
