"""The in-process transport of the reports' requests (``status``, ``stale``).

``InProcessReportTransport(authority)`` hands each request value to the reports' authority
and returns its answer: no copy, no serialisation, and no seal (neither report writes an
event, so nothing is signed or sealed inside the authority's unit). The same values can
cross HTTPS when the team server comes.
"""

from __future__ import annotations

from vault.authority.report_requests import ReportRequest, ReportRows
from vault.authority.reports import ReportAuthority


class InProcessReportTransport:
    """Calls the reports' authority directly."""

    def __init__(self, authority: ReportAuthority) -> None:
        self.authority = authority

    def __repr__(self) -> str:
        return "InProcessReportTransport()"

    def status(self, request: ReportRequest) -> ReportRows:
        return self.authority.status(request)

    def stale(self, request: ReportRequest) -> ReportRows:
        return self.authority.stale(request)
