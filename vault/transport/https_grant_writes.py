"""An admin's grant and revoke over HTTPS: ``GrantKeyholder``'s transport on the team server.

``HttpsGrantTransport.grant(request, seal)`` is what ``GrantKeyholder`` calls in-process on
``InProcessGrantTransport``; the seal's hands are used outside the server's unit instead of
inside it (docs/server.md §4 rule 2, the values ``authority/grant_draft_requests.py``):

1. ``grants.grant_draft`` (``revoke_draft``): the server's draft, the same ``GrantRows`` the
   in-process seal is shown (for a grant: the new row's id reserved, its date, the client-key
   records with their recovery copies) and its digest;
2. the seal admits it (``admit``: every row verified as in-process; a refusal sends nothing
   more), signs each revocation at the draft's time, signs the grant in format 3 over a fresh
   request id (``sign_grant_v3``), seals the client keys to the engineer and the event's
   details to that request id (``seal_request``);
3. ``grants.grant`` (``revoke``): the commit under that request id; the server recomputes the
   draft, checks every signature under the admin's certified key, writes and appends the
   format-3 event in one unit, and answers the ledger as stored, which the keyholder checks
   as it checks the in-process answer.

A stale draft (409 ``stale-draft``: the ledger, the client's keys or the reservation moved
between the two requests; nothing written) is drafted again, at most ``DRAFTS`` times.
"""

from __future__ import annotations

import secrets
from typing import Protocol

from vault.authority.grant_draft_requests import (
    GrantCommit,
    GrantDraft,
    GrantDraftRequest,
    RevokeCommit,
    RevokeDraftRequest,
)
from vault.authority.grant_requests import GRANT, REVOKE, GrantRequest, GrantRows, RevokeRequest, SealedCopy
from vault.errors import ConcurrentChange, UntrustedRecord
from vault.transport.https_calls import Calls, answer_of
from vault.wire import codec

DRAFTS = 3


class GrantWriteSeal(Protocol):
    """The grants keyholder's seal, as this transport uses it (``keyholder/grants.py``)."""

    def admit(self, draft: GrantRows) -> None: ...
    def revocations(self, draft: GrantRows) -> tuple[bytes, ...]: ...
    def sign_grant_v3(self, draft: GrantRows, request_id: bytes) -> bytes: ...
    def seal_copies(self, draft: GrantRows) -> tuple[SealedCopy, ...]: ...
    def seal_request(self, request_id: bytes, action: str) -> tuple[int, bytes]: ...


class HttpsGrantTransport:
    """Grants and revokes through a team server (module docstring)."""

    def __init__(self, https: Calls) -> None:
        self.https = https

    def __repr__(self) -> str:
        return "HttpsGrantTransport()"

    def grant(self, request: GrantRequest, seal: GrantWriteSeal) -> GrantRows:
        for attempt in range(DRAFTS):
            try:
                return self._grant(request, seal)
            except ConcurrentChange:
                if attempt == DRAFTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def revoke(self, request: RevokeRequest, seal: GrantWriteSeal) -> GrantRows:
        for attempt in range(DRAFTS):
            try:
                return self._revoke(request, seal)
            except ConcurrentChange:
                if attempt == DRAFTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _grant(self, request: GrantRequest, seal: GrantWriteSeal) -> GrantRows:
        asked = GrantDraftRequest(request.caller, request.engineer, request.slug_tag, request.until, request.org_pin)
        draft = answer_of(self.https, "grants.grant_draft", asked, GrantDraft)
        rows = draft.rows
        seal.admit(rows)  # every row verified; a refusal sends nothing more
        new = rows.new_grant
        if new is None:
            raise UntrustedRecord("the server's grant draft has no new grant")
        request_id = secrets.token_bytes(codec.REQUEST_ID_BYTES)
        revocations = seal.revocations(rows)
        signature = seal.sign_grant_v3(rows, request_id)
        copies = seal.seal_copies(rows)
        version, blob = seal.seal_request(request_id, GRANT)
        commit = GrantCommit(
            request.caller, request.engineer, request.slug_tag, rows.client_id, request.until, request.org_pin,
            new.id, revocations, signature, copies, version, blob, draft.digest,
        )  # fmt: skip
        return self._answer("grants.grant", commit, request_id)

    def _revoke(self, request: RevokeRequest, seal: GrantWriteSeal) -> GrantRows:
        asked = RevokeDraftRequest(request.caller, request.engineer, request.slug_tag, request.org_pin)
        draft = answer_of(self.https, "grants.revoke_draft", asked, GrantDraft)
        rows = draft.rows
        seal.admit(rows)
        request_id = secrets.token_bytes(codec.REQUEST_ID_BYTES)
        revocations = seal.revocations(rows)
        version, blob = seal.seal_request(request_id, REVOKE)
        commit = RevokeCommit(
            request.caller, request.engineer, request.slug_tag, rows.client_id, request.org_pin, rows.revoked_at,
            revocations, version, blob, draft.digest,
        )  # fmt: skip
        return self._answer("grants.revoke", commit, request_id)

    def _answer(self, name: str, commit: object, request_id: bytes) -> GrantRows:
        answer = self.https.call(name, commit, request_id)
        if not isinstance(answer, GrantRows):
            raise UntrustedRecord(f"the server's answer is not a {name} answer")
        return answer
