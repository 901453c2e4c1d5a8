"""The in-process transport of the audit chain's verification (``audit.py`` is the log's).

``InProcessChainTransport(authority)`` hands each ``PointsRequest`` and ``PageRequest`` to
the chain's authority and returns its answer: no copy, no serialisation, no seam (a
verification lends the authority nothing of the keyholder's). Each call is one short read
unit on the authority's side.
"""

from __future__ import annotations

from vault.authority.audit_requests import EventPage, PageRequest
from vault.authority.audit_verify import AuditChainAuthority
from vault.authority.audit_verify_requests import ChainPoints, PointsRequest


class InProcessChainTransport:
    """Calls the audit chain's authority directly."""

    def __init__(self, authority: AuditChainAuthority) -> None:
        self.authority = authority

    def __repr__(self) -> str:
        return "InProcessChainTransport()"

    def points(self, request: PointsRequest) -> ChainPoints:
        return self.authority.points(request)

    def page(self, request: PageRequest) -> EventPage:
        return self.authority.page(request)
