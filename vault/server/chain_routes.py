"""``audit.points`` and ``audit.chain``: the whole audit chain for an admin's ``audit verify`` off the database.

The two requests of ``audit verify`` (``authority/audit_verify_requests.py``: the recorded head,
the newest event and a few anchor events; then the whole chain a page at a time, by keyset on
``seq`` up to the end the verifier names), answered by the same ``AuditChainAuthority`` the
in-process transport calls, each in a short read unit of its own (no lock of the audit head, no
transaction held between pages). The admin's machine checks every event, link, signature and key
lifetime (``keyholder/auditverify.ChainVerifier``, ``service/remote_chain.py``).

**An admin's only.** In-process any engineer may verify the chain, since the database is theirs to
read anyway; through the server an engineer receives rows of the clients they hold a live grant
for and nothing else, not even counts, so the whole chain (every engineer's events, every client's
id) is never answered to one. Each handler, before the authority reads anything: the body is the
route's value, its caller is the signer (403, ``handlers.signer_only``), the signer is an admin (403
``AccessDenied``), the reading is ``audit-verify`` (400). The authority then checks the caller again
(certified, active, of the key generation named) in its own read unit. Nothing is written but the
request's nonce, and no event: as in-process, verifying the chain appends nothing.
"""

from __future__ import annotations

from vault.authority.audit_requests import EventPage, PageRequest
from vault.authority.audit_verify import AuditChainAuthority
from vault.authority.audit_verify_requests import VERIFY, ChainPoints, PointsRequest
from vault.authority.policies_caller import CallerChecks, CallerGate
from vault.errors import AccessDenied, InvalidInput
from vault.server.handlers import Call, Operations, signer_only
from vault.storage.engine import Store
from vault.storage.rows import ROLE_ADMIN

POINTS, CHAIN = "audit.points", "audit.chain"


def _admin_only(call: Call, caller: object, action: object) -> None:
    """The checks made before the authority reads a row (module docstring)."""
    signer_only(call, caller)
    if call.caller.me.role != ROLE_ADMIN:
        raise AccessDenied(
            f"{call.caller.me.name!r} is not an admin: the whole chain is verified by an admin",
            hint="`credvault audit verify` through the server checks your own events and the signed head",
        )
    if action != VERIFY:
        raise InvalidInput("this route reads the chain for `audit verify` only")


class ChainRoutes:
    """The two routes of an admin's ``audit verify`` through the server (module docstring)."""

    def __init__(self, store: Store, checks: CallerChecks) -> None:
        self.authority = AuditChainAuthority(store, CallerGate(checks))

    def __repr__(self) -> str:
        return "ChainRoutes()"

    def points(self, call: Call) -> ChainPoints:
        request = call.body
        if not isinstance(request, PointsRequest):
            raise InvalidInput("the body is not a request for the chain's head")
        _admin_only(call, request.caller, request.action)
        return self.authority.points(request)

    def page(self, call: Call) -> EventPage:
        request = call.body
        if not isinstance(request, PageRequest):
            raise InvalidInput("the body is not a page of the audit chain")
        _admin_only(call, request.query.caller, request.query.action)
        return self.authority.page(request)

    def add_to(self, operations: Operations) -> None:
        operations.add(POINTS, self.points)
        operations.add(CHAIN, self.page)
