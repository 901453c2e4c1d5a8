"""The in-process transport of the requests made without a session (``setup_requests.py``).

``InProcessSetupTransport(authority)`` hands each request value to the setup authority
and returns its answer: no copy, no serialisation. ``seal`` is the keyholder's
``InitSeal`` (vault/authority/setup.py), the in-process seam that makes the first admin's
keys inside the authority's unit of work (their id is given there); the team-server issue
replaces it with a signed request.
"""

from __future__ import annotations

from vault.authority.setup import InitSeal, SetupAuthority
from vault.authority.setup_requests import InitAnswer, InitRequest, PendingKeyRequest, PendingKeyRows


class InProcessSetupTransport:
    """Calls the setup authority directly."""

    def __init__(self, authority: SetupAuthority) -> None:
        self.authority = authority

    def __repr__(self) -> str:
        return "InProcessSetupTransport()"

    def initialise(self, request: InitRequest, seal: InitSeal) -> InitAnswer:
        return self.authority.initialise(request, seal)

    def pending_key(self, request: PendingKeyRequest) -> PendingKeyRows:
        return self.authority.pending_key(request)
