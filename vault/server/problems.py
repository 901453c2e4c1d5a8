"""Errors as ``application/problem+json`` (RFC 9457), docs/server.md §2.

Every refusal the server answers is a ``VaultError`` (``vault/errors.py``); its class picks the
status from ``STATUSES`` (the most specific class listed first), its message is ``detail``
and its hint ``hint`` (both already free of secrets: the project's rule for every message).
The body is ``{"type": "urn:credvault:<kebab class>", "title", "status", "detail", "hint",
"error": "<class>", "code": <marker> | null}``. A marker is a message the keyholder tests
for (``MISSING_TARGET``, the request signature's ``unsigned`` …): it travels as ``code``, and
a few markers have a status of their own (``STALE_CONTEXT``: 409; the server's own refusals
of a body over the limit, another media type, an unknown route: 413, 415, 404).

Anything else is a bug: ``internal`` (500) with the request's id, and the log names the
exception's class only (its text might quote data).
"""

from __future__ import annotations

import json
import re

from vault.authority import requests as checkout_values
from vault.authority.client_add_values import STALE_CLIENT
from vault.authority.confirm_requests import STALE_CONFIRM
from vault.authority.grant_draft_requests import STALE_GRANT
from vault.authority.grant_sweep_values import STALE_SWEEP
from vault.authority.invite_draft_values import STALE_INVITE
from vault.authority.passphrase_requests import STALE_RECORD
from vault.authority.policy_draft_values import STALE_POLICY
from vault.authority.purge_draft_values import STALE_PURGE
from vault.authority.rekey_draft_values import STALE_REKEY
from vault.authority.removal_draft_values import STALE_REMOVAL
from vault.authority.rotation_draft_values import STALE_DRAFT as STALE_ROTATION
from vault.authority.secret_draft_requests import STALE_DRAFT
from vault.authority.settings_requests import CHANGED_SINCE_READ
from vault.errors import (
    AccessDenied,
    AlreadyExists,
    AuditUnavailable,
    CheckoutConflict,
    ConfigurationError,
    EnrolmentError,
    IntegrityError,
    InvalidInput,
    Locked,
    NotFound,
    RateLimited,
    RecoveryShareError,
    StoreUnavailable,
    VaultError,
)
from vault.wire import httpsig

MEDIA_TYPE = "application/problem+json"

# The server's own refusals (messages, hence markers, of the errors it raises itself).
BODY_TOO_LARGE = "the request body is over this route's limit"
NOT_JSON = "the request body is not application/json"
NO_ROUTE = "no such route"
NO_SERVER_KEY = "the server has no signing key"
METHOD_NOT_ALLOWED = "this route does not take that method"

# Class → status, most specific first (a subclass takes its parent's status unless listed).
STATUSES: tuple[tuple[type[VaultError], int], ...] = (
    (InvalidInput, 400),
    (RecoveryShareError, 400),
    (Locked, 401),  # SessionExpired, and every request-signature refusal
    (AccessDenied, 403),  # GrantExpired
    (EnrolmentError, 403),
    (NotFound, 404),
    (AlreadyExists, 409),
    (RateLimited, 429),  # too many failed authentications: Retry-After says when
    (CheckoutConflict, 409),
    (IntegrityError, 500),  # stored data failed a check on the server
    (ConfigurationError, 500),
    (StoreUnavailable, 503),  # ConcurrentChange (after the retries), StoreBusy
    (AuditUnavailable, 503),
)

# Marker (an exact message) → its name on the wire, and the markers with a status of their own.
MARKERS: dict[str, str] = {
    checkout_values.MISSING_TARGET: "MISSING_TARGET",
    checkout_values.REASON_REQUIRED: "REASON_REQUIRED",
    checkout_values.STALE_CONTEXT: "STALE_CONTEXT",
    checkout_values.NOT_HELD: "NOT_HELD",
    checkout_values.NOT_CHECKED_OUT: "NOT_CHECKED_OUT",
    checkout_values.ONLY_ADMINS_BREAK: "ONLY_ADMINS_BREAK",
    STALE_DRAFT: "stale-draft",
    STALE_CONFIRM: "stale-draft",
    STALE_GRANT: "stale-draft",
    STALE_CLIENT: "stale-draft",
    STALE_RECORD: "stale-draft",
    STALE_POLICY: "stale-draft",
    STALE_PURGE: "stale-draft",
    STALE_INVITE: "stale-draft",
    STALE_ROTATION: "stale-draft",
    STALE_SWEEP: "stale-draft",
    CHANGED_SINCE_READ: "stale-draft",
    STALE_REKEY: "stale-draft",
    STALE_REMOVAL: "stale-draft",
    checkout_values.REQUEST_ID_REUSED: "request-id-reused",
    **{
        code: code
        for code in (httpsig.UNSIGNED, httpsig.BAD_SIGNATURE, httpsig.UNKNOWN_KEY, httpsig.STALE, httpsig.REPLAYED)
    },
    BODY_TOO_LARGE: "body-too-large",
    NOT_JSON: "unsupported-media-type",
    NO_ROUTE: "no-route",
    METHOD_NOT_ALLOWED: "method-not-allowed",
    NO_SERVER_KEY: "no-server-key",
}
MARKER_STATUSES: dict[str, int] = {
    "STALE_CONTEXT": 409,
    "stale-draft": 409,
    "body-too-large": 413,
    "unsupported-media-type": 415,
    "no-route": 404,
    "method-not-allowed": 405,
    "no-server-key": 503,  # a ConfigurationError: the server runs without its signing key
}
RETRY_LATER = 503

_TITLES = {400: "Bad request", 401: "Not authenticated", 403: "Forbidden", 404: "Not found", 405: "Method not allowed"}
_TITLES |= {409: "Conflict", 413: "Content too large", 415: "Unsupported media type", 500: "Server error"}
_TITLES |= {429: "Too many requests", 503: "Service unavailable"}
_WORD = re.compile(r"(?<!^)(?=[A-Z])")


def kebab(name: str) -> str:
    """``CheckoutConflict`` → ``checkout-conflict``."""
    return _WORD.sub("-", name).lower()


def status_of(error: VaultError) -> int:
    code = MARKERS.get(str(error))
    if code in MARKER_STATUSES:
        return MARKER_STATUSES[code]
    return next((status for cls, status in STATUSES if isinstance(error, cls)), 500)


def wire_class(error: VaultError) -> str:
    """The class named on the wire: the error's own, or ``VaultError`` for one the mapping does not know."""
    known = any(isinstance(error, cls) for cls, _ in STATUSES)
    return type(error).__name__ if known else VaultError.__name__


def problem(error: VaultError) -> tuple[int, dict[str, str], bytes]:
    """The status, headers and body that answer ``error``."""
    status, name = status_of(error), wire_class(error)
    document = {
        "type": f"urn:credvault:{kebab(name)}",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": str(error),
        "hint": error.hint,
        "error": name,
        "code": MARKERS.get(str(error)),
    }
    headers = {"content-type": MEDIA_TYPE}
    if status == RETRY_LATER:
        headers["retry-after"] = "1"
    elif isinstance(error, RateLimited):
        headers["retry-after"] = str(max(1, int(error.retry_after)))
    return status, headers, _dumps(document)


def internal(request_id: str) -> tuple[int, dict[str, str], bytes]:
    """The answer to a bug: no class, no text, only the id the access log names it by."""
    document = {
        "type": "urn:credvault:internal",
        "title": _TITLES[500],
        "status": 500,
        "detail": f"the server failed (request {request_id}); an admin can find it in the server's log",
        "hint": "try again; if it persists, tell an admin the request id",
        "error": "internal",
        "code": None,
    }
    return 500, {"content-type": MEDIA_TYPE}, _dumps(document)


def _dumps(document: dict[str, object]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
