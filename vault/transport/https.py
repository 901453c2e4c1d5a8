"""The HTTPS transport: a keyholder's requests to the team server (docs/server.md §2, §3).

``HttpsTransport.call(name, body)`` writes the canonical envelope of ``body`` (a value the
codec registered as ``name``, with 16 fresh random bytes as its ``request_id``), signs it
with the engineer's unlocked signing key (``Keys.my_signing_key``; ``keyid``
``e:<engineer id>:<key generation>``, ``@authority`` the server URL's host), POSTs it to
``/v1/<noun>/<operation>`` and decodes the answer strictly as ``<name>.response`` (an
answer to another request id is refused: ``UntrustedRecord``). A checkout, reveal, check-in,
break, secrets' commit or read of ``RETRIED`` whose answer is lost is sent again with the same
envelope, a read that appends its event (``READS_RETRIED``) as a new request (``call``).

TLS is checked against a pinned CA file (``ca_file``: the test CA, or the server's own
certificate) rather than the system's store; plain ``http://`` only to a loopback host.
A refusal comes back as problem+json and is raised again as the ``vault/errors.py`` class
its ``error`` names, looked up in ``ERRORS`` (a whitelist: a name is never evaluated); an
unknown name, ``internal`` or an answer that is not a problem becomes a plain ``VaultError``.
With ``server_key`` (the pinned server key: its version and Ed25519 public key), every
answer, 200 or problem+json, must carry the server's response signature under that key,
bound to the status, the body and the signature of the request it answers
(``wire/httpsig_response.py``); any other answer is refused (``UntrustedRecord``) before it
is read. An answer signed by a *newer* version goes to ``renew`` (a server key rotation: the
new key taken only with its certificate under the pinned organisation key, then the answer
checked under it); an older version than the pinned one is refused (no rollback).
Without a pin the TLS pin is the only trust (a server run without a server key
signs nothing).

A refused answer is put on record, best effort, when a server key is pinned (``report_refused``:
``audit.answer_refused``, naming the request's operation and id and the reason, never anything
of the answer): one not so signed (``unsigned``), one signed but not an answer to this request
(``untrusted``), and, when a noun's keyholder refuses the rows of the answer it took last
(``vault/service/remote_nouns.py``), that one. Whatever the report meets, the refusal it
reports is what the caller gets.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import secrets
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from vault.authority.engineer_requests import WhoamiAnswer, WhoamiRequest
from vault.authority.requests import UNSIGNED, Caller, RefusedAnswerRequest
from vault.crypto.signing import SigningKey
from vault.errors import (
    AccessDenied,
    AlreadyExists,
    AuditUnavailable,
    CheckoutConflict,
    ConcurrentChange,
    ConfigurationError,
    DecryptionFailed,
    EnrolmentError,
    GrantExpired,
    IntegrityError,
    InvalidInput,
    KeyRecordRejected,
    Locked,
    LookupMismatch,
    NotFound,
    RateLimited,
    RecoveryShareError,
    SessionExpired,
    StoreBusy,
    StoreUnavailable,
    TamperedSchema,
    Unauthenticated,
    UntrustedRecord,
    VaultError,
)
from vault.transport import https_wire
from vault.wire import codec, httpsig, httpsig_response
from vault.wire.httpsig_response import PinnedServerKey

JSON = "application/json"
PROBLEM = "application/problem+json"
MAX_SHOWN = 500  # characters of a server's detail or hint kept in the error raised here
MAX_PROBLEM = 16 * 1024
EXCERPT = 80  # characters of an unsigned 5xx answer's body shown, neutralised (``excerpt``)
_MARKUP = re.compile(r"<[^>]{0,200}>")
NO_DELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

# The classes a server may name, by name (WrongPassphrase is local: a server never opens a key record).
ERRORS: dict[str, type[VaultError]] = {
    cls.__name__: cls
    for cls in (
        ConfigurationError,
        StoreUnavailable,
        ConcurrentChange,
        StoreBusy,
        InvalidInput,
        AlreadyExists,
        NotFound,
        Locked,
        SessionExpired,
        Unauthenticated,
        RateLimited,
        AccessDenied,
        GrantExpired,
        EnrolmentError,
        RecoveryShareError,
        AuditUnavailable,
        CheckoutConflict,
        IntegrityError,
        DecryptionFailed,
        UntrustedRecord,
        LookupMismatch,
        KeyRecordRejected,
        TamperedSchema,
    )
}


class _Session(Protocol):
    @property
    def engineer_id(self) -> int: ...
    @property
    def key_generation(self) -> int: ...


class SigningKeys(Protocol):
    """Where the unlocked signing key is (``vault.keyholder.keys.Keys``)."""

    def me(self) -> _Session: ...
    def my_signing_key(self) -> SigningKey: ...


class RenewServerKey(Protocol):
    """Takes a newer server key version an answer names: the key, once its certificate checked
    out and ``check`` (the answer under it) passed, re-pinned (``service/serverkey_renewal.py``)."""

    def __call__(
        self, version: int, check: Callable[[PinnedServerKey], None], left: float | None = None
    ) -> PinnedServerKey:
        """``left``: the seconds ``HttpsTransport.within`` leaves (None: no budget) for reading the identity."""


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# Operations whose one unit of work may outlast the client's read timeout: a root rotation's commit
# re-seals every client's key versions in one unit (about 1 ms a client on the suite's machine).
# An admin's removal (session 17) rotates the root key in its commit's unit, and drafts it in a unit
# that makes the commit's writes first.
READ_TIMEOUTS = {
    "keys.rotate_root": 600.0,
    "engineers.remove_root_draft": 600.0,
    "engineers.remove": 600.0,
    "purge.vacuum": 3600.0,  # VACUUM FULL rewrites the purged tables
}
# Operations sent again when their answer is lost: the server answers a retried checkout, reveal,
# check-in, break or secrets' commit from its committed events (one event per request id and
# action: revision 0016); the others write nothing. Drafts are not re-sent (a secret-view each).
RETRIED = frozenset(
    {
        "checkouts.checkout",
        "checkouts.reveal",
        "checkouts.checkin",
        "checkouts.break_checkout",
        "secrets.add",
        "secrets.update",
        "checkouts.context",
        "engineers.whoami",
        "grants.list",
    }
)
# Reads sent again when their answer is lost, each time as a new request (a new envelope and
# request id): each appends its own event, and the server answers a read once, so the read whose
# answer was lost stays on record as what it was (the answer left the server) and the retry is a
# read of its own. Not when the caller gave the request id (a body bound to it).
READS_RETRIED = frozenset(
    {"secrets.show", "secrets.history", "secrets.list", "secrets.list_page", "clients.show", "clients.list"}
)
# Answers decoded past the codec's default limit (64 KiB): a page of a listing (the server keeps one
# within 256 KiB, ``secret_read_routes.PAGE_BYTES``, unless its one secret is larger), and the answers
# that carry one version's blobs: a field may hold 64 KiB (``validation.MAX_FIELD_BYTES``), so a
# version's password and metadata, in base64url, pass 64 KiB (``codec.ONE_VERSION_BYTES``; before,
# a secret with a field of 64 KiB was written but not readable through a server).
# A page of the audit log (``service/remote_audit.PAGE_EVENTS`` events, each keeping a request body
# of at most 16 KiB, eventrequest.KEPT_BODY_MAX) and the chain's signers (authority/audit_signers.py).
RESPONSE_LIMITS = {
    "backups.context": 64 * 1024 * 1024,  # every client's backup key and signed client-key records (about 1 KiB each)
    "secrets.list_page": 1024 * 1024,
    "purge.secret_draft": 1024 * 1024,  # every version's wrapped data key and the current metadata
    # a page of a subject's search (about 1 MiB of blobs, more for one large client) and a client's draft
    "purge.subject_search": 16 * 1024 * 1024,
    "purge.subject_draft": 1024 * 1024,
    **dict.fromkeys(
        (
            "checkouts.checkout", "checkouts.reveal", "secrets.show", "secrets.history",
            "secrets.add", "secrets.update_draft", "secrets.update",
        ),
        codec.ONE_VERSION_BYTES,
    ),
    "audit.log": 4 * 1024 * 1024,
    "audit.export": 4 * 1024 * 1024,
    "audit.signers": 8 * 1024 * 1024,
    # a rotation's draft (every grant event of the client), its basis and a page of data keys
    "keys.start_draft": 8 * 1024 * 1024,
    # a root rotation's draft (the roster: every certificate) and a page of clients with their key versions
    "keys.root_draft": 8 * 1024 * 1024,
    "keys.root_page": 4 * 1024 * 1024,
    "keys.open": 1024 * 1024,
    "keys.rewrap_draft": 1024 * 1024,
    "audit.chain": 4 * 1024 * 1024,  # a page of the whole chain, as of the log (service/remote_chain.py)
    "audit.points": 1024 * 1024,
    "reports.access": 16 * 1024 * 1024,  # a page of reveals' versions (service/remote_reports.py)
    "engineers.remove_draft": 8 * 1024 * 1024,  # every client's start (server/engineer_write_routes.py)
    # an admin's removal: the root rotation's draft and every page of clients (authority/removal_root.py)
    "engineers.remove_root_draft": 32 * 1024 * 1024,
    "engineers.rotate_draft": 8 * 1024 * 1024,  # an adoption: every record the engineer signed (adoption_drafts.py)
    "engineers.pending_confirmation": 8 * 1024 * 1024,  # a carry-over: each carried client's grant events
    # an admin's client listing (every client's row with its blobs, about 0.7 KiB each): past 64 KiB at some 90
    # clients, which stopped a removal's re-wraps through the server (they name the clients by a listing)
    "clients.list": 16 * 1024 * 1024,
}  # fmt: skip
# What a refused signature means to an engineer whose key signed the request (``explained``).
SIGNATURE_REFUSALS = {
    httpsig.UNKNOWN_KEY: (
        "the server accepts no key of yours",
        "an admin may have removed, disabled or re-keyed your account (the server says no more): ask an admin",
    ),
    httpsig.STALE: (
        "the server refused the request's time",
        f"this machine's clock is more than {httpsig.WINDOW} s from the server's: set it (NTP) and try again",
    ),
}
RETRIES = 2
RETRY_PAUSE = 0.2  # seconds, times the attempt
REPORT = "audit.answer_refused"  # a refused answer, on record (``report_refused``)
UNTRUSTED = "untrusted"


class HttpsTransport:
    """Signed requests to one team server, over one pooled connection."""

    def __init__(
        self,
        base_url: str,
        keys: SigningKeys,
        *,
        ca_file: str | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        server_key: PinnedServerKey | None = None,
        clock: Callable[[], float] = time.time,
        renew: RenewServerKey | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.path not in ("", "/"):
            raise ConfigurationError("the server URL is https://HOST[:PORT]")
        if parts.scheme == "http" and not _loopback(parts.hostname):
            raise ConfigurationError("refusing a server URL without TLS", hint="use https://")
        if parts.scheme == "https" and ca_file is None and transport is None:
            raise ConfigurationError("no pinned CA file for the server", hint="pass the server's CA certificate")
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file is not None else True
        self.keys, self.authority, self.clock = keys, parts.netloc.lower(), clock
        self.server_key = _checked_pin(server_key)
        self.renew = renew  # a newer server key version, with its certificate checked and re-pinned
        # httpcore writes the headers and the body apart: without TCP_NODELAY the body waits for
        # the server's delayed ACK (≈40 ms on Linux) on every request of a kept-alive connection.
        # One write per request, and requests sent past httpx.Client's own per-request work (https_wire.py).
        transport = transport or https_wire.coalescing_transport(verify, [NO_DELAY])
        self.client = httpx.Client(base_url=f"{parts.scheme}://{parts.netloc}", timeout=timeout, transport=transport)
        self.transport = transport
        self._urls: dict[str, httpx.URL] = {}  # each route's absolute URL, parsed once (not per request)
        self.answered: tuple[str, bytes] | None = None  # the operation and request id of the last answer taken
        self.deadline: float | None = None  # ``within``'s end (time.monotonic), if a caller set a budget

    def close(self) -> None:
        self.client.close()

    def call(self, name: str, body: object, request_id: bytes | None = None) -> object:
        """POST ``body`` as operation ``name``; its decoded ``name.response`` value. ``request_id``:
        the envelope's id when the body binds it already (details sealed to it), else a fresh one.

        An operation of ``RETRIED`` whose answer was lost (the connection failed before a
        response arrived) is sent again, at most ``RETRIES`` times: the same envelope, so the
        same ``request_id``, under a new signature and nonce. The server answers a retried
        checkout, reveal, check-in, break, ``secrets.add`` or ``secrets.update`` from the events it
        committed for that id, appending none (docs/server.md §3, "Retries are not replays"); the
        reads of ``RETRIED`` write nothing. A read of ``READS_RETRIED`` is sent again as often, each
        time under a new ``request_id`` (a new read, with an event of its own)."""
        noun, operation = name.split(".")
        path = f"/v1/{noun}/{operation}"
        self.answered = None
        renewed = request_id is None and name in READS_RETRIED  # each attempt a new read
        if request_id is None:
            request_id = secrets.token_bytes(codec.REQUEST_ID_BYTES)
        data = codec.envelope(name, body, request_id)
        attempts = 1 + (RETRIES if name in RETRIED or renewed else 0)
        for attempt in range(attempts):
            left = self._left()
            if attempt and renewed:
                request_id = secrets.token_bytes(codec.REQUEST_ID_BYTES)
                data = codec.envelope(name, body, request_id)
            key, keyid = self.signer()
            signed = httpsig.sign_request(
                "POST", self.authority, path, JSON, data, key, keyid, created=int(self.clock())
            )
            try:
                headers = {"Content-Type": JSON, **signed}
                response = https_wire.send(
                    self.client, self.transport, self._url(path), data, headers, READ_TIMEOUTS.get(name), left
                )
                break
            except httpx.HTTPError as error:
                if attempt + 1 < attempts and (self.deadline is None or time.monotonic() < self.deadline):
                    time.sleep(RETRY_PAUSE * (attempt + 1))
                    continue
                raise StoreUnavailable(
                    f"the server could not be reached ({type(error).__name__})",
                    hint="check the server URL, that it runs, and the pinned CA certificate",
                ) from None
        if self.server_key is not None:
            try:
                self._check_signed(response, signed["Signature"])
            except UntrustedRecord:
                self.report_refused(UNSIGNED, (name, request_id))
                if response.status_code >= 500 and not _names_a_signature(response):
                    raise failed_answer(response) from None  # a proxy's page, or a server that failed before signing
                raise
        if response.status_code != 200:
            raise self.explained(problem_error(response))
        try:
            if response.headers.get("content-type") != JSON:
                raise UntrustedRecord("the server's answer is not application/json")
            limit = RESPONSE_LIMITS.get(name, codec.MAX_BYTES)
            answer = codec.open_envelope(response.content, f"{name}.response", max_bytes=limit)
            if answer.request_id != request_id:
                raise UntrustedRecord("the server answered another request")
        except (UntrustedRecord, InvalidInput):
            self.report_refused(UNTRUSTED, (name, request_id))
            raise
        self.answered = (name, request_id)
        return answer.body

    @contextlib.contextmanager
    def within(self, seconds: float) -> Iterator[None]:
        """Every request sent inside ends within ``seconds`` in all, its retries included (each phase's
        timeout cut to what is left; none sent once it is spent): an agent answers its client before the
        client gives up on it (vault/service/agent.py), with the server's failure, not its own silence."""
        self.deadline = time.monotonic() + seconds
        try:
            yield
        finally:
            self.deadline = None

    def _left(self) -> float | None:
        """The seconds left of ``within``'s budget (None: no budget); ``StoreUnavailable`` once spent."""
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise StoreUnavailable(
                "the server did not answer in time",
                hint="check the server URL, that it runs, and the network between (a VPN, a firewall)",
            )
        return left

    def explained(self, error: VaultError) -> VaultError:
        """A refused signature (401) said in the engineer's words: the server names only its code, to
        anyone (an unknown key learns nothing of the roster); the code stays in the message."""
        if isinstance(error, Unauthenticated) and str(error) in SIGNATURE_REFUSALS:
            message, hint = SIGNATURE_REFUSALS[str(error)]
            return Unauthenticated(f"{message} ({error})", hint=hint)
        return error

    def _url(self, path: str) -> httpx.URL:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = self.client.base_url.join(path)
        return url

    def _check_signed(self, response: httpx.Response, request_sig: str) -> None:
        """The answer signed by the pinned server key for this request; or by the next version,
        taken with its certificate (``renew``); else ``UntrustedRecord`` before it is read."""
        pinned = self.server_key
        assert pinned is not None
        answered = response.headers.multi_items()

        def check(key: PinnedServerKey) -> None:
            httpsig_response.verify_response(response.status_code, answered, response.content, request_sig, key)

        try:
            check(pinned)
        except UntrustedRecord:
            version = httpsig_response.signed_version(answered)
            if self.renew is None or version is None or version == pinned[0]:
                raise
            if version < pinned[0]:
                raise UntrustedRecord(
                    f"the server signed with server key version {version}, older than the pinned version {pinned[0]}",
                    hint="a server key is never rolled back: tell your admin; nothing was accepted",
                ) from None
            self.server_key = _checked_pin(self.renew(version, check, self._left()))  # within ``within``'s budget

    def report_refused(self, reason: str, refused: tuple[str, bytes] | None = None) -> None:
        """Put a refused answer on record (``audit.answer_refused``): ``refused`` (its operation and
        request id), else the last answer this transport took (``answered``). Only to a pinned
        server (an unpinned one signs no event), never about a report, and best effort: a report
        that fails is dropped, so the refusal the caller is about to raise is the one it sees. The
        request names the operation, the request id and ``reason``: nothing of the answer."""
        target = refused if refused is not None else self.answered
        self.answered = None
        if target is None or self.server_key is None or target[0] == REPORT:
            return
        with contextlib.suppress(VaultError):
            me = self.keys.me()
            self.call(REPORT, RefusedAnswerRequest(Caller(me.engineer_id, me.key_generation), *target, reason))

    def signer(self) -> tuple[SigningKey, str]:
        """The key requests are signed with and its ``keyid``: the engineer's unlocked signing key,
        ``e:<engineer id>:<key generation>`` (an enrolment signs otherwise: ``https_enrolment.py``)."""
        me = self.keys.me()
        return self.keys.my_signing_key(), f"e:{me.engineer_id}:{me.key_generation}"

    def whoami(self) -> WhoamiAnswer:
        answer = self.call("engineers.whoami", WhoamiRequest())
        assert isinstance(answer, WhoamiAnswer)
        return answer


def _checked_pin(pin: PinnedServerKey | None) -> PinnedServerKey | None:
    if pin is None:
        return None
    version, public = pin
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigurationError("the pinned server key's version is a positive number")
    if not isinstance(public, bytes) or len(public) != 32:
        raise ConfigurationError("the pinned server key is a 32-byte Ed25519 public key")
    return version, public


def problem_error(response: httpx.Response) -> VaultError:
    """The ``vault/errors.py`` error a problem+json answer names (whitelisted), else a ``VaultError``."""
    document: object = None
    if response.headers.get("content-type") == PROBLEM and len(response.content) <= MAX_PROBLEM:
        try:
            document = json.loads(response.content)
        except ValueError:
            document = None
    if not isinstance(document, dict):
        if response.status_code >= 500:
            return failed_answer(response)
        return VaultError(f"the server answered {response.status_code} without a problem document")
    detail, hint, name = (document.get(key) for key in ("detail", "hint", "error"))
    detail = detail[:MAX_SHOWN] if isinstance(detail, str) else f"the server answered {response.status_code}"
    hint = hint[:MAX_SHOWN] if isinstance(hint, str) else None
    cls = ERRORS.get(name) if isinstance(name, str) else None
    if cls is None:
        return VaultError(detail, hint=hint)
    if cls is RateLimited:
        after = response.headers.get("retry-after", "")
        return RateLimited(detail, hint=hint or None, retry_after=int(after) if after.isdigit() else 1)
    return cls(detail, hint=hint or None)


def failed_answer(response: httpx.Response) -> StoreUnavailable:
    """A 5xx answer that is not the server's word (unsigned, or no problem document): its status and
    a neutralised excerpt of its body (``excerpt``), never the body itself; a proxy in front of the
    server, or the server itself, failed."""
    shown = excerpt(response.content)
    said = f' (it said: "{shown}")' if shown else ""
    return StoreUnavailable(
        f"the server's address answered HTTP {response.status_code}, not signed by the server{said}",
        hint="a proxy in front of the server, or the server itself, failed: try again later; if it persists, "
        "tell the server's operator (the proxy's and the server's logs)",
    )


def excerpt(body: bytes) -> str:
    """At most ``EXCERPT`` characters of an answer's start for a person to recognise (a proxy's
    "502 Bad Gateway"): markup dropped, only printable ASCII kept (no terminal escape, no line break)."""
    text = _MARKUP.sub(" ", body[: EXCERPT * 16].decode("utf-8", "replace"))
    kept = "".join(c if c.isascii() and c.isprintable() and c != '"' else " " for c in text)
    return " ".join(kept.split())[:EXCERPT]


def _names_a_signature(response: httpx.Response) -> bool:
    """Whether an answer carries a response signature's field at all (a proxy's page carries none)."""
    return any(name in response.headers for name in ("signature", "signature-input"))
