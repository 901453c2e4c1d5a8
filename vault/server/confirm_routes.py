"""Confirming an enrolment over HTTPS: ``engineers.pending_confirmation`` and ``engineers.confirm``.

In-process, ``EngineerAuthority.confirm`` shows the confirming admin's keyholder the pending rows
inside its unit and stores the certification it makes (``EngineerSeal.certify``). Through the
server the admin's keyholder reads the rows first (``pending_confirmation``: a ``PENDING``
request, no event) and commits its certification with their digest (``confirm``:
``ConfirmCommit``, ``authority/confirm_requests.py``); the same authority runs the commit, the
seal comparing the rows recomputed in the unit with that digest (409 ``stale-draft``), and the
``engineer-confirm`` event is appended in format 3 (``CallRecorder``: the admin's signed request
kept, the nonce remembered first in the unit). Both routes: the body's caller must be the signer
(403), an admin (the authority's check).

Served for a first enrolment only: the carry-over of grants an engineer held before (a key
rotation's re-invitation) re-signs and re-seals client keys with the admin's keys inside the
unit, which the server does not hold; such a confirmation is refused here (``ConfigurationError``)
and stays in-process, which a vault that went to the team server refuses (no format-2 event
after format 3): the carry needs its own draft and commit (docs/server.md §4).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vault.authority.checkout_events import UnitCore
from vault.authority.confirm_requests import STALE_CONFIRM, ConfirmCommit, pending_digest
from vault.authority.engineer_requests import (
    CONFIRM,
    PENDING,
    CarryPlan,
    Certification,
    ConfirmRequest,
    EngineerAnswer,
    PendingRows,
)
from vault.authority.engineers import EngineerAuthority, EngineerChecks
from vault.authority.serverjournal import ServerJournal, ServerSeal
from vault.errors import ConcurrentChange, ConfigurationError, InvalidInput
from vault.server.handlers import Call, Operations, signer_only
from vault.server.listing_routes import CallRecorder
from vault.server.problems import NO_SERVER_KEY
from vault.storage import models as m
from vault.storage.engine import Store

NOT_SERVED_CARRY = "confirming an engineer who held keys or grants before (a re-invitation) is not served yet"


class _FirstEnrolment:
    """``engineers.Carry`` on the server: nothing to carry (a first enrolment), else refused."""

    def plan(self, s: Session, engineer_id: int, root_version: int) -> CarryPlan:
        row = s.get(m.Engineer, engineer_id)
        assert row is not None  # the authority read it in this unit
        grants = s.scalar(
            select(func.count())
            .select_from(m.Grant)
            .where(m.Grant.engineer_id == engineer_id, m.Grant.revoked_at.is_(None))
        )
        if (row.invite_prev_generation or 0) > 0 or grants:
            raise ConfigurationError(
                NOT_SERVED_CARRY, hint="this needs the carry-over through the team server (issue 14)"
            )
        signer = s.get(m.Engineer, row.invite_signed_by or 0)
        return CarryPlan(signer.name if signer is not None else "", (), ())

    def carry(self, s: Session, engineer_id: int) -> None:
        return None  # the plan carries nothing


class _Seal:
    """``EngineerSeal.certify`` on the server: the commit's certification, for the rows it was made on."""

    def __init__(self, commit: ConfirmCommit) -> None:
        self.commit = commit

    def __repr__(self) -> str:
        return "ConfirmationSeal()"

    def certify(self, draft: PendingRows) -> Certification:
        if pending_digest(draft) != self.commit.draft_digest:
            raise ConcurrentChange(STALE_CONFIRM)
        return self.commit.certification

    def sign_invitation(self, draft: object) -> object:
        raise InvalidInput("a confirmation signs no invitation")

    def enrol(self, draft: object) -> object:
        raise InvalidInput("a confirmation enrols nobody")

    def relock(self, draft: object) -> bytes:
        raise InvalidInput("a confirmation re-locks no key record")


class ConfirmRoutes:
    """The two routes of a confirmation (module docstring)."""

    def __init__(
        self, store: Store, checks: EngineerChecks, seal: ServerSeal | None, clock: Callable[[], dt.datetime]
    ) -> None:
        self.store, self.checks, self.seal, self.clock = store, checks, seal, clock

    def __repr__(self) -> str:
        return f"ConfirmRoutes({self.seal!r})"

    def pending(self, call: Call) -> EngineerAnswer:
        request = call.body
        if not isinstance(request, ConfirmRequest) or request.action != PENDING:
            raise InvalidInput("the body is not a pending confirmation's request")
        signer_only(call, request.caller)
        authority = EngineerAuthority(self.store, self.checks, _NoRecorder(), _FirstEnrolment(), self.clock)
        return authority.confirm(request, None)  # type: ignore[arg-type]  # a PENDING read uses no seal

    def confirm(self, call: Call) -> EngineerAnswer:
        commit = call.body
        if not isinstance(commit, ConfirmCommit) or commit.action != CONFIRM:
            raise InvalidInput("the body is not a confirmation")
        signer_only(call, commit.caller)
        if self.seal is None:
            raise ConfigurationError(NO_SERVER_KEY, hint="start the server with --server-key FILE")
        assert call.recorded is not None
        recorder = CallRecorder(ServerJournal(UnitCore(self.clock), self.seal), call.recorded, call, call.nonce)
        authority = EngineerAuthority(self.store, self.checks, recorder, _FirstEnrolment(), self.clock)
        c = commit
        request = ConfirmRequest(c.caller, c.name, c.fingerprint, c.shown, c.org_pin, CONFIRM)
        return authority.confirm(request, _Seal(commit))  # type: ignore[arg-type]

    def add_to(self, operations: Operations) -> None:
        operations.add("engineers.pending_confirmation", self.pending)
        operations.add("engineers.confirm", self.confirm, writes=True)


class _NoRecorder:
    """A pending confirmation appends nothing."""

    def append(self, s: Session, action: str, **_: object) -> int:
        raise InvalidInput("a pending confirmation appends no event")
