"""The in-process transport of the policies' requests (``inprocess.py`` is the checkout's).

``InProcessPolicyTransport(authority)`` hands each request value to the policies'
authority and returns its answer: no copy, no serialisation. ``seal`` is the keyholder's
``PolicySeal`` (vault/authority/policies.py), the in-process seam that signs a change
inside the authority's unit of work; the team-server issue replaces it with a signed
request.
"""

from __future__ import annotations

from vault.authority.policies import PolicyAuthority, PolicySeal
from vault.authority.policy_requests import PolicyRequest, PolicyRows


class InProcessPolicyTransport:
    """Calls the policies' authority directly."""

    def __init__(self, authority: PolicyAuthority) -> None:
        self.authority = authority

    def __repr__(self) -> str:
        return "InProcessPolicyTransport()"

    def read(self, request: PolicyRequest) -> PolicyRows:
        return self.authority.read(request)

    def write(self, request: PolicyRequest, seal: PolicySeal) -> PolicyRows:
        return self.authority.write(request, seal)
