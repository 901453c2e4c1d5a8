"""The in-process transport of the audit log's page requests (``secrets.py`` is the secrets').

``InProcessAuditTransport(authority)`` hands each ``PageRequest`` to the audit authority and
returns its ``EventPage``: no copy, no serialisation, no seam (reading the log lends the
authority nothing of the keyholder's). Each call is one short read unit on the authority's
side, so a stream held open between pages holds no transaction.
"""

from __future__ import annotations

from vault.authority.audit import AuditAuthority
from vault.authority.audit_requests import EventPage, HeadAnswer, HeadRequest, PageRequest


class InProcessAuditTransport:
    """Calls the audit authority directly."""

    def __init__(self, authority: AuditAuthority) -> None:
        self.authority = authority

    def __repr__(self) -> str:
        return "InProcessAuditTransport()"

    def page(self, request: PageRequest) -> EventPage:
        return self.authority.page(request)

    def head(self, request: HeadRequest) -> HeadAnswer:
        return self.authority.head(request)
