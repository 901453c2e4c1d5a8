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
event; no new value yet), ``list_checkouts`` the ``checkouts.list`` route, and ``context`` the
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
    ReleaseRequest,
    ReleaseResponse,
)
from vault.errors import InvalidInput, UntrustedRecord
from vault.wire import codec


class RequestSeal(Protocol):
    """The keyholder's seal, as this transport uses it: the request's details sealed before sending."""

    def seal_request(self, request_id: bytes, action: str) -> tuple[int, bytes]: ...


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

    def release(self, request: ReleaseRequest, seal: RequestSeal) -> ReleaseResponse:
        """A check-in or break through the server: the request's details sealed to a fresh request
        id, the envelope sent under it; the server appends the format-3 event and commits before
        it answers. A new value does not go through the server yet: refused here, nothing sent."""
        if request.new_value:
            raise InvalidInput(
                "a check-in with a new value does not go through the team server yet",
                hint="check in without a new password, then change the secret",
            )
        request_id = secrets.token_bytes(codec.REQUEST_ID_BYTES)
        version, blob = seal.seal_request(request_id, request.action)
        sealed = dataclasses.replace(request, details_key_version=version, details_blob=blob)
        operation = "checkouts.checkin" if request.action == CHECKIN else "checkouts.break_checkout"
        answer = self.https.call(operation, sealed, request_id)
        if not isinstance(answer, ReleaseResponse):
            raise UntrustedRecord("the server's answer is not a release's")
        return answer

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
