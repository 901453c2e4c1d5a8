"""The in-process transport of the purges' requests (``inprocess.py`` is the checkout's).

``InProcessPurgeTransport(purges, receipts)`` hands each request value to the purges'
authority (``PurgeAuthority``) or the receipts' (``ReceiptAuthority``) and returns the
answer: no copy, no serialisation. ``seal`` is the keyholder's ``PurgeSeal``
(vault/authority/purge.py), the in-process seam: it admits the draft before anything is
deleted and signs the receipt inside the authority's unit of work. The team-server issue
replaces it with signed requests.
"""

from __future__ import annotations

from vault.authority.purge import PurgeAuthority, PurgeSeal
from vault.authority.purge_receipts import ReceiptAuthority
from vault.authority.purge_requests import PurgeRequest, PurgeRows, ReceiptRequest, ReceiptRows


class InProcessPurgeTransport:
    """Calls the purges' and the receipts' authorities directly."""

    def __init__(self, purges: PurgeAuthority, receipts: ReceiptAuthority) -> None:
        self.purges, self.receipts_ = purges, receipts

    def __repr__(self) -> str:
        return "InProcessPurgeTransport()"

    def preview(self, request: PurgeRequest) -> PurgeRows:
        return self.purges.preview(request)

    def purge(self, request: PurgeRequest, seal: PurgeSeal) -> PurgeRows:
        return self.purges.purge(request, seal)

    def receipts(self, request: ReceiptRequest) -> ReceiptRows:
        return self.receipts_.receipts(request)

    def check(self, request: ReceiptRequest) -> ReceiptRows:
        return self.receipts_.check(request)
