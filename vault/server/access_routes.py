"""``reports.access`` on the team server: an admin's ``report access`` / ``report at-risk``.

The admin's machine reads the engineer's reveal events as its audit log (``audit.log``, every
page verified there) and asks this route for the rest (``authority/access_report_values.py``):

* the report's start (no reveals named): the caller an admin and the engineer named checked
  (``AccessReportAuthority``), then the report's format-3 event (``report-access`` or
  ``report-at-risk``, naming the engineer, keeping the signed request) appended and committed,
  the request's nonce in its unit, before any reveal is read: in-process the report's event is
  appended first too;
* a page of reveals: the versions to compare read, then an event of the report's action naming
  the engineer and, on a layered vault, every version whose data key the answer carries
  (``released``: ``[client, secret, version]``, sorted); only after its unit committed does the
  layer come off, from those versions only (no log, no key). A page that names nothing to
  release still appends its event: the page is a reading of the log on record.

The body's caller must be the signer (403, nothing read); an engineer is refused (403) before any
row but the caller's is read, so nothing is appended or released for them. Without a server
signing key the route answers 503 (``NO_SERVER_KEY``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

from vault.authority.access_report import AccessReportAuthority
from vault.authority.access_report_values import AccessAnswer, AccessReportRequest, ComparedSecret
from vault.authority.checkout_events import UnitCore
from vault.authority.permissions import ADMIN, OPERATIONS
from vault.authority.policies_caller import CallerChecks
from vault.authority.serverjournal import ServerJournal, ServerSeal
from vault.errors import AccessDenied, ConfigurationError, DecryptionFailed, InvalidInput
from vault.server.handlers import Call, Operations, signer_only
from vault.server.layer import ServerLayer, is_layered
from vault.server.problems import NO_SERVER_KEY
from vault.storage.engine import Store
from vault.storage.rows import ROLE_ADMIN

ROUTE = "reports.access"


class AccessRoutes:
    """``reports.access`` over the server's store (module docstring)."""

    def __init__(
        self,
        store: Store,
        checks: CallerChecks,
        seal: ServerSeal | None,
        clock: Callable[[], dt.datetime],
        layer: ServerLayer | None = None,
    ) -> None:
        self.store, self.seal, self.clock, self.layer = store, seal, clock, layer
        self.authority = AccessReportAuthority(store, checks, clock)

    def __repr__(self) -> str:
        return f"AccessRoutes({self.seal!r}, layered={self.layer is not None})"

    def access(self, call: Call) -> AccessAnswer:
        request = call.body
        if not isinstance(request, AccessReportRequest):
            raise InvalidInput("the body is not this route's request")
        signer_only(call, request.caller)
        noun, _, operation = ROUTE.partition(".")
        if OPERATIONS[noun][operation] == ADMIN and call.caller.me.role != ROLE_ADMIN:
            raise AccessDenied(f"{call.caller.me.name!r} is not an admin", hint="ask an admin to do this")
        if self.seal is None:
            raise ConfigurationError(NO_SERVER_KEY, hint="start the server with --server-key FILE")
        answer = self.authority.read(request)
        released = sorted(
            {
                (secret.client_id, secret.id, version.version)
                for secret in answer.secrets
                for version in secret.versions
                if is_layered(version.wrapped_dek)
            }
        )
        public: dict[str, Any] = {"engineer": request.engineer}
        if request.items:
            public["reveals"] = len(request.items)
        if released:
            public["released"] = [list(row) for row in released]
        me = call.caller.me
        assert call.recorded is not None
        journal = ServerJournal(UnitCore(self.clock), self.seal)
        with self.store.transaction() as s:
            if call.nonce is not None:
                call.nonce(s)
            seq = journal.append(
                s, request.action, call.recorded, engineer_id=me.id, key_generation=me.key_generation, public=public
            ).seq
        if released and self.layer is not None:
            with self.store.read() as s:  # committed: the layer comes off the versions the event names
                secrets = tuple(self._unlayered(s, answer.vault_id, secret) for secret in answer.secrets)
            answer = dataclasses.replace(answer, secrets=secrets)
        return dataclasses.replace(answer, seq=seq)

    def _unlayered(self, s: Any, vault_id: bytes, secret: ComparedSecret) -> ComparedSecret:
        """The secret's versions with the layer off; one whose layer does not come off (moved or
        rewritten in the database) is answered as stored: it does not open on the admin's machine
        either, which reports its value as still at risk, and the rest of the report goes on."""
        assert self.layer is not None
        versions = []
        for version in secret.versions:
            try:
                versions.append(self.layer.unlayered(s, vault_id, secret.client_id, secret.id, version))
            except DecryptionFailed:
                versions.append(version)
        return dataclasses.replace(secret, versions=tuple(versions))

    def add_to(self, operations: Operations) -> None:
        operations.add(ROUTE, self.access, writes=True)
