"""The reads that append an event, on the team server: ``engineers.list`` (format 3).

In-process, ``EngineerAuthority.list`` reads every engineer and appends ``engineer-list`` in
the same unit of work through the embedded journal (the keyholder's signature). Through the
server the engineer signs the request and the server signs the event (docs/server.md §4
rule 1): ``EngineerListRoutes`` runs the same authority with a ``CallRecorder`` in place of the
journal, which appends the event through ``ServerJournal`` (the request's ``RecordedRequest``
kept, the server key's signature) in the listing's own unit, the request's nonce remembered
in that unit first (a database nonce store: ``Call.nonce``). The answer leaves only after the
unit committed; a refusal, or a commit that fails, leaves neither event nor nonce.

The body's ``caller`` must be the signer (403, nothing read), its action ``engineer-list``
(a ``whoami`` through this route would write nothing and so keep no nonce: 400). Without a
server signing key the route answers 503 (``NO_SERVER_KEY``), as the checkout's does.
``eventrequest.ROUTE_ACTIONS`` names the route's action, so ``audit verify`` checks the kept
request (signer, route, caller, action) as it does a checkout's.

The other reads that append an event are served by ``secret_read_routes.py``
(``secrets.show``/``history``/``list``) and ``client_routes.py`` (``clients.show``/``list``);
``report access``/``at-risk`` by ``access_routes.py``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from vault.authority.checkout_events import UnitCore
from vault.authority.engineer_requests import LIST, CarryPlan, EngineerAnswer, ListRequest
from vault.authority.engineers import EngineerAuthority, EngineerChecks
from vault.authority.serverjournal import ServerJournal, ServerSeal
from vault.errors import ConfigurationError, InvalidInput
from vault.server.handlers import Call, Operations, signer_only
from vault.server.problems import NO_SERVER_KEY
from vault.storage.engine import Store
from vault.wire.eventrequest import RecordedRequest


class CallRecorder:
    """``engineers.Recorder`` for one request: its events appended in format 3 (module docstring)."""

    def __init__(
        self,
        journal: ServerJournal,
        request: RecordedRequest,
        call: Call,
        nonce: Callable[[Session], None] | None,
    ) -> None:
        self.journal, self.request, self.call, self.nonce = journal, request, call, nonce

    def __repr__(self) -> str:
        return "CallRecorder()"

    def append(
        self, s: Session, action: str, *, public: dict[str, Any], enrolment: Any = None, unsigned_by: int | None = None
    ) -> int:
        if enrolment is not None or unsigned_by is not None:
            raise InvalidInput("this route appends only the signer's own events")
        if self.nonce is not None:
            self.nonce(s)  # a second in-flight copy waits here, then fails as replayed
        me = self.call.caller.me
        event = self.journal.append(
            s, action, self.request, engineer_id=me.id, key_generation=me.key_generation, public=public or None
        )
        return event.seq


class _NoCarry:
    """A listing confirms nobody: the carry-over of grants is never asked for here."""

    def plan(self, s: Session, engineer_id: int, root_version: int) -> CarryPlan:
        raise InvalidInput("a listing confirms nobody")

    def carry(self, s: Session, engineer_id: int) -> None:
        raise InvalidInput("a listing confirms nobody")


class EngineerListRoutes:
    """``engineers.list`` over the server's engineers' authority (module docstring)."""

    def __init__(
        self, store: Store, checks: EngineerChecks, seal: ServerSeal | None, clock: Callable[[], dt.datetime]
    ) -> None:
        self.store, self.checks, self.seal, self.clock = store, checks, seal, clock

    def __repr__(self) -> str:
        return f"EngineerListRoutes({self.seal!r})"

    def list_engineers(self, call: Call) -> EngineerAnswer:
        request = call.body
        if not isinstance(request, ListRequest):
            raise InvalidInput("the body is not this route's request")
        signer_only(call, request.caller)
        if request.action != LIST:
            raise InvalidInput(f"this route is {LIST!r}, the request names {request.action!r}")
        if self.seal is None:
            raise ConfigurationError(NO_SERVER_KEY, hint="start the server with --server-key FILE")
        assert call.recorded is not None
        journal = ServerJournal(UnitCore(self.clock), self.seal)
        recorder = CallRecorder(journal, call.recorded, call, call.nonce)
        authority = EngineerAuthority(self.store, self.checks, recorder, _NoCarry(), self.clock)
        return authority.list(request)

    def add_to(self, operations: Operations) -> None:
        operations.add("engineers.list", self.list_engineers, writes=True)
