"""The engineer's signed request, as a format-3 audit event keeps it (docs/format.md §8.2).

The team server appends an event for a request the engineer signed (``httpsig``); the event
keeps what ``audit verify`` needs to check that signature again, years later, without the
server: the request's id (the envelope's ``request_id``), the SHA-256 of the envelope
(``request_digest``), the signature with its parameters and the route (``request_sig``,
three ASCII lines: ``method SP authority SP path``, the ``Signature-Input`` value, the
``Signature`` value) and the envelope itself (``request_body``; none on a bulk route).

``request_problem`` is the verifier's check of one event's request (pure: it runs in the
chain's worker processes): the route appends this action (``ROUTE_ACTIONS``), the keyid is
the event's engineer and key generation, the signature verifies (``httpsig.verify_recorded``,
whose base builder is the one requests are signed with), the request was made within
``EVENT_WINDOW`` of the event, and the body kept, if any, is the one signed and names the
event's ``request_id``, caller, action and client. Whether the key may sign at that event (its lifetime) is the
caller's to check, as for every other signature of the chain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from vault.errors import InvalidInput, Locked
from vault.wire import codec, httpsig

CONTENT_TYPE = "application/json"
METHOD = "POST"
KEPT_BODY_MAX = 16 * 1024  # larger envelopes (bulk routes) are kept as their digest only
EVENT_WINDOW = 2 * httpsig.WINDOW  # seconds between a request's `created` and its event's time, at most
ROUTE_PREFIX = "/v1/"

# Operation (route) -> the actions its events may have (docs/server.md §2; each action once per
# request: it stands for the event's part). Only routes whose values the codec registers.
ROUTE_ACTIONS: Mapping[str, frozenset[str]] = {
    "checkouts.checkout": frozenset({"checkout"}),
    "checkouts.reveal": frozenset({"reveal"}),
    "checkouts.checkin": frozenset({"secret-update", "checkin"}),
    "checkouts.break_checkout": frozenset({"checkout-break"}),
    "checkouts.answer_refused": frozenset({"answer-refused"}),
    "audit.answer_refused": frozenset({"answer-refused"}),
    "secrets.update_draft": frozenset({"secret-view"}),
    "secrets.add": frozenset({"secret-create"}),
    "secrets.update": frozenset({"secret-update"}),
    "secrets.show": frozenset({"secret-view"}),
    "secrets.history": frozenset({"secret-history"}),
    "secrets.list": frozenset({"secret-list"}),
    "secrets.list_page": frozenset({"secret-list"}),
    "clients.show": frozenset({"client-view"}),
    "clients.list": frozenset({"client-list"}),
    "engineers.list": frozenset({"engineer-list"}),
    "checkouts.list": frozenset({"checkout-list"}),  # on a layered vault: the versions it releases
    "engineers.enroll": frozenset({"enroll"}),  # signed by the key it enrols (keyholder/auditchain.py)
    "engineers.confirm": frozenset({"engineer-confirm"}),
    "reports.status": frozenset({"report-status"}),  # on a layered vault: the versions it releases
    "reports.stale": frozenset({"report-stale"}),
    "reports.access": frozenset({"report-access", "report-at-risk"}),  # server/access_routes.py
    # an admin's grant and revoke through the server (server/grant_routes.py)
    "grants.grant": frozenset({"grant"}),
    "grants.revoke": frozenset({"revoke"}),
    "clients.add": frozenset({"client-create"}),
    # an engineer's passphrase change (server/passphrase_routes.py): kept as its digest, never its body
    "engineers.change_passphrase": frozenset({"passphrase-change"}),
    "policies.set": frozenset({"policy-set"}),  # server/policy_routes.py
    "purge.client": frozenset({"purge-client"}),  # server/purge_routes.py
    "purge.secret_draft": frozenset({"purge-secret-draft"}),  # it releases the secret's data keys
    "purge.secret": frozenset({"purge-secret"}),
    "purge.subject_search": frozenset({"subject-search"}),  # a page: it releases the data keys it answers
    "purge.subject": frozenset({"purge-subject"}),
    "settings.set": frozenset({"settings"}),  # server/settings_routes.py
    "engineers.invite": frozenset({"engineer-invite"}),  # server/invite_routes.py
    # an admin's client-key rotation (server/rotation_routes.py): its start, a page released, its end
    "keys.start": frozenset({"client-key-rotate"}),
    "keys.rewrap_draft": frozenset({"client-key-rewrap"}),
    "keys.finish": frozenset({"client-key-rotated"}),
    "grants.sweep": frozenset({"grants-expired"}),  # server/sweep_routes.py
    # server/engineer_write_routes.py; ``adoption-refused`` names what an adoption set aside (adoption_drafts.py)
    "engineers.rotate": frozenset({"engineer-invite", "engineer-key-rotate", "adoption-refused"}),
    # each start's facts in it (authority/removal_drafts.py); what a signer's removal set aside
    # an admin's removal rotates the root key in its unit (authority/removal_root.py, session 17)
    "engineers.remove": frozenset({"engineer-remove", "adoption-refused", "root-key-rotate"}),
    "keys.rotate_root": frozenset({"root-key-rotate"}),  # server/root_routes.py: kept as its digest (a bulk body)
    "backups.create": frozenset({"backup-create"}),  # server/backup_routes.py: committed before the rows leave
}
# A request's own ``action`` field -> the event actions it may append, where they differ from it
# (a check-in with a new value also appends ``secret-update``; a report's action is its kind).
NAMED_ACTIONS: Mapping[str, frozenset[str]] = {
    "checkin": frozenset({"checkin", "secret-update"}),
    "status": frozenset({"report-status"}),
    "stale": frozenset({"report-stale"}),
    "settings-set": frozenset({"settings"}),
    # a re-key re-invites, and names what its adoption set aside (authority/adoption_drafts.py)
    "engineer-key-rotate": frozenset({"engineer-invite", "engineer-key-rotate", "adoption-refused"}),
    "engineer-remove": frozenset({"engineer-remove", "adoption-refused", "root-key-rotate"}),
}


# Events the server appends on its own, for no engineer's request (docs/server.md §3, "Failed
# authentication"): format 3, signed by the server key, keeping no request (``server_event_problem``).
AUTH_REFUSED = "auth-refused"
SERVER_ACTIONS = frozenset({AUTH_REFUSED})
_SERVER_FACTS = {AUTH_REFUSED: ("count", "window_start")}

# The admin's work on the server's host (``authority/local_events.py``): a format-3 event whose
# request the admin's keyholder signed in-process for the one action it records. Any action but
# those only the server's routes append (a reveal and what releases or lists it: the server layer
# comes off only there for anyone but the host's admin, who holds the master key).
LOCAL_OPERATION = "local.record"
LOCAL_AUTHORITY = "local"
SERVED_ONLY = frozenset(
    {
        "checkout",
        "reveal",
        "checkin",
        "checkout-break",
        "checkout-list",
        "report-status",
        "report-stale",
        "answer-refused",
        "client-key-rewrap",
    }
)


def allows(operation: str, action: str) -> bool:
    """Whether a request of ``operation`` may append an event of ``action`` (never one of the
    server's own, ``SERVER_ACTIONS``: those keep no request)."""
    if action in SERVER_ACTIONS:
        return False
    if operation == LOCAL_OPERATION:
        return action not in SERVED_ONLY
    return action in ROUTE_ACTIONS.get(operation, frozenset())


def route_path(operation: str) -> str:
    """``checkouts.checkout`` -> ``/v1/checkouts/checkout``."""
    return ROUTE_PREFIX + operation.replace(".", "/")


def operation_of(path: str) -> str | None:
    """The operation a route's path names, or None if it names none this chain knows."""
    if not path.startswith(ROUTE_PREFIX):
        return None
    operation = path[len(ROUTE_PREFIX) :].replace("/", ".")
    return operation if operation in ROUTE_ACTIONS or operation == LOCAL_OPERATION else None


def keyid_of(engineer_id: int, key_generation: int) -> str:
    """The ``keyid`` of an engineer's key generation (docs/server.md §3)."""
    return f"e:{engineer_id}:{key_generation}"


@dataclass(frozen=True, repr=False)
class RecordedRequest:
    """What a format-3 event keeps of the request that caused it (module docstring)."""

    request_id: bytes
    digest: bytes
    sig: str
    body: bytes | None

    def __repr__(self) -> str:
        return f"RecordedRequest(kept_body={self.body is not None})"


class SigLines(NamedTuple):
    method: str
    authority: str
    path: str
    signature_input: str
    signature: str


def record(
    method: str,
    authority: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    request_id: bytes,
    *,
    keep_body: bool = True,
) -> RecordedRequest:
    """The record of a signed request (``headers`` as ``httpsig.sign_request`` made them) whose
    envelope is ``body``; the body is kept when asked and at most ``KEPT_BODY_MAX`` bytes."""
    lower = {name.lower(): value for name, value in headers.items()}
    if lower.get("content-digest") != httpsig.content_digest(body):
        raise InvalidInput("the request's Content-Digest is not its body's")
    lines = (f"{method} {authority.lower()} {path}", lower["signature-input"], lower["signature"])
    if any(" " in part for part in (method, authority, path)) or any("\n" in line for line in lines):
        raise InvalidInput("a request's route and signature are single lines")
    kept = body if keep_body and len(body) <= KEPT_BODY_MAX else None
    return RecordedRequest(request_id, hashlib.sha256(body).digest(), "\n".join(lines), kept)


def parse_sig(text: object) -> SigLines | None:
    """``request_sig`` as its five parts, or None if it is not three lines of that shape."""
    if not isinstance(text, str):
        return None
    lines = text.split("\n")
    if len(lines) != 3:
        return None
    route = lines[0].split(" ")
    if len(route) != 3:
        return None
    return SigLines(route[0], route[1], route[2], lines[1], lines[2])


def out_of_window(at_us: int, sig: str) -> bool:
    """Whether an event dated ``at_us`` would keep a request (``sig``, as ``request_sig``) made more
    than ``EVENT_WINDOW`` from it, which ``request_problem`` refuses: the writer refuses it first."""
    lines = parse_sig(sig)
    if lines is None:
        return True
    try:
        created = httpsig.created_of(lines.signature_input)
    except (Locked, InvalidInput):
        return True
    return abs(at_us // 1_000_000 - created) > EVENT_WINDOW


def request_problem(
    engineer_id: int | None,
    key_generation: int,
    action: str,
    client_id: int | None,
    at_us: int,
    request_id: bytes | None,
    request_digest: bytes | None,
    request_sig: str | None,
    request_body: bytes | None,
    public: bytes,
) -> str | None:
    """Why the request a format-3 event keeps does not vouch for it, or None (module docstring)."""
    lines = parse_sig(request_sig)
    if lines is None or type(request_id) is not bytes or type(request_digest) is not bytes:
        return "it keeps no signed request"
    operation = operation_of(lines.path)
    if lines.method != METHOD or operation is None or not allows(operation, action):
        return "its request was made for another operation than its action"
    if engineer_id is None:
        return "its request is signed by an unknown engineer key"
    try:
        verified = httpsig.verify_recorded(
            lines.method,
            lines.authority,
            lines.path,
            CONTENT_TYPE,
            httpsig.digest_field(request_digest),
            lines.signature_input,
            lines.signature,
            public,
        )
    except (Locked, InvalidInput):
        return "its request signature is invalid"
    if verified.keyid != keyid_of(engineer_id, key_generation):
        return "its request is signed under another engineer's key"
    if abs(at_us // 1_000_000 - verified.created) > EVENT_WINDOW:
        return f"its request was made more than {EVENT_WINDOW} s from the event (an old request replayed)"
    if request_body is not None:
        if not hmac.compare_digest(hashlib.sha256(request_body).digest(), request_digest):
            return "its request body is not the one signed"
        try:
            # strict, but not re-encoded to compare: these bytes are the ones the engineer signed
            envelope = codec.open_envelope(request_body, operation, max_bytes=KEPT_BODY_MAX, canonical=False)
        except InvalidInput:
            return "its request body is not an envelope of its route"
        if envelope.request_id != request_id:
            return "its request id is not the one its request names"
        return _target_problem(envelope.body, engineer_id, key_generation, action, client_id)
    return None


def _target_problem(
    body: object, engineer_id: int, key_generation: int, action: str, client_id: int | None
) -> str | None:
    """The request's own fields against the event's: the caller, the action (when the request
    names one: ``NAMED_ACTIONS``) and the client."""
    caller = getattr(body, "caller", None)
    if caller is None or (caller.engineer_id, caller.key_generation) != (engineer_id, key_generation):
        return "its request names another caller"
    named = getattr(body, "action", None)
    if named is not None and action not in NAMED_ACTIONS.get(named, frozenset({named})):
        return "its request names another action"
    asked = getattr(body, "client_id", None)
    if asked is not None and asked != client_id:
        return "its request names another client"
    return None


def server_event_problem(
    engineer_id: int | None,
    key_generation: int,
    action: str,
    client_id: int | None,
    secret_id: int | None,
    key_version: int | None,
    details_blob: bytes | None,
    details_json: str | None,
    request: tuple[object, ...],
) -> str | None:
    """Why a format-3 event of ``SERVER_ACTIONS`` is not what the server appends on its own, or
    None. Its server signature (checked by the caller) is all that vouches for it, so its shape
    is fixed: it names the engineer it is about and no key generation (0), no client, secret or
    sealed details, keeps no request (``request``: its id, digest, signature and body, all None),
    and its public details are exactly the action's facts, each a non-negative integer."""
    if type(engineer_id) is not int or key_generation != 0:
        return "a server's own event names one engineer and no key generation"
    if (client_id, secret_id, key_version, details_blob) != (None, None, None, None):
        return "a server's own event names no client, secret or sealed details"
    if any(part is not None for part in request):
        return "a server's own event keeps no request"
    try:
        facts = json.loads(details_json) if details_json is not None else None
    except ValueError:
        facts = None
    names = _SERVER_FACTS[action]
    if (
        not isinstance(facts, dict)
        or sorted(facts) != sorted(names)
        or any(type(facts[name]) is not int or facts[name] < 0 for name in names)
    ):
        return f"its details are not the server's {action} facts ({', '.join(names)})"
    return None
