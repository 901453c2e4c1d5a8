"""An admin's client-key rotation through the team server, where the database is: drafts and commits.

docs/server.md §4 rule 2; the values are ``rotation_draft_values.py``. The checks, reads and writes
are the in-process rotation authority's (``RotationAuthority``: the caller first — an active,
certified admin, before any row of the client or the rotation is read —, then the state machine);
what changes is where the keyholder's hands are. In-process they are lent to the authority's unit
(a seal); here each step that needs them runs twice:

* the **draft** runs the step with a seal that keeps what it is shown and stops the unit
  (``_Drafted``): nothing is written, and the draft goes back with its digest;
* the **commit** runs the step again in one unit, the request's nonce remembered first, with a
  seal that answers what the admin's keyholder made, but only if what it is shown now is the
  draft digested (else ``STALE_DRAFT``: 409, the unit rolled back, nothing written). The
  authority then checks that answer as it checks its own keyholder's (the new version's record
  signed by the caller under their certified key, one sealed copy per grantee and no other, the
  client's fields under the new version; re-wrapped rows exactly the page's, under the new
  version), and writes.

The events are format 3 (``ServerEvent``: the admin's signed request kept, the server's signature):
a start's ``client-key-rotate`` and a finish's ``client-key-rotated`` carry their numbers as public
facts. A page of the re-wrap appends no event of its own, as in-process; its release without the
server's layer is recorded by the route before the keys leave (``server/rotation_routes.py``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.orm import Session

from vault.authority.checkout_events import ServerEvent, UnitCore
from vault.authority.record_signatures import client_key_fields
from vault.authority.requests import Caller, ClientKeyRow
from vault.authority.rotation import RotationAuthority, RotationChecks
from vault.authority.rotation_batches import Outer
from vault.authority.rotation_draft_values import (
    SERVED_BATCH,
    STALE_DRAFT,
    BatchCommit,
    StartCommit,
    StartDrafted,
    batch_digest,
    start_digest,
)
from vault.authority.rotation_requests import (
    Batch,
    BatchDone,
    BatchRequest,
    Finished,
    FinishRequest,
    NewClientKey,
    OpenRequest,
    Rewrapped,
    RotationBasis,
    StartDraft,
    Started,
    StartRequest,
)
from vault.authority.serverjournal import ServerJournal
from vault.crypto import signing
from vault.crypto.labels import LABEL_SIG_CLIENT_KEY
from vault.errors import AccessDenied, ConcurrentChange, IntegrityError, InvalidInput, UntrustedRecord
from vault.storage import models as m
from vault.storage.engine import Store
from vault.storage.rows import ACTIVE

DIGEST_BYTES = 32
NOT_SIGNED = "the commit carries a client-key record the calling admin did not sign"
OTHER_ROWS = "the commit's re-wrapped keys are not the rows of the page drafted"


class _Drafted(Exception):
    """Raised by a drafting seal once it has what it was shown: the unit stops, nothing written."""


class _Drafting:
    """A seal that keeps the start's draft or the batch's page, and stops the unit."""

    def __init__(self) -> None:
        self.draft: StartDraft | None = None
        self.batch: Batch | None = None

    def __repr__(self) -> str:
        return "DraftingSeal()"

    def new_key(self, draft: StartDraft) -> NewClientKey:
        self.draft = draft
        raise _Drafted

    def rewrap(self, batch: Batch) -> Sequence[Rewrapped]:
        self.batch = batch
        raise _Drafted


class _Replaying:
    """A seal that answers the keyholder's work for the draft ``digest`` names, and nothing else."""

    def __init__(self, digest: bytes, made: NewClientKey | None = None, rows: tuple[Rewrapped, ...] = ()) -> None:
        self.digest, self.made, self.rows = digest, made, rows

    def __repr__(self) -> str:
        return "ReplayingSeal()"

    def new_key(self, draft: StartDraft) -> NewClientKey:
        made = self.made
        if made is None or start_digest(draft) != self.digest:
            raise ConcurrentChange(STALE_DRAFT, hint="run the rotation again")
        # the caller's own signature, before the authority's checks (which would call it damaged data)
        me = draft.me
        record = ClientKeyRow(draft.client.id, made.version, made.fingerprint, made.signed_at, me.id, None, ACTIVE)
        try:
            if draft.me.signing_public is None:
                raise UntrustedRecord(NOT_SIGNED)
            signing.verify(
                draft.me.signing_public, made.signature, LABEL_SIG_CLIENT_KEY,
                *client_key_fields(draft.vault_id, record), what="the commit",
            )  # fmt: skip
        except UntrustedRecord:
            raise AccessDenied(NOT_SIGNED, hint="draft again and sign what the draft shows") from None
        return made

    def rewrap(self, batch: Batch) -> Sequence[Rewrapped]:
        if batch_digest(batch) != self.digest:
            raise ConcurrentChange(STALE_DRAFT, hint="run `credvault rotate resume`")
        if [row[:2] for row in self.rows] != [row[:2] for row in batch.rows]:
            raise AccessDenied(OTHER_ROWS, hint="draft the page again")
        return self.rows


class _EventRecorder:
    """The rotation's ``Recorder`` on the server: a format-3 event keeping the caller's request,
    its details as public facts (numbers only: versions and counts)."""

    def __init__(self, journal: ServerJournal, event: ServerEvent, caller: Caller) -> None:
        self.journal, self.event, self.caller = journal, event, caller

    def append(self, s: Session, action: str, *, client_id: int | None, details: dict[str, Any] | None) -> int:
        if details is not None and not all(type(v) is int for v in details.values()):
            raise InvalidInput("a rotation event's public facts are numbers")
        appended = self.journal.append(
            s, action, self.event.request, engineer_id=self.caller.engineer_id,
            key_generation=self.caller.key_generation, client_id=client_id, public=details,
        )  # fmt: skip
        return int(appended.seq)


class _NoRecorder:
    """A draft appends nothing (its unit stops before the event)."""

    def append(self, s: Session, action: str, *, client_id: int | None, details: dict[str, Any] | None) -> int:
        raise InvalidInput("a draft appends no event")


def _digest(value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != DIGEST_BYTES:
        raise InvalidInput(f"the commit's draft digest is not a {DIGEST_BYTES}-byte value")
    return value


class RotationDraftAuthority:
    """Drafts and commits of an admin's client-key rotation (module docstring)."""

    def __init__(self, store: Store, checks: RotationChecks, clock: Callable[[], dt.datetime]) -> None:
        self.store, self.checks, self.clock = store, checks, clock
        self.reads = RotationAuthority(store, checks, _NoRecorder(), clock)

    def __repr__(self) -> str:
        return "RotationDraftAuthority()"

    def _writing(self, event: ServerEvent, caller: Caller) -> RotationAuthority:
        recorder = _EventRecorder(ServerJournal(UnitCore(self.clock), event.seal), event, caller)
        return RotationAuthority(self.store, self.checks, recorder, self.clock)

    # -- start ---------------------------------------------------------------------------------

    def start_draft(self, request: StartRequest) -> StartDrafted:
        """What the start would show the keyholder, and its digest; nothing written."""
        seal = _Drafting()
        with contextlib.suppress(_Drafted):
            self.reads.start(request, seal)
        if seal.draft is None:
            raise IntegrityError("the start showed the keyholder no draft")
        return StartDrafted(seal.draft, start_digest(seal.draft))

    def start(self, commit: StartCommit, event: ServerEvent) -> Started:
        """The start again, storing the keyholder's new version for the draft digested."""
        if not isinstance(commit, StartCommit) or not isinstance(commit.made, NewClientKey):
            raise InvalidInput("not a start commit")
        seal = _Replaying(_digest(commit.digest), made=commit.made)
        with self.store.transaction() as s:
            if event.nonce is not None:
                event.nonce(s)  # a second in-flight copy waits here, then fails as replayed
            return self._writing(event, commit.request.caller).start(commit.request, seal, s=s)

    # -- the re-wrap ---------------------------------------------------------------------------

    def open(self, request: OpenRequest) -> RotationBasis:
        """What the rotation's batches share (a read, as in-process)."""
        return self.reads.open(request)

    def rewrap_draft(self, request: BatchRequest) -> tuple[Batch | None, int, BatchDone | None]:
        """The next page as stored and its client's id, nothing written; or, when none is left (or
        the rotation is not running), the batch's answer."""
        if isinstance(request, BatchRequest) and isinstance(request.size, int) and request.size > SERVED_BATCH:
            raise InvalidInput(f"a page through the team server holds at most {SERVED_BATCH} data keys")
        seal = _Drafting()
        with self.store.read() as s:
            try:
                done = self.reads.rewrap(request, seal, s=s)
            except _Drafted:
                rotation = s.get(m.Rotation, request.rotation_id)
                if seal.batch is None or rotation is None:
                    raise IntegrityError("the batch showed the keyholder no page") from None
                return seal.batch, int(rotation.client_id), None
        return None, 0, done

    def rewrap(self, commit: BatchCommit, event: ServerEvent, outer: Outer | None) -> BatchDone:
        """The batch again, storing the keyholder's rows for the page digested (``outer``: the
        server's layer put back on them in the unit)."""
        if not isinstance(commit, BatchCommit) or not isinstance(commit.rows, tuple):
            raise InvalidInput("not a batch commit")
        if not isinstance(commit.request, BatchRequest) or commit.request.size > SERVED_BATCH:
            raise InvalidInput(f"a page through the team server holds at most {SERVED_BATCH} data keys")
        seal = _Replaying(_digest(commit.digest), rows=commit.rows)
        with self.store.transaction() as s:
            if event.nonce is not None:
                event.nonce(s)
            return self.reads.rewrap(commit.request, seal, s=s, outer=outer)

    # -- finish --------------------------------------------------------------------------------

    def finish(self, request: FinishRequest, event: ServerEvent) -> Finished:
        if not isinstance(request, FinishRequest):
            raise InvalidInput("not a finish request")
        with self.store.transaction() as s:
            if event.nonce is not None:
                event.nonce(s)
            return self._writing(event, request.caller).finish(request, s=s)
