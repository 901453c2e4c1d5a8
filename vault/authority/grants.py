"""Grants, where the database is: an admin's grant and revoke, one unit of work each.

In this order: who calls (an active admin whose certificate verifies, with the key
generation the request names) — anyone else is refused here, before any row of the
engineer, the client or a grant is read; the engineer by name (their grant rows locked:
a grant and a revoke of one engineer never interleave on PostgreSQL); the client by its
slug tag; the unrevoked rows of their ledger. The keyholder is shown the draft
(``GrantSeal.admit``: a refusal writes nothing) and lends its hands for what needs a key:
the signature of each revocation, of the new grant (over the audit event's number, known
only once the event is appended) and the copies of the client keys sealed to the engineer.
The authority stores what it was given, appends the event, reads the ledger again and
answers with it: the keyholder checks that what it signed is what was stored.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from vault import validation
from vault.authority.checkout_reads import ACTIVE, CallerRead
from vault.authority.clients import ClientChecks, authorise, checked_action, checked_caller, org_chain, sealed_keys, tag
from vault.authority.grant_requests import (
    GRANT,
    NO_CLIENT,
    NO_ENGINEER,
    NO_GRANT,
    REVOKE,
    GrantRequest,
    GrantRows,
    RevokeRequest,
    SealedCopy,
)
from vault.errors import AccessDenied, InvalidInput, NotFound
from vault.storage import models as m
from vault.storage.engine import Store
from vault.storage.rows import GRANT_ORDER, ROLE_ADMIN, EngineerRow, GrantRow, is_revoked


class PrivateDetails(Protocol):
    """The keyholder's part of an event's details (a grant's reason): only the journal's
    sealing asks for it, inside the append, and encrypts it with the authority's facts."""

    def private_details(self, client_id: int, action: str) -> dict[str, Any]: ...


class GrantRecorder(Protocol):
    def append(
        self,
        s: Session,
        action: str,
        *,
        client_id: int | None,
        details: dict[str, Any] | None = None,
        sealed_with: PrivateDetails | None = None,
    ) -> int:
        """The new event's seq; ``sealed_with``'s private details are sealed with ``details``."""


class GrantSeal(Protocol):
    """The keyholder's hands inside the unit of work (the in-process seam)."""

    def admit(self, draft: GrantRows) -> None:
        """Verify what will be changed, before anything is written; raise to refuse."""

    def revocations(self, draft: GrantRows) -> tuple[bytes, ...]:
        """The signature of each revocation of ``draft.grants``, at ``draft.revoked_at``."""

    def sign_grant(self, draft: GrantRows, grant: GrantRow) -> bytes:
        """The signature of the draft's new grant, now that its event's number is known."""

    def seal_copies(self, draft: GrantRows) -> tuple[SealedCopy, ...]:
        """The draft's client keys sealed to its engineer."""

    def private_details(self, client_id: int, action: str) -> dict[str, Any]:
        """The keyholder's part of the event's details (the reason), for the journal's sealing."""


def _row(grant: m.Grant) -> GrantRow:
    return GrantRow(*(getattr(grant, name) for name in GrantRow._fields))


class GrantAuthority:
    """Grant and revoke, given a request, one unit of work each."""

    def __init__(self, store: Store, checks: ClientChecks, recorder: GrantRecorder, clock: Callable[[], dt.datetime]):
        self.store, self.checks, self.recorder, self.clock = store, checks, recorder, clock

    def grant(self, request: GrantRequest, seal: GrantSeal) -> GrantRows:
        if not isinstance(request, GrantRequest):
            raise InvalidInput("not a grant request")
        action = checked_action(request.action, GRANT)
        caller = checked_caller(request.caller, request.org_pin)
        name = self._name(request.engineer)
        tag("slug tag", request.slug_tag)
        now = self.clock()
        if request.until is not None:
            validation.number("grant end", request.until, 1)
            if request.until <= int(now.timestamp()):
                raise InvalidInput("the grant's --until time is in the past")
        if not isinstance(request.has_reason, bool):
            raise InvalidInput("the request's has_reason is not a boolean")
        with self.store.transaction() as s:
            read = self._admin(s, caller)
            target = self._engineer(s, name)
            self.checks.certificate(s, target)  # a swapped public key is refused here
            if target.status != ACTIVE:
                raise InvalidInput(f"engineer {name!r} is {target.status}, not active")
            if target.role == ROLE_ADMIN:
                raise InvalidInput(f"{name!r} is an admin and can already read every client")
            client = self._client(s, request.slug_tag)
            ledger = self._ledger(s, target.id, client.id)
            old = [g for g in ledger if not is_revoked(g)]
            grant = m.Grant(
                engineer_id=target.id,
                client_id=client.id,
                granted_by=read.me.id,
                signed_at=int(now.timestamp()),
                until=request.until,
                created_at=now,
                seq=max((g.seq or 0 for g in ledger), default=0) + 1,
            )
            s.add(grant)
            s.flush()
            versions = s.scalars(
                select(m.ClientKey.version).where(m.ClientKey.client_id == client.id, m.ClientKey.state != "destroyed")
            ).all()
            keys = sealed_keys(s, {(client.id, v) for v in versions}, "recovery", read.root_version or 0)
            draft = self._draft(s, read, request.org_pin, target, client, old, now, _row(grant), keys)
            seal.admit(draft)
            self._revoke(old, seal.revocations(draft), now, read.me.id)
            details = {
                "engineer": name,
                "until": grant.until,
                "grant": grant.id,
                "seq": grant.seq,
            }
            # the reason: the keyholder's, sealed by the journal with these facts (never read here)
            grant.event_seq = self.recorder.append(s, action, client_id=client.id, details=details, sealed_with=seal)
            grant.signature = seal.sign_grant(draft, _row(grant))
            allowed = {k.record.version for k in keys}
            for copy in seal.seal_copies(draft):
                if not isinstance(copy, SealedCopy) or copy.version not in allowed or not isinstance(copy.blob, bytes):
                    raise InvalidInput("the keyholder sealed a client key this grant does not hand out")
                self._store_copy(s, client.id, copy, target.id)
            s.flush()
            return self._answer(s, draft, grant.event_seq, [g.id for g in old], grant, now)

    def revoke(self, request: RevokeRequest, seal: GrantSeal) -> GrantRows:
        if not isinstance(request, RevokeRequest):
            raise InvalidInput("not a revoke request")
        action = checked_action(request.action, REVOKE)
        caller = checked_caller(request.caller, request.org_pin)
        name = self._name(request.engineer)
        tag("slug tag", request.slug_tag)
        with self.store.transaction() as s:
            read = self._admin(s, caller)
            target = self._engineer(s, name)
            client = self._client(s, request.slug_tag)
            grants = [g for g in self._ledger(s, target.id, client.id) if not is_revoked(g)]
            if not grants:
                raise NotFound(NO_GRANT)
            now = self.clock()
            draft = self._draft(s, read, request.org_pin, target, client, grants, now, None, ())
            seal.admit(draft)
            self._revoke(grants, seal.revocations(draft), now, read.me.id)
            s.execute(
                delete(m.ClientKeySeal).where(
                    m.ClientKeySeal.client_id == client.id,
                    m.ClientKeySeal.recipient_kind == "engineer",
                    m.ClientKeySeal.recipient_id == target.id,
                )
            )
            ids = [g.id for g in grants]
            details = {"engineer": name, "grants": len(grants), "grant_ids": ids}
            seq = self.recorder.append(s, action, client_id=client.id, details=details)
            s.flush()
            return self._answer(s, draft, seq, ids, None, None)

    # -- who, and on what -------------------------------------------------------------------------

    @staticmethod
    def _name(value: object) -> str:
        if not isinstance(value, str):
            raise InvalidInput("the request's engineer is not a name")
        return validation.engineer_name(value)

    def _admin(self, s: Session, caller: Any) -> CallerRead:
        """The caller, an active certified admin; nothing of the target has been read when this refuses."""
        read = authorise(s, self.checks, caller)
        if read.me.role != ROLE_ADMIN:
            raise AccessDenied(f"{read.me.name!r} is not an admin", hint="ask an admin to do this")
        return read

    @staticmethod
    def _engineer(s: Session, name: str) -> EngineerRow:
        """The engineer named, their row locked (a grant and a revoke of theirs are serialised)."""
        columns = [getattr(m.Engineer, f) for f in EngineerRow._fields]
        found = s.execute(select(*columns).where(m.Engineer.name == name).with_for_update()).first()
        if found is None:
            raise NotFound(NO_ENGINEER)
        return EngineerRow._make(found)

    @staticmethod
    def _client(s: Session, slug_tag: bytes) -> m.Client:
        client = s.scalars(select(m.Client).where(m.Client.slug_tag == slug_tag)).first()
        if client is None:
            raise NotFound(NO_CLIENT)
        return client

    @staticmethod
    def _ledger(s: Session, engineer_id: int, client_id: int) -> list[m.Grant]:
        query = select(m.Grant).where(m.Grant.engineer_id == engineer_id, m.Grant.client_id == client_id)
        return list(s.scalars(query.order_by(*GRANT_ORDER)))

    # -- the writes -------------------------------------------------------------------------------

    @staticmethod
    def _revoke(grants: list[m.Grant], signatures: tuple[bytes, ...], at: dt.datetime, by: int) -> None:
        if not isinstance(signatures, tuple) or len(signatures) != len(grants):
            raise InvalidInput("the keyholder signed another number of revocations than asked")
        for grant, signature in zip(grants, signatures, strict=True):
            if not isinstance(signature, bytes):
                raise InvalidInput("a revocation's signature is not bytes")
            grant.revoked_at, grant.revoked_by, grant.revocation = at, by, signature

    @staticmethod
    def _store_copy(s: Session, client_id: int, copy: SealedCopy, engineer_id: int) -> None:
        existing = s.get(m.ClientKeySeal, (client_id, copy.version, "engineer", engineer_id))
        if existing is None:
            s.add(
                m.ClientKeySeal(
                    client_id=client_id,
                    version=copy.version,
                    recipient_kind="engineer",
                    recipient_id=engineer_id,
                    blob=copy.blob,
                )
            )
        else:
            existing.blob = copy.blob

    # -- the answer -------------------------------------------------------------------------------

    def _draft(
        self,
        s: Session,
        read: CallerRead,
        pin: bytes,
        target: EngineerRow,
        client: m.Client,
        grants: list[m.Grant],
        at: dt.datetime,
        new: GrantRow | None,
        keys: tuple[Any, ...],
    ) -> GrantRows:
        return GrantRows(
            seq=0,
            vault_id=read.vault_id,
            org_signing_public=read.org_signing_public,
            org_chain=org_chain(s, pin, read.org_signing_public),
            me=read.me,
            engineer=target,
            client_id=client.id,
            slug_blob=client.slug_blob,
            grants=tuple(_row(g) for g in grants),
            revoked_at=at,
            new_grant=new,
            client_keys=keys,
        )

    @staticmethod
    def _answer(
        s: Session, draft: GrantRows, seq: int, ids: list[int], new: m.Grant | None, created: dt.datetime | None
    ) -> GrantRows:
        """The ledger rows acted on and the engineer's copies for the client, as now stored."""
        wanted = [*ids, *([new.id] if new is not None else [])]
        stored = {g.id: g for g in s.scalars(select(m.Grant).where(m.Grant.id.in_(wanted)))} if wanted else {}
        copies = s.scalars(
            select(m.ClientKeySeal.version).where(
                m.ClientKeySeal.client_id == draft.client_id,
                m.ClientKeySeal.recipient_kind == "engineer",
                m.ClientKeySeal.recipient_id == draft.engineer.id,
            )
        ).all()
        return dataclasses.replace(
            draft,
            seq=seq,
            grants=tuple(_row(stored[i]) for i in ids if i in stored),
            new_grant=_row(stored[new.id]) if new is not None and new.id in stored else None,
            copies=tuple(sorted(copies)),
            created_at=created,
        )
