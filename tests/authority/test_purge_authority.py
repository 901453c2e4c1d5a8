"""The purges' authority, run with no key material at all.

Rows made once per module (an admin, two clients with secrets, an engineer granted one)
and copied per test; ``PurgeAuthority`` and ``ReceiptAuthority`` are driven alone, with
the stand-in caller checks (``standins.Checks``), a recorder that notes events and a fake
keyholder seal. The attacks are an insider's: an engineer asking to purge or to read the
receipts, requests forged field by field, a keyholder seal (a compromised client) that
returns a receipt for another client or without a signature, and a purge whose deletes
leave a sealed copy of the client key behind (the authority counts what survives after its
deletes, in the same unit, and shows it to the keyholder).
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
from sqlalchemy import delete, func, select
from standins import Checks, recorded_statements

from vault import Vault
from vault.authority import purge as purge_module
from vault.authority.purge import PurgeAuthority
from vault.authority.purge_receipts import ReceiptAuthority
from vault.authority.purge_requests import (
    CLIENT,
    CLIENT_COUNTS,
    PREVIEW,
    SECRET,
    SUBJECT,
    PurgeRequest,
    PurgeRows,
    PurgeTarget,
    ReceiptRequest,
    ReceiptRow,
    Survivors,
)
from vault.authority.requests import Caller
from vault.crypto.keyrecord import FLOOR as FAST_KDF
from vault.errors import AccessDenied, InvalidInput, NotFound, UntrustedRecord
from vault.service.policies import Policy
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m

READS_A_TARGET = re.compile(r"\b(clients|secrets|secret_versions|client_keys|purge_receipts)\b", re.IGNORECASE)
PIN, SIGNATURE = b"\x00" * 32, b"\x5a" * 64

ADMIN, ADMIN_PASS = "root-admin", "admin passphrase of this module"


def fixed_clock() -> Any:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return lambda: now


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, int | None, int | None, Any]] = []

    def append(
        self, s: Any, action: str, *, client_id: Any, secret_id: Any, details: Any = None, public: Any = None
    ) -> int:
        self.events.append((action, client_id, secret_id, public))
        return 700 + len(self.events)


class FakeSeal:
    """The keyholder's seal without a key: notes drafts and receipts; signs with fixed bytes."""

    def __init__(self, refuse: bool = False, forge: Any = None) -> None:
        self.refuse, self.forge = refuse, forge
        self.drafts: list[PurgeRows] = []
        self.receipts: list[tuple[ReceiptRow, Survivors]] = []

    def admit(self, draft: PurgeRows) -> None:
        self.drafts.append(draft)
        if self.refuse:
            raise UntrustedRecord("the keyholder refuses this draft")

    def sign(self, receipt: ReceiptRow, survivors: Survivors) -> ReceiptRow:
        self.receipts.append((receipt, survivors))
        signed = dataclasses.replace(receipt, fingerprints=("ab" * 16,), signature=SIGNATURE)
        return self.forge(signed) if self.forge else signed


@dataclasses.dataclass
class Scene:
    store: Any
    clock: Any
    acme: int
    beta: int
    secrets: list[int]  # acme's
    admin: tuple[int, int]
    alice: tuple[int, int]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("purge") / "vault.db"
    clock = fixed_clock()
    url = f"sqlite:///{path}"
    admin, _ = Vault.create(url, admin=ADMIN, passphrase=ADMIN_PASS, clock=clock, kdf_params=FAST_KDF)
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    admin.clients.add("acme", "Acme Ltd")
    admin.clients.add("beta", "Beta Ltd")
    admin.secrets.add("acme/fw01", password="purge-authority-Pw-1", username="fw")
    admin.secrets.add("acme/sw01", password="purge-authority-Pw-2", username="sw")
    admin.secrets.add("beta/fw01", password="purge-authority-Pw-3", username="fw")
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
    url = f"sqlite:///{tmp_path / 'vault.db'}"
    vault = Vault.open(url, clock=fixed_clock(), kdf_params=FAST_KDF, sessions=MemorySessionStore())
    store = vault.core.store
    with store.transaction() as s:
        ids = {e.name: (e.id, e.key_generation) for e in s.scalars(select(m.Engineer))}
        acme, beta = sorted(s.scalars(select(m.Client.id)))
        secrets = sorted(s.scalars(select(m.Secret.id).where(m.Secret.client_id == acme)))
    yield Scene(store, fixed_clock(), acme, beta, secrets, ids[ADMIN], ids["alice"])


@pytest.fixture
def statements(scene: Scene) -> Iterator[list[str]]:
    with recorded_statements(scene.store.engine) as seen:
        yield seen


def _checks() -> Checks:
    return Checks(Policy(True, True, True, 120, None, False))


def _purges(scene: Scene, recorder: Recorder) -> PurgeAuthority:
    return PurgeAuthority(scene.store, _checks(), recorder, scene.clock)


def _state(scene: Scene) -> tuple[int, ...]:
    with scene.store.transaction() as s:
        return tuple(
            int(s.scalar(select(func.count()).select_from(t)) or 0)
            for t in (m.Client, m.Secret, m.SecretVersion, m.ClientKey, m.ClientKeySeal, m.Grant, m.PurgeReceipt)
        )


def _client(scene: Scene, who: tuple[int, int], kind: str = CLIENT) -> PurgeRequest:
    return PurgeRequest(kind, Caller(*who), (PurgeTarget(scene.acme, ()),), "" if kind == PREVIEW else "REQ-1", PIN)


def _secret(scene: Scene, who: tuple[int, int]) -> PurgeRequest:
    return PurgeRequest(SECRET, Caller(*who), (PurgeTarget(scene.acme, (scene.secrets[0],)),), "REQ-2", PIN)


@pytest.mark.parametrize("call", ["preview", "client", "secret", "receipts"])
def test_an_engineer_is_refused_every_purge_before_any_row_of_a_target_is_read(
    scene: Scene, statements: list[str], call: str
) -> None:
    recorder, seal, before = Recorder(), FakeSeal(), _state(scene)
    statements.clear()
    with pytest.raises(AccessDenied, match="not an admin"):
        if call == "preview":
            _purges(scene, recorder).preview(_client(scene, scene.alice, PREVIEW))
        elif call == "client":
            _purges(scene, recorder).purge(_client(scene, scene.alice), seal)
        elif call == "secret":
            _purges(scene, recorder).purge(_secret(scene, scene.alice), seal)
        else:
            ReceiptAuthority(scene.store, _checks()).receipts(ReceiptRequest(Caller(*scene.alice), None, PIN))
    assert statements, "the authority read nothing"
    assert not [st for st in statements if READS_A_TARGET.search(st)], statements
    assert seal.drafts == [] and recorder.events == [] and _state(scene) == before


def _forged(scene: Scene) -> list[Any]:
    good = _client(scene, scene.admin)
    secret = _secret(scene, scene.admin)
    one = secret.targets[0]
    return [
        dataclasses.replace(good, kind="everything"),
        dataclasses.replace(good, targets=()),
        dataclasses.replace(good, targets=[PurgeTarget(scene.acme, ())]),  # a list, not a tuple
        dataclasses.replace(good, targets=(PurgeTarget("1", ()),)),  # type: ignore[arg-type]
        dataclasses.replace(good, targets=(PurgeTarget(scene.acme, (scene.secrets[0],)),)),  # a client purge names none
        dataclasses.replace(good, targets=(PurgeTarget(scene.acme, ()), PurgeTarget(scene.beta, ()))),
        dataclasses.replace(good, request_ref="Jane Doe, jane@example.com"),  # personal data in the reference
        dataclasses.replace(good, request_ref=""),
        dataclasses.replace(good, caller=Caller(scene.admin[0], True)),  # type: ignore[arg-type]
        dataclasses.replace(good, org_pin=None),
        dataclasses.replace(secret, targets=(PurgeTarget(scene.acme, ()),)),  # a secret purge names one
        dataclasses.replace(secret, targets=(PurgeTarget(scene.acme, tuple(scene.secrets)),)),
        dataclasses.replace(secret, targets=(dataclasses.replace(one, secret_ids=(0,)),)),
        dataclasses.replace(secret, kind=SUBJECT, targets=(one, one)),  # a client twice
        dataclasses.replace(secret, kind=SUBJECT, targets=(PurgeTarget(scene.acme, (scene.secrets[0],) * 2),)),
        dataclasses.replace(good, kind=PREVIEW),  # a preview destroys nothing
    ]


@pytest.mark.parametrize("index", range(16))
def test_a_forged_request_is_refused_before_any_sql(scene: Scene, statements: list[str], index: int) -> None:
    request = _forged(scene)[index]
    seal = FakeSeal()
    statements.clear()
    with pytest.raises(InvalidInput):
        _purges(scene, Recorder()).purge(request, seal)
    assert statements == [] and seal.drafts == []


@pytest.mark.parametrize("receipt_id", [0, -1, "1", True, None])
def test_a_forged_receipt_number_is_refused_before_any_sql(
    scene: Scene, statements: list[str], receipt_id: Any
) -> None:
    statements.clear()
    with pytest.raises(InvalidInput):
        ReceiptAuthority(scene.store, _checks()).check(ReceiptRequest(Caller(*scene.alice), receipt_id, PIN))
    assert statements == []


def test_the_preview_counts_what_a_client_purge_destroys_and_changes_nothing(scene: Scene) -> None:
    before = _state(scene)
    answer = _purges(scene, Recorder()).preview(_client(scene, scene.admin, PREVIEW))
    (part,) = answer.parts
    counts = dict(part.counts)
    assert (
        tuple(counts) == CLIENT_COUNTS and counts["secrets"] == 2 and counts["versions"] == 2 and counts["grants"] == 1
    )
    assert part.secret_ids == tuple(scene.secrets) and [r.version for r in part.key_records] == [1]
    assert _state(scene) == before


def test_a_refusing_keyholder_leaves_every_row(scene: Scene) -> None:
    recorder, before = Recorder(), _state(scene)
    with pytest.raises(UntrustedRecord):
        _purges(scene, recorder).purge(_client(scene, scene.admin), FakeSeal(refuse=True))
    assert recorder.events == [] and _state(scene) == before


def test_a_client_purge_shows_the_records_before_and_nothing_left_after(scene: Scene) -> None:
    recorder, seal = Recorder(), FakeSeal()
    answer = _purges(scene, recorder).purge(_client(scene, scene.admin), seal)
    (draft,) = seal.drafts
    assert draft.receipts == () and [p.client_id for p in draft.parts] == [scene.acme]
    ((receipt, survivors),) = seal.receipts
    assert survivors == Survivors(0, 0, 0, 0, 0)
    assert (receipt.kind, receipt.client_id, receipt.secret_ids, receipt.request_ref) == (
        CLIENT,
        scene.acme,
        tuple(scene.secrets),
        "REQ-1",
    )
    assert receipt.event_seq == 701 and receipt.fingerprints == () and receipt.signature == b""
    assert answer.receipts[0].signature == SIGNATURE
    assert [e[0] for e in recorder.events] == ["purge-client"]
    with scene.store.transaction() as s:
        stored = s.scalars(select(m.PurgeReceipt)).one()
        assert stored.signature == SIGNATURE and stored.fingerprints == '["' + "ab" * 16 + '"]'
        assert s.get(m.Client, scene.acme) is None and s.get(m.Client, scene.beta) is not None


def test_a_purge_that_leaves_a_sealed_copy_of_the_client_key_says_so_to_the_keyholder(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A faulty (or compromised) delete keeps the client row, its key records and their sealed
    copies: the count after it, in the same unit, is what the keyholder is shown before it
    signs (and refuses: tests/keyholder/test_purge_keyholder.py)."""

    def keeps_the_keys(s: Any, client_id: int) -> None:
        secret_ids = select(m.Secret.id).where(m.Secret.client_id == client_id)
        s.execute(delete(m.Checkout).where(m.Checkout.client_id == client_id))
        s.execute(delete(m.SecretVersion).where(m.SecretVersion.secret_id.in_(secret_ids)))
        s.execute(delete(m.Secret).where(m.Secret.client_id == client_id))

    monkeypatch.setattr(purge_module.PurgeAuthority, "_delete_client", staticmethod(keeps_the_keys))
    seal = FakeSeal()
    _purges(scene, Recorder()).purge(_client(scene, scene.admin), seal)
    ((_, survivors),) = seal.receipts
    assert (survivors.secrets, survivors.versions) == (0, 0)
    assert survivors.client == 1 and survivors.sealed_copies >= 1 and survivors.key_records >= 1


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda r: dataclasses.replace(r, client_id=r.client_id + 1), id="another-client"),
        pytest.param(lambda r: dataclasses.replace(r, secret_ids=()), id="no-secrets"),
        pytest.param(lambda r: dataclasses.replace(r, request_ref="OTHER-1"), id="another-request"),
        pytest.param(lambda r: dataclasses.replace(r, signature=b""), id="no-signature"),
        pytest.param(lambda r: dataclasses.replace(r, fingerprints=(1,)), id="fingerprints-not-text"),
        pytest.param(lambda r: ("a", "tuple"), id="not-a-receipt"),
    ],
)
def test_a_receipt_the_keyholder_returns_for_anything_else_is_refused_and_nothing_is_purged(
    scene: Scene, forge: Any
) -> None:
    before = _state(scene)
    with pytest.raises(InvalidInput):
        _purges(scene, Recorder()).purge(_client(scene, scene.admin), FakeSeal(forge=forge))
    assert _state(scene) == before


def test_a_secret_purge_shows_every_version_and_deletes_only_that_secret(scene: Scene) -> None:
    seal = FakeSeal()
    _purges(scene, Recorder()).purge(_secret(scene, scene.admin), seal)
    (draft,) = seal.drafts
    (part,) = draft.parts
    assert part.secret_ids == (scene.secrets[0],) and {v.secret_id for v in part.versions} == {scene.secrets[0]}
    assert part.key_records == ()
    with scene.store.transaction() as s:
        assert s.get(m.Secret, scene.secrets[0]) is None and s.get(m.Secret, scene.secrets[1]) is not None


def test_a_secret_of_another_client_is_not_found(scene: Scene) -> None:
    request = PurgeRequest(SECRET, Caller(*scene.admin), (PurgeTarget(scene.beta, (scene.secrets[0],)),), "REQ-3", PIN)
    before = _state(scene)
    with pytest.raises(NotFound):
        _purges(scene, Recorder()).purge(request, FakeSeal())
    assert _state(scene) == before


def test_a_receipt_check_gathers_survivors_without_judging(scene: Scene) -> None:
    _purges(scene, Recorder()).purge(_client(scene, scene.admin), FakeSeal())
    with scene.store.transaction() as s:
        receipt_id = s.scalars(select(m.PurgeReceipt.id)).one()
    answer = ReceiptAuthority(scene.store, _checks()).check(ReceiptRequest(Caller(*scene.alice), receipt_id, PIN))
    assert answer.survivors == Survivors(0, 0, 0, 0, 0) and answer.signer is not None
    assert answer.receipts[0].signature == SIGNATURE and answer.event_action is None  # the recorder wrote no event
