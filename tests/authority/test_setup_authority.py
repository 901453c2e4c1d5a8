"""The setup authority (creating a vault, an enrolled engineer's row), run with no key material.

``SetupAuthority`` is driven alone over an empty migrated database: its recorder notes the
events, and the keyholder's seal is a fake that returns the fixed "keys" the test gives
it. The attacks are an insider's: a second ``init`` run against a database that holds a
vault (a DBA or an engineer with database access trying to found a vault of their own over
it), a request forged field by field, and a seal (a compromised client) that returns keys
of another generation, of the wrong size, or a share policy the request did not ask for.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from standins import recorded_statements

from vault import Vault
from vault.authority.setup import SetupAuthority
from vault.authority.setup_requests import AdminKeys, InitDraft, InitRequest, PendingKeyRequest
from vault.crypto.keyrecord import FLOOR as FAST_KDF
from vault.errors import AlreadyExists, InvalidInput, NotFound, UntrustedRecord
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m

KEY, SIG = b"\x11" * 32, b"\x5a" * 64
GOOD = AdminKeys(1, b"\x21" * 32, b"\x22" * 32, b"record", SIG, SIG, b"sealed root", None)


def fixed_clock() -> Any:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return lambda: now


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any], int]] = []

    def append(self, s: Any, action: str, *, public: Any, admin_id: int, seal: Any) -> int:
        self.events.append((action, public, admin_id))
        return 1


class FakeSeal:
    def __init__(self, made: Any = GOOD, refuse: bool = False) -> None:
        self.made, self.refuse = made, refuse
        self.drafts: list[InitDraft] = []

    def make(self, draft: InitDraft) -> Any:
        self.drafts.append(draft)
        if self.refuse:
            raise UntrustedRecord("the keyholder refuses this draft")
        return self.made


@dataclasses.dataclass
class Scene:
    store: Any
    authority: SetupAuthority
    recorder: Recorder


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[Scene]:
    vault = Vault.open(
        f"sqlite:///{tmp_path / 'vault.db'}",
        engineer="root-admin",
        clock=fixed_clock(),
        kdf_params=FAST_KDF,
        sessions=MemorySessionStore(),
        upgrade=True,
    )
    recorder = Recorder()
    yield Scene(vault.core.store, SetupAuthority(vault.core.store, recorder, fixed_clock()), recorder)
    vault.close()


@pytest.fixture
def statements(scene: Scene) -> Iterator[list[str]]:
    with recorded_statements(scene.store.engine) as seen:
        yield seen


def _request(**changes: Any) -> InitRequest:
    return dataclasses.replace(InitRequest("root-admin", b"\x01" * 16, KEY, b"\x12" * 32, None), **changes)


def _counts(scene: Scene) -> tuple[int, ...]:
    with scene.store.transaction() as s:
        tables = (m.VaultInfo, m.Engineer, m.EngineerKey, m.RootKey, m.RootSeal, m.OrgKey)
        return tuple(s.scalar(select(func.count()).select_from(t)) or 0 for t in tables)


def test_init_stores_the_vault_and_the_admin_exactly_as_the_keyholder_made_them(scene: Scene) -> None:
    seal = FakeSeal()
    answer = scene.authority.initialise(_request(), seal)
    (draft,) = seal.drafts
    assert (draft.vault_id, draft.admin.name, draft.admin.role, draft.admin.key_generation) == (
        b"\x01" * 16,
        "root-admin",
        "admin",
        0,
    )
    row = answer.admin
    assert (row.sealing_public, row.signing_public, row.certificate, row.key_generation) == (
        GOOD.sealing_public,
        GOOD.signing_public,
        SIG,
        1,
    )
    assert _counts(scene) == (1, 1, 1, 1, 1, 1)
    ((action, public, admin_id),) = scene.recorder.events
    assert (action, admin_id, public["admin"], public["root_version"]) == ("vault-init", row.id, "root-admin", 1)


def test_a_second_init_over_a_vault_is_refused_before_anything_is_written(scene: Scene) -> None:
    scene.authority.initialise(_request(), FakeSeal())
    before, seal = _counts(scene), FakeSeal()
    with pytest.raises(AlreadyExists):
        scene.authority.initialise(_request(vault_id=b"\x02" * 16, admin_name="mallory"), seal)
    assert seal.drafts == [] and _counts(scene) == before and len(scene.recorder.events) == 1


@pytest.mark.parametrize(
    "changes",
    [
        {"action": "vault-drop"},
        {"admin_name": "no spaces allowed"},
        {"admin_name": None},
        {"vault_id": b"\x01" * 15},
        {"vault_id": "01" * 16},
        {"org_signing_public": b"short"},
        {"recovery_public": None},
        {"shares": (1, 3)},
        {"shares": (3, 2)},
        {"shares": (2, 17)},
        {"shares": (10, 12)},
        {"shares": (True, 3)},
        {"shares": [2, 3]},
    ],
)
def test_a_forged_init_request_is_refused_before_any_sql(
    scene: Scene, statements: list[str], changes: dict[str, Any]
) -> None:
    seal = FakeSeal()
    statements.clear()
    with pytest.raises(InvalidInput):
        scene.authority.initialise(_request(**changes), seal)
    assert statements == [] and seal.drafts == []


@pytest.mark.parametrize(
    ("made", "shares"),
    [
        (dataclasses.replace(GOOD, key_generation=2), None),
        (dataclasses.replace(GOOD, signing_public=b"short"), None),
        (dataclasses.replace(GOOD, certificate=b"short"), None),
        (dataclasses.replace(GOOD, key_certificate=None), None),
        (dataclasses.replace(GOOD, root_seal=b""), None),
        (dataclasses.replace(GOOD, share_signature=SIG), None),  # a share policy nobody asked for
        (GOOD, (2, 3)),  # the share policy asked for, unsigned
        (("not", "keys"), None),
    ],
)
def test_keys_not_made_for_the_draft_write_nothing(scene: Scene, made: Any, shares: Any) -> None:
    with pytest.raises(InvalidInput):
        scene.authority.initialise(_request(shares=shares), FakeSeal(made))
    assert _counts(scene) == (0, 0, 0, 0, 0, 0) and scene.recorder.events == []


def test_a_refusing_keyholder_leaves_the_database_empty(scene: Scene) -> None:
    with pytest.raises(UntrustedRecord):
        scene.authority.initialise(_request(), FakeSeal(refuse=True))
    assert _counts(scene) == (0, 0, 0, 0, 0, 0)


def test_pending_key_answers_the_row_as_stored_and_an_unknown_name_is_not_found(scene: Scene) -> None:
    scene.authority.initialise(_request(), FakeSeal())
    assert scene.authority.pending_key(PendingKeyRequest("root-admin")).engineer.signing_public == GOOD.signing_public
    with pytest.raises(NotFound):
        scene.authority.pending_key(PendingKeyRequest("nobody"))
    for forged in (PendingKeyRequest("not a name"), PendingKeyRequest("x", action="vault-init"), ("x",)):
        with pytest.raises(InvalidInput):
            scene.authority.pending_key(forged)  # type: ignore[arg-type]
