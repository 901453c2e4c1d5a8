"""Creating a vault and reading an enrolled engineer's pending keys, where the database is.

Both run without a session (``permissions.OPERATIONS``: ``initialise`` and
``pending_fingerprint`` are ``NO_SESSION``): there is no caller to authorise. What guards
them is what they may do: ``initialise`` writes only into a database that holds no vault
(``AlreadyExists`` before anything is written), and ``pending_key`` only reads a row whose
public keys are not trusted by anyone until an admin certifies them after a person
compared their fingerprint (``engineer confirm``).

``initialise`` (one unit of work): the request's fields are checked before any SQL; the
vault's row, the first recovery-key and organisation-key rows and the admin's row (no keys
yet) are written; the keyholder's seal is shown the draft and makes the admin's keys for
the id given here (``InitSeal.make``); they are stored as given, once their sizes and
generation are checked, with the ``vault-init`` event (signed by the admin's new key,
lent in-process through ``Recorder``). This module makes no key and signs nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault import validation
from vault.authority.engineers import checked_bytes, checked_name, engineer_row
from vault.authority.setup_requests import (
    FIRST,
    INIT,
    KEY_BYTES,
    PENDING_KEY,
    SIGNATURE_BYTES,
    VAULT_ID_BYTES,
    AdminKeys,
    InitAnswer,
    InitDraft,
    InitRequest,
    PendingKeyRequest,
    PendingKeyRows,
)
from vault.crypto import signing
from vault.crypto.labels import FORMAT_VERSION
from vault.errors import AlreadyExists, InvalidInput, NotFound
from vault.storage import models as m
from vault.storage.engine import Store
from vault.storage.rows import ACTIVE, ROLE_ADMIN


class InitSeal(Protocol):
    """The keyholder's hands inside the unit of work (the in-process seam)."""

    def make(self, draft: InitDraft) -> AdminKeys:
        """Verify the draft, then make, sign and seal the admin's keys (raise to refuse: nothing is written)."""


class Recorder(Protocol):
    """Appends the ``vault-init`` event, signed by the new admin's key (lent by the seal)."""

    def append(self, s: Session, action: str, *, public: dict[str, Any], admin_id: int, seal: InitSeal) -> int:
        """The new event's seq."""


def checked_init(request: object) -> InitRequest:
    """``request`` if every field is of its type and size, else InvalidInput (before any SQL)."""
    if not isinstance(request, InitRequest) or request.action != INIT:
        raise InvalidInput("not a vault-init request")
    checked_name(request.admin_name)
    checked_bytes("vault id", request.vault_id, VAULT_ID_BYTES)
    checked_bytes("organisation key", request.org_signing_public, KEY_BYTES)
    checked_bytes("recovery key", request.recovery_public, KEY_BYTES)
    if request.shares is not None:
        if not isinstance(request.shares, tuple) or len(request.shares) != 2:
            raise InvalidInput("the recovery shares are not a k-of-n")
        k, n = request.shares
        validation.number("share threshold", k, 2, 9)
        validation.number("share count", n, k, 16)
    return request


class SetupAuthority:
    """The vault's creation and the pending keys of an enrolled engineer, one unit each."""

    def __init__(self, store: Store, recorder: Recorder, clock: Callable[[], dt.datetime]) -> None:
        self.store, self.recorder, self.clock = store, recorder, clock

    def initialise(self, request: InitRequest, seal: InitSeal) -> InitAnswer:
        """Write the new vault and its first admin with the keys the keyholder made for them."""
        checked_init(request)
        now = self.clock()
        with self.store.transaction() as s:
            if s.get(m.VaultInfo, 1) is not None:
                raise AlreadyExists(
                    "this database already holds a vault", hint="use it, or pass --db to create another"
                )
            s.add(
                m.VaultInfo(
                    id=1,
                    vault_id=request.vault_id,
                    format_version=FORMAT_VERSION,
                    org_signing_public=request.org_signing_public,
                    created_at=now,
                )
            )
            s.add(m.RootKey(version=FIRST, recovery_public=request.recovery_public, state=ACTIVE, created_at=now))
            at = int(now.timestamp())
            org = m.OrgKey(
                version=FIRST, public=request.org_signing_public, signed_at=at, signature=None, created_at=now
            )
            s.add(org)
            admin = m.Engineer(
                name=request.admin_name, role=ROLE_ADMIN, status=ACTIVE, key_generation=0, created_at=now
            )
            s.add(admin)
            s.flush()
            draft = InitDraft(
                request.vault_id,
                request.org_signing_public,
                request.recovery_public,
                engineer_row(admin),
                at,
                request.shares,
            )
            made = self._checked_keys(seal.make(draft), request.shares is not None)
            admin.key_generation = made.key_generation
            admin.sealing_public, admin.signing_public = made.sealing_public, made.signing_public
            admin.key_record, admin.certified_at, admin.certificate = made.key_record, at, made.certificate
            s.add(
                m.EngineerKey(
                    engineer_id=admin.id,
                    generation=made.key_generation,
                    state=ACTIVE,
                    sealing_public=made.sealing_public,
                    signing_public=made.signing_public,
                    certified_at=at,
                    certificate=made.key_certificate,
                )
            )
            s.add(m.RootSeal(root_version=FIRST, engineer_id=admin.id, blob=made.root_seal))
            if request.shares is not None:
                org.share_threshold, org.share_count = request.shares
                org.share_signature = made.share_signature
            s.flush()
            fingerprint = signing.engineer_fingerprint(made.sealing_public, made.signing_public)
            public = {"admin": request.admin_name, "root_version": FIRST, "fingerprint": fingerprint}
            seq = self.recorder.append(s, INIT, public=public, admin_id=admin.id, seal=seal)
            answer = InitAnswer(seq, request.vault_id, request.org_signing_public, engineer_row(admin))
        return answer

    @staticmethod
    def _checked_keys(made: object, shares: bool) -> AdminKeys:
        if not isinstance(made, AdminKeys) or made.key_generation != FIRST:
            raise InvalidInput("the keyholder's keys are not the admin's first key generation")
        checked_bytes("sealing key", made.sealing_public, KEY_BYTES)
        checked_bytes("signing key", made.signing_public, KEY_BYTES)
        checked_bytes("key record", made.key_record)
        checked_bytes("certificate", made.certificate, SIGNATURE_BYTES)
        checked_bytes("engineer-key certificate", made.key_certificate, SIGNATURE_BYTES)
        checked_bytes("sealed root bundle", made.root_seal)
        if shares:
            checked_bytes("share policy signature", made.share_signature, SIGNATURE_BYTES)
        elif made.share_signature is not None:
            raise InvalidInput("a vault without recovery shares has no signed share policy")
        return made

    def pending_key(self, request: PendingKeyRequest) -> PendingKeyRows:
        """The row of the engineer named, as stored (a read: no event, as before)."""
        if not isinstance(request, PendingKeyRequest) or request.action != PENDING_KEY:
            raise InvalidInput("not a pending-key request")
        name = checked_name(request.name)
        with self.store.read() as s:
            row = s.scalars(select(m.Engineer).where(m.Engineer.name == name)).first()
            if row is None:
                raise NotFound(f"no engineer named {name!r}", hint="`credvault engineer list` shows them")
            return PendingKeyRows(engineer_row(row))


__all__ = ["InitSeal", "Recorder", "SetupAuthority", "checked_init"]
