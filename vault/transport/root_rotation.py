"""The in-process transport of a root rotation's request.

``InProcessRootTransport(authority)`` hands the request value to the root rotation's
authority and returns its answer: no copy, no serialisation. ``seal`` is the keyholder's
hands inside the authority's unit of work (make the new bundle for the draft it is shown,
re-seal each page of client keys it is handed), the in-process seam; a rotation made
inside an admin's removal passes the removal's unit of work (``unit``). Only a transport
inside one process can carry either; the team-server issue replaces both.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from vault.authority.root_rotation import RootRotationAuthority, RootSeal
from vault.authority.root_rotation_requests import RootRotated, RootRotateRequest


class InProcessRootTransport:
    """Calls the root rotation's authority directly."""

    def __init__(self, authority: RootRotationAuthority) -> None:
        self.authority = authority

    def __repr__(self) -> str:
        return "InProcessRootTransport()"

    def rotate_root(self, request: RootRotateRequest, seal: RootSeal, unit: Session | None = None) -> RootRotated:
        return self.authority.rotate(request, seal, s=unit)
