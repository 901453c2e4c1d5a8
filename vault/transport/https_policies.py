"""Client policies read over HTTPS: ``PolicyKeyholder``'s transport on the team server.

``HttpsPolicyTransport`` has the methods of ``InProcessPolicyTransport`` (``policies.py``).
``read`` sends the same ``PolicyRequest`` as the signed ``policies.get`` (one client's stored
policy: an admin, or an engineer holding a live grant for it; else 404, as in-process) or
``policies.unsigned`` request (every stored policy: an admin's), by the action it names, and
returns the same ``PolicyRows``; the keyholder verifies the policy's admin signature before
it believes it. ``write`` (a policy signed inside the authority's unit: a seal) is not served
yet (``ConfigurationError``).
"""

from __future__ import annotations

from typing import Any

from vault.authority.policy_requests import GET, UNSIGNED, PolicyRequest, PolicyRows
from vault.transport.https_calls import Calls, answer_of, not_served

ROUTES = {GET: "policies.get", UNSIGNED: "policies.unsigned"}


class HttpsPolicyTransport:
    """``policies.get`` and ``policies.unsigned`` through a team server."""

    def __init__(self, https: Calls) -> None:
        self.https = https

    def __repr__(self) -> str:
        return "HttpsPolicyTransport()"

    def read(self, request: PolicyRequest) -> PolicyRows:
        route = ROUTES.get(request.action)
        if route is None:
            raise not_served(f"a policy request of action {request.action!r}")
        return answer_of(self.https, route, request, PolicyRows)

    def write(self, request: PolicyRequest, seal: Any) -> PolicyRows:
        raise not_served("policies.set")
