"""The operations the server answers: ``POST /v1/<noun>/<operation>`` → a handler.

A handler is thin: it receives the authenticated caller (the rows ``caller_read`` checked)
and the request's decoded body, calls the authority, and returns the response value that the
codec registered as ``<noun>.<operation>.response``. Each operation is also a name of
``vault.wire.codec.REGISTRY`` (its request's value) and of ``permissions.OPERATIONS``.

``engineers.whoami`` is the first: it answers the caller's own row, which authentication
has already read and checked (certificate under the trusted organisation key, active, the
key generation the signature's ``keyid`` names). It reads nothing more and writes nothing.

The checkout noun (``CheckoutRoutes``): ``checkouts.checkout`` and ``checkouts.reveal`` run
``CheckoutAuthority.checkout`` with the server's seal and the signed request kept
(``ServerEvent``): a format-3 event appended in the checkout's unit, committed before the
answer leaves; ``checkouts.context`` the read a keyholder's client context is built on;
``checkouts.answer_refused`` and ``audit.answer_refused`` put an answer the engineer's client
refused on record (``authority/answer_refusals.py``). The
body's ``caller`` must be the request's signer (else 403 ``AccessDenied``, nothing read of
the target); without a server signing key the writing routes answer 503 (``NO_SERVER_KEY``).
With a database nonce store (``credvault serve``) the checkout's nonce is remembered inside
the checkout's own unit, first thing (``Call.nonce``): a refusal rolls it back with the rest,
a second in-flight copy waits on its key and fails as ``replayed``; ``context`` and
``whoami`` write nothing, so theirs is stored by the authenticator in a short transaction.

The reads that need no seal (``checkouts.list``, ``grants.list``, ``reports.*``, ``keys.list``
/``versions``, ``audit.log``/``export``/``head``, ``policies.get``/``unsigned``,
``purge.preview``/``receipts``) are ``read_routes.ReadRoutes``; the listing
that appends its event (``engineers.list``, format 3) is ``listing_routes.EngineerListRoutes``;
the engineer's everyday reads, each on record first, are ``secret_read_routes.SecretReadRoutes``
and ``client_routes.ClientRoutes``.
Each checks the body's caller with ``signer_only`` before its authority reads anything.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.orm import Session

from vault.authority.answer_refusals import AnswerRefusals
from vault.authority.checkins import CheckinAuthority
from vault.authority.checkout_context import ContextAuthority, ContextRequest, ContextResponse
from vault.authority.checkout_events import ServerEvent
from vault.authority.checkout_reads import CallerRead
from vault.authority.checkouts import CheckoutAuthority
from vault.authority.engineer_requests import WhoamiAnswer
from vault.authority.permissions import KEYHOLDER_REQUESTS, OPERATIONS
from vault.authority.requests import (
    BREAK,
    CHECKIN,
    AnswerRefusedRequest,
    AnswerRefusedResponse,
    Caller,
    CheckoutRequest,
    CheckoutResponse,
    RefusedAnswerRequest,
    ReleaseRequest,
    ReleaseResponse,
)
from vault.authority.serverjournal import ServerSeal
from vault.errors import AccessDenied, ConfigurationError, InvalidInput, StoreUnavailable
from vault.server.layer import ServerLayer, is_layered
from vault.server.problems import NO_SERVER_KEY
from vault.server.readiness import key_problems
from vault.storage.engine import Store
from vault.wire import codec
from vault.wire.eventrequest import RecordedRequest


@dataclass(frozen=True)
class Call:
    """One authenticated request, as a handler sees it."""

    caller: CallerRead
    request_id: bytes
    body: object
    recorded: RecordedRequest | None = None  # what a format-3 event keeps of the signed request
    nonce: Callable[[Session], None] | None = None  # remembers the nonce in the operation's unit


Handler = Callable[[Call], object]


@dataclass(frozen=True)
class Operation:
    name: str  # "engineers.whoami"
    handler: Handler
    max_body: int | None  # None: the server's default limit
    writes: bool = False  # the handler remembers the request's nonce in its own unit (``Call.nonce``)
    invited: bool = False  # authenticated by an enrolment code, not an engineer's key (enrolment_routes.py)

    @property
    def path(self) -> str:
        noun, operation = self.name.split(".")
        return f"/v1/{noun}/{operation}"


class Operations:
    """The routes of the server, by ``noun.operation``."""

    def __init__(self, registry: codec.Registry = codec.REGISTRY) -> None:
        self.registry = registry
        self._operations: dict[str, Operation] = {}

    def add(
        self, name: str, handler: Handler, *, max_body: int | None = None, writes: bool = False, invited: bool = False
    ) -> None:
        """Route ``name``: it must be an operation of ``permissions.OPERATIONS`` whose request and
        response values the codec registry knows."""
        noun, _, operation = name.partition(".")
        if operation not in OPERATIONS.get(noun, {}) and operation not in KEYHOLDER_REQUESTS.get(noun, {}):
            raise ValueError(f"{name!r} is not an operation of permissions.OPERATIONS")
        if not {name, f"{name}.response"} <= set(self.registry.names()):
            raise ValueError(f"{name!r} has no registered request and response values")
        if name in self._operations:
            raise ValueError(f"{name!r} is routed already")
        self._operations[name] = Operation(name, handler, max_body, writes, invited)

    def find(self, noun: str, operation: str) -> Operation | None:
        return self._operations.get(f"{noun}.{operation}")

    def body_limits(self) -> dict[str, int]:
        """Each route's own body limit, by path (for ``BodyLimit``)."""
        return {op.path: op.max_body for op in self._operations.values() if op.max_body is not None}


def whoami(call: Call) -> WhoamiAnswer:
    me = call.caller.me
    return WhoamiAnswer(call.caller.vault_id, me.id, me.name, me.role, me.key_generation)


class CheckoutRoutes:
    """The checkout noun's handlers over the server's checkout authority (module docstring)."""

    def __init__(
        self,
        authority: CheckoutAuthority,
        contexts: ContextAuthority,
        seal: ServerSeal | None,
        refusals: AnswerRefusals,
        checkins: CheckinAuthority | None = None,
        *,
        unlayer: Unlayer | None = None,
    ) -> None:
        self.authority, self.contexts, self.seal, self.refusals = authority, contexts, seal, refusals
        self.unlayer = unlayer
        self.checkins = checkins if checkins is not None else CheckinAuthority(authority, authority.checks, None)

    def __repr__(self) -> str:
        return f"CheckoutRoutes({self.seal!r})"

    def checkout(self, call: Call) -> CheckoutResponse:
        return self._checkout(call, "checkout")

    def reveal(self, call: Call) -> CheckoutResponse:
        return self._checkout(call, "reveal")

    def context(self, call: Call) -> ContextResponse:
        request = call.body
        assert isinstance(request, ContextRequest)
        signer_only(call, request.caller)
        return self.contexts.read(request)

    def answer_refused(self, call: Call) -> AnswerRefusedResponse:
        request = call.body
        assert isinstance(request, AnswerRefusedRequest)
        signer_only(call, request.caller)
        return self.refusals.record(request, request.caller, self._event(call))

    def refused_answer(self, call: Call) -> AnswerRefusedResponse:
        """``audit.answer_refused``: any answer the engineer's client refused (``RefusedAnswerRequest``)."""
        request = call.body
        assert isinstance(request, RefusedAnswerRequest)
        signer_only(call, request.caller)
        return self.refusals.record_request(request, request.caller, self._event(call))

    def checkin(self, call: Call) -> ReleaseResponse:
        return self._release(call, CHECKIN)

    def break_checkout(self, call: Call) -> ReleaseResponse:
        return self._release(call, BREAK)

    def _release(self, call: Call, action: str) -> ReleaseResponse:
        request = call.body
        assert isinstance(request, ReleaseRequest)
        signer_only(call, request.caller)
        if request.action != action:
            raise InvalidInput(f"this route is {action!r}, the request names {request.action!r}")
        return self.checkins.release(request, self._event(call))

    def _event(self, call: Call) -> ServerEvent:
        """The server's seal and the signed request kept: a writing route's format-3 event."""
        if self.seal is None:
            raise ConfigurationError(NO_SERVER_KEY, hint="start the server with --server-key FILE")
        assert call.recorded is not None
        return ServerEvent(self.seal, call.recorded, call.nonce)

    def _checkout(self, call: Call, action: str) -> CheckoutResponse:
        request = call.body
        assert isinstance(request, CheckoutRequest)
        signer_only(call, request.caller)
        if request.action != action:
            raise InvalidInput(f"this route is {action!r}, the request names {request.action!r}")
        if self.unlayer is not None:
            self.unlayer.ready()  # a key file that cannot remove the layer records nothing
        response = self.authority.checkout(request, self._event(call))  # returns once the event committed
        return response if self.unlayer is None else self.unlayer(response)

    def add_to(self, operations: Operations) -> None:
        operations.add("checkouts.checkout", self.checkout, writes=True)
        operations.add("checkouts.reveal", self.reveal, writes=True)
        operations.add("checkouts.context", self.context)
        operations.add("checkouts.answer_refused", self.answer_refused, writes=True)
        operations.add("audit.answer_refused", self.refused_answer, writes=True)  # any refused answer
        operations.add("checkouts.checkin", self.checkin, writes=True)
        operations.add("checkouts.break_checkout", self.break_checkout, writes=True)


class Unlayer:
    """Removes the server's layer from the one data key of a committed checkout's answer, in a
    short read of its own (the client's server client key: vault/server/layer.py).

    ``ready()`` is asked before the checkout is recorded: a server whose key file's master key does
    not open the stored server client keys (an old file, put behind the proxy despite its 503 on
    ``/readyz``) would record the checkout and its hold, then fail to remove the layer; it is refused
    instead (503, nothing written). What ``/readyz`` checks (``readiness.key_problems``), read at
    most every ``ttl`` seconds."""

    def __init__(self, store: Store, layer: ServerLayer, *, ttl: float = 5.0) -> None:
        self.store, self.layer, self.ttl = store, layer, ttl
        self._checked: tuple[float, list[str]] = (float("-inf"), [])

    def ready(self) -> None:
        checked_at, problems = self._checked
        now = time.monotonic()
        if now - checked_at > self.ttl:
            problems = key_problems(self.store, None, self.layer)
            self._checked = (now, problems)
        if problems:
            raise StoreUnavailable(
                f"this server's key file does not open the vault's server keys ({', '.join(problems)}); "
                "nothing was recorded",
                hint="the server must run with the current key file (see /readyz); try again later",
            )

    def __repr__(self) -> str:
        return f"Unlayer({self.layer!r})"

    def __call__(self, response: CheckoutResponse) -> CheckoutResponse:
        if not is_layered(response.version.wrapped_dek):
            return response
        with self.store.read() as s:
            r = response
            version = self.layer.unlayered(s, r.vault_id, r.client.id, r.secret.id, r.version)
        return dataclasses.replace(response, version=version)


def signer_only(call: Call, named: object) -> None:
    """A request acts for the engineer who signed it, of the key generation that signed it."""
    me = call.caller.me
    if not isinstance(named, Caller) or named != Caller(me.id, me.key_generation):
        raise AccessDenied("the request names another caller than the key that signed it")


class Routes(Protocol):
    """A noun's handlers, added to the server's operations (``CheckoutRoutes``, ``ReadRoutes``)."""

    def add_to(self, operations: Operations) -> None: ...


def default_operations(*nouns: Routes) -> Operations:
    """Every operation the server answers today: ``whoami``, and the routes of each of ``nouns``
    (the checkout noun's, ``read_routes.ReadRoutes``)."""
    operations = Operations()
    operations.add("engineers.whoami", whoami)
    for noun in nouns:
        noun.add_to(operations)
    return operations
