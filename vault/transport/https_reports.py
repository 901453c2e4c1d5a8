"""The reports over HTTPS: ``ReportKeyholder``'s transport on the team server.

``HttpsReportTransport`` has the methods of ``InProcessReportTransport`` (``reports.py``):
``status`` and ``stale`` send the same ``ReportRequest`` as the signed ``reports.status`` /
``reports.stale`` request and decode the same ``ReportRows``. Both reports are an admin's:
the server refuses an engineer (403) before the authority reads a row but the caller's, and
the keyholder verifies the policies, settings and client keys it is given, then opens the
slugs and names, as in-process. Neither report writes an event in-process; through the
server, on a layered vault, each appends one naming the versions whose data keys it releases
(``vault/server/releases.py``) before it answers.
"""

from __future__ import annotations

from vault.authority.access_report_values import AccessAnswer, AccessReportRequest
from vault.authority.report_requests import ReportRequest, ReportRows
from vault.transport.https_calls import Calls, answer_of


class HttpsReportTransport:
    """``reports.status`` and ``reports.stale`` through a team server."""

    def __init__(self, https: Calls) -> None:
        self.https = https

    def __repr__(self) -> str:
        return "HttpsReportTransport()"

    def status(self, request: ReportRequest) -> ReportRows:
        return answer_of(self.https, "reports.status", request, ReportRows)

    def stale(self, request: ReportRequest) -> ReportRows:
        return answer_of(self.https, "reports.stale", request, ReportRows)

    def access(self, request: AccessReportRequest) -> AccessAnswer:
        """``reports.access``: a report's start, or a page of reveals' versions (server/access_routes.py)."""
        return answer_of(self.https, "reports.access", request, AccessAnswer)
