"""Purge previews and receipts over HTTPS: ``PurgeKeyholder``'s transport on the team server.

``HttpsPurgeTransport`` has the methods of ``InProcessPurgeTransport`` (``purge.py``).
``preview`` and ``receipts`` send the same request values as the signed ``purge.preview``
and ``purge.receipts`` requests (both an admin's: 403 to an engineer) and return the same
answers, which the keyholder verifies as in-process (the caller's row, the receipts'
signatures). ``purge`` (the keyholder admits the draft and signs the receipt inside the
authority's unit: a seal) and ``check`` (a receipt's verification, which records its event)
are not served yet (``ConfigurationError``).
"""

from __future__ import annotations

from typing import Any

from vault.authority.purge_requests import PurgeRequest, PurgeRows, ReceiptRequest, ReceiptRows
from vault.transport.https_calls import Calls, answer_of, not_served


class HttpsPurgeTransport:
    """``purge.preview`` and ``purge.receipts`` through a team server."""

    def __init__(self, https: Calls) -> None:
        self.https = https

    def __repr__(self) -> str:
        return "HttpsPurgeTransport()"

    def preview(self, request: PurgeRequest) -> PurgeRows:
        return answer_of(self.https, "purge.preview", request, PurgeRows)

    def receipts(self, request: ReceiptRequest) -> ReceiptRows:
        return answer_of(self.https, "purge.receipts", request, ReceiptRows)

    def purge(self, request: PurgeRequest, seal: Any) -> PurgeRows:
        raise not_served("purge.client")

    def check(self, request: ReceiptRequest) -> ReceiptRows:
        raise not_served("purge.verify_receipt")
