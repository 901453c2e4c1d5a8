"""The in-process transport of the grants' requests.

``InProcessGrantTransport(authority)`` hands an admin's grant or revoke to the grants'
authority and returns its answer: no copy, no serialisation. ``seal`` is the keyholder's
``GrantSeal`` (vault/authority/grants.py), the in-process seam: inside the authority's unit
of work it verifies the draft, signs the revocations and the new grant (over the event's
number, known only there) and seals the client keys to the engineer granted. Only a
transport inside one process can carry it; the team-server issue replaces it with signed
requests that carry the signatures made before, against a draft the server commits to.
"""

from __future__ import annotations

from vault.authority.grant_list import GrantListAuthority
from vault.authority.grant_requests import (
    GrantListRequest,
    GrantListRows,
    GrantRequest,
    GrantRows,
    RevokeRequest,
    SweepRequest,
    SweepRows,
)
from vault.authority.grant_sweep import GrantSweepAuthority, SweepSeal
from vault.authority.grants import GrantAuthority, GrantSeal


class InProcessGrantTransport:
    """Calls the grants' authority directly."""

    def __init__(self, authority: GrantAuthority) -> None:
        self.authority = authority

    def __repr__(self) -> str:
        return "InProcessGrantTransport()"

    def grant(self, request: GrantRequest, seal: GrantSeal) -> GrantRows:
        return self.authority.grant(request, seal)

    def revoke(self, request: RevokeRequest, seal: GrantSeal) -> GrantRows:
        return self.authority.revoke(request, seal)


class InProcessGrantSweepTransport:
    """Calls the sweep's authority directly; ``seal`` is the keyholder's ``SweepSeal``."""

    def __init__(self, authority: GrantSweepAuthority) -> None:
        self.authority = authority

    def __repr__(self) -> str:
        return "InProcessGrantSweepTransport()"

    def sweep(self, request: SweepRequest, seal: SweepSeal) -> SweepRows:
        return self.authority.sweep(request, seal)


class InProcessGrantListTransport:
    """Calls the listing's authority directly (a read: no seal)."""

    def __init__(self, authority: GrantListAuthority) -> None:
        self.authority = authority

    def __repr__(self) -> str:
        return "InProcessGrantListTransport()"

    def list(self, request: GrantListRequest) -> GrantListRows:
        return self.authority.list(request)
