"""A new client, where the database is: ``clients.add``, one unit of work.

In this order: the request's fields (the action, the caller, a 32-byte slug tag), before
any SQL; who calls (an active admin whose certificate verifies, of the key generation the
request names), refused before any row of a client is read; a client already under the
slug tag refused (``AlreadyExists``); the client's row, so that it has its id (every blob
and signature of a client is bound to it: docs/format.md); the draft shown to the
keyholder's seal, which makes the client key and returns only what is stored
(``NewClient``: the encrypted slug, name and lookup key, the key record's fingerprint and
signature, the copy sealed to the recovery key, the default policy's signature). The
authority checks the shapes and, with the caller's public key alone, the two signatures
(a forged record or policy is refused), stores the rows, counts the three encryptions,
appends ``client-create`` (its details, the slug, sealed by the journal from the seal's
``private_details``: the authority never sees them) and answers with the rows as stored.

``ClientAddSeal`` is the in-process seam: the ids and the event's number exist only in
this unit; the team-server issue replaces it with a signed request.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.authority.client_requests import (
    CLIENT_CREATE,
    DUPLICATE_CLIENT,
    NEW_CLIENT_FIELDS,
    NEW_CLIENT_POLICY,
    AddAnswer,
    AddDraft,
    AddRequest,
    NewClient,
)
from vault.authority.clients import ClientChecks, authorise, checked_action, checked_caller, org_chain, tag
from vault.authority.policy import DEFAULT_CHECKOUT_MINUTES, policy_fields
from vault.authority.root_lock import hold_root
from vault.crypto import signing
from vault.crypto.blobs import blob_key_version
from vault.crypto.labels import LABEL_SIG_CLIENT_KEY, LABEL_SIG_POLICY
from vault.errors import AccessDenied, AlreadyExists, InvalidInput, UntrustedRecord, VaultError
from vault.storage import models as m
from vault.storage.engine import Store
from vault.storage.rows import ACTIVE, ROLE_ADMIN

BLOB_LIMIT = 4096  # bytes of one client field or sealed copy at most


class ClientAddSeal(Protocol):
    """The keyholder's hands inside the unit of work (the in-process seam)."""

    def make(self, draft: AddDraft) -> NewClient:
        """The new client's ciphertext and signatures, for the draft's client id."""

    def private_details(self, client_id: int, action: str) -> dict[str, Any]:
        """The keyholder's details of the ``client-create`` event (the slug), for the journal's sealing."""


class ClientAddRecorder(Protocol):
    def append(
        self,
        s: Session,
        action: str,
        *,
        client_id: int | None,
        details: dict[str, Any] | None = None,
        sealed_with: Any = None,
    ) -> int:
        """The new event's seq; ``sealed_with``'s private details are sealed with ``details``."""


def _checked(made: object, draft: AddDraft) -> NewClient:
    """The keyholder's ``NewClient``, of its shapes, its signatures the caller's, else InvalidInput."""
    if not isinstance(made, NewClient):
        raise InvalidInput("the keyholder made no new client")
    for label in ("slug_blob", "name_blob", "lookup_key_blob", "recovery_copy"):
        value = getattr(made, label)
        if not isinstance(value, bytes) or not 0 < len(value) <= BLOB_LIMIT:
            raise InvalidInput(f"the new client's {label} is not a blob")
    for blob in (made.slug_blob, made.name_blob, made.lookup_key_blob):
        try:
            version = blob_key_version(blob)
        except VaultError:
            raise InvalidInput("a new client's field is not a client-field blob") from None
        if version != 1:
            raise InvalidInput("a new client's field is not under its first key version")
    if not isinstance(made.fingerprint, bytes) or len(made.fingerprint) != 16:
        raise InvalidInput("the new client key's fingerprint is not 16 bytes")
    if not isinstance(made.signed_at, int) or isinstance(made.signed_at, bool) or made.signed_at < 1:
        raise InvalidInput("the new client's signing time is not a time")
    for label in ("key_signature", "policy_signature"):
        if not isinstance(getattr(made, label), bytes):
            raise InvalidInput(f"the new client's {label} is not bytes")
    public = draft.me.signing_public
    if public is None:
        raise AccessDenied("the caller has no signing key")
    try:
        signing.verify(
            public,
            made.key_signature,
            LABEL_SIG_CLIENT_KEY,
            draft.vault_id,
            draft.client_id,
            1,
            made.fingerprint,
            made.signed_at,
            what="the new client key's record",
        )
        signing.verify(
            public,
            made.policy_signature,
            LABEL_SIG_POLICY,
            *policy_fields(draft.vault_id, draft.client_id, _policy(draft, made, None)),
            what="the new client's policy",
        )
    except UntrustedRecord as error:
        raise InvalidInput(f"{error}: not the caller's signature") from None
    return made


def _policy(draft: AddDraft, made: NewClient, at: dt.datetime | None) -> m.ClientPolicy:
    reason, exclusive, rotate = NEW_CLIENT_POLICY
    return m.ClientPolicy(
        client_id=draft.client_id,
        reason_required=reason,
        exclusive=exclusive,
        rotate_after_checkout=rotate,
        checkout_minutes=DEFAULT_CHECKOUT_MINUTES,
        stale_days=None,
        updated_at=at,
        signed_by=draft.me.id,
        signed_at=made.signed_at,
        signature=made.policy_signature,
    )


class ClientAddAuthority:
    """``clients.add``, given a request."""

    def __init__(
        self, store: Store, checks: ClientChecks, recorder: ClientAddRecorder, clock: Callable[[], dt.datetime]
    ) -> None:
        self.store, self.checks, self.recorder, self.clock = store, checks, recorder, clock

    def add(self, request: AddRequest, seal: ClientAddSeal) -> AddAnswer:
        if not isinstance(request, AddRequest):
            raise InvalidInput("not a client add request")
        action = checked_action(request.action, CLIENT_CREATE)
        caller = checked_caller(request.caller, request.org_pin)
        slug_tag = tag("slug tag", request.slug_tag)
        with self.store.transaction() as s:
            read = authorise(s, self.checks, caller)
            if read.me.role != ROLE_ADMIN:
                raise AccessDenied(f"{read.me.name!r} is not an admin", hint="ask an admin to do this")
            root_version = hold_root(s, read.root_version)  # against a root rotation's walk (root_lock.py)
            if s.scalars(select(m.Client.id).where(m.Client.slug_tag == slug_tag)).first() is not None:
                raise AlreadyExists(DUPLICATE_CLIENT)
            now = self.clock()
            client = m.Client(
                slug_tag=slug_tag,
                current_key_version=1,
                slug_blob=b"",
                name_blob=b"",
                lookup_key_blob=b"",
                created_at=now,
            )
            s.add(client)
            s.flush()
            draft = AddDraft(
                read.vault_id,
                read.org_signing_public,
                org_chain(s, request.org_pin, read.org_signing_public),
                read.me,
                client.id,
                now,
                root_version,
            )
            made = _checked(seal.make(draft), draft)
            client.slug_blob, client.name_blob = made.slug_blob, made.name_blob
            client.lookup_key_blob = made.lookup_key_blob
            s.add(
                m.ClientKey(
                    client_id=client.id,
                    version=1,
                    state=ACTIVE,
                    fingerprint=made.fingerprint,
                    signed_by=read.me.id,
                    signed_at=made.signed_at,
                    signature=made.key_signature,
                    encryptions=NEW_CLIENT_FIELDS,
                    created_at=now,
                )
            )
            s.add(
                m.ClientKeySeal(
                    client_id=client.id,
                    version=1,
                    recipient_kind="recovery",
                    recipient_id=root_version,
                    blob=made.recovery_copy,
                )
            )
            s.add(_policy(draft, made, now))
            s.flush()
            # the slug: the keyholder's, sealed by the journal into the event's details (never read here)
            seq = self.recorder.append(s, action, client_id=client.id, details={}, sealed_with=seal)
            return self._answer(s, seq, client.id)

    @staticmethod
    def _answer(s: Session, seq: int, client_id: int) -> AddAnswer:
        """The client's rows as now stored (read again, not the objects written)."""
        s.flush()  # the journal's writes too: nothing pending is dropped by the expiry
        s.expire_all()
        client = s.get(m.Client, client_id)
        key = s.get(m.ClientKey, (client_id, 1))
        policy = s.get(m.ClientPolicy, client_id)
        copies = s.scalars(
            select(m.ClientKeySeal.blob).where(
                m.ClientKeySeal.client_id == client_id,
                m.ClientKeySeal.version == 1,
                m.ClientKeySeal.recipient_kind == "recovery",
            )
        ).all()
        if client is None or key is None or policy is None or len(copies) != 1:
            raise UntrustedRecord("the new client's rows were not stored")
        stored = NewClient(
            client.slug_blob,
            client.name_blob,
            client.lookup_key_blob,
            key.fingerprint,
            key.signed_at,
            key.signature or b"",
            copies[0],
            policy.signature or b"",
        )
        return AddAnswer(
            seq, client_id, client.slug_tag, client.created_at, stored, key.signed_by, policy.signed_by or 0
        )
