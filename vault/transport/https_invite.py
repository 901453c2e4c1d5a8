"""An admin's invitation over HTTPS: ``EngineerKeyholder.invite``'s transport on the team server.

``HttpsInviteTransport`` is ``HttpsEngineerTransport`` (the listing and a first enrolment's
confirmation) whose ``invite(request, seal)`` uses the seal's hands outside the server's unit
instead of inside it (docs/server.md, session 13; the values ``authority/invite_draft_values.py``):

1. ``engineers.invite_draft``: the same ``InviteRequest``; the server answers the
   ``InvitationDraft`` the in-process seal is shown (a new engineer's id reserved) and its digest;
2. the seal verifies it (the caller's own row, the engineer and role asked for, the previous key's
   certificate, the root bundle sealed to this admin) and signs the invitation: the invite secret
   is made here, sealed to the recovery key, and only the public key it derives is sent;
3. ``engineers.invite``: the commit under a fresh request id; the server checks the signature
   under the admin's certified key, writes the invitation and appends the format-3
   ``engineer-invite`` event in one unit; the keyholder checks the answer and makes the code here.

A stale draft (409 ``stale-draft``) writes nothing; the seal signs once per request, so the caller
invites again (the code is never shown for an invitation the server did not store).
"""

from __future__ import annotations

from typing import Any

from vault.authority.engineer_requests import EngineerAnswer, InviteRequest, SignedInvitation
from vault.authority.invite_draft_values import InviteCommit, InviteDraft
from vault.errors import UntrustedRecord
from vault.transport.https_calls import answer_of
from vault.transport.https_engineers import HttpsEngineerTransport


class HttpsInviteTransport(HttpsEngineerTransport):
    """The engineers' listing, a confirmation and an admin's invitation through a team server."""

    def __repr__(self) -> str:
        return "HttpsInviteTransport()"

    def invite(self, request: InviteRequest, seal: Any) -> EngineerAnswer:
        draft = answer_of(self.https, "engineers.invite_draft", request, InviteDraft)
        signed = seal.sign_invitation(draft.draft)  # the draft verified first: a refusal sends nothing more
        if not isinstance(signed, SignedInvitation):
            raise UntrustedRecord("the keyholder signed no invitation")
        r = request
        commit = InviteCommit(r.caller, r.name, r.role, r.expires_at, r.org_pin, draft.draft.engineer_id, signed,
                              draft.digest)  # fmt: skip
        return answer_of(self.https, "engineers.invite", commit, EngineerAnswer)
