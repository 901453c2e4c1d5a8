"""The subjects' authority, run with no key material at all.

Rows made once per module and copied per test; ``SubjectAuthority`` is driven alone with
the stand-in caller checks, a recorder that notes events and a fake keyholder seal that
counts what it is shown. An engineer is refused before any client row is read; a forged
request is refused before any SQL; the search sees ciphertext only (no password blob),
and the event records the count the keyholder gave (none for a purge's search).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from standins import Checks, recorded_statements

from vault import Vault
from vault.authority.requests import Caller
from vault.authority.subjects import FIND, REPORT, SELECT, SubjectAuthority, SubjectRequest, SubjectRows
from vault.crypto.keyrecord import FLOOR as FAST_KDF
from vault.errors import AccessDenied, InvalidInput, UntrustedRecord
from vault.service.policies import Policy
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m

READS_A_TARGET = re.compile(r"\b(clients|secrets|secret_versions|client_keys|client_key_seals)\b", re.IGNORECASE)
PIN = b"\x00" * 32
ADMIN, ADMIN_PASS = "root-admin", "admin passphrase of this module"


def fixed_clock() -> Any:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return lambda: now


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def append(
        self, s: Any, action: str, *, client_id: Any, secret_id: Any, details: Any = None, public: Any = None
    ) -> int:
        self.events.append((action, public))
        return 900 + len(self.events)


class FakeSeal:
    def __init__(self, found: Any = 3, refuse: bool = False) -> None:
        self.found, self.refuse = found, refuse
        self.drafts: list[SubjectRows] = []

    def search(self, draft: SubjectRows) -> Any:
        self.drafts.append(draft)
        if self.refuse:
            raise UntrustedRecord("the keyholder refuses these rows")
        return self.found


@dataclasses.dataclass
class Scene:
    store: Any
    admin: tuple[int, int]
    alice: tuple[int, int]
    passwords: list[bytes]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("subjects") / "vault.db"
    url, clock = f"sqlite:///{path}", fixed_clock()
    admin, _ = Vault.create(url, admin=ADMIN, passphrase=ADMIN_PASS, clock=clock, kdf_params=FAST_KDF)
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    admin.clients.add("acme", "Acme Ltd")
    admin.clients.add("beta", "Beta Ltd")
    admin.secrets.add("acme/fw01", password="subjects-authority-Pw-1", username="jane.doe")
    admin.secrets.update("acme/fw01", note="Jane's firewall")
    admin.secrets.add("beta/mail", password="subjects-authority-Pw-2", username="jane@example.com")
    code = admin.engineers.invite("alice")
    mine = Vault.open(url, engineer="alice", clock=clock, kdf_params=FAST_KDF, sessions=MemorySessionStore())
    admin.engineers.confirm("alice", mine.engineers.enroll("alice", code, "pass of alice"))
    mine.close()
    admin.grants.grant("alice", "acme")
    admin.close()
    return path


@pytest.fixture
def scene(template: Path, tmp_path: Path) -> Iterator[Scene]:
    for suffix in ("", "-wal"):
        if Path(f"{template}{suffix}").exists():
            shutil.copy(f"{template}{suffix}", tmp_path / f"vault.db{suffix}")
    vault = Vault.open(
        f"sqlite:///{tmp_path / 'vault.db'}", clock=fixed_clock(), kdf_params=FAST_KDF, sessions=MemorySessionStore()
    )
    with vault.core.store.transaction() as s:
        ids = {e.name: (e.id, e.key_generation) for e in s.scalars(select(m.Engineer))}
        passwords = list(s.scalars(select(m.SecretVersion.password_blob)))
    yield Scene(vault.core.store, ids[ADMIN], ids["alice"], passwords)


@pytest.fixture
def statements(scene: Scene) -> Iterator[list[str]]:
    with recorded_statements(scene.store.engine) as seen:
        yield seen


def _authority(scene: Scene, recorder: Recorder) -> SubjectAuthority:
    return SubjectAuthority(scene.store, Checks(Policy(True, True, True, 120, None, False)), recorder)


def _walk(value: Any) -> Iterator[Any]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _walk(getattr(value, f.name))
    elif isinstance(value, tuple):
        for item in value:
            yield from _walk(item)
    else:
        yield value


@pytest.mark.parametrize("action", [FIND, REPORT, SELECT])
def test_an_engineer_is_refused_a_subject_search_before_any_client_row_is_read(
    scene: Scene, statements: list[str], action: str
) -> None:
    recorder, seal = Recorder(), FakeSeal()
    statements.clear()
    with pytest.raises(AccessDenied, match="not an admin"):
        _authority(scene, recorder).search(SubjectRequest(action, Caller(*scene.alice), PIN), seal)
    assert statements and not [st for st in statements if READS_A_TARGET.search(st)], statements
    assert seal.drafts == [] and recorder.events == []


@pytest.mark.parametrize(
    "request_",
    [
        SubjectRequest("subject-purge-everything", Caller(1, 0), PIN),
        SubjectRequest(FIND, Caller(0, 0), PIN),
        SubjectRequest(FIND, Caller(1, -1), PIN),
        SubjectRequest(FIND, None, PIN),  # type: ignore[arg-type]
        SubjectRequest(FIND, Caller(1, 0), b"short"),
        ("find", "everyone"),
    ],
)
def test_a_forged_request_is_refused_before_any_sql(scene: Scene, statements: list[str], request_: Any) -> None:
    statements.clear()
    with pytest.raises(InvalidInput):
        _authority(scene, Recorder()).search(request_, FakeSeal())
    assert statements == []


def test_the_search_sees_every_client_as_ciphertext_and_no_password_blob(scene: Scene) -> None:
    recorder, seal = Recorder(), FakeSeal(found=3)
    answer = _authority(scene, recorder).search(SubjectRequest(REPORT, Caller(*scene.admin), PIN), seal)
    (draft,) = seal.drafts
    assert [c.client_id for c in draft.clients] == sorted(c.client_id for c in draft.clients) and len(
        draft.clients
    ) == 2
    acme = draft.clients[0]
    assert [v.version for v in acme.versions] == [1, 2] and set(acme.secret_ids) == {v.secret_id for v in acme.versions}
    assert all(k.kind == "recovery" and k.blob for k in acme.keys)
    shown = [x for x in _walk(draft) if isinstance(x, bytes)]
    assert not [p for p in scene.passwords if p in shown]
    assert recorder.events == [(REPORT, {"matches": 3, "by": ADMIN})] and answer.seq == 901


def test_a_purges_search_records_no_event(scene: Scene) -> None:
    recorder = Recorder()
    answer = _authority(scene, recorder).search(SubjectRequest(SELECT, Caller(*scene.admin), PIN), FakeSeal())
    assert recorder.events == [] and answer.seq == 0


@pytest.mark.parametrize("found", [-1, True, "3", None])
def test_a_count_that_is_not_a_count_records_nothing(scene: Scene, found: Any) -> None:
    recorder = Recorder()
    with pytest.raises(InvalidInput):
        _authority(scene, recorder).search(SubjectRequest(FIND, Caller(*scene.admin), PIN), FakeSeal(found=found))
    assert recorder.events == []


def test_a_refusing_keyholder_records_nothing(scene: Scene) -> None:
    recorder = Recorder()
    with pytest.raises(UntrustedRecord):
        _authority(scene, recorder).search(SubjectRequest(FIND, Caller(*scene.admin), PIN), FakeSeal(refuse=True))
    assert recorder.events == []
