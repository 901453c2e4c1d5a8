"""An admin's re-key and removal of an engineer over HTTPS: ``EngineerKeyholder.rotate``'s and
``EngineerRemoval.remove``'s transport on the team server.

``HttpsEngineerWriteTransport`` is ``HttpsInviteTransport`` whose ``rotate(request, seal)`` uses the
seal's hands outside the server's unit instead of inside it (docs/server.md, session 14, helper B;
the values ``authority/rekey_draft_values.py``):

1. ``engineers.rotate_draft``: the same ``RotateRequest``; the server answers the ``RekeyDraft`` and
   the ``InvitationDraft`` the in-process seal is shown (one after the other there), and their digest;
2. the seal verifies the re-key draft (the engineer's row and certificate; the current key record
   certified here if it has none), then the invitation, which must be for the same engineer, identity
   and root copy, its previous key the record just certified; the invite secret is made here;
3. ``engineers.rotate``: the commit under a fresh request id; the server checks both signatures and
   writes in one unit; the keyholder checks the answer and makes the code here.

A stale draft (409 ``stale-draft``) writes nothing; the seal signs once per request.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from vault.authority.engineer_requests import EngineerAnswer, Rekeyed, RotateRequest, SignedInvitation
from vault.authority.rekey_draft_values import RekeyCommit, RekeyDraftAnswer
from vault.errors import UntrustedRecord
from vault.transport.https_calls import answer_of
from vault.transport.https_invite import HttpsInviteTransport


class HttpsEngineerWriteTransport(HttpsInviteTransport):
    """The engineers' listing, a confirmation, an invitation, a re-key and a removal through a team server."""

    def __repr__(self) -> str:
        return "HttpsEngineerWriteTransport()"

    def rotate(self, request: RotateRequest, seal: Any) -> EngineerAnswer:
        draft = answer_of(self.https, "engineers.rotate_draft", request, RekeyDraftAnswer)
        rekey, invitation = draft.rows.rekey, draft.rows.invitation
        made = seal.rekey(rekey)  # the draft verified first: a refusal sends nothing more
        previous = invitation.previous_key
        if (
            not isinstance(made, Rekeyed)
            or (invitation.identity, invitation.root) != (rekey.identity, rekey.root)
            or invitation.engineer_id != rekey.engineer.id
            or previous is None
            or (previous.engineer_id, previous.generation) != (rekey.engineer.id, rekey.engineer.key_generation)
            or (made.key_certificate is None) != rekey.key_recorded
            or (previous.certificate is None) == rekey.key_recorded
        ):
            raise UntrustedRecord("the re-key drafted is not one invitation of the engineer shown")
        if made.key_certificate is not None:
            previous = dataclasses.replace(previous, certificate=made.key_certificate)
        signed = seal.sign_invitation(dataclasses.replace(invitation, previous_key=previous))
        if not isinstance(signed, SignedInvitation):
            raise UntrustedRecord("the keyholder signed no invitation")
        r = request
        commit = RekeyCommit(r.caller, r.name, r.expires_at, r.org_pin, rekey.engineer.id, made.key_certificate,
                             signed, draft.digest)  # fmt: skip
        return answer_of(self.https, "engineers.rotate", commit, EngineerAnswer)
