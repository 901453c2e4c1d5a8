"""A data subject's search over HTTPS: ``SubjectKeyholder``'s transport on the team server.

``HttpsSubjectTransport`` has the method of ``InProcessSubjectTransport`` (``subjects.py``). In-process
the search runs inside the authority's unit (``SubjectSeal.search``); through the server it runs after
(docs/server.md, session 15, helper D; the values ``authority/purge_subject_values.py``):

1. ``purge.subject_search``, page after page (the clients after the last one answered, in id order):
   each page is on record on the server first (its format-3 ``subject-search`` event, naming the
   purpose and a purge's request reference), then answered with its data keys' server layer removed;
2. every page must be for the same vault, organisation key and caller, and the clients of all of
   them, put together, one each in id order (the keyholder checks that too);
3. the seal searches the whole (every row verified, everything opened on this machine: the server
   never sees the query); the answer is the whole with the last page's event (``find``, ``report``),
   or none (``select``: the search before a purge, whose own events follow).

The server decides which clients exist: one it leaves out is not searched (as in-process, where the
authority reads the clients). What the search finds is the keyholder's.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from vault.authority.purge_subject_values import FIND, PURGE, REPORT, SubjectPage, SubjectSearchRequest
from vault.authority.subjects import REPORT as REPORT_ACTION
from vault.authority.subjects import SELECT, SubjectRequest, SubjectRows
from vault.errors import InvalidInput, UntrustedRecord
from vault.transport.https_calls import Calls, answer_of

MAX_PAGES = 100_000  # a search that does not end is the server's fault


class HttpsSubjectTransport:
    """A subject's search through a team server, for ``purpose`` (``find``, ``report``, or ``purge`` under
    ``request_ref``)."""

    def __init__(self, https: Calls, purpose: str = FIND, request_ref: str = "") -> None:
        if purpose not in (FIND, REPORT, PURGE) or (purpose == PURGE) != bool(request_ref):
            raise InvalidInput("a search is to find or report (no reference) or to purge (a request reference)")
        self.https, self.purpose, self.request_ref = https, purpose, request_ref

    def __repr__(self) -> str:
        return f"HttpsSubjectTransport({self.purpose})"

    def search(self, request: SubjectRequest, seal: Any) -> SubjectRows:
        if (request.action == SELECT) != (self.purpose == PURGE) or (request.action == REPORT_ACTION) != (
            self.purpose == REPORT
        ):
            raise InvalidInput("the search asked for is not the one this transport sends")
        first: SubjectRows | None = None
        clients: list[Any] = []
        after = 0
        for _ in range(MAX_PAGES):
            asked = SubjectSearchRequest(request.caller, request.org_pin, self.purpose, self.request_ref, after)
            page = answer_of(self.https, "purge.subject_search", asked, SubjectPage)
            rows = page.rows
            if first is None:
                first = rows
            elif (rows.vault_id, rows.org_signing_public, rows.org_chain, rows.me) != (
                first.vault_id, first.org_signing_public, first.org_chain, first.me
            ):  # fmt: skip
                raise UntrustedRecord("the search's pages are not of one vault and caller")
            if rows.seq < 1 or any(c.client_id <= after for c in rows.clients) or (page.more and not rows.clients):
                raise UntrustedRecord("the search's page is not the one asked for")
            clients.extend(rows.clients)
            if not page.more:
                whole = dataclasses.replace(first, seq=0, clients=tuple(clients))
                seal.search(whole)  # every row verified and searched on this machine
                return dataclasses.replace(whole, seq=0 if request.action == SELECT else rows.seq)
            after = rows.clients[-1].client_id
        raise UntrustedRecord("the search's pages do not end")
