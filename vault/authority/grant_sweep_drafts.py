"""An admin's sweep of expired grants through the team server, where the database is: a draft, a commit.

docs/server.md §4 rule 2. In-process (``grants.maintain``) the sweep's keyholder signs inside the
authority's unit (``grant_sweep.GrantSweepAuthority``: its ``SweepSeal``). A network carries no
seal, so the same authority runs twice:

* ``draft`` — with a seal that keeps the ``SweepRows`` it is shown and stops the unit (nothing
  written). A vault with no unrevoked grant past its end answers that draft as it is (no ledger:
  there is nothing to sign). Otherwise the draft goes back with its digest
  (``SHA-256("credvault/v1/draft-digest/sweep" || canonical encoding of the draft)``).
* ``commit`` — the same sweep in one unit, dated at the draft's ``revoked_at`` (the time the
  admin's revocations are signed over; at most ``WINDOW`` seconds before the server's clock and
  never after it, else stale), with a seal that answers the keyholder's ``SweepSigned`` only for the
  draft digested (else ``STALE_SWEEP``, 409, nothing written). The authority then checks every
  revocation under the caller's certified key, as in-process, and writes; its ``grants-expired``
  event is format 3 (the admin's signed commit kept, the server's signature), public facts as
  in-process.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from vault.authority.checkout_events import ServerEvent, UnitCore
from vault.authority.clients import ClientChecks
from vault.authority.grant_requests import GRANTS_EXPIRED, SweepRequest, SweepRows, SweepSigned
from vault.authority.grant_sweep import GrantSweepAuthority
from vault.authority.grant_sweep_values import (
    DIGEST_BYTES,
    STALE_SWEEP,
    WINDOW,
    SweepCommit,
    SweepDrafted,
    sweep_digest,
)
from vault.authority.requests import Caller
from vault.authority.serverjournal import ServerJournal
from vault.errors import ConcurrentChange, IntegrityError, InvalidInput
from vault.storage.engine import Store


class _Drafted(Exception):
    """Raised by the drafting seal once it has the draft: the unit stops, nothing written."""


class _Drafting:
    def __init__(self) -> None:
        self.draft: SweepRows | None = None

    def sign(self, draft: SweepRows) -> SweepSigned:
        self.draft = draft
        raise _Drafted


class _Replaying:
    def __init__(self, digest: bytes, signed: SweepSigned) -> None:
        self.digest, self.signed = digest, signed

    def sign(self, draft: SweepRows) -> SweepSigned:
        if sweep_digest(draft) != self.digest:
            raise ConcurrentChange(STALE_SWEEP, hint="run `credvault maintain` again")
        return self.signed


class _EventRecorder:
    """The sweep's ``SweepRecorder`` on the server: a format-3 event keeping the admin's commit."""

    def __init__(self, journal: ServerJournal, event: ServerEvent, caller: Caller) -> None:
        self.journal, self.event, self.caller = journal, event, caller

    def append(self, s: Session, action: str, *, client_id: int | None, public: dict[str, Any] | None = None) -> int:
        appended = self.journal.append(
            s, action, self.event.request, engineer_id=self.caller.engineer_id,
            key_generation=self.caller.key_generation, client_id=client_id, public=public,
        )  # fmt: skip
        return int(appended.seq)


class _NoRecorder:
    def append(self, s: Session, action: str, *, client_id: int | None, public: dict[str, Any] | None = None) -> int:
        raise InvalidInput("a draft appends no event")


class GrantSweepDrafts:
    """Drafts and commits of an admin's sweep of expired grants (module docstring)."""

    def __init__(self, store: Store, checks: ClientChecks, clock: Callable[[], dt.datetime]) -> None:
        self.store, self.checks, self.clock = store, checks, clock

    def __repr__(self) -> str:
        return "GrantSweepDrafts()"

    def draft(self, request: SweepRequest) -> SweepDrafted:
        seal = _Drafting()
        with contextlib.suppress(_Drafted):
            nothing = GrantSweepAuthority(self.store, self.checks, _NoRecorder(), self.clock).sweep(request, seal)
            return SweepDrafted(nothing, bytes(DIGEST_BYTES))  # nothing past its end: nothing to sign
        if seal.draft is None:
            raise IntegrityError("the sweep showed the keyholder no draft")
        return SweepDrafted(seal.draft, sweep_digest(seal.draft))

    def commit(self, commit: SweepCommit, event: ServerEvent) -> SweepRows:
        if not isinstance(commit, SweepCommit) or not isinstance(commit.signed, SweepSigned):
            raise InvalidInput("not a sweep commit")
        if not isinstance(commit.digest, bytes) or len(commit.digest) != DIGEST_BYTES:
            raise InvalidInput(f"the commit's draft digest is not a {DIGEST_BYTES}-byte value")
        at, now = commit.revoked_at, self.clock()
        if not isinstance(at, dt.datetime) or not now - dt.timedelta(seconds=WINDOW) <= at <= now:
            raise ConcurrentChange(STALE_SWEEP, hint="run `credvault maintain` again")
        request = SweepRequest(commit.caller, commit.org_pin, commit.action)
        if commit.action != GRANTS_EXPIRED:
            raise InvalidInput(f"the request's action is not {GRANTS_EXPIRED!r}")
        recorder = _EventRecorder(ServerJournal(UnitCore(self.clock), event.seal), event, commit.caller)
        authority = GrantSweepAuthority(self.store, self.checks, recorder, lambda: at)
        return authority.sweep(request, _Replaying(commit.digest, commit.signed))
