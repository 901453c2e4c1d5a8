"""The clients' reads on the team server: ``clients.show`` and ``clients.list`` (format 3).

In-process ``ClientAuthority.show`` reads the client in a unit of work, lets the keyholder
admit the draft and appends ``client-view`` in that unit; ``list`` reads without the write
lock, lets the keyholder admit, then appends ``client-list`` in a short unit of its own. Through
the server the same authority runs with ``_ServedClients`` in place of the keyholder's seal and
the journal: ``admit`` accepts the draft (the keyholder verifies the answer after the event
committed: docs/server.md §4, "admitting after the event"), ``append`` remembers the request's
nonce in the event's unit and appends the event in format 3 (the engineer's signed request
kept, the server's signature; ``client-list`` with its public ``count`` as in-process). No data
key is answered, so nothing is released from the server layer.

An engineer is answered only the clients they hold a live grant for **that the server
verifies** (``ServerClientAuthority``: each ledger head signed by a certified, active admin,
unrevoked, unexpired), not even a count of the others; ``show`` of a client without one is 404
(``first_valid_grant``), before any row of it is read. The body's caller must be the signer
(403); a request's action must be the route's (400, ``checked_action``). Without a server
signing key the routes answer 503 (``NO_SERVER_KEY``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from vault.authority.checkout_events import UnitCore
from vault.authority.client_requests import ClientRows, ListRequest, ShowRequest
from vault.authority.clients import ClientAuthority, ClientChecks
from vault.authority.serverjournal import ServerJournal, ServerSeal
from vault.errors import AccessDenied, ConfigurationError, InvalidInput, NotFound
from vault.server.handlers import Call, Operations, signer_only
from vault.server.problems import NO_SERVER_KEY
from vault.storage import models as m
from vault.storage.engine import Store
from vault.storage.rows import EngineerRow, GrantRow


class _ServedClients:
    """``ClientSeal`` and ``ClientRecorder`` of one served request (module docstring)."""

    def __init__(self, journal: ServerJournal, call: Call) -> None:
        self.journal, self.call = journal, call

    def __repr__(self) -> str:
        return "ServedClients()"

    def admit(self, draft: ClientRows) -> None:
        """The keyholder admits the answer after the event committed."""

    def append(self, s: Session, action: str, *, client_id: int | None, public: dict[str, Any] | None = None) -> int:
        if self.call.nonce is not None:
            self.call.nonce(s)  # a second in-flight copy waits here, then fails as replayed
        me = self.call.caller.me
        assert self.call.recorded is not None
        event = self.journal.append(
            s, action, self.call.recorded, engineer_id=me.id, key_generation=me.key_generation,
            client_id=client_id, public=public or None,
        )  # fmt: skip
        return event.seq


class ServerClientAuthority(ClientAuthority):
    """``ClientAuthority`` whose engineer's listing keeps only the grants the server verifies."""

    def _ledger_heads(self, s: Session, engineer_id: int) -> dict[int, tuple[GrantRow | None, EngineerRow | None]]:
        heads = super()._ledger_heads(s, engineer_id)
        me = s.get(m.Engineer, engineer_id)
        if me is None:
            return {}
        out: dict[int, tuple[GrantRow | None, EngineerRow | None]] = {}
        for client_id, (grant, signer) in heads.items():
            if grant is None:
                continue
            try:
                self.checks.first_valid_grant(s, [grant], me, [signer])
            except (AccessDenied, NotFound):
                continue  # expired or revoked: hidden, not even counted
            out[client_id] = (grant, signer)
        return out


class ClientRoutes:
    """``clients.show`` and ``clients.list`` over the server's clients authority (module docstring)."""

    def __init__(
        self, store: Store, checks: ClientChecks, seal: ServerSeal | None, clock: Callable[[], dt.datetime]
    ) -> None:
        self.store, self.checks, self.seal, self.clock = store, checks, seal, clock

    def __repr__(self) -> str:
        return f"ClientRoutes({self.seal!r})"

    def show(self, call: Call) -> ClientRows:
        request = call.body
        if not isinstance(request, ShowRequest):
            raise InvalidInput("the body is not this route's request")
        signer_only(call, request.caller)
        served = self._served(call)
        return ServerClientAuthority(self.store, self.checks, served, self.clock).show(request, served)

    def list_clients(self, call: Call) -> ClientRows:
        request = call.body
        if not isinstance(request, ListRequest):
            raise InvalidInput("the body is not this route's request")
        signer_only(call, request.caller)
        served = self._served(call)
        return ServerClientAuthority(self.store, self.checks, served, self.clock).list(request, served)

    def _served(self, call: Call) -> _ServedClients:
        if self.seal is None:
            raise ConfigurationError(NO_SERVER_KEY, hint="start the server with --server-key FILE")
        return _ServedClients(ServerJournal(UnitCore(self.clock), self.seal), call)

    def add_to(self, operations: Operations) -> None:
        operations.add("clients.show", self.show, writes=True)
        operations.add("clients.list", self.list_clients, writes=True)
