"""An answer the keyholder refused, on the record (the team server; docs/server.md §8).

Through the server the keyholder cannot verify an answer before its event is written: the
server commits the checkout's format-3 event, then answers, and the keyholder checks the
answer in full before it decrypts anything. When it refuses (an answer that does not verify
or does not open), it says so: ``checkouts.answer_refused`` names the refused event's seq and
request id, and the server appends an ``answer-refused`` event (format 3, the engineer's
signed request kept in it) whose public details name that seq and the reason.

Refused, with nothing written: a request naming an event that is not a checkout or reveal
of this engineer, of this client, under that request id (``NotFound``: nobody records a
refusal of another's answer), and a reason outside ``REFUSAL_REASONS`` (``InvalidInput``).
The request's nonce is remembered in the same unit as the event.

``record_request`` is the same for any answer the engineer's client refused, as
``audit.answer_refused`` sends it (``RefusedAnswerRequest``): an answer whose response signature
did not verify under the pinned server key (``unsigned``: nothing in it was believed, not even a
seq) or rows a read's keyholder refused. It names the refused request's id and operation; the
server finds that request's events itself. Any of them another engineer's, or of an action the
operation does not append (``eventrequest.ROUTE_ACTIONS``), and nothing is written
(``NotFound``); none at all (the answer came from whoever sat between, or the operation writes
no event) and the event names no seq. The event's public details: the operation, the reason and
``refused_seq`` (the request's first event), its client the refused event's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy import select

from vault.authority.checkout_events import ServerEvent, UnitCore
from vault.authority.requests import (
    ANSWER_REASONS,
    ANSWER_REFUSED,
    CHECKOUT,
    REFUSAL_REASONS,
    REVEAL,
    AnswerRefusedRequest,
    AnswerRefusedResponse,
    Caller,
    RefusedAnswerRequest,
)
from vault.authority.serverjournal import ServerJournal
from vault.errors import InvalidInput, NotFound
from vault.storage import models as m
from vault.storage.engine import Store
from vault.wire.eventrequest import ROUTE_ACTIONS
from vault.wire.routes import ROUTES

REPORT_OPERATION = "audit.answer_refused"
REFUSED_OPERATIONS = frozenset(name for name, _, _ in ROUTES) - {REPORT_OPERATION, "local.record"}
REQUEST_ID_BYTES = 16


class AnswerRefusals:
    """Records the answers a keyholder refused, one unit of work each (module docstring)."""

    def __init__(self, store: Store, clock: Callable[[], dt.datetime]) -> None:
        self.store, self.clock = store, clock

    def __repr__(self) -> str:
        return "AnswerRefusals()"

    def record(self, request: AnswerRefusedRequest, signer: Caller, event: ServerEvent) -> AnswerRefusedResponse:
        """The ``answer-refused`` event of ``request``, made by ``signer`` (the request's verified signer)."""
        if request.reason not in REFUSAL_REASONS:
            raise InvalidInput("a refused answer's reason is 'untrusted', 'undecryptable' or 'no-such-field'")
        with self.store.transaction() as s:
            if event.nonce is not None:
                event.nonce(s)  # first: a replay of this request is refused before anything is read
            refused = s.scalar(
                select(m.AuditEvent.seq).where(
                    m.AuditEvent.seq == request.refused_seq,
                    m.AuditEvent.request_id == request.refused_request,
                    m.AuditEvent.engineer_id == signer.engineer_id,
                    m.AuditEvent.client_id == request.client_id,
                    m.AuditEvent.action.in_((CHECKOUT, REVEAL)),
                )
            )
            if refused is None:
                raise NotFound("no checkout or reveal of yours under that request", hint="nothing was recorded")
            row = ServerJournal(UnitCore(self.clock), event.seal).append(
                s,
                ANSWER_REFUSED,
                event.request,
                engineer_id=signer.engineer_id,
                key_generation=signer.key_generation,
                client_id=request.client_id,
                public={"refused_seq": int(refused), "reason": request.reason},
            )
            s.flush()
            return AnswerRefusedResponse(int(row.seq))

    def record_request(
        self, request: RefusedAnswerRequest, signer: Caller, event: ServerEvent
    ) -> AnswerRefusedResponse:
        """The ``answer-refused`` event of a ``RefusedAnswerRequest`` (module docstring)."""
        if request.reason not in ANSWER_REASONS:
            raise InvalidInput("a refused answer's reason is not one the server records")
        if request.operation not in REFUSED_OPERATIONS:
            raise InvalidInput("a refused answer names an operation of the server")
        if len(request.refused_request) != REQUEST_ID_BYTES:
            raise InvalidInput(f"a refused answer names a {REQUEST_ID_BYTES}-byte request id")
        e = m.AuditEvent
        with self.store.transaction() as s:
            if event.nonce is not None:
                event.nonce(s)  # first: a replay of this request is refused before anything is read
            found = s.execute(
                select(e.seq, e.engineer_id, e.action, e.client_id)
                .where(e.request_id == request.refused_request)
                .order_by(e.seq)
            ).all()
            actions = ROUTE_ACTIONS.get(request.operation, frozenset())
            if any(row.engineer_id != signer.engineer_id or row.action not in actions for row in found):
                raise NotFound("no request of yours for that operation under that id", hint="nothing was recorded")
            public: dict[str, object] = {"operation": request.operation, "reason": request.reason}
            if found:
                public["refused_seq"] = int(found[0].seq)
            row = ServerJournal(UnitCore(self.clock), event.seal).append(
                s,
                ANSWER_REFUSED,
                event.request,
                engineer_id=signer.engineer_id,
                key_generation=signer.key_generation,
                client_id=found[0].client_id if found else None,
                public=public,
            )
            s.flush()
            return AnswerRefusedResponse(int(row.seq))
