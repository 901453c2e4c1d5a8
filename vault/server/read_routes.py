"""The reads the team server answers: a request value in, a value out; no seal, no event but a release's.

docs/server.md §2 and §8 step 6 (the first slice, before drafts and id reservations). Each
route runs the same authority class the in-process transport calls (``vault/transport/*.py``),
built here over the server's store and ``ServerChecks`` (the organisation key the server
pinned, the certificate, grant and policy checks the keyholder also uses), so an answer
through the server is the value the keyholder gets in-process:

* ``checkouts.list`` (``CheckoutListAuthority``: an admin, every open checkout; an
  engineer, their own);
* ``grants.list`` (``GrantListAuthority``: an admin, every grant row; an engineer, their own,
  whatever the request names);
* ``reports.status`` and ``reports.stale`` (``ReportAuthority``: an admin's); on a layered
  vault each appends its ``report-status`` / ``report-stale`` event naming the versions whose
  data keys it releases, then releases them (``releases.ListingRelease``);
* ``keys.list`` (an admin's) and ``keys.versions`` (an admin, or an engineer holding the
  head of their grant ledger for the client: else 404, as in-process) (``RotationReads``);
* ``audit.log`` and ``audit.export``: one page per request, the page request carrying the
  stream's cursor (``after``, ``until``); an engineer reads only their own events
  (``AuditAuthority``). ``report access`` pages (action ``report-access``) are refused here:
  an admin's report reads the reveals as its log and compares on ``reports.access``
  (``access_routes.py``), which appends the report's events;
* ``audit.head``: the chain's head (any signed engineer), or a checkpoint's (the caller's);
* ``policies.get`` (an admin, or an engineer holding a live grant for the client: else 404,
  as in-process) and ``policies.unsigned`` (an admin's) (``PolicyAuthority.read``);
* ``purge.preview`` and ``purge.receipts`` (an admin's: ``PurgeAuthority.preview``,
  ``ReceiptAuthority.receipts``).

Before the authority reads anything, every handler checks that the body's ``caller`` is the
signer (else 403 ``AccessDenied``: ``handlers.signer_only``) and that the signer's role may
call the operation at all (``permissions.OPERATIONS``: an admin's operation answers 403 to an
engineer, whatever the authority would say). The authorities then check the caller again in
their own read unit, and every field before any SQL (400). None of these writes a row (but
a layered vault's release event, in a unit of its own after the read): the request's nonce is
stored by the authenticator in a short transaction of its own.

Not served here: the reads whose event a listing appends after the read
(``listing.append_after_read``: ``secrets.list``, ``clients.list``/``show``,
``engineers.list``, ``report access``/``at-risk``): their format-3 event needs the route in
``eventrequest.ROUTE_ACTIONS`` and the verifier's check of the kept body, still to come.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from vault.authority.audit import AuditAuthority
from vault.authority.audit_requests import (
    CHECKPOINT,
    EXPORT,
    HEAD,
    LOG,
    EventPage,
    HeadAnswer,
    HeadRequest,
    PageRequest,
)
from vault.authority.checkout_list import CheckoutListAuthority
from vault.authority.grant_list import GrantListAuthority
from vault.authority.grant_requests import GrantListRequest, GrantListRows
from vault.authority.permissions import ADMIN, OPERATIONS
from vault.authority.policies import PolicyAuthority
from vault.authority.policy_requests import GET, UNSIGNED, PolicyRequest, PolicyRows
from vault.authority.purge import PurgeAuthority
from vault.authority.purge_receipts import ReceiptAuthority
from vault.authority.purge_requests import PurgeRequest, PurgeRows, ReceiptRequest, ReceiptRows
from vault.authority.report_requests import ReportRequest, ReportRows
from vault.authority.reports import ReportAuthority
from vault.authority.requests import ListRequest, ListResponse
from vault.authority.rotation_reads import KeyVersionList, RotationList, RotationReads
from vault.authority.rotation_requests import ListRequest as RotationListRequest
from vault.authority.rotation_requests import VersionsRequest
from vault.errors import AccessDenied, InvalidInput
from vault.server.checks import ServerChecks
from vault.server.handlers import Call, Operations, signer_only
from vault.server.releases import ListingRelease
from vault.storage.engine import Store
from vault.storage.rows import ROLE_ADMIN


class NoEvents:
    """The recorder the read authorities are built with here: a read appends nothing (a call is a bug)."""

    def __repr__(self) -> str:
        return "NoEvents()"

    def append(self, s: Session, action: str, **fields: Any) -> int:
        raise InvalidInput("a read route appends no event")


def _body(call: Call, cls: type) -> object:
    if not isinstance(call.body, cls):  # the codec decoded the route's own value: a bug otherwise
        raise InvalidInput("the body is not this route's request")
    return call.body


def _role(call: Call, name: str) -> None:
    """An admin's operation (``permissions.OPERATIONS``) is refused to an engineer, first thing."""
    noun, _, operation = name.partition(".")
    if OPERATIONS[noun][operation] == ADMIN and call.caller.me.role != ROLE_ADMIN:
        raise AccessDenied(f"{call.caller.me.name!r} is not an admin", hint="ask an admin to do this")


class ReadRoutes:
    """The read routes' handlers over the server's read authorities (module docstring)."""

    def __init__(
        self,
        checkouts: CheckoutListAuthority,
        grants: GrantListAuthority,
        reports: ReportAuthority,
        keys: RotationReads,
        audit: AuditAuthority,
        policies: PolicyAuthority,
        purges: PurgeAuthority,
        receipts: ReceiptAuthority,
        release: ListingRelease | None = None,
    ) -> None:
        self.checkouts, self.grants, self.reports, self.keys, self.audit = checkouts, grants, reports, keys, audit
        self.policies, self.purges, self.receipts = policies, purges, receipts
        self.release = release  # on a layered vault: the checkout listing's and reports' keys, after their event

    def __repr__(self) -> str:
        return "ReadRoutes()"

    def list_checkouts(self, call: Call) -> ListResponse:
        request = _body(call, ListRequest)
        assert isinstance(request, ListRequest)
        self._checked(call, "checkouts.list", request.caller)
        response = self.checkouts.list(request)
        return response if self.release is None else self.release.checkout_list(call, response)

    def list_grants(self, call: Call) -> GrantListRows:
        request = _body(call, GrantListRequest)
        assert isinstance(request, GrantListRequest)
        self._checked(call, "grants.list", request.caller)
        return self.grants.list(request)

    def status(self, call: Call) -> ReportRows:
        request = _body(call, ReportRequest)
        assert isinstance(request, ReportRequest)
        self._checked(call, "reports.status", request.caller)
        rows = self.reports.status(request)
        return rows if self.release is None else self.release.report(call, rows)

    def stale(self, call: Call) -> ReportRows:
        request = _body(call, ReportRequest)
        assert isinstance(request, ReportRequest)
        self._checked(call, "reports.stale", request.caller)
        rows = self.reports.stale(request)
        return rows if self.release is None else self.release.report(call, rows)

    def list_rotations(self, call: Call) -> RotationList:
        request = _body(call, RotationListRequest)
        assert isinstance(request, RotationListRequest)
        self._checked(call, "keys.list", request.caller)
        return self.keys.list(request)

    def versions(self, call: Call) -> KeyVersionList:
        request = _body(call, VersionsRequest)
        assert isinstance(request, VersionsRequest)
        self._checked(call, "keys.versions", request.caller)
        return self.keys.versions(request)

    def log(self, call: Call) -> EventPage:
        return self._page(call, "audit.log", LOG)

    def export(self, call: Call) -> EventPage:
        return self._page(call, "audit.export", EXPORT)

    def head(self, call: Call) -> HeadAnswer:
        request = _body(call, HeadRequest)
        assert isinstance(request, HeadRequest)
        if request.action == CHECKPOINT and request.caller is not None:
            signer_only(call, request.caller)
        elif request.action != HEAD or request.caller is not None:
            raise InvalidInput("a head request names no caller; a checkpoint's names its caller")
        return self.audit.head(request)

    def policy(self, call: Call) -> PolicyRows:
        return self._policies(call, "policies.get", GET)

    def unsigned(self, call: Call) -> PolicyRows:
        return self._policies(call, "policies.unsigned", UNSIGNED)

    def preview(self, call: Call) -> PurgeRows:
        request = _body(call, PurgeRequest)
        assert isinstance(request, PurgeRequest)
        self._checked(call, "purge.preview", request.caller)
        return self.purges.preview(request)

    def list_receipts(self, call: Call) -> ReceiptRows:
        request = _body(call, ReceiptRequest)
        assert isinstance(request, ReceiptRequest)
        self._checked(call, "purge.receipts", request.caller)
        return self.receipts.receipts(request)

    def _policies(self, call: Call, name: str, action: str) -> PolicyRows:
        request = _body(call, PolicyRequest)
        assert isinstance(request, PolicyRequest)
        if request.action != action:
            raise InvalidInput(f"this route is {action!r}, the request names another action")
        self._checked(call, name, request.caller)
        return self.policies.read(request)

    def _page(self, call: Call, name: str, action: str) -> EventPage:
        request = _body(call, PageRequest)
        assert isinstance(request, PageRequest)
        if request.query.action != action:
            raise InvalidInput(f"this route reads {action!r} pages, the request names another reading")
        self._checked(call, name, request.query.caller)
        return self.audit.page(request)

    @staticmethod
    def _checked(call: Call, name: str, caller: object) -> None:
        signer_only(call, caller)
        _role(call, name)

    def add_to(self, operations: Operations) -> None:
        operations.add("checkouts.list", self.list_checkouts)
        operations.add("grants.list", self.list_grants)
        operations.add("reports.status", self.status)
        operations.add("reports.stale", self.stale)
        operations.add("keys.list", self.list_rotations)
        operations.add("keys.versions", self.versions)
        operations.add("audit.log", self.log)
        operations.add("audit.export", self.export)
        operations.add("audit.head", self.head)
        operations.add("policies.get", self.policy)
        operations.add("policies.unsigned", self.unsigned)
        operations.add("purge.preview", self.preview)
        operations.add("purge.receipts", self.list_receipts)


def read_routes(
    store: Store,
    checks: ServerChecks,
    checkouts: CheckoutListAuthority,
    clock: Callable[[], dt.datetime],
    release: ListingRelease | None = None,
) -> ReadRoutes:
    """The read routes over ``store``, each authority checking callers with ``checks``;
    ``release``: on a layered vault, the checkout listing's and the reports' data keys after their event."""
    return ReadRoutes(
        checkouts,
        GrantListAuthority(store, checks, clock),
        ReportAuthority(store, checks, clock),
        RotationReads(store, checks),
        AuditAuthority(store, checks),
        PolicyAuthority(store, checks, NoEvents(), clock),
        PurgeAuthority(store, checks, NoEvents(), clock),
        ReceiptAuthority(store, checks),
        release,
    )
