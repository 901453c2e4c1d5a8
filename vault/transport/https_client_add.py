"""A new client over HTTPS: ``ClientAddKeyholder``'s transport on the team server.

``HttpsClientAddTransport.add(request, seal)`` is what the keyholder calls in-process on
``InProcessClientAddTransport``: ``clients.add_draft`` reserves the new client's id and answers
the ``AddDraft`` the in-process seal is shown; the seal makes the client for it (verifying the
draft first: a refusal sends nothing more), makes its audit-key ring and seals the event's
details to a fresh request id; ``clients.add`` commits under that id. The server checks the
signatures under the admin's certified key before it writes (``authority/client_add_drafts.py``)
and answers the rows as stored, which the keyholder checks as in-process. A stale draft (409
``stale-draft``: the reservation lapsed) writes nothing; the seal makes one client per request,
so the caller adds again.
"""

from __future__ import annotations

import secrets
from typing import Protocol

from vault.authority.client_add_values import ClientCommit, ClientDraft
from vault.authority.client_requests import CLIENT_CREATE, AddAnswer, AddDraft, AddRequest, NewClient
from vault.errors import UntrustedRecord
from vault.transport.https_calls import Calls, answer_of
from vault.wire import codec


class ClientAddWriteSeal(Protocol):
    def make(self, draft: AddDraft) -> NewClient: ...
    def audit_keys(self) -> bytes: ...
    def seal_request(self, request_id: bytes, action: str) -> tuple[int, bytes]: ...


class HttpsClientAddTransport:
    """``clients.add`` through a team server (module docstring)."""

    def __init__(self, https: Calls) -> None:
        self.https = https

    def __repr__(self) -> str:
        return "HttpsClientAddTransport()"

    def add(self, request: AddRequest, seal: ClientAddWriteSeal) -> AddAnswer:
        draft = answer_of(self.https, "clients.add_draft", request, ClientDraft)
        made = seal.make(draft.draft)  # the draft verified first: a refusal sends nothing more
        audit_keys = seal.audit_keys()
        request_id = secrets.token_bytes(codec.REQUEST_ID_BYTES)
        version, blob = seal.seal_request(request_id, CLIENT_CREATE)
        commit = ClientCommit(request.caller, request.slug_tag, request.org_pin, draft.draft.client_id, made,
                              audit_keys, version, blob, draft.digest)  # fmt: skip
        answer = self.https.call("clients.add", commit, request_id)
        if not isinstance(answer, AddAnswer):
            raise UntrustedRecord("the server's answer is not a clients.add answer")
        return answer
