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

A re-invited engineer's confirmation (a key rotation's re-invitation: the grants they held carried
over) is served too (session 16): ``ServedCarry`` (``authority/carry_drafts.py``) drafts the carry-over
in the pending rows (``CarryPlan.draft``, covered by their digest); the admin's machine verifies it and
re-signs and re-seals (``keyholder/carry.py``); the commit's ``carry`` is checked under the caller's
certified key before the carry's writes, in the confirmation's unit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

from sqlalchemy.orm import Session

from vault.authority.carry_drafts import ServedCarry
from vault.authority.checkout_events import UnitCore
from vault.authority.confirm_requests import STALE_CONFIRM, ConfirmCommit, pending_digest
from vault.authority.engineer_requests import (
    CONFIRM,
    PENDING,
    Certification,
    ConfirmRequest,
    EngineerAnswer,
    PendingRows,
)
from vault.authority.engineers import EngineerAuthority
from vault.authority.serverjournal import ServerJournal, ServerSeal
from vault.errors import ConcurrentChange, ConfigurationError, InvalidInput
from vault.server.checks import ServerChecks
from vault.server.handlers import Call, Operations, signer_only
from vault.server.listing_routes import CallRecorder
from vault.server.problems import NO_SERVER_KEY
from vault.storage.engine import Store


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
        self, store: Store, checks: ServerChecks, seal: ServerSeal | None, clock: Callable[[], dt.datetime]
    ) -> None:
        self.store, self.checks, self.seal, self.clock = store, checks, seal, clock

    def __repr__(self) -> str:
        return f"ConfirmRoutes({self.seal!r})"

    def pending(self, call: Call) -> EngineerAnswer:
        request = call.body
        if not isinstance(request, ConfirmRequest) or request.action != PENDING:
            raise InvalidInput("the body is not a pending confirmation's request")
        signer_only(call, request.caller)
        carry = ServedCarry(self.checks, self.clock, None, request.caller.engineer_id)
        authority = EngineerAuthority(self.store, self.checks, _NoRecorder(), carry, self.clock)
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
        carry = ServedCarry(self.checks, self.clock, commit.carry, commit.caller.engineer_id)
        authority = EngineerAuthority(self.store, self.checks, recorder, carry, self.clock)
        c = commit
        request = ConfirmRequest(c.caller, c.name, c.fingerprint, c.shown, c.org_pin, CONFIRM)
        answer = authority.confirm(request, _Seal(commit))  # type: ignore[arg-type]
        # the rows certified are the admin's own (they sent their digest): not answered again, so that
        # a carry-over's draft (each client's grant events) does not cross twice
        return dataclasses.replace(answer, pending=None)

    def add_to(self, operations: Operations) -> None:
        operations.add("engineers.pending_confirmation", self.pending)
        operations.add("engineers.confirm", self.confirm, writes=True)


class _NoRecorder:
    """A pending confirmation appends nothing."""

    def append(self, s: Session, action: str, **_: object) -> int:
        raise InvalidInput("a pending confirmation appends no event")
