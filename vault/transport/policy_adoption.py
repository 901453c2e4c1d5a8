"""The in-process transport of an admin's removal's adoption of the policies and settings the
departing admin signed: the request value and the keyholder's seal handed to the authority,
inside the removal's unit of work (``unit``); only a transport inside one process can carry
either (the team-server issue replaces both)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from vault.authority.policy_adoption import AdoptDepartingRequest, AdoptionSeal, DepartingPolicyAuthority


class InProcessAdoptionTransport:
    """Calls the adoption's authority directly."""

    def __init__(self, authority: DepartingPolicyAuthority) -> None:
        self.authority = authority

    def __repr__(self) -> str:
        return "InProcessAdoptionTransport()"

    def adopt(self, request: AdoptDepartingRequest, seal: AdoptionSeal, unit: Session) -> int:
        return self.authority.adopt(request, seal, s=unit)
