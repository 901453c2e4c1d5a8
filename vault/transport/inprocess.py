"""The in-process transport: the keyholder's requests handed to the authority in one process.

``InProcessTransport(authority).call(request, seal)`` passes the request value as it is
and returns the authority's response value. ``seal`` is the acting engineer's
``EventSeal`` (vault/authority/checkouts.py): THE IN-PROCESS SEAM. It lends the
authority the keyholder's hands at append time (the event's signature over the
(vault id, seq, hash) that exist only inside the authority's transaction, the event's
details sealed with that seq); only a transport inside one process can carry it. The
team-server issue replaces it with signed requests and server checkpoints, and an
HTTPS transport that carries the request and response values alone.
"""

from __future__ import annotations

from vault.authority.checkouts import CheckoutAuthority, EventSeal
from vault.authority.requests import CheckoutRequest, CheckoutResponse


class InProcessTransport:
    """Calls the authority directly: no copy, no serialisation, the same values."""

    def __init__(self, authority: CheckoutAuthority) -> None:
        self.authority = authority

    def __repr__(self) -> str:
        return "InProcessTransport()"

    def call(self, request: CheckoutRequest, seal: EventSeal) -> CheckoutResponse:
        """Send one checkout request; its response, or the authority's refusal."""
        return self.authority.checkout(request, seal)
