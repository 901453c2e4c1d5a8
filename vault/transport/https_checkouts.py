"""The checkout over HTTPS: the keyholder's ``Transport`` and ``ContextTransport`` on the team server.

``HttpsCheckoutTransport.call(request, seal)`` is what ``CheckoutKeyholder`` calls in-process
on ``InProcessTransport``; here the seal's in-process hands (admit, details by seq, the event
signature, another's hold opened) are not used: the server signs the event (format 3). The
keyholder's seal seals the request's own details first (``seal_request``: field and reason,
bound to a fresh request id, under the client's current audit key), the request carries
them, and the envelope is sent under that id (``HttpsTransport.call``: signed, RFC 9421). The
server commits the event before it answers; the keyholder verifies the answer in full, as it
does any answer it was not shown before, and only then decrypts.

``release`` is a check-in or break the same way (``checkouts.checkin``/``break_checkout``: the
keyholder's release seal seals the request's details; the server's facts are in its signed
event; a new value drafted first through ``secrets.update_draft``), ``list_checkouts`` the
``checkouts.list`` route, and ``context`` the
read-only ``checkouts.context`` route (a client's key context).
"""

from __future__ import annotations

import dataclasses
import secrets
from typing import Protocol

from vault.authority.checkout_context import ContextRequest, ContextResponse
from vault.authority.requests import (
    CHECKIN,
    AnswerRefusedRequest,
    AnswerRefusedResponse,
    CheckoutRequest,
    CheckoutResponse,
    ListRequest,
    ListResponse,
    NewVersion,
    ReleaseRequest,
    ReleaseResponse,
    WriteKey,
)
from vault.authority.secret_draft_requests import SecretDraft, UpdateDraftRequest
from vault.authority.secret_requests import SecretTarget
from vault.errors import UntrustedRecord
from vault.wire import codec


class RequestSeal(Protocol):
    """The keyholder's seal, as this transport uses it: the request's details sealed before sending."""

    def seal_request(self, request_id: bytes, action: str) -> tuple[int, bytes]: ...


class DraftingSeal(RequestSeal, Protocol):
    """The release seal with a new value: it verifies the draft's rows and encrypts the version."""

    def admit(self, draft: CheckoutResponse) -> None: ...

    def new_version(self, write: WriteKey) -> NewVersion: ...


class Calls(Protocol):
    """``HttpsTransport``: a signed request, its decoded answer."""

    def call(self, name: str, body: object, request_id: bytes | None = None) -> object: ...


class HttpsCheckoutTransport:
    """Checkouts, reveals and client contexts through a team server (module docstring)."""

    def __init__(self, https: Calls) -> None:
        self.https = https
        self._sent: dict[int, tuple[bytes, CheckoutResponse]] = {}  # id(answer) -> its request id (a few)

    def __repr__(self) -> str:
        return "HttpsCheckoutTransport()"

    def call(self, request: CheckoutRequest, seal: RequestSeal) -> CheckoutResponse:
        request_id = secrets.token_bytes(codec.REQUEST_ID_BYTES)
        version, blob = seal.seal_request(request_id, request.action)
        sealed = dataclasses.replace(request, details_key_version=version, details_blob=blob)
        answer = self.https.call(f"checkouts.{request.action}", sealed, request_id)
        if not isinstance(answer, CheckoutResponse):
            raise UntrustedRecord("the server's answer is not a checkout's")
        if len(self._sent) >= 64:
            self._sent.clear()
        self._sent[id(answer)] = (request_id, answer)
        return answer

    def answer_refused(self, request: CheckoutRequest, response: CheckoutResponse, reason: str) -> None:
        """Tell the server that ``response`` (an answer of this transport's) was refused: it appends
        an ``answer-refused`` event naming the committed event. Best effort: the refusal stands
        whatever the server answers, and a response this transport did not receive names nothing."""
        sent = self._sent.pop(id(response), None)
        if sent is None or sent[1] is not response or request.client_id is None:
            return
        refusal = AnswerRefusedRequest(request.caller, request.client_id, response.seq, sent[0], reason)
        answer = self.https.call("checkouts.answer_refused", refusal)
        if not isinstance(answer, AnswerRefusedResponse):
            raise UntrustedRecord("the server's answer is not a refusal's")

    def release(self, request: ReleaseRequest, seal: DraftingSeal) -> ReleaseResponse:
        """A check-in or break through the server: the request's details sealed to a fresh request
        id, the envelope sent under it; the server appends the format-3 event and commits before
        it answers. A new value is drafted first (``_drafted``)."""
        if request.new_value:
            request = self._drafted(request, seal)
        request_id = secrets.token_bytes(codec.REQUEST_ID_BYTES)
        version, blob = seal.seal_request(request_id, request.action)
        sealed = dataclasses.replace(request, details_key_version=version, details_blob=blob)
        operation = "checkouts.checkin" if request.action == CHECKIN else "checkouts.break_checkout"
        answer = self.https.call(operation, sealed, request_id)
        if not isinstance(answer, ReleaseResponse):
            raise UntrustedRecord("the server's answer is not a release's")
        return answer

    def _drafted(self, request: ReleaseRequest, seal: DraftingSeal) -> ReleaseRequest:
        """``request`` with its new version: the server's ``secrets.update_draft`` (on record as a
        ``secret-view``; the password withheld) shown to the seal as a checkout's rows
        (``admit``: every row verified), the version encrypted for the draft's key and number
        (``new_version``), and the draft's digest, which the server recomputes at the commit
        (409 ``stale-draft``: the service retries the whole check-in)."""
        target = SecretTarget(request.caller, request.client_id, request.slug_tag, request.name_tag,
                              request.known_key_versions, request.org_pin)  # fmt: skip
        draft = self.https.call("secrets.update_draft", UpdateDraftRequest(target))
        if not isinstance(draft, SecretDraft):
            raise UntrustedRecord("the server's answer is not an update's draft")
        r, version, write = draft.rows, draft.rows.version, draft.rows.write_key
        if version is None or write is None:
            raise UntrustedRecord("the server's answer is not an update's draft")
        seal.admit(
            CheckoutResponse(
                seq=0, vault_id=r.vault_id, org_signing_public=r.org_signing_public, org_chain=r.org_chain,
                me=r.me, grant=r.grant, grant_signer=r.grant_signer, client=r.client, secret=r.secret,
                version=version, sealed_key=r.sealed_key, expires_us=None, flagged=r.secret.must_change,
            )
        )  # fmt: skip
        new = seal.new_version(WriteKey(write.record.version, write, draft.next_version))
        return dataclasses.replace(request, new_version=new, draft_digest=draft.digest)

    def list_checkouts(self, request: ListRequest) -> ListResponse:
        """The open checkouts the caller may see, through the server's ``checkouts.list``."""
        answer = self.https.call("checkouts.list", request)
        if not isinstance(answer, ListResponse):
            raise UntrustedRecord("the server's answer is not a checkout listing")
        return answer

    def context(self, request: ContextRequest) -> ContextResponse:
        answer = self.https.call("checkouts.context", request)
        if not isinstance(answer, ContextResponse):
            raise UntrustedRecord("the server's answer is not a client context")
        return answer
