"""``audit.signers``: the rows the chain's signers are decided from, for an engineer's machine with no database.

A read, like the pages of the log (``read_routes.py``): the body's caller must be the signer
(403, ``handlers.signer_only``); ``SignerAuthority`` then checks the caller as for a page
(present, certified under the organisation key the server pinned, active, of the key generation
the request names) and answers the rows as stored (``authority/audit_signers.py``). Nothing is
written but the request's nonce; the engineer's machine checks every row before it believes it
(``service/remote_audit.py``).
"""

from __future__ import annotations

from vault.authority.audit import AuditAuthority, CallerChecks
from vault.authority.audit_signers import SignerAuthority, SignerRows, SignersRequest
from vault.errors import InvalidInput
from vault.server.handlers import Call, Operations, signer_only
from vault.storage.engine import Store

ROUTE = "audit.signers"


class SignerRoutes:
    """The ``audit.signers`` route (module docstring)."""

    def __init__(self, store: Store, checks: CallerChecks) -> None:
        self.authority = SignerAuthority(store, AuditAuthority(store, checks))

    def __repr__(self) -> str:
        return "SignerRoutes()"

    def signers(self, call: Call) -> SignerRows:
        request = call.body
        if not isinstance(request, SignersRequest):
            raise InvalidInput("the body is not a request for the chain's signers")
        signer_only(call, request.caller)
        return self.authority.signers(request)

    def add_to(self, operations: Operations) -> None:
        operations.add(ROUTE, self.signers)
