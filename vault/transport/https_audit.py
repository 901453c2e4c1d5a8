"""Reading the audit log over HTTPS: ``AuditKeyholder``'s transport on the team server.

``HttpsAuditTransport`` has the methods of ``InProcessAuditTransport`` (``audit.py``). A stream
of pages is one signed request per page: ``page`` sends the ``PageRequest`` (which carries
the stream's cursor: ``after``, and from the second page the ``until`` the first one fixed)
to ``audit.log`` or ``audit.export`` by the reading it names, and returns the ``EventPage``;
the server reads each page in a short read unit of its own, so a slow reader holds no
transaction open between pages, as in-process. An engineer gets only their own events (the
authority's rule). ``report access`` pages are not carried: the report appends its event
before it streams, which the server does not do yet (``ConfigurationError``). ``head`` asks
``audit.head``: the chain's head, or a checkpoint's with its head event.

The keyholder recomputes every event's hash and checks the links and signatures before it
shows anything, whichever transport carried the page.

``HttpsChainTransport`` has the methods of ``InProcessChainTransport`` (``audit_verify.py``):
``points`` and ``page`` of ``audit verify``, as ``audit.points`` and ``audit.chain``, an admin's
only (``server/chain_routes.py``); ``ChainVerifier`` checks every row on the admin's machine.
"""

from __future__ import annotations

from vault.authority.audit_requests import EXPORT, LOG, EventPage, HeadAnswer, HeadRequest, PageRequest
from vault.authority.audit_verify_requests import ChainPoints, PointsRequest
from vault.transport.https_calls import Calls, answer_of, not_served

ROUTES = {LOG: "audit.log", EXPORT: "audit.export"}


class HttpsAuditTransport:
    """Pages of the audit log, and its head, through a team server."""

    def __init__(self, https: Calls) -> None:
        self.https = https

    def __repr__(self) -> str:
        return "HttpsAuditTransport()"

    def page(self, request: PageRequest) -> EventPage:
        route = ROUTES.get(request.query.action)
        if route is None:
            raise not_served("reports.access")
        return answer_of(self.https, route, request, EventPage)

    def head(self, request: HeadRequest) -> HeadAnswer:
        return answer_of(self.https, "audit.head", request, HeadAnswer)


class HttpsChainTransport:
    """The whole audit chain, for an admin's ``audit verify``, through a team server."""

    def __init__(self, https: Calls) -> None:
        self.https = https

    def __repr__(self) -> str:
        return "HttpsChainTransport()"

    def points(self, request: PointsRequest) -> ChainPoints:
        return answer_of(self.https, "audit.points", request, ChainPoints)

    def page(self, request: PageRequest) -> EventPage:
        return answer_of(self.https, "audit.chain", request, EventPage)
