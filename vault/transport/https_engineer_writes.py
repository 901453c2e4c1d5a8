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

``remove(request, seal)`` runs the same way (``authority/removal_draft_values.py``):
``engineers.remove_draft`` answers the ``RemovalDraft`` and every client's ``StartDraft``; the removal
seal verifies and signs the first, the rotation keyholder (``new_key``: ``RotationKeyholder`` on this
machine) verifies each start and makes its new client key, refused here if it would be sealed to the
engineer removed; ``engineers.remove`` commits them all in one unit.

**An admin's removal** (session 17, helper I) adds two steps, made by ``admin_hands`` on this machine:
the adoption of what the admin signed (``adopt``, over the draft's ``AdoptionDraft``), and, once the
removal, its starts and adoption are signed, ``engineers.remove_root_draft`` (the commit without its
root) answers the root rotation as the commit's unit will show it after the removal's writes; the
hands verify it against the chain and make the plan and every page's answer (``root``); the commit
carries them, and the hands take the new bundle once it is answered (``committed``).

A stale draft (409 ``stale-draft``) writes nothing; the seal signs once per request.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

from vault.authority.adoption_draft_values import AdoptionDraft, AdoptionMade
from vault.authority.engineer_requests import (
    EngineerAnswer,
    Rekeyed,
    Removal,
    RemovalAnswer,
    RemovalDraft,
    RemoveRequest,
    RotateRequest,
    SignedInvitation,
)
from vault.authority.rekey_draft_values import RekeyCommit, RekeyDraftAnswer
from vault.authority.removal_draft_values import RemovalCommit, RemovalDraftAnswer, RemovalRoot, RemovalRootDraft
from vault.authority.rotation_requests import NewClientKey, StartDraft
from vault.errors import UntrustedRecord
from vault.storage.rows import ROLE_ADMIN
from vault.transport.https_calls import Calls, answer_of
from vault.transport.https_invite import HttpsInviteTransport

NewKey = Callable[[int, StartDraft], NewClientKey]  # the rotation keyholder's: verify a start, make its key


class AdminRemovalHands(Protocol):
    """What an admin's removal needs made on the admin's machine (service/remote_admin_removal.py)."""

    def adopt(self, removal: RemovalDraft, draft: AdoptionDraft) -> AdoptionMade: ...
    def root(self, removal: RemovalDraft, drafted: RemovalRootDraft) -> RemovalRoot: ...
    def committed(self) -> None: ...


class HttpsEngineerWriteTransport(HttpsInviteTransport):
    """The engineers' listing, a confirmation, an invitation, a re-key and a removal through a team server."""

    def __init__(
        self, https: Calls, new_key: NewKey | None = None, admin_hands: AdminRemovalHands | None = None
    ) -> None:
        super().__init__(https)
        self.new_key, self.admin_hands = new_key, admin_hands

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
        adoption = draft.rows.adoption  # what the engineer signed: verified and adopted there
        adopted = None if adoption is None else seal.adopt(adoption)
        r = request
        commit = RekeyCommit(r.caller, r.name, r.expires_at, r.org_pin, rekey.engineer.id, made.key_certificate,
                             signed, draft.digest, adopted=adopted)  # fmt: skip
        return answer_of(self.https, "engineers.rotate", commit, EngineerAnswer)

    def remove(self, request: RemoveRequest, seal: Any) -> RemovalAnswer:
        if self.new_key is None:
            raise UntrustedRecord("this transport makes no client key")
        draft = answer_of(self.https, "engineers.remove_draft", request, RemovalDraftAnswer)
        rows = draft.rows
        made = seal.remove(rows.removal)  # the removal verified and signed first: a refusal sends nothing more
        if not isinstance(made, Removal):
            raise UntrustedRecord("the keyholder signed no removal")
        leaving, me = rows.removal.engineer.id, rows.removal.identity.me
        new_keys: list[tuple[int, NewClientKey]] = []
        for start in rows.starts:
            if start.me != me or any(g.engineer.id == leaving for g in start.grantees):
                raise UntrustedRecord("a client key the removal starts would be sealed to the engineer removed")
            if start.client.id in {client_id for client_id, _ in new_keys}:
                raise UntrustedRecord("the removal starts a client's key twice")
            new_keys.append((start.client.id, self.new_key(start.client.id, start)))
        admin, hands = rows.removal.engineer.role == ROLE_ADMIN, self.admin_hands
        adopted = None
        if admin and hands is not None and rows.adoption is not None:
            adopted = hands.adopt(rows.removal, rows.adoption)
        r = request
        commit = RemovalCommit(r.caller, r.name, r.org_pin, leaving, rows.removal.revoked_at, made, tuple(new_keys),
                               draft.digest, adopted=adopted)  # fmt: skip
        if admin and hands is not None:  # the root rotation drafted after the removal's writes, made here
            drafted = answer_of(self.https, "engineers.remove_root_draft", commit, RemovalRootDraft)
            commit = dataclasses.replace(commit, root=hands.root(rows.removal, drafted))
        answer = answer_of(self.https, "engineers.remove", commit, RemovalAnswer)
        if len(answer.rotation_ids) != len(new_keys):
            raise UntrustedRecord("the server started other rotations than the keys made here")
        if admin and hands is not None:
            hands.committed()
        return answer
