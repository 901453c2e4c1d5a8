"""The in-process transport of the client-key rotation's requests.

``InProcessRotationTransport(authority)`` hands each request value to the rotation's
authority and returns its answer: no copy, no serialisation. ``open`` carries a rotation's
basis (read once; plain values, like the other requests). ``seal`` is the keyholder's
hands inside the authority's unit of work (make the new client key for the draft it is
shown; re-wrap the page it is handed), the in-process seam; a start made inside an
engineer's removal passes the removal's unit of work (``unit``). Only a transport inside
one process can carry either; the team-server issue replaces both.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from vault.authority.rotation import RotationAuthority, StartSeal
from vault.authority.rotation_batches import RewrapSeal
from vault.authority.rotation_requests import (
    BatchDone,
    BatchRequest,
    Finished,
    FinishRequest,
    KeyVersionRow,
    ListRequest,
    OpenRequest,
    RotationBasis,
    RotationRow,
    Started,
    StartRequest,
    VersionsRequest,
)


class InProcessRotationTransport:
    """Calls the rotation's authority directly."""

    def __init__(self, authority: RotationAuthority) -> None:
        self.authority = authority

    def __repr__(self) -> str:
        return "InProcessRotationTransport()"

    def start(self, request: StartRequest, seal: StartSeal, unit: Session | None = None) -> Started:
        return self.authority.start(request, seal, s=unit)

    def open(self, request: OpenRequest) -> RotationBasis:
        return self.authority.open(request)

    def rewrap(self, request: BatchRequest, seal: RewrapSeal) -> BatchDone:
        return self.authority.rewrap(request, seal)

    def finish(self, request: FinishRequest) -> Finished:
        return self.authority.finish(request)

    def list(self, request: ListRequest) -> tuple[RotationRow, ...]:
        return self.authority.list(request)

    def versions(self, request: VersionsRequest) -> tuple[KeyVersionRow, ...]:
        return self.authority.versions(request)
