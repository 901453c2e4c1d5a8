"""The setup keyholder (creating a vault, an enrolled engineer's fingerprint) against an
authority that tampers with what it shows and answers.

A real ``Vault.create``/``pending_fingerprint``, whose transport hands the authority's
draft and answer through a function that changes them. The insider is a compromised
server or a DBA in the middle: one who shows the new admin's keyholder another vault id
(to have it certify keys for a vault of theirs), a row that is not a fresh admin, a
certificate dated far from now, or who answers with keys of their own for the admin; or
who answers a fingerprint request with another engineer's row. Each is refused; the first
case of each is the control.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from vault import Vault
from vault.authority.setup_requests import InitAnswer, InitDraft, PendingKeyRequest, PendingKeyRows
from vault.crypto import signing
from vault.crypto.keyrecord import FLOOR as FAST_KDF
from vault.crypto.labels import LABEL_SIG_SHARE_POLICY
from vault.errors import EnrolmentError, UntrustedRecord
from vault.keyholder.setup import SetupKeyholder, share_policy_fields
from vault.service import core
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m

ADMIN, ADMIN_PASS = "root-admin", "admin passphrase of this module"


def fixed_clock() -> Any:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return lambda: now


def _same(value: Any) -> Any:
    return value


class TamperingTransport:
    """Forwards to the real transport; drafts and answers go through ``draft`` / ``answer``."""

    def __init__(self, real: Any, draft: Callable[[Any], Any] = _same, answer: Callable[[Any], Any] = _same) -> None:
        self.real, self.draft, self.answer = real, draft, answer
        self.made: list[Any] = []

    def initialise(self, request: Any, seal: Any) -> InitAnswer:
        draft, made = self.draft, self.made

        class Seal:
            admin_id = property(lambda _: seal.admin_id)

            def make(self, shown: InitDraft) -> Any:
                made.append(seal.make(draft(shown)))
                return made[-1]

            def event_seed(self) -> bytes:
                return bytes(seal.event_seed())

        return self.answer(self.real.initialise(request, Seal()))

    def pending_key(self, request: Any) -> PendingKeyRows:
        return self.answer(self.real.pending_key(request))


def _vault(path: Path) -> Vault:
    return Vault.open(
        f"sqlite:///{path}",
        engineer=ADMIN,
        clock=fixed_clock(),
        kdf_params=FAST_KDF,
        sessions=MemorySessionStore(),
        upgrade=True,
    )


def _holder(vault: Vault, **tamper: Any) -> tuple[SetupKeyholder, TamperingTransport]:
    holder = vault.engineers._setup_keyholder()
    transport = TamperingTransport(holder.transport, **tamper)
    holder.transport = transport
    return holder, transport


def _vaults(vault: Vault) -> int:
    with vault.core.store.transaction() as s:
        return s.scalar(select(func.count()).select_from(m.VaultInfo)) or 0


def test_the_control_an_untampered_init_makes_a_vault_the_admin_can_unlock(tmp_path: Path) -> None:
    vault = _vault(tmp_path / "vault.db")
    holder, _ = _holder(vault)
    founded = holder.initialise(ADMIN, ADMIN_PASS, (2, 3))
    assert len(founded.shares) == 3 and founded.vault_id == vault.core.vault_id()
    vault.engineers.unlock(ADMIN, ADMIN_PASS)
    assert (vault.engineers.whoami().engineer, vault.engineers.whoami().role) == (ADMIN, "admin")
    assert vault.audit.verify().ok


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: dataclasses.replace(d, vault_id=b"\x07" * 16),  # certify keys for another vault
        lambda d: dataclasses.replace(d, org_signing_public=b"\x08" * 32),
        lambda d: dataclasses.replace(d, shares=(2, 3)),
        lambda d: dataclasses.replace(d, admin=d.admin._replace(name="mallory")),
        lambda d: dataclasses.replace(d, admin=d.admin._replace(role="engineer")),
        lambda d: dataclasses.replace(d, admin=d.admin._replace(key_generation=4)),
        lambda d: dataclasses.replace(
            d, certified_at=d.certified_at + 86_400 * 365 * 10
        ),  # a certificate from the future
    ],
    ids=["other-vault", "other-org-key", "shares-not-asked", "other-name", "not-admin", "not-fresh", "far-date"],
)
def test_a_tampered_draft_makes_no_keys_and_writes_nothing(tmp_path: Path, tamper: Any) -> None:
    vault = _vault(tmp_path / "vault.db")
    holder, transport = _holder(vault, draft=tamper)
    with pytest.raises(UntrustedRecord):
        holder.initialise(ADMIN, ADMIN_PASS, None)
    assert transport.made == [] and _vaults(vault) == 0


def test_an_answer_with_keys_of_the_servers_own_for_the_admin_is_refused(tmp_path: Path) -> None:
    """The server swaps in a signing key of its own in the answer: the keyholder reports nothing."""
    mallory = signing.SigningKey.generate()

    def swap(a: InitAnswer) -> InitAnswer:
        return dataclasses.replace(a, admin=a.admin._replace(signing_public=mallory.public))

    holder, _ = _holder(_vault(tmp_path / "vault.db"), answer=swap)
    with pytest.raises(UntrustedRecord, match="other keys"):
        holder.initialise(ADMIN, ADMIN_PASS, None)


def test_an_answer_for_another_vault_is_refused(tmp_path: Path) -> None:
    holder, _ = _holder(_vault(tmp_path / "vault.db"), answer=lambda a: dataclasses.replace(a, vault_id=b"\x09" * 16))
    with pytest.raises(UntrustedRecord, match="another vault"):
        holder.initialise(ADMIN, ADMIN_PASS, None)


def test_the_seal_makes_the_keys_once(tmp_path: Path) -> None:
    """A compromised authority asks the seal twice (two admins with the same organisation key)."""
    vault = _vault(tmp_path / "vault.db")
    holder = vault.engineers._setup_keyholder()
    real = holder.transport

    class Twice:
        def initialise(self, request: Any, seal: Any) -> Any:
            class Again:
                admin_id = property(lambda _: seal.admin_id)

                def make(self, draft: InitDraft) -> Any:
                    seal.make(draft)
                    return seal.make(draft)

                def event_seed(self) -> bytes:
                    return bytes(seal.event_seed())

            return real.initialise(request, Again())

    holder.transport = Twice()  # type: ignore[assignment]
    with pytest.raises(UntrustedRecord, match="twice"):
        holder.initialise(ADMIN, ADMIN_PASS, None)
    assert _vaults(vault) == 0


def test_a_pending_fingerprint_answered_with_another_engineers_row_is_refused(tmp_path: Path) -> None:
    """The answer to "alice" is another enrolled engineer's row (the keys of someone else)."""
    path = tmp_path / "vault.db"
    admin, _ = Vault.create(f"sqlite:///{path}", admin=ADMIN, passphrase=ADMIN_PASS, kdf_params=FAST_KDF)
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    fingerprints = {}
    for name in ("alice", "mallory"):
        code = admin.engineers.invite(name)
        mine = Vault.open(f"sqlite:///{path}", engineer=name, kdf_params=FAST_KDF, sessions=MemorySessionStore())
        fingerprints[name] = mine.engineers.enroll(name, code, f"pass of {name}")
        mine.close()
    holder, transport = _holder(admin)
    assert holder.pending_fingerprint("alice") == fingerprints["alice"]  # the control
    real = transport.real

    def mallorys(answer: PendingKeyRows) -> PendingKeyRows:
        return real.pending_key(PendingKeyRequest("mallory"))  # type: ignore[no-any-return]

    holder.transport = TamperingTransport(real, answer=mallorys)
    with pytest.raises(UntrustedRecord, match="another engineer"):
        holder.pending_fingerprint("alice")
    holder.transport = real
    admin.engineers.invite("bob")
    with pytest.raises(EnrolmentError, match="not enrolled yet"):
        holder.pending_fingerprint("bob")


def test_the_share_policy_is_signed_in_the_layout_root_rotation_verifies(tmp_path: Path) -> None:
    """The keyholder's copy of the layout (it may not import the service) is the service's."""
    vault = _vault(tmp_path / "vault.db")
    founded = vault.engineers._setup_keyholder().initialise(ADMIN, ADMIN_PASS, (2, 3))
    with vault.core.store.transaction() as s:
        head = s.get(m.OrgKey, 1)
        assert head is not None and (head.share_threshold, head.share_count) == (2, 3)
        fields = core.share_policy_fields(s, vault.core, head, 2, 3)
        assert fields == share_policy_fields(founded.vault_id, 1, founded.org_signing_public, 2, 3)
        signing.verify(head.public, head.share_signature, LABEL_SIG_SHARE_POLICY, *fields, what="the share policy")
