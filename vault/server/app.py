"""The team server's ASGI app (docs/server.md §2, §3, §6): ``build_app(store, …)``.

Routes: ``GET /healthz`` (the process answers), ``GET /readyz`` (the database answers at
the migration head, with no object credvault did not create; else 503 and the reasons),
``GET /v1/identity`` (the vault id and the organisation key head, plus what an
``identity_extra`` provider adds: the server key, later) and ``POST /v1/<noun>/<operation>``
for each operation of ``handlers.Operations``.

A request to an operation goes, in this order: the route (404), ``Content-Type:
application/json`` (415), the body within the route's limit (413, ``limits.BodyLimit``),
the signature (401, ``authentication.Authenticator``: the digest of the bytes received
before anything parses them), the envelope (400: strict canonical JSON whose ``type`` names
this route), the handler. Its answer is the canonical envelope ``<noun>.<operation>.response``
with the request's ``request_id`` (or, for ``backups.create``, a stream of lines: ``StreamedAnswer``,
``server/backup_routes.py``). Middleware, outermost first: the access log (and the
request id), the response signer (with a server key: every answer to a signed POST is signed,
``response_signing``), the catch-all (500 ``internal``: the log names the class only), the
body limit.
Every refusal is problem+json (``problems``). ``debug=False``: no traceback is ever answered.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import re
import time
from collections.abc import Callable, Mapping

from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vault.authority.answer_refusals import AnswerRefusals
from vault.authority.backup_served import ServedBackupAuthority
from vault.authority.checkins import CheckinAuthority
from vault.authority.checkout_context import ContextAuthority
from vault.authority.checkout_list import CheckoutListAuthority
from vault.authority.checkout_reads import ORG_KEYS
from vault.authority.checkouts import CheckoutAuthority
from vault.authority.serverjournal import ServerSeal
from vault.crypto.serverkey import SigningKeys
from vault.errors import InvalidInput, NotFound, StoreUnavailable, Unauthenticated, VaultError
from vault.server import problems
from vault.server.access_routes import AccessRoutes
from vault.server.accesslog import AccessLog, outcome_of
from vault.server.auth_refusals import AuthRefusals
from vault.server.authentication import KEYID, Authenticator, PinnedOrganisation
from vault.server.backup_routes import BackupRoutes, StreamedAnswer
from vault.server.chain_routes import ChainRoutes
from vault.server.checks import ServerChecks
from vault.server.client_routes import ClientRoutes
from vault.server.confirm_routes import ConfirmRoutes
from vault.server.engineer_write_routes import engineer_write_routes
from vault.server.enrolment_routes import COMMIT, DRAFT, EnrolmentRoutes
from vault.server.grant_routes import grant_routes
from vault.server.handlers import Call, CheckoutRoutes, Operation, Operations, Unlayer, default_operations
from vault.server.invite_routes import invite_routes
from vault.server.layer import ServerLayer
from vault.server.limits import DEFAULT_LIMIT, BodyLimit
from vault.server.listing_routes import EngineerListRoutes
from vault.server.passphrase_routes import PassphraseRoutes
from vault.server.policy_routes import policy_routes
from vault.server.purge_routes import purge_routes
from vault.server.read_routes import read_routes
from vault.server.readiness import key_problems
from vault.server.releases import ListingRelease
from vault.server.response_signing import ResponseSigner
from vault.server.root_routes import root_routes
from vault.server.rotation_routes import RotationServerChecks, rotation_routes
from vault.server.secret_read_routes import SecretReadRoutes
from vault.server.secret_routes import SecretServerChecks, secret_routes
from vault.server.settings_routes import settings_routes
from vault.server.signer_routes import SignerRoutes
from vault.server.signing_keys import ActiveSigningKey
from vault.server.sweep_routes import sweep_routes
from vault.storage import rows
from vault.storage.engine import Store, current_revision, head_revision
from vault.storage.rows import INFO
from vault.wire import codec
from vault.wire.authlimits import AuthenticationLimits, ClientAddresses, OnTrip
from vault.wire.eventrequest import record
from vault.wire.httpsig import UNKNOWN_KEY, NonceStore

LOGGER = logging.getLogger("credvault.server")
JSON = "application/json"
_SIGNER = re.compile(r'keyid="(e:[0-9]+:[0-9]+)"')
OPERATION_ROUTE = "/v1/{noun}/{operation}"

IdentityExtra = Callable[[], Mapping[str, object]]


def build_app(
    store: Store,
    *,
    public_url: str,
    nonce_store: NonceStore,
    clock: Callable[[], float] = time.time,
    org_pin: bytes | None = None,
    identity_extra: IdentityExtra | None = None,
    max_body: int = DEFAULT_LIMIT,
    operations: Operations | None = None,
    limits: AuthenticationLimits | None = None,
    addresses: ClientAddresses | None = None,
    server_key: SigningKeys | None = None,
    layer: ServerLayer | None = None,
) -> Starlette:
    """The server's app over ``store``. ``public_url`` is what engineers sign requests for
    (its host is the ``@authority``); ``org_pin`` the organisation key the server trusts
    (None: the first one it reads, then the signed chain from it); ``limits``: failed
    authentications counted per address (``addresses`` says which: the peer, or what a
    trusted proxy forwarded) and per engineer, checked before any signature (None: none);
    ``server_key``: the server's signing key (format-3 events; ``/v1/identity`` names it; every
    answer to a signed POST is signed with it, ``ResponseSigner``), without which the checkout
    routes answer 503 and no answer is signed; ``layer``: the server layer (its master key),
    removed from the one data key a checkout releases once its event has committed."""
    organisation = PinnedOrganisation(org_pin)
    authenticator = Authenticator(store, organisation, nonce_store, public_url, clock)
    if operations is None:
        checkouts = checkout_routes(store, organisation, server_key, clock, layer)
        now = _utc(clock)
        listing = CheckoutListAuthority(store, checkouts.authority, now)
        checks = ServerChecks(organisation, now)
        seal = checkouts.seal
        release = ListingRelease(store, layer, seal, now) if layer is not None and seal is not None else None
        reads = read_routes(store, checks, listing, now, release)
        engineers = EngineerListRoutes(store, checks, checkouts.seal, now)
        secret_checks = SecretServerChecks(organisation, now)
        secrets = secret_routes(store, secret_checks, checkouts.seal, layer)
        secret_reads = SecretReadRoutes(store, secret_checks, checkouts.seal, now, layer)
        clients = ClientRoutes(store, checks, checkouts.seal, now)
        # a check-in's new value is stored as the secrets' drafts store an update (docs/server.md §4 rule 2)
        checkouts.checkins = CheckinAuthority(checkouts.authority, checkouts.authority.checks, None, secrets.authority)
        confirmations = ConfirmRoutes(store, checks, checkouts.seal, now)
        operations = default_operations(checkouts, reads, engineers, secrets, secret_reads, clients, confirmations)
        grant_routes(store, checks, checkouts.seal).add_to(operations)  # an admin's grant and revoke
        PassphraseRoutes(store, checks, checkouts.seal, now).add_to(operations)  # an engineer's own key record
        AccessRoutes(store, checks, checkouts.seal, now, layer).add_to(operations)  # report access / at-risk
        SignerRoutes(store, checks).add_to(operations)  # the chain's signers, for a machine with no database
        ChainRoutes(store, checks).add_to(operations)  # the whole chain, for an admin's audit verify
        policy_routes(store, checks, checkouts.seal).add_to(operations)  # an admin's policy set
        purge_routes(store, checks, checkouts.seal, layer).add_to(operations)  # an admin's purges, a receipt's check
        invite_routes(store, checks, checkouts.seal).add_to(operations)  # an admin's invitation
        rotation = RotationServerChecks(organisation, now)
        rotation_routes(store, rotation, checkouts.seal, layer).add_to(operations)  # an admin's client-key rotation
        sweep_routes(store, checks, checkouts.seal).add_to(operations)  # an admin's sweep of expired grants
        settings_routes(store, checks, checkouts.seal).add_to(operations)  # the settings, an admin's change
        engineer_write_routes(store, checks, checkouts.seal).add_to(operations)  # a re-key, a removal
        root_routes(store, checks, checkouts.seal).add_to(operations)  # an admin's root rotation
        backups = ServedBackupAuthority(store, secret_checks, now)  # an admin's backup, streamed
        BackupRoutes(backups, checkouts.seal).add_to(operations)
        enrolment = EnrolmentRoutes(store, authenticator, checks, checkouts.seal, now)
        operations.add(DRAFT, _invited, invited=True)
        operations.add(COMMIT, _invited, invited=True, writes=True)
    else:
        enrolment = EnrolmentRoutes(store, authenticator, ServerChecks(organisation, _utc(clock)), None, _utc(clock))
    # a key file's ring (a rotation): events, answers and /v1/identity use the active certified version
    choice = ActiveSigningKey(store, server_key) if server_key is not None else None
    if choice is not None:
        identity_extra = _with_server_key(identity_extra, choice)
    refusals = AuthRefusals(ServerSeal(server_key), _utc(clock)) if server_key is not None else None
    guard = _Guard(limits, addresses or ClientAddresses(), refusals)
    endpoints = _Endpoints(store, authenticator, operations, identity_extra, max_body, guard, enrolment)
    endpoints.keys = (server_key, layer)
    signer = [Middleware(ResponseSigner, key=choice, clock=clock)] if choice is not None else []
    return Starlette(
        debug=False,
        routes=[
            Route("/healthz", endpoints.healthz, methods=["GET"]),
            Route("/readyz", endpoints.readyz, methods=["GET"]),
            Route("/v1/identity", endpoints.identity, methods=["GET"]),
            Route(OPERATION_ROUTE, endpoints.operation, methods=["POST"]),
        ],
        middleware=[
            Middleware(AccessLog),
            *signer,
            Middleware(CatchAll),
            Middleware(BodyLimit, default=max_body, routes=operations.body_limits()),
        ],
        exception_handlers={VaultError: _vault_error, HTTPException: _http_error},
    )


def checkout_routes(
    store: Store,
    organisation: PinnedOrganisation,
    server_key: SigningKeys | None,
    clock: Callable[[], float],
    layer: ServerLayer | None = None,
) -> CheckoutRoutes:
    """The checkout noun over ``store``, checked under ``organisation``, signed by ``server_key``,
    its data key's layer removed with ``layer``."""
    now = _utc(clock)
    authority = CheckoutAuthority(store, ServerChecks(organisation, now), now)
    seal = ServerSeal(server_key) if server_key is not None else None
    unlayer = Unlayer(store, layer) if layer is not None else None
    contexts, refusals = ContextAuthority(store, authority), AnswerRefusals(store, now)
    return CheckoutRoutes(authority, contexts, seal, refusals, unlayer=unlayer)


def _utc(clock: Callable[[], float]) -> Callable[[], dt.datetime]:
    def now() -> dt.datetime:
        return dt.datetime.fromtimestamp(clock(), dt.UTC)

    return now


def _with_server_key(extra: IdentityExtra | None, choice: ActiveSigningKey) -> IdentityExtra:
    """``extra`` plus the server key the server signs with: its version, public key and, once an
    admin certified it, the organisation key's certificate (what ``credvault server trust``
    verifies and pins, and an engineer's machine re-pins after a rotation)."""

    def identity() -> Mapping[str, object]:
        found = dict(extra()) if extra is not None else {}
        key, certified = choice.refresh()
        named: dict[str, object] = {"version": key.version, "public": _b64url(key.public)}
        if certified is not None:
            named |= {"certificate": _b64url(certified.certificate), "certified_at": certified.certified_at}
        return found | {"server_key": named}

    return identity


class _Endpoints:
    def __init__(
        self,
        store: Store,
        authenticator: Authenticator,
        operations: Operations,
        identity_extra: IdentityExtra | None,
        max_body: int,
        guard: _Guard,
        enrolment: EnrolmentRoutes,
    ) -> None:
        self.store, self.authenticator, self.operations = store, authenticator, operations
        self.identity_extra, self.max_body, self.guard = identity_extra, max_body, guard
        self.keys: tuple[SigningKeys | None, ServerLayer | None] = (None, None)
        self.enrolment = enrolment

    async def healthz(self, request: Request) -> Response:
        outcome_of(request.scope).route = "/healthz"
        return _json(200, {"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        outcome_of(request.scope).route = "/readyz"
        reasons = await run_in_threadpool(self._not_ready)
        return _json(503 if reasons else 200, {"ready": not reasons, "reasons": reasons})

    def _not_ready(self) -> list[str]:
        try:
            if current_revision(self.store) != head_revision():
                return ["schema-not-at-head"]
            if self.store.foreign_objects():
                return ["foreign-objects"]
            return key_problems(self.store, *self.keys)
        except StoreUnavailable:
            return ["database-unavailable"]

    async def identity(self, request: Request) -> Response:
        outcome_of(request.scope).route = "/v1/identity"
        return _json(200, await run_in_threadpool(self._identity))

    def _identity(self) -> dict[str, object]:
        with self.store.read() as s:
            conn = rows.connection(s)
            info = conn.execute(INFO.select().where(INFO.c.id == 1)).first()
            if info is None:
                raise NotFound("this database holds no vault yet", hint="an admin runs `credvault init`")
            keys = ORG_KEYS.all(conn, {})
        version = keys[-1][0] if keys else 1
        answer: dict[str, object] = {
            "vault_id": _b64url(info.vault_id),
            "org_key": {"version": version, "public": _b64url(info.org_signing_public)},
        }
        extra = dict(self.identity_extra()) if self.identity_extra is not None else {}
        if set(extra) & set(answer):
            raise ValueError("identity_extra may not replace the vault id or the organisation key")
        return answer | extra

    async def operation(self, request: Request) -> Response:
        outcome = outcome_of(request.scope)
        outcome.route = OPERATION_ROUTE
        found = self.operations.find(request.path_params["noun"], request.path_params["operation"])
        if found is None:
            raise NotFound(problems.NO_ROUTE, hint="see docs/server.md §2 for the routes")
        outcome.route = found.path
        if request.headers.getlist("content-type") != [JSON]:
            raise InvalidInput(problems.NOT_JSON, hint="send the envelope as application/json")
        body = await request.body()
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw]
        data = await run_in_threadpool(self._answer, found, request.scope["path"], headers, body, request.scope)
        if isinstance(data, StreamedAnswer):  # a backup's lines, sent as they are read (backup_routes.py)
            return StreamingResponse(data.chunks(), 200, media_type=data.media_type)
        return Response(data, 200, media_type=JSON)

    def _answer(
        self, found: Operation, path: str, headers: list[tuple[str, str]], body: bytes, scope: Scope
    ) -> bytes | StreamedAnswer:
        with self.store.request():  # one pooled connection (one pre-ping) for the request's units of work
            return self._answer_held(found, path, headers, body, scope)

    def _answer_held(
        self, found: Operation, path: str, headers: list[tuple[str, str]], body: bytes, scope: Scope
    ) -> bytes | StreamedAnswer:
        address, engineer_id = self.guard.before(scope, headers)
        if found.invited:  # an enrolment: the code authenticates it; a refusal counts for the address only
            self.guard.engineer(engineer_id, address, None)
            try:
                return self.enrolment.answer(found.name, path, headers, body, found.max_body or self.max_body)
            except Unauthenticated:
                self.guard.failed(address, None)  # not the invited engineer's: a stranger could lock them out
                raise
        try:
            limit = self.guard.in_read(engineer_id, address)  # the engineer's count: in the key's read
            authenticated = self.authenticator.authenticate(
                "POST", path, headers, body, in_unit=found.writes, limit=limit
            )
            outcome_of(scope).engineer_id = authenticated.caller.me.id
            envelope = codec.open_envelope(body, found.name, max_bytes=found.max_body or self.max_body)
            named = {name.lower(): value for name, value in headers}
            recorded = record("POST", self.authenticator.authority, path, named, body, envelope.request_id)
            nonce = authenticated.nonce.within if authenticated.nonce is not None else None
            value = found.handler(Call(authenticated.caller, envelope.request_id, envelope.body, recorded, nonce))
        except Unauthenticated as refusal:  # a write's nonce is checked in its own unit: a replay is refused there
            self.guard.failed(address, None if str(refusal) == UNKNOWN_KEY else engineer_id)
            raise
        if isinstance(value, StreamedAnswer):
            return value
        return codec.envelope(f"{found.name}.response", value, envelope.request_id)


def _invited(call: Call) -> object:
    """The handler slot of an invite-authenticated route: ``EnrolmentRoutes.answer`` runs it."""
    raise InvalidInput("this route is authenticated by an enrolment code")


class _Guard:
    """Failed-authentication limits on the request path (docs/server.md §3): checked before the
    signature (429 ``RateLimited``), counted after a refusal; an unknown key counts for the
    address only. A limit's first trip in its window is logged (engineer id and count); an
    engineer's, with a server key, also appends the server-signed ``auth-refused`` event in the
    unit that counted it (``refusals``, ``auth_refusals.py``)."""

    def __init__(
        self, limits: AuthenticationLimits | None, addresses: ClientAddresses, refusals: OnTrip | None = None
    ) -> None:
        self.limits, self.addresses, self.refusals = limits, addresses, refusals

    def before(self, scope: Scope, headers: list[tuple[str, str]]) -> tuple[str, int | None]:
        """(the client's address, the engineer the signature names, if any), after the address's
        check; the engineer's is ``in_read`` (or ``engineer``), before any signature all the same."""
        peer = scope.get("client")
        forwarded = [value for name, value in headers if name.lower() == "x-forwarded-for"]
        address = self.addresses.resolve(peer[0] if peer else "", ", ".join(forwarded) or None)
        inputs = [value for name, value in headers if name.lower() == "signature-input"]
        named = _SIGNER.search(inputs[0]) if len(inputs) == 1 else None
        match = KEYID.fullmatch(named.group(1)) if named is not None else None
        engineer_id = int(match.group(1)) if match is not None else None
        if self.limits is not None:
            self.limits.check(None, address)
        return address, engineer_id

    def engineer(self, engineer_id: int | None, address: str, unit: Session | None) -> None:
        """The engineer's limit (``RateLimited``), read in ``unit`` (None: a read of its own)."""
        if self.limits is not None and engineer_id is not None:
            self.limits.check(engineer_id, address, unit)

    def in_read(self, engineer_id: int | None, address: str) -> Callable[[Session], None] | None:
        """``engineer`` as the authenticator runs it, first in the read that resolves the keyid."""
        if self.limits is None or engineer_id is None:
            return None
        return lambda unit: self.engineer(engineer_id, address, unit)

    def failed(self, address: str, engineer_id: int | None) -> None:
        if self.limits is None:
            return
        for trip in self.limits.record_failure(engineer_id, address, self.refusals):
            LOGGER.warning(
                "authentication limit reached: %s, engineer %s, %d failures", trip.limit, trip.engineer_id, trip.count
            )


class CatchAll:
    """A bug becomes 500 ``internal`` with the request id; the log names its class, never its text."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as error:
            request_id = outcome_of(scope).request_id
            LOGGER.error("request %s failed: %s", request_id, type(error).__name__)
            if started:
                return  # the answer was under way: the connection ends short
            status, headers, body = problems.internal(request_id)
            await Response(body, status, headers=headers)(scope, receive, send)


async def _vault_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, VaultError)
    status, headers, body = problems.problem(error)
    return Response(body, status, headers=headers)


async def _http_error(request: Request, error: Exception) -> Response:
    """Starlette's own refusals (no route matched, a method a route does not take)."""
    assert isinstance(error, HTTPException)
    refusal: VaultError
    if error.status_code == 404:
        refusal = NotFound(problems.NO_ROUTE, hint="see docs/server.md §2 for the routes")
    elif error.status_code == 405:
        refusal = InvalidInput(
            problems.METHOD_NOT_ALLOWED, hint="operations are POST; /healthz, /readyz, /v1/identity GET"
        )
    else:
        refusal = InvalidInput("the request is malformed")
    status, headers, body = problems.problem(refusal)
    return Response(body, status, headers=headers)


def _json(status: int, document: Mapping[str, object]) -> Response:
    body = json.dumps(document, sort_keys=True, separators=(",", ":")).encode("ascii")
    headers = {"retry-after": "1"} if status == 503 else None
    return Response(body, status, headers=headers, media_type=JSON)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
