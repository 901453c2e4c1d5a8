"""The purges' keyholder against an authority that returns tampered rows.

A real admin's ``vault.purge.client`` / ``secret``, whose transport hands the authority's
draft (shown before anything is deleted), the receipt it asks to have signed, the counts
it reports as surviving and its answer through functions that change them. The insider
is a compromised authority: it drafts the purge of another client or other secrets, asks
to have a receipt signed that states something else (another client, request, secrets,
counts, signer, date), or reports the purge done while a sealed copy of the client key
survives. Each is refused and, since the refusal happens inside the unit of work, nothing
is purged: no row deleted, no receipt, no event. The first case is the control. A receipt
a DBA rewrote afterwards fails ``verify_receipt``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from vault import Vault
from vault.authority.purge_requests import PurgeRows, ReceiptRow, Survivors
from vault.crypto.keyrecord import FLOOR as FAST_KDF
from vault.errors import DecryptionFailed, UntrustedRecord
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m

ADMIN, ADMIN_PASS = "root-admin", "admin passphrase of this module"


def fixed_clock() -> Any:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return lambda: now


def _same(value: Any) -> Any:
    return value


class TamperingTransport:
    """Forwards to the real transport; the draft, the receipt to sign, the survivors and the
    answer each go through a function that may change them."""

    def __init__(
        self,
        real: Any,
        draft: Callable[[PurgeRows], PurgeRows] = _same,
        receipt: Callable[[ReceiptRow], ReceiptRow] = _same,
        survivors: Callable[[Survivors], Survivors] = _same,
        answer: Callable[[PurgeRows], PurgeRows] = _same,
    ) -> None:
        self.real, self.draft, self.receipt, self.survivors, self.answer = real, draft, receipt, survivors, answer

    def preview(self, request: Any) -> PurgeRows:
        return self.answer(self.real.preview(request))

    def purge(self, request: Any, seal: Any) -> PurgeRows:
        outer = self

        class Seal:
            def admit(self, draft: PurgeRows) -> None:
                seal.admit(outer.draft(draft))

            def sign(self, receipt: ReceiptRow, survivors: Survivors) -> ReceiptRow:
                return seal.sign(outer.receipt(receipt), outer.survivors(survivors))

        return self.answer(self.real.purge(request, Seal()))

    def receipts(self, request: Any) -> Any:
        return self.real.receipts(request)

    def check(self, request: Any) -> Any:
        return self.real.check(request)


@dataclasses.dataclass
class Scene:
    admin: Vault
    acme: int
    beta: int
    fw01: int
    sw01: int


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("purge-keyholder") / "vault.db"
    url, clock = f"sqlite:///{path}", fixed_clock()
    admin, _ = Vault.create(url, admin=ADMIN, passphrase=ADMIN_PASS, clock=clock, kdf_params=FAST_KDF)
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    admin.clients.add("acme", "Acme Ltd")
    admin.clients.add("beta", "Beta Ltd")
    admin.secrets.add("acme/fw01", password="purge-keyholder-Pw-1", username="fw")
    admin.secrets.add("acme/sw01", password="purge-keyholder-Pw-2", username="sw")
    admin.secrets.update("acme/sw01", password="purge-keyholder-Pw-3")
    admin.secrets.add("beta/fw01", password="purge-keyholder-Pw-4", username="fw")
    admin.close()
    return path


@pytest.fixture
def scene(template: Path, tmp_path: Path) -> Iterator[Scene]:
    for suffix in ("", "-wal"):
        if Path(f"{template}{suffix}").exists():
            shutil.copy(f"{template}{suffix}", tmp_path / f"vault.db{suffix}")
    url = f"sqlite:///{tmp_path / 'vault.db'}"
    admin = Vault.open(url, engineer=ADMIN, clock=fixed_clock(), kdf_params=FAST_KDF, sessions=MemorySessionStore())
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    with admin.core.store.transaction() as s:
        acme, beta = sorted(s.scalars(select(m.Client.id)))
        fw01, sw01 = sorted(s.scalars(select(m.Secret.id).where(m.Secret.client_id == acme)))
    yield Scene(admin, acme, beta, fw01, sw01)


def _tamper(scene: Scene, **changes: Any) -> None:
    holder = scene.admin.purge.keyholder
    holder.transport = TamperingTransport(holder.transport, **changes)


def _state(scene: Scene) -> tuple[int, ...]:
    with scene.admin.core.store.transaction() as s:
        return tuple(
            int(s.scalar(select(func.count()).select_from(t)) or 0)
            for t in (
                m.Client,
                m.Secret,
                m.SecretVersion,
                m.ClientKey,
                m.ClientKeySeal,
                m.PurgeReceipt,
                m.AuditEvent,
            )
        )


def _part(r: PurgeRows, **changes: Any) -> PurgeRows:
    (p,) = r.parts
    return dataclasses.replace(r, parts=(dataclasses.replace(p, **changes),))


def test_the_control_an_untampered_purge_is_signed_and_verifies(scene: Scene) -> None:
    _tamper(scene)
    receipt = scene.admin.purge.client("acme", request="REQ-100")
    assert receipt.client_id == scene.acme and len(receipt.fingerprints) == 1
    assert scene.admin.purge.verify_receipt(receipt.id).ok
    receipt = scene.admin.purge.secret("beta/fw01", request="REQ-101")
    assert scene.admin.purge.verify_receipt(receipt.id).ok


@pytest.mark.parametrize(
    "draft",
    [
        pytest.param(lambda sc, r: _part(r, client_id=sc.beta), id="another-client"),
        pytest.param(lambda sc, r: _part(r, slug_blob=b"\x01another slug"), id="another-slug"),
        pytest.param(
            lambda sc, r: _part(
                r,
                key_records=tuple(k.__class__(**{**k.__dict__, "client_id": sc.beta}) for k in r.parts[0].key_records),
            ),
            id="key-records-of-another-client",
        ),
        pytest.param(lambda sc, r: _part(r, counts=r.parts[0].counts[1:]), id="counts-missing-one"),
        pytest.param(lambda sc, r: dataclasses.replace(r, kind="secret"), id="another-kind"),
        pytest.param(lambda sc, r: dataclasses.replace(r, parts=r.parts * 2), id="the-client-twice"),
        pytest.param(lambda sc, r: dataclasses.replace(r, me=r.me._replace(role="engineer")), id="caller-not-admin"),
    ],
)
def test_a_client_purge_over_a_forged_draft_destroys_nothing(scene: Scene, draft: Any) -> None:
    before = _state(scene)
    _tamper(scene, draft=lambda r: draft(scene, r))
    with pytest.raises(UntrustedRecord):
        scene.admin.purge.client("acme", request="REQ-200")
    assert _state(scene) == before


@pytest.mark.parametrize(
    "receipt",
    [
        pytest.param(lambda sc, r: dataclasses.replace(r, client_id=sc.beta), id="another-client"),
        pytest.param(lambda sc, r: dataclasses.replace(r, request_ref="OTHER-1"), id="another-request"),
        pytest.param(lambda sc, r: dataclasses.replace(r, secret_ids=r.secret_ids[:1]), id="fewer-secrets"),
        pytest.param(lambda sc, r: dataclasses.replace(r, counts=(("secrets", 0), *r.counts[1:])), id="other-counts"),
        pytest.param(lambda sc, r: dataclasses.replace(r, admin_id=r.admin_id + 1), id="another-signer"),
        pytest.param(lambda sc, r: dataclasses.replace(r, admin_generation=r.admin_generation + 1), id="another-key"),
        pytest.param(lambda sc, r: dataclasses.replace(r, purged_at=r.purged_at - 86400), id="backdated"),
        pytest.param(lambda sc, r: dataclasses.replace(r, kind="secret"), id="another-kind"),
        pytest.param(lambda sc, r: dataclasses.replace(r, fingerprints=("00" * 16,)), id="fingerprints-chosen"),
    ],
)
def test_the_keyholder_signs_no_receipt_that_states_anything_else(scene: Scene, receipt: Any) -> None:
    before = _state(scene)
    _tamper(scene, receipt=lambda r: receipt(scene, r))
    with pytest.raises(UntrustedRecord):
        scene.admin.purge.client("acme", request="REQ-300")
    assert _state(scene) == before


@pytest.mark.parametrize(
    "left",
    [
        Survivors(0, 0, 0, 1, 0),  # a sealed copy of the client key
        Survivors(0, 0, 1, 0, 0),  # the client row
        Survivors(0, 0, 0, 0, 1),  # a key record with a destroyed fingerprint
        Survivors(1, 0, 0, 0, 0),
        Survivors(0, 1, 0, 0, 0),
    ],
    ids=["sealed-copy", "client-row", "key-record", "secret", "version"],
)
def test_a_purge_reported_done_while_something_survives_is_not_signed(scene: Scene, left: Survivors) -> None:
    before = _state(scene)
    _tamper(scene, survivors=lambda _: left)
    with pytest.raises(UntrustedRecord, match="survives"):
        scene.admin.purge.client("acme", request="REQ-400")
    assert _state(scene) == before


def test_a_secret_purge_whose_draft_swaps_wrapped_keys_between_versions_destroys_nothing(scene: Scene) -> None:
    """The data keys are bound to their rows: a wrapped key moved to another secret's version
    does not open, so the fingerprint of a key the authority chose cannot be stated."""
    before = _state(scene)

    def swap(r: PurgeRows) -> PurgeRows:
        versions = r.parts[0].versions
        assert len(versions) == 2
        swapped = (
            dataclasses.replace(versions[0], wrapped_dek=versions[1].wrapped_dek),
            dataclasses.replace(versions[1], wrapped_dek=versions[0].wrapped_dek),
        )
        return _part(r, versions=swapped)

    _tamper(scene, draft=swap)
    with pytest.raises(DecryptionFailed):
        scene.admin.purge.secret("acme/sw01", request="REQ-500")
    assert _state(scene) == before


@pytest.mark.parametrize(
    "draft",
    [
        pytest.param(lambda sc, r: _part(r, secret_ids=(sc.fw01,)), id="another-secret"),
        pytest.param(lambda sc, r: _part(r, secret_ids=(sc.fw01, sc.sw01)), id="more-secrets"),
        pytest.param(
            lambda sc, r: _part(
                r, versions=tuple(dataclasses.replace(v, secret_id=sc.fw01) for v in r.parts[0].versions)
            ),
            id="versions-of-another-secret",
        ),
        pytest.param(lambda sc, r: _part(r, versions=r.parts[0].versions * 2), id="a-version-twice"),
    ],
)
def test_a_secret_purge_over_a_forged_draft_destroys_nothing(scene: Scene, draft: Any) -> None:
    before = _state(scene)
    _tamper(scene, draft=lambda r: draft(scene, r))
    with pytest.raises(UntrustedRecord):
        scene.admin.purge.secret("acme/sw01", request="REQ-600")
    assert _state(scene) == before


def test_an_answer_with_another_receipt_than_the_one_signed_is_refused(scene: Scene) -> None:
    def other(r: PurgeRows) -> PurgeRows:
        return dataclasses.replace(r, receipts=tuple(dataclasses.replace(x, request_ref="OTHER-2") for x in r.receipts))

    _tamper(scene, answer=other)
    with pytest.raises(UntrustedRecord):
        scene.admin.purge.client("acme", request="REQ-700")


def test_a_receipt_a_dba_rewrote_or_reassigned_fails_verification(scene: Scene) -> None:
    receipt = scene.admin.purge.client("acme", request="REQ-800")
    with scene.admin.core.store.transaction() as s:
        s.execute(update(m.PurgeReceipt).where(m.PurgeReceipt.id == receipt.id).values(request_ref="REQ-801"))
    check = scene.admin.purge.verify_receipt(receipt.id)
    assert not check.ok and any("receipt" in p for p in check.problems)


@pytest.mark.parametrize("mode", ["forged-fingerprint", "records-dropped", "a-version-dropped", "forged-signer"])
def test_client_purge_signs_key_fingerprints_it_never_verified(scene: Scene, mode: str) -> None:
    """A compromised authority states other destroyed keys than the client's: it rewrites the
    fingerprints of the key records, drops every record (or one version), or names another
    engineer as their signer. The admin would sign a receipt naming keys that never existed
    (or none), which ``verify_receipt`` then calls OK: each is refused, nothing destroyed."""
    scene.admin.keys.rotate_client("acme")  # two versions, the first destroyed once the rotation finished
    before = _state(scene)

    def forge(r: PurgeRows) -> PurgeRows:
        recs = r.parts[0].key_records
        assert len(recs) >= 2
        if mode == "records-dropped":
            return _part(r, key_records=())
        if mode == "a-version-dropped":
            return _part(r, key_records=recs[1:])
        if mode == "forged-signer":
            return _part(r, key_records=tuple(dataclasses.replace(k, signed_by=k.signed_by + 1) for k in recs))
        return _part(
            r, key_records=tuple(dataclasses.replace(k, fingerprint=b"\xaa" * len(k.fingerprint)) for k in recs)
        )

    _tamper(scene, draft=forge)
    with pytest.raises(UntrustedRecord):
        scene.admin.purge.client("acme", request="REQ-900")
    assert _state(scene) == before


@pytest.mark.parametrize("then", ["removed", "keys-rotated"])
def test_a_client_whose_destroyed_key_version_a_removed_admin_signed_is_still_purged(team: Any, then: str) -> None:
    """The honest case the key-record checks must keep: admin2 created the client (its
    version 1 record is theirs), rotated it (version 1 destroyed, version 2 theirs) and was
    removed since; the removal rotates the client again and no one re-signs what admin2
    signed of the destroyed versions. The purge states both versions' signed
    fingerprints and its receipt verifies."""
    admin2 = team.engineer("admin2", role="admin")
    admin2.clients.add("gamma", "Gamma Ltd")
    admin2.secrets.add("gamma/fw01", password="purge-keyholder-Pw-5", username="fw")
    admin2.keys.rotate_client("gamma")
    admin2.close()
    if then == "removed":
        team.admin.engineers.remove("admin2")
    else:
        team.admin.engineers.rotate("admin2")
    with team.admin.core.store.transaction() as s:
        records = s.execute(select(m.ClientKey.version, m.ClientKey.state, m.ClientKey.fingerprint)).all()
    states = [st for _, st, _ in sorted(records)]
    assert states[0] == "destroyed" and states[-1] == "active"  # a removal rotates the client again
    receipt = team.admin.purge.client("gamma", request="REQ-950")
    assert list(receipt.fingerprints) == [fp.hex() for _, _, fp in sorted(records)]
    assert team.admin.purge.verify_receipt(receipt.id).ok
