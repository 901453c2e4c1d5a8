"""The sweep of expired grants, where the database is (``grants.maintain``; also run before
an admin's ``clients.add``, ``grants.grant`` and ``revoke``), one unit of work.

In this order: the request's fields, before any SQL; who calls (an active, certified admin
of the request's key generation), refused before any grant row is read; the unrevoked
grant rows past their end (one statement, locked on PostgreSQL so that two sweeps never
revoke a row twice); the ledgers they belong to, the engineers and signers named and the
copies sealed to those engineers for those clients (a statement each, whatever the number
of ledgers). Nothing is decided here: the keyholder's seal is shown the draft and answers
with the revocations it signed (each verified here under the caller's public key, of a row
of the draft that is unrevoked and past its end) and the ledgers whose copies go (of the
draft). The authority writes exactly that, appends ``grants-expired`` (with ``not_verified``,
the rows past their end the keyholder did not sign for; no event when nothing was revoked or
deleted, so that such a row does not add an event to every admin operation) and answers
with the ledgers as stored, which the keyholder checks against what it signed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from sqlalchemy import and_, delete, select, tuple_
from sqlalchemy.orm import Session

from vault.authority.checkout_reads import CallerRead
from vault.authority.clients import BATCH, ClientChecks, authorise, checked_action, checked_caller, org_chain
from vault.authority.grant_requests import (
    GRANTS_EXPIRED,
    ExpiredLedger,
    SweepRequest,
    SweepRows,
    SweepSigned,
    revocation_fields,
)
from vault.crypto import signing
from vault.crypto.labels import LABEL_SIG_GRANT_REVOCATION
from vault.errors import AccessDenied, InvalidInput, UntrustedRecord
from vault.storage import models as m
from vault.storage.engine import Store
from vault.storage.rows import GRANT_ORDER, ROLE_ADMIN, EngineerRow, GrantRow, is_revoked


class SweepSeal(Protocol):
    """The keyholder's hands inside the unit of work (the in-process seam)."""

    def sign(self, draft: SweepRows) -> SweepSigned:
        """The revocations signed and the ledgers whose copies go, for ``draft``."""


class SweepRecorder(Protocol):
    def append(self, s: Session, action: str, *, client_id: int | None, public: dict[str, Any] | None = None) -> int:
        """The new event's seq."""


def _row(grant: m.Grant) -> GrantRow:
    return GrantRow(*(getattr(grant, name) for name in GrantRow._fields))


def _batches(ids: Iterable[int]) -> list[list[int]]:
    ordered = sorted(set(ids))
    return [ordered[i : i + BATCH] for i in range(0, len(ordered), BATCH)]


class GrantSweepAuthority:
    """``grants.maintain``, given a request."""

    def __init__(self, store: Store, checks: ClientChecks, recorder: SweepRecorder, clock: Callable[[], dt.datetime]):
        self.store, self.checks, self.recorder, self.clock = store, checks, recorder, clock

    def sweep(self, request: SweepRequest, seal: SweepSeal) -> SweepRows:
        """The draft's revocations and deletions as signed, with ``seq`` 0 if nothing had expired."""
        if not isinstance(request, SweepRequest):
            raise InvalidInput("not a sweep request")
        action = checked_action(request.action, GRANTS_EXPIRED)
        caller = checked_caller(request.caller, request.org_pin)
        with self.store.transaction() as s:
            read = authorise(s, self.checks, caller)
            if read.me.role != ROLE_ADMIN:
                raise AccessDenied(f"{read.me.name!r} is not an admin", hint="ask an admin to do this")
            now = self.clock()
            expired = [
                g
                for g in s.scalars(
                    select(m.Grant)
                    .where(m.Grant.until.is_not(None), m.Grant.until <= int(now.timestamp()))
                    .order_by(m.Grant.id)
                    .with_for_update()
                )
                if not is_revoked(g)
            ]
            draft = self._draft(s, read, request.org_pin, now, expired)
            if not expired:
                return draft
            signed = seal.sign(draft)
            revoked = self._revoke(s, draft, signed, {g.id: g for g in expired})
            removed = self._drop(s, draft, signed)
            if not revoked and not removed:
                return draft  # nothing done (a row that does not verify stays as it is): no event each time
            public = {"grants": revoked, "sealed_copies_deleted": removed}
            if revoked < len(expired):
                public["not_verified"] = len(expired) - revoked
            seq = self.recorder.append(s, action, client_id=None, public=public)
            s.flush()
            return dataclasses.replace(self._draft(s, read, request.org_pin, now, expired), seq=seq)

    # -- the rows ---------------------------------------------------------------------------------

    def _draft(self, s: Session, read: CallerRead, pin: bytes, now: dt.datetime, expired: list[m.Grant]) -> SweepRows:
        pairs = sorted({(g.engineer_id, g.client_id) for g in expired})
        ledgers: dict[tuple[int, int], list[m.Grant]] = {pair: [] for pair in pairs}
        copies: dict[tuple[int, int], list[int]] = {pair: [] for pair in pairs}
        engineer_ids = {e for e, _ in pairs}
        g, c = m.Grant, m.ClientKeySeal
        for batch in _batches(engineer_ids):
            query = select(g).where(g.engineer_id.in_(batch), g.client_id.in_({cl for e, cl in pairs if e in batch}))
            for grant in s.scalars(query.order_by(g.engineer_id, g.client_id, *GRANT_ORDER)):
                ledgers.get((grant.engineer_id, grant.client_id), []).append(grant)
            found = s.execute(
                select(c.recipient_id, c.client_id, c.version).where(
                    c.recipient_kind == "engineer",
                    tuple_(c.recipient_id, c.client_id).in_([p for p in pairs if p[0] in batch]),
                )
            )
            for engineer_id, client_id, version in found:
                copies[(engineer_id, client_id)].append(version)
        named = engineer_ids | {grant.granted_by for rows in ledgers.values() for grant in rows}
        people: dict[int, EngineerRow] = {}
        columns = [getattr(m.Engineer, f) for f in EngineerRow._fields]
        for batch in _batches(named):
            for found_row in s.execute(select(*columns).where(m.Engineer.id.in_(batch))):
                person = EngineerRow._make(found_row)
                people[person.id] = person
        return SweepRows(
            seq=0,
            vault_id=read.vault_id,
            org_signing_public=read.org_signing_public,
            org_chain=org_chain(s, pin, read.org_signing_public),
            me=read.me,
            revoked_at=now,
            ledgers=tuple(
                ExpiredLedger(
                    engineer_id,
                    client_id,
                    people.get(engineer_id),
                    tuple(_row(grant) for grant in ledgers[(engineer_id, client_id)]),
                    tuple(people.get(grant.granted_by) for grant in ledgers[(engineer_id, client_id)]),
                    tuple(sorted(copies[(engineer_id, client_id)])),
                )
                for engineer_id, client_id in pairs
            ),
        )

    # -- the writes -------------------------------------------------------------------------------

    @staticmethod
    def _revoke(s: Session, draft: SweepRows, signed: SweepSigned, expired: dict[int, m.Grant]) -> int:
        """Each revocation signed, stored if it is the caller's over a row of the draft past its end."""
        if not isinstance(signed, SweepSigned) or not isinstance(signed.revocations, tuple):
            raise InvalidInput("the keyholder signed no sweep")
        public = draft.me.signing_public
        assert public is not None
        done: set[int] = set()
        for item in signed.revocations:
            if not isinstance(item, tuple) or len(item) != 2 or not isinstance(item[1], bytes):
                raise InvalidInput("a revocation is not a (grant id, signature) pair")
            grant_id, signature = item
            grant = expired.get(grant_id) if isinstance(grant_id, int) else None
            if grant is None or grant_id in done:
                raise InvalidInput("the keyholder signed the revocation of a grant this sweep does not end")
            revoked = _row(grant)._replace(revoked_at=draft.revoked_at, revoked_by=draft.me.id)
            try:
                signing.verify(
                    public,
                    signature,
                    LABEL_SIG_GRANT_REVOCATION,
                    *revocation_fields(draft.vault_id, revoked),
                    what="the revocation",
                )
            except UntrustedRecord as error:
                raise InvalidInput(f"{error}: not the caller's signature") from None
            grant.revoked_at, grant.revoked_by, grant.revocation = draft.revoked_at, draft.me.id, signature
            done.add(grant_id)
        return len(done)

    @staticmethod
    def _drop(s: Session, draft: SweepRows, signed: SweepSigned) -> int:
        """Delete the copies of the ledgers named (each of the draft); how many there were."""
        if not isinstance(signed.drop, tuple):
            raise InvalidInput("the ledgers to clear are not a tuple")
        known = {(ledger.engineer_id, ledger.client_id): ledger for ledger in draft.ledgers}
        removed = 0
        for pair in set(signed.drop):
            ledger = known.get(pair) if isinstance(pair, tuple) else None
            if ledger is None:
                raise InvalidInput("the keyholder named a ledger this sweep did not read")
            removed += len(ledger.copies)
        pairs = sorted(set(signed.drop))
        for start in range(0, len(pairs), BATCH):
            c = m.ClientKeySeal
            s.execute(
                delete(c).where(
                    and_(
                        c.recipient_kind == "engineer",
                        tuple_(c.recipient_id, c.client_id).in_(pairs[start : start + BATCH]),
                    )
                )
            )
        return removed
