"""Enrolment over HTTPS: ``engineers.enroll_draft`` and ``engineers.enroll`` (docs/server.md §2–§4).

The enrolling person has no certified key yet: the enrolment code authenticates them
(``authority/enrolment_proof.py``). Two requests, as for the other drafts (§4 rule 2):

* ``engineers.enroll_draft`` (``EnrollRequest`` → ``EnrolmentDraft``): signed with the key the
  code's secret derives, keyid ``i:<its public key>``; the server finds the open invitation whose
  stored key that is (else 401 ``unknown-key``, counted per address: a wrong code), checks that
  it is the name asked, signed, unexpired and of the vault the code's fingerprint names, and
  answers the invitation as stored (the engineer's id and key generation, the admin's signature
  and its signer's row). It writes nothing but the request's nonce.
* ``engineers.enroll`` (``EnrollCommit`` → ``EngineerAnswer``): signed with the *new* signing key
  (keyid ``e:<engineer id>:<new generation>``, the key the body enrols); before that signature is
  believed, the body's ``invite_proof`` must verify under the invitation's stored key over the
  keys enrolled (else ``unknown-key``, counted per address). ``EngineerAuthority.enroll`` then
  runs as in-process, the engineer's row locked, with the server's seal: the invitation is
  checked again in the unit, the keys stored as the keyholder made them, and a format-3
  ``enroll`` event appended (its request, signed by the key it enrols, kept for ``audit
  verify``), the nonce remembered first in the same unit.

Without a server signing key the commit answers 503 (``NO_SERVER_KEY``): its event is format 3.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.authority.checkout_events import UnitCore
from vault.authority.engineer_requests import (
    ENROLL,
    INVITED,
    CarryPlan,
    EngineerAnswer,
    EnrollCommit,
    EnrollRequest,
    EnrolmentDraft,
    NewKeys,
)
from vault.authority.engineers import EngineerAuthority, EngineerChecks, checked_name, engineer_row
from vault.authority.enrolment_proof import check_proof, invite_key_of
from vault.authority.serverjournal import ServerJournal, ServerSeal
from vault.crypto import signing
from vault.errors import ConfigurationError, EnrolmentError, InvalidInput, NotFound, UntrustedRecord
from vault.server.authentication import KEYID, Authenticator, PendingNonce
from vault.server.problems import NO_SERVER_KEY
from vault.storage import models as m
from vault.storage.engine import Store
from vault.wire import codec
from vault.wire.eventrequest import RecordedRequest, record
from vault.wire.httpsig import verify_request
from vault.wire.nonces import DbNonceStore

DRAFT, COMMIT = "engineers.enroll_draft", "engineers.enroll"


class _NoCarry:
    """An enrolment confirms nobody: the carry-over of grants is never asked for here."""

    def plan(self, s: Session, engineer_id: int, root_version: int) -> CarryPlan:
        raise InvalidInput("an enrolment confirms nobody")

    def carry(self, s: Session, engineer_id: int) -> None:
        raise InvalidInput("an enrolment confirms nobody")


class _Seal:
    """``EngineerSeal.enrol`` on the server: the keys the commit carries, for the draft of the unit,
    only if the code's proof still verifies under the invitation as read in the unit."""

    def __init__(self, commit: EnrollCommit) -> None:
        self.commit = commit

    def __repr__(self) -> str:
        return "EnrolmentSeal()"

    def enrol(self, draft: EnrolmentDraft) -> NewKeys:
        commit, row, auth = self.commit, draft.engineer, draft.invitation.auth_public
        if (row.id, row.key_generation + 1) != (commit.caller.engineer_id, commit.caller.key_generation):
            raise EnrolmentError(f"the invitation for {row.name!r} has changed since this enrolment was drafted")
        if auth is None:
            raise EnrolmentError(
                f"the invitation for {row.name!r} cannot be enrolled over HTTPS (made before revision 0018)",
                hint=f"ask an admin to invite you again (`credvault engineer invite {row.name}`)",
            )
        try:
            check_proof(auth, commit.invite_proof, draft.vault_id, row.id, row.name, commit.keys)
        except UntrustedRecord:
            raise EnrolmentError(
                f"the invitation for {row.name!r} has changed since this enrolment was drafted"
            ) from None
        return commit.keys

    def sign_invitation(self, draft: Any) -> Any:
        raise InvalidInput("an enrolment signs no invitation")

    def certify(self, draft: Any) -> Any:
        raise InvalidInput("an enrolment certifies nothing")

    def relock(self, draft: Any) -> bytes:
        raise InvalidInput("an enrolment re-locks no key record")


class _Recorder:
    """``engineers.Recorder`` for the commit: the nonce, then the format-3 ``enroll`` event of the
    enrolling engineer's new key generation, in the enrolment's unit."""

    def __init__(
        self, journal: ServerJournal, request: RecordedRequest, commit: EnrollCommit, nonce: PendingNonce | None
    ) -> None:
        self.journal, self.request, self.commit, self.nonce = journal, request, commit, nonce

    def __repr__(self) -> str:
        return "EnrolmentRecorder()"

    def append(
        self, s: Session, action: str, *, public: dict[str, Any], enrolment: Any = None, unsigned_by: int | None = None
    ) -> int:
        if action != ENROLL or unsigned_by is not None:
            raise InvalidInput("this route appends only the enrolment's event")
        if self.nonce is not None:
            self.nonce.within(s)  # a second in-flight copy waits here, then fails as replayed
        caller = self.commit.caller
        event = self.journal.append(
            s, ENROLL, self.request, engineer_id=caller.engineer_id, key_generation=caller.key_generation, public=public
        )
        return event.seq


class EnrolmentRoutes:
    """The two invite-authenticated routes (module docstring)."""

    def __init__(
        self,
        store: Store,
        authenticator: Authenticator,
        checks: EngineerChecks,
        seal: ServerSeal | None,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.store, self.authenticator, self.checks, self.seal, self.clock = store, authenticator, checks, seal, clock

    def __repr__(self) -> str:
        return f"EnrolmentRoutes({self.seal!r})"

    def answer(self, name: str, path: str, headers: list[tuple[str, str]], body: bytes, max_body: int) -> bytes:
        """The response envelope of an enrolment request (``Unauthenticated`` for a wrong code)."""
        if name == COMMIT and self.seal is None:
            raise ConfigurationError(NO_SERVER_KEY, hint="start the server with --server-key FILE")
        auth = self.authenticator
        pending = PendingNonce(auth.nonces) if name == COMMIT and isinstance(auth.nonces, DbNonceStore) else None
        lookup = self._invitation_key if name == DRAFT else self._commit_key(body, max_body)
        nonces = pending or auth.nonces
        verified = verify_request("POST", auth.authority, path, headers, body, lookup, auth.clock(), nonces=nonces)
        envelope = codec.open_envelope(body, name, max_bytes=max_body)
        if name == DRAFT:
            value: object = self.draft(envelope.body, invite_key_of(verified.keyid))
        else:
            named = {key.lower(): value for key, value in headers}
            recorded = record("POST", auth.authority, path, named, body, envelope.request_id)
            value = self.enroll(envelope.body, recorded, pending)
        return codec.envelope(f"{name}.response", value, envelope.request_id)

    # -- who may enrol: the code's key, then the new key -----------------------------------------

    def _invitation_key(self, keyid: str) -> bytes | None:
        """The public key an ``i:`` keyid names, if it is an open invitation's."""
        public = invite_key_of(keyid)
        if public is None:
            return None
        with self.store.read() as s:
            found = s.scalar(
                select(m.Engineer.id).where(m.Engineer.invite_auth_public == public, m.Engineer.status == INVITED)
            )
        return public if found is not None else None

    def _commit_key(self, body: bytes, max_body: int) -> Callable[[str], bytes | None]:
        """The key an ``e:`` keyid names for a commit: the body's new signing key, if the body's
        proof verifies under the code's key of that engineer's open invitation, for that generation."""

        def lookup(keyid: str) -> bytes | None:
            match = KEYID.fullmatch(keyid)
            try:
                commit = codec.open_envelope(body, COMMIT, max_bytes=max_body).body  # the digest matched the body
            except InvalidInput:
                return None
            if match is None or not isinstance(commit, EnrollCommit):
                return None
            caller = commit.caller
            if (caller.engineer_id, caller.key_generation) != (int(match.group(1)), int(match.group(2))):
                return None
            with self.store.read() as s:
                row = s.get(m.Engineer, caller.engineer_id)
                info = s.get(m.VaultInfo, 1)
                if row is None or info is None or row.status != INVITED or row.invite_auth_public is None:
                    return None
                if (
                    row.key_generation + 1 != caller.key_generation
                    or commit.keys.key_generation != caller.key_generation
                ):
                    return None
                try:
                    check_proof(
                        row.invite_auth_public, commit.invite_proof, info.vault_id, row.id, row.name, commit.keys
                    )
                except UntrustedRecord:
                    return None
            return commit.keys.signing_public

        return lookup

    # -- the operations ----------------------------------------------------------------------------

    def draft(self, request: object, code_key: bytes | None) -> EnrolmentDraft:
        """The open invitation of ``name`` whose code's key signed the request, as stored, for the
        enrolling keyholder to verify and enrol for (another name's invitation is not shown)."""
        if not isinstance(request, EnrollRequest) or request.action != ENROLL:
            raise InvalidInput("not an enrolment draft request")
        name = checked_name(request.name)
        with self.store.read() as s:
            info = s.get(m.VaultInfo, 1)
            if info is None:
                raise NotFound("this database holds no vault", hint="check the server's --db")
            if not signing.org_matches(info.org_signing_public, request.org_fingerprint):
                raise EnrolmentError(
                    "this enrolment code is for another vault (or the vault's key was replaced)",
                    hint="check the server URL, or ask the admin",
                )
            row = s.scalars(select(m.Engineer).where(m.Engineer.name == name)).first()
            if row is None or row.status != INVITED or code_key is None or row.invite_auth_public != code_key:
                raise EnrolmentError(f"there is no open invitation for {name!r} with this code")
            if row.invite_expires_at is None or row.invite_expires_at <= self.clock():
                raise EnrolmentError(f"the invitation for {name!r} has expired")
            if row.invite_signature is None:
                raise EnrolmentError(
                    f"the invitation for {name!r} was made before credvault signed invitations",
                    hint=f"ask an admin to invite you again (`credvault engineer invite {name}`)",
                )
            return EnrolmentDraft(
                info.vault_id, info.org_signing_public, engineer_row(row), EngineerAuthority.invitation(s, row)
            )

    def enroll(self, commit: object, recorded: RecordedRequest, nonce: PendingNonce | None) -> EngineerAnswer:
        """Store the keys the commit carries (``EngineerAuthority.enroll``, the server's seal)."""
        if not isinstance(commit, EnrollCommit) or commit.action != ENROLL:
            raise InvalidInput("not an enrolment request")
        assert self.seal is not None  # checked before the request was read
        journal = ServerJournal(UnitCore(self.clock), self.seal)
        recorder = _Recorder(journal, recorded, commit, nonce)
        authority = EngineerAuthority(self.store, self.checks, recorder, _NoCarry(), self.clock)
        return authority.enroll(EnrollRequest(commit.name, commit.org_fingerprint), _Seal(commit))
