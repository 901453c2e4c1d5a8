"""An engineer's passphrase change over HTTPS: ``engineers.passphrase_draft`` and ``engineers.change_passphrase``.

In-process, ``EngineerAuthority.change_passphrase`` shows the engineer's keyholder the stored key
record inside its unit and stores what the keyholder re-locked (``EngineerSeal.relock``). Through
the server (``authority/passphrase_requests.py``):

* ``passphrase_draft`` (``PassphraseRequest`` → ``KeyRecordDraft``): the caller, who must be the
  signer (403), authorised as in-process (active, certified under the pinned organisation key,
  the key generation they sign with), and their own key record as stored. No event, nothing
  written but the nonce. A key record is only ever answered to the engineer it locks.
* ``change_passphrase`` (``PassphraseCommit`` → ``EngineerAnswer``): signed by the caller's
  certified key (the authenticator) and naming that caller (403 otherwise); the same authority
  runs the change in its unit, the seal comparing the digest of the record stored now with the
  one the keyholder re-locked (409 ``stale-draft``), and stores the new record; the
  ``passphrase-change`` event is appended in format 3 keeping the request's digest and
  signature but not its body (the new key record is never written to the log).

Without a server signing key the commit answers 503 (``NO_SERVER_KEY``): its event is format 3.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

from vault.authority.checkout_events import UnitCore
from vault.authority.engineer_requests import RELOCK, EngineerAnswer, KeyRecordDraft, PassphraseRequest
from vault.authority.engineers import KEY_BYTES, EngineerAuthority, EngineerChecks, checked_bytes, checked_caller
from vault.authority.passphrase_requests import STALE_RECORD, PassphraseCommit, record_digest
from vault.authority.serverjournal import ServerJournal, ServerSeal
from vault.errors import ConcurrentChange, ConfigurationError, InvalidInput, Locked
from vault.server.handlers import Call, Operations, signer_only
from vault.server.listing_routes import CallRecorder
from vault.server.problems import NO_SERVER_KEY
from vault.storage import models as m
from vault.storage.engine import Store

DRAFT, COMMIT = "engineers.passphrase_draft", "engineers.change_passphrase"


class _Relock:
    """``EngineerSeal.relock`` on the server: the commit's record, for the stored record it was made on."""

    def __init__(self, commit: PassphraseCommit) -> None:
        self.commit = commit

    def __repr__(self) -> str:
        return "RelockSeal(<key record>)"

    def relock(self, draft: KeyRecordDraft) -> bytes:
        if record_digest(draft.key_record) != self.commit.draft_digest:
            raise ConcurrentChange(STALE_RECORD)
        return self.commit.key_record


class _NoCarry:
    """A passphrase change confirms nobody."""

    def plan(self, *_: object) -> object:
        raise InvalidInput("a passphrase change confirms nobody")

    def carry(self, *_: object) -> None:
        raise InvalidInput("a passphrase change confirms nobody")


class _NoEvents:
    """The draft appends nothing."""

    def append(self, *_: object, **__: object) -> int:
        raise InvalidInput("reading one's key record appends no event")


class PassphraseRoutes:
    """The two routes of a passphrase change (module docstring)."""

    def __init__(
        self, store: Store, checks: EngineerChecks, seal: ServerSeal | None, clock: Callable[[], dt.datetime]
    ) -> None:
        self.store, self.checks, self.seal, self.clock = store, checks, seal, clock

    def __repr__(self) -> str:
        return f"PassphraseRoutes({self.seal!r})"

    def draft(self, call: Call) -> KeyRecordDraft:
        request = call.body
        if not isinstance(request, PassphraseRequest) or request.action != RELOCK:
            raise InvalidInput("the body is not a passphrase change's request")
        signer_only(call, request.caller)
        caller, pin = checked_caller(request.caller), checked_bytes("organisation key", request.org_pin, KEY_BYTES)
        authority = EngineerAuthority(self.store, self.checks, _NoEvents(), _NoCarry(), self.clock)  # type: ignore[arg-type]
        with self.store.read() as s:
            identity = authority.authorise(s, caller, org_pin=pin, admin=False)
            row = s.get(m.Engineer, identity.me.id)
            if row is None or row.key_record is None:
                raise Locked("the acting engineer has no key record", hint="an admin must confirm the enrolment first")
            return KeyRecordDraft(identity, row.key_record)

    def commit(self, call: Call) -> EngineerAnswer:
        commit = call.body
        if not isinstance(commit, PassphraseCommit) or commit.action != RELOCK:
            raise InvalidInput("the body is not a passphrase change")
        signer_only(call, commit.caller)
        checked_bytes("key record", commit.key_record)
        checked_bytes("key record digest", commit.draft_digest, 32)
        if self.seal is None:
            raise ConfigurationError(NO_SERVER_KEY, hint="start the server with --server-key FILE")
        assert call.recorded is not None
        kept = dataclasses.replace(call.recorded, body=None)  # the digest and signature only: no key record logged
        recorder = CallRecorder(ServerJournal(UnitCore(self.clock), self.seal), kept, call, call.nonce)
        authority = EngineerAuthority(self.store, self.checks, recorder, _NoCarry(), self.clock)  # type: ignore[arg-type]
        request = PassphraseRequest(commit.caller, commit.org_pin, RELOCK)
        return authority.change_passphrase(request, _Relock(commit))  # type: ignore[arg-type]

    def add_to(self, operations: Operations) -> None:
        operations.add(DRAFT, self.draft)
        operations.add(COMMIT, self.commit, writes=True)
