"""The clients' reads over HTTPS: the keyholder's ``ClientTransport`` on the team server.

``HttpsClientTransport.show(request, seal)`` / ``list(request, seal)`` is what
``ClientKeyholder`` calls in-process on ``InProcessClientTransport``; here the server appends
the ``client-view`` / ``client-list`` event (format 3) and commits it before it answers
(``server/client_routes.py``), and the keyholder's seal admits the answer (its number set aside)
after: a refused answer raises here, its event already on record (docs/server.md §4,
"admitting after the event"). ``ClientKeyholder`` then checks that the answer is the draft it
admitted, numbered. ``clients.add`` (a draft and a commit) is not served yet.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from vault.authority.client_requests import ClientRows, ListRequest, ShowRequest
from vault.errors import UntrustedRecord
from vault.transport.https_calls import Calls


class ClientSeal(Protocol):
    """The keyholder's ``Seal``: verify (and open) the answer."""

    def admit(self, draft: ClientRows) -> None: ...


class HttpsClientTransport:
    """``client show`` and ``client list`` through a team server (module docstring)."""

    def __init__(self, https: Calls) -> None:
        self.https = https

    def __repr__(self) -> str:
        return "HttpsClientTransport()"

    def show(self, request: ShowRequest, seal: ClientSeal) -> ClientRows:
        return self._admitted("clients.show", request, seal)

    def list(self, request: ListRequest, seal: ClientSeal) -> ClientRows:
        return self._admitted("clients.list", request, seal)

    def _admitted(self, operation: str, request: object, seal: ClientSeal) -> ClientRows:
        answer = self.https.call(operation, request)
        if not isinstance(answer, ClientRows) or answer.seq < 1:
            raise UntrustedRecord(f"the server's answer is not a committed {operation} answer")
        seal.admit(dataclasses.replace(answer, seq=0))  # raises if it does not verify
        return answer
