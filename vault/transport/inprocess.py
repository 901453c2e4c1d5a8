"""The in-process transport: the keyholder's requests handed to the authority in one process.

``InProcessTransport(authority, checkins, listing)`` passes each request value as it is
to its authority and returns the response value: ``call`` a checkout or reveal
(``CheckoutRequest``), ``release`` a check-in or break (``ReleaseRequest``; its seal
also encrypts a new version), ``list_checkouts`` the open checkouts (``ListRequest``),
``context`` the rows a client's key context is built on (``ContextRequest``). ``seal`` is the acting engineer's
``EventSeal`` (vault/authority/checkouts.py): THE IN-PROCESS SEAM. It lends the
authority the keyholder's hands at append time (the event's signature over the
(vault id, seq, hash) that exist only inside the authority's transaction, the event's
details sealed with that seq); only a transport inside one process can carry it. The
team-server issue replaces it with signed requests and server checkpoints, and an
HTTPS transport that carries the request and response values alone.
"""

from __future__ import annotations

from vault.authority.checkins import CheckinAuthority, ReleaseSeal
from vault.authority.checkout_context import ContextAuthority, ContextRequest, ContextResponse
from vault.authority.checkout_list import CheckoutListAuthority
from vault.authority.checkouts import CheckoutAuthority, EventSeal
from vault.authority.requests import (
    CheckoutRequest,
    CheckoutResponse,
    ListRequest,
    ListResponse,
    ReleaseRequest,
    ReleaseResponse,
)


class InProcessTransport:
    """Calls the authority directly: no copy, no serialisation, the same values."""

    def __init__(
        self,
        authority: CheckoutAuthority,
        checkins: CheckinAuthority | None = None,
        listing: CheckoutListAuthority | None = None,
        contexts: ContextAuthority | None = None,
    ) -> None:
        self.authority = authority
        self.checkins = checkins
        self.listing = listing
        self.contexts = contexts

    def __repr__(self) -> str:
        return "InProcessTransport()"

    def call(self, request: CheckoutRequest, seal: EventSeal) -> CheckoutResponse:
        """Send one checkout request; its response, or the authority's refusal."""
        return self.authority.checkout(request, seal)

    def answer_refused(self, request: CheckoutRequest, response: CheckoutResponse, reason: str) -> None:
        """Nothing to record in-process: the keyholder admitted the draft before the event was
        written (``EventSeal.admit``), so an answer it refuses here was never the one recorded."""

    def release(self, request: ReleaseRequest, seal: ReleaseSeal) -> ReleaseResponse:
        """Send one check-in or break; its response (after the commit), or the refusal."""
        if self.checkins is None:
            raise TypeError("this transport carries no check-in")
        return self.checkins.release(request, seal)

    def context(self, request: ContextRequest) -> ContextResponse:
        """Ask for the rows a client's key context is built on (a read: nothing is written)."""
        if self.contexts is None:
            raise TypeError("this transport carries no client context")
        return self.contexts.read(request)

    def list_checkouts(self, request: ListRequest) -> ListResponse:
        """Ask for the open checkouts the caller may see."""
        if self.listing is None:
            raise TypeError("this transport carries no listing")
        return self.listing.list(request)
