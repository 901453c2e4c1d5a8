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
caller runs the purge again. A purge of secrets or of a subject is not served (``not_served``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from vault.authority.purge_draft_values import PurgeClientCommit, PurgeClientDraftRequest, PurgeDraft
from vault.authority.purge_requests import CLIENT, PurgeRequest, PurgeRows, ReceiptRequest, ReceiptRows
from vault.errors import UntrustedRecord
from vault.transport.https_calls import Calls, answer_of, not_served
from vault.wire import codec


class HttpsPurgeTransport:
    """Purge previews, receipts and their check, and an admin's client purge, through a team server."""

    def __init__(self, https: Calls, slug_tags: Callable[[int], bytes] | None = None) -> None:
        self.https, self.slug_tags = https, slug_tags

    def __repr__(self) -> str:
        return "HttpsPurgeTransport()"

    def preview(self, request: PurgeRequest) -> PurgeRows:
        return answer_of(self.https, "purge.preview", request, PurgeRows)

    def receipts(self, request: ReceiptRequest) -> ReceiptRows:
        return answer_of(self.https, "purge.receipts", request, ReceiptRows)

    def check(self, request: ReceiptRequest) -> ReceiptRows:
        return answer_of(self.https, "purge.verify_receipt", request, ReceiptRows)

    def purge(self, request: PurgeRequest, seal: Any) -> PurgeRows:
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
