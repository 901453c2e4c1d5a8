"""Purges over HTTPS: ``PurgeKeyholder``'s transport on the team server.

``HttpsPurgeTransport`` has the methods of ``InProcessPurgeTransport`` (``purge.py``).
``preview`` and ``receipts`` send the same request values as the signed ``purge.preview``
and ``purge.receipts`` requests (both an admin's: 403 to an engineer) and return the same
answers, which the keyholder verifies as in-process (the caller's row, the receipts'
signatures); ``check`` is the signed ``purge.verify_receipt`` (any engineer's: the receipt, its
signer, what survives and its event, judged by the keyholder).

``purge`` of a whole client (with ``slug_tags``: an admin's ``RemoteVault``) uses the seal's
hands outside the server's unit instead of inside it (docs/server.md §4 rule 2, the values
``authority/purge_draft_values.py``):

1. ``purge.client_draft``: the client named by the id the keyholder verified and by its slug tag;
   the server reserves the receipt's id and answers what will be destroyed (the ``PurgeRows`` the
   in-process seal admits), the receipt it will store (unsigned) and their digest;
2. the seal admits the draft (every key record verified, the fingerprints taken from them; a
   refusal sends nothing more) and signs the receipt over a fresh request id (``sign_v3``);
3. ``purge.client``: the commit under that request id; the server checks the fingerprints and the
   signature under the admin's certified key, deletes, counts what survives, stores the receipt
   and appends the format-3 ``purge-client`` event in one unit, and answers the receipt as stored,
   which the keyholder compares with the one it signed.

A stale draft (409 ``stale-draft``) destroys nothing; the seal signs once per request, so the
caller runs the purge again.

``purge`` of one secret runs the same way over ``purge.secret_draft`` / ``purge.secret``
(``authority/purge_secret_values.py``), except that its draft is asked for first by the caller
(``secret_draft``: the secret named by its name tag, its id learned from the draft, its current
version's name checked on the admin's machine before anything is signed) and kept here for the
one purge that follows.

``purge`` of a subject's secrets (session 15) runs once per client (the caller's keyholder runs one
purge per client, each its own request and unit) over ``purge.subject_draft`` / ``purge.subject``
(``authority/purge_subject_values.py``): the client named by id and the secrets of it that matched
the search made on the admin's machine; the draft releases nothing (the seal fingerprints the data
keys that search opened, ``service/remote_subjects.py``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from vault.authority.purge_draft_values import PurgeClientCommit, PurgeClientDraftRequest, PurgeDraft
from vault.authority.purge_requests import (
    CLIENT,
    SECRET,
    SUBJECT,
    PurgeRequest,
    PurgeRows,
    ReceiptRequest,
    ReceiptRows,
)
from vault.authority.purge_secret_values import PurgeSecretCommit, PurgeSecretDraft, PurgeSecretDraftRequest
from vault.authority.purge_subject_values import PurgeSubjectCommit, PurgeSubjectDraft, PurgeSubjectDraftRequest
from vault.errors import UntrustedRecord
from vault.transport.https_calls import Calls, answer_of, not_served
from vault.wire import codec


class HttpsPurgeTransport:
    """Purge previews, receipts and their check, and an admin's client purge, through a team server."""

    def __init__(self, https: Calls, slug_tags: Callable[[int], bytes] | None = None) -> None:
        self.https, self.slug_tags = https, slug_tags
        self._secret_draft: tuple[PurgeSecretDraftRequest, PurgeSecretDraft] | None = None

    def __repr__(self) -> str:
        return "HttpsPurgeTransport()"

    def preview(self, request: PurgeRequest) -> PurgeRows:
        return answer_of(self.https, "purge.preview", request, PurgeRows)

    def receipts(self, request: ReceiptRequest) -> ReceiptRows:
        return answer_of(self.https, "purge.receipts", request, ReceiptRows)

    def check(self, request: ReceiptRequest) -> ReceiptRows:
        return answer_of(self.https, "purge.verify_receipt", request, ReceiptRows)

    def secret_draft(self, asked: PurgeSecretDraftRequest) -> PurgeSecretDraft:
        """The draft of one secret's purge (on record on the server), kept for the ``purge`` that follows."""
        self._secret_draft = None
        draft = answer_of(self.https, "purge.secret_draft", asked, PurgeSecretDraft)
        self._secret_draft = (asked, draft)
        return draft

    def purge(self, request: PurgeRequest, seal: Any) -> PurgeRows:
        if request.kind == SECRET and self._secret_draft is not None:
            return self._purge_secret(request, seal)
        if request.kind == SUBJECT and len(request.targets) == 1:
            return self._purge_subject(request, seal)
        if request.kind != CLIENT or self.slug_tags is None or len(request.targets) != 1:
            raise not_served(f"purge.{request.kind}")
        client_id = request.targets[0].client_id
        slug_tag = self.slug_tags(client_id)
        asked = PurgeClientDraftRequest(request.caller, slug_tag, client_id, request.request_ref, request.org_pin)
        draft = answer_of(self.https, "purge.client_draft", asked, PurgeDraft)
        seal.admit(draft.rows)  # every row verified; a refusal sends nothing more
        request_id = secrets.token_bytes(codec.REQUEST_ID_BYTES)
        signed = seal.sign_v3(draft.receipt, request_id)
        commit = PurgeClientCommit(
            request.caller, slug_tag, client_id, request.request_ref, request.org_pin, draft.receipt.id,
            signed.fingerprints, signed.signature, draft.digest,
        )  # fmt: skip
        answer = self.https.call("purge.client", commit, request_id)
        if not isinstance(answer, PurgeRows):
            raise UntrustedRecord("the server's answer is not a purge.client answer")
        return answer

    def _purge_secret(self, request: PurgeRequest, seal: Any) -> PurgeRows:
        """The kept draft admitted, its receipt signed over a fresh request id, the commit sent."""
        assert self._secret_draft is not None
        asked, draft = self._secret_draft
        self._secret_draft = None  # one purge per draft
        target = request.targets[0]
        if (target.client_id, request.request_ref, request.caller) != (
            asked.client_id, asked.request_ref, asked.caller
        ):  # fmt: skip
            raise UntrustedRecord("the secret's purge is not the one drafted")
        seal.admit(draft.rows)  # the secret asked for, every version's data key opened here; a refusal sends nothing
        request_id = secrets.token_bytes(codec.REQUEST_ID_BYTES)
        signed = seal.sign_v3(draft.receipt, request_id)
        commit = PurgeSecretCommit(
            request.caller, asked.slug_tag, target.client_id, target.secret_ids[0], request.request_ref,
            request.org_pin, draft.receipt.id, signed.fingerprints, signed.signature, draft.digest,
        )  # fmt: skip
        answer = self.https.call("purge.secret", commit, request_id)
        if not isinstance(answer, PurgeRows):
            raise UntrustedRecord("the server's answer is not a purge.secret answer")
        return answer

    def _purge_subject(self, request: PurgeRequest, seal: Any) -> PurgeRows:
        """One client's matching secrets: the draft admitted, its receipt signed over a fresh request id, committed."""
        target = request.targets[0]
        asked = PurgeSubjectDraftRequest(
            request.caller, target.client_id, target.secret_ids, request.request_ref, request.org_pin
        )
        draft = answer_of(self.https, "purge.subject_draft", asked, PurgeSubjectDraft)
        seal.admit(draft.rows)  # the secrets asked for (or fewer), every data key the search opened; else nothing sent
        request_id = secrets.token_bytes(codec.REQUEST_ID_BYTES)
        signed = seal.sign_v3(draft.receipt, request_id)
        commit = PurgeSubjectCommit(
            request.caller, target.client_id, target.secret_ids, request.request_ref, request.org_pin,
            draft.receipt.id, signed.fingerprints, signed.signature, draft.digest,
        )  # fmt: skip
        answer = self.https.call("purge.subject", commit, request_id)
        if not isinstance(answer, PurgeRows):
            raise UntrustedRecord("the server's answer is not a purge.subject answer")
        return answer
