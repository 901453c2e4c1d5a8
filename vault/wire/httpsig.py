"""HTTP message signatures of a keyholder's requests (docs/server.md §3).

One fixed profile of RFC 9421 (HTTP Message Signatures) with Ed25519, over the body's
``Content-Digest`` (RFC 9530, sha-256)::

    Signature-Input: cv=("@method" "@authority" "@path" "content-type" "content-digest");
        created=<unix s>;nonce="<16 random bytes, b64url>";keyid="<keyid>";alg="ed25519";
        tag="credvault/v1/request"
    Signature: cv=:<Ed25519 over the signature base, base64>:

The verifier refuses every other profile (fewer or reordered components, other parameters,
another label or algorithm) even when its signature is good: a request proves only what
this list covers. Every refusal is ``Unauthenticated`` (a ``Locked``; the server answers
401) whose message is one of the codes ``unsigned``, ``bad-signature``, ``unknown-key``,
``stale``, ``replayed``; the hint says which check failed and holds no secret.

The server passes its configured ``--public-url`` host as ``authority`` (never the Host a
proxy forwards), so a request made for one server does not play on another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vault.crypto import _primitives as prim
from vault.crypto.signing import SigningKey, is_weak_signing_key
from vault.errors import InvalidInput, Unauthenticated

LABEL = "cv"
TAG = "credvault/v1/request"
ALG = "ed25519"
COMPONENTS = ("@method", "@authority", "@path", "content-type", "content-digest")
WINDOW = 60
NONCE_SIZE = 16

UNSIGNED = "unsigned"
BAD_SIGNATURE = "bad-signature"
UNKNOWN_KEY = "unknown-key"
STALE = "stale"
REPLAYED = "replayed"

_SIGNED_HEADERS = ("content-type", "content-digest", "signature-input", "signature")
_MAX_INTEGER = 999_999_999_999_999  # RFC 8941 §3.3.1
_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_NONCE = re.compile(r"[A-Za-z0-9_-]{22}")
_KEYID = r"[\x20\x21\x23-\x5b\x5d-\x7e]{1,200}"  # printable ASCII without '"' and '\'
_SIGNATURE = re.compile(re.escape(f"{LABEL}=:") + r"([A-Za-z0-9+/]{86}==)" + re.escape(":"))

Param = tuple[str, int | str]


@dataclass(frozen=True)
class Verified:
    """What a verified request proves: who signed it, when, under which nonce. The
    signature and its parameters are kept for the audit (docs/server.md §4, ``request_sig``)."""

    keyid: str
    created: int
    nonce: str
    signature: bytes
    signature_params: str


class NonceStore(Protocol):
    """Remembers each (keyid, nonce) of a verified request for as long as it could replay."""

    def remember(self, keyid: str, nonce: str, created: int) -> bool:
        """Store the pair; False if it is already stored (the request is a replay)."""
        ...


class MemoryNonceStore:
    """A ``NonceStore`` in process memory (tests, one process). It forgets a nonce once its
    ``created`` is more than ``2 × window`` before the clock, as the server's table does
    (docs/server.md §3): by then any request carrying it is refused as ``stale`` first."""

    def __init__(self, window: int = WINDOW, clock: Callable[[], float] = time.time) -> None:
        if window <= 0:
            raise ValueError("the window is a positive number of seconds")
        self._retention = 2 * window
        self._clock = clock
        self._seen: dict[tuple[str, str], int] = {}
        self._by_age: list[tuple[int, str, str]] = []
        self._lock = threading.Lock()

    def remember(self, keyid: str, nonce: str, created: int) -> bool:
        with self._lock:
            self._forget_before(self._clock() - self._retention)
            if (keyid, nonce) in self._seen:
                return False
            self._seen[(keyid, nonce)] = created
            heapq.heappush(self._by_age, (created, keyid, nonce))
            return True

    def __len__(self) -> int:
        return len(self._seen)

    def _forget_before(self, cutoff: float) -> None:
        while self._by_age and self._by_age[0][0] < cutoff:
            _, keyid, nonce = heapq.heappop(self._by_age)
            self._seen.pop((keyid, nonce), None)


def content_digest(body: bytes) -> str:
    """The ``Content-Digest`` field value of ``body`` (RFC 9530, sha-256)."""
    return digest_field(hashlib.sha256(body).digest())


def digest_field(sha256: bytes) -> str:
    """The ``Content-Digest`` field value of a body whose SHA-256 is ``sha256``."""
    return f"sha-256=:{base64.b64encode(sha256).decode('ascii')}:"


def new_nonce() -> str:
    """16 random bytes, base64url without padding (22 characters)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(NONCE_SIZE)).rstrip(b"=").decode("ascii")


def signature_params(names: Sequence[str], params: Sequence[Param]) -> str:
    """The ``@signature-params`` value (RFC 9421 §2.3): the covered component identifiers
    as an inner list of strings, then each parameter in the order given."""
    inner = " ".join(_sf_string(name) for name in names)
    out = [f"({inner})"]
    for key, value in params:
        if not _KEY.fullmatch(key):
            raise InvalidInput(f"{key!r} is not a structured-field key")
        out.append(f";{key}={_sf_item(value)}")
    return "".join(out)


def signature_base(components: Sequence[tuple[str, str]], params: Sequence[Param]) -> bytes:
    """The signature base (RFC 9421 §2.5): one ``"name": value`` line per covered
    component, in order, then ``"@signature-params": …`` without a final newline. Values
    are the already-canonical component values (a lower-case authority, a header's value
    trimmed); a value with a control character (a forged extra line) is refused."""
    lines = []
    seen = set()
    for name, value in components:
        if name in seen or name == "@signature-params":
            raise InvalidInput(f"component {name!r} is covered twice")
        seen.add(name)
        lines.append(f"{_sf_string(name)}: {_field_value(value)}\n")
    names = [name for name, _ in components]
    lines.append(f'"@signature-params": {signature_params(names, params)}')
    return "".join(lines).encode("ascii")


def sign_request(
    method: str,
    authority: str,
    path: str,
    content_type: str,
    body: bytes,
    key: SigningKey,
    keyid: str,
    created: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The ``Content-Digest``, ``Signature-Input`` and ``Signature`` headers of a request
    signed under this profile. ``created`` and ``nonce`` default to now and a fresh nonce;
    tests pass them to replay fixed values."""
    created = int(time.time()) if created is None else created
    nonce = new_nonce() if nonce is None else nonce
    if not _NONCE.fullmatch(nonce):
        raise InvalidInput("a request nonce is 16 bytes, base64url without padding")
    if not re.fullmatch(_KEYID, keyid):
        raise InvalidInput("a keyid is printable ASCII without quotes or backslashes")
    digest = content_digest(body)
    params = _params(created, nonce, keyid)
    base = signature_base(_components(method, authority, path, content_type, digest), params)
    signature = base64.b64encode(_ed25519_sign(key.seed, base)).decode("ascii")
    return {
        "Content-Digest": digest,
        "Signature-Input": f"{LABEL}={signature_params(COMPONENTS, params)}",
        "Signature": f"{LABEL}=:{signature}:",
    }


def verify_request(
    method: str,
    authority: str,
    path: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes,
    public_key_for: Callable[[str], bytes | None],
    now: float,
    window: int = WINDOW,
    *,
    nonces: NonceStore,
) -> Verified:
    """Check a request signed under this profile, in this order: the headers are there
    once each, the digest matches the body, the profile is exactly ours, ``created`` is
    within ± ``window`` of ``now``, ``keyid`` names a key, the signature verifies under it,
    and its nonce was not seen before (remembered only now, so an unsigned request cannot
    spend another engineer's nonce). ``public_key_for`` returns None for an unknown keyid."""
    fields = _single_fields(headers)
    digest = fields["content-digest"]
    if not hmac.compare_digest(digest.encode("ascii", "replace"), content_digest(body).encode("ascii")):
        raise _refused(BAD_SIGNATURE, "the Content-Digest does not match the body")
    created, nonce, keyid = _parse_input(fields["signature-input"])
    signature = _parse_signature(fields["signature"])
    if abs(now - created) > window:
        raise _refused(STALE, f"the request was created more than {window} s from the server's clock")
    public = public_key_for(keyid)
    if public is None or is_weak_signing_key(public):
        raise _refused(UNKNOWN_KEY, "no usable key is known for this keyid")
    params = _params(created, nonce, keyid)
    try:
        components = _components(method, authority, path, fields["content-type"], digest)
        base = signature_base(components, params)
    except InvalidInput as exc:
        raise _refused(BAD_SIGNATURE, "a covered component is not a plain field value") from exc
    if not _ed25519_verify(public, signature, base):
        raise _refused(BAD_SIGNATURE, "the signature does not verify under the keyid's key")
    if not nonces.remember(keyid, nonce, created):
        raise _refused(REPLAYED, "this nonce was already used; sign every request afresh")
    return Verified(keyid, created, nonce, signature, signature_params(COMPONENTS, params))


def verify_recorded(
    method: str,
    authority: str,
    path: str,
    content_type: str,
    digest: str,
    signature_input: str,
    signature: str,
    public: bytes,
) -> Verified:
    """A request signature kept in the audit chain (docs/format.md §8.2) checked again, long
    after the request: the same profile, base and key checks as ``verify_request``, from the
    values the event kept (``digest`` is the ``Content-Digest`` the engineer signed), with no
    window and no nonce store (the event's time and uniqueness are the verifier's to judge).
    ``Locked`` (``bad-signature`` or ``unknown-key``) if it does not verify."""
    created, nonce, keyid = _parse_input(signature_input)
    raw = _parse_signature(signature)
    if is_weak_signing_key(public):
        raise _refused(UNKNOWN_KEY, "no usable key is known for this keyid")
    params = _params(created, nonce, keyid)
    try:
        base = signature_base(_components(method, authority, path, content_type, digest), params)
    except InvalidInput as exc:
        raise _refused(BAD_SIGNATURE, "a covered component is not a plain field value") from exc
    if not _ed25519_verify(public, raw, base):
        raise _refused(BAD_SIGNATURE, "the signature does not verify under the keyid's key")
    return Verified(keyid, created, nonce, raw, signature_input[len(LABEL) + 1 :])  # the profile matched: the params


def _params(created: int, nonce: str, keyid: str) -> list[Param]:
    return [("created", created), ("nonce", nonce), ("keyid", keyid), ("alg", ALG), ("tag", TAG)]


def _components(method: str, authority: str, path: str, content_type: str, digest: str) -> list[tuple[str, str]]:
    if not path.startswith("/"):
        raise InvalidInput("a request path starts with '/'")
    values = (method, authority.lower(), path, content_type.strip(" \t"), digest.strip(" \t"))
    return list(zip(COMPONENTS, values, strict=True))


def _single_fields(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """The signed headers by lower-case name; a missing one is ``unsigned``, one sent twice
    (two lines, or names differing in case) is ``bad-signature``."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    found: dict[str, str] = {}
    for name, value in pairs:
        lower = name.lower()
        if lower not in _SIGNED_HEADERS:
            continue
        if lower in found:
            raise _refused(BAD_SIGNATURE, f"the {lower} header is sent more than once")
        found[lower] = value
    missing = [name for name in _SIGNED_HEADERS if name not in found]
    if missing:
        raise _refused(UNSIGNED, f"the request lacks {', '.join(missing)}; sign every request")
    return found


def created_of(signature_input: str) -> int:
    """The ``created`` time a Signature-Input of credvault's profile names (``Unauthenticated`` else)."""
    return _parse_input(signature_input)[0]


def _parse_input(value: str) -> tuple[int, str, str]:
    match = _INPUT.fullmatch(value)
    if match is None:
        raise _refused(BAD_SIGNATURE, "Signature-Input is not credvault's one profile")
    return int(match.group(1)), match.group(2), match.group(3)


def _parse_signature(value: str) -> bytes:
    match = _SIGNATURE.fullmatch(value)
    if match is None:
        raise _refused(BAD_SIGNATURE, f"Signature is not one {LABEL}= Ed25519 signature")
    try:
        raw = base64.b64decode(match.group(1), validate=True)
    except binascii.Error as exc:
        raise _refused(BAD_SIGNATURE, "Signature is not base64") from exc
    if base64.b64encode(raw).decode("ascii") != match.group(1):
        raise _refused(BAD_SIGNATURE, "Signature is not canonical base64")
    return raw


def _refused(code: str, hint: str) -> Unauthenticated:
    return Unauthenticated(code, hint=hint)


def _printable_ascii(value: str) -> bool:
    """Whether every character is in 0x20-0x7E (for ASCII, ``isprintable`` is exactly that range)."""
    return value.isascii() and value.isprintable()


def _sf_string(value: str) -> str:
    if not _printable_ascii(value):
        raise InvalidInput("a structured-field string is printable ASCII")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _sf_item(value: int | str) -> str:
    if isinstance(value, bool):
        raise TypeError("booleans are not signature parameters")
    if isinstance(value, int):
        if not -_MAX_INTEGER <= value <= _MAX_INTEGER:
            raise InvalidInput("a structured-field integer has at most 15 digits")
        return str(value)
    return _sf_string(value)


def _field_value(value: str) -> str:
    if not _printable_ascii(value):
        raise InvalidInput("a covered component value is printable ASCII on one line")
    return value


def _ed25519_sign(seed: bytes, message: bytes) -> bytes:
    """Raw Ed25519 (RFC 8032) over the signature base: ``SigningKey.sign`` signs labelled
    contexts only, and RFC 9421 signs the base's bytes as they are. The primitive keeps the
    expanded key of the few seeds in use (every request of a session, every answer of a server)."""
    return prim.ed25519_sign(seed, message)


def _ed25519_verify(public: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


# Built last: it serialises the profile with the functions above.
_INPUT = re.compile(
    re.escape(f"{LABEL}={signature_params(COMPONENTS, [])}")
    + r";created=(0|[1-9][0-9]{0,14})"
    + r';nonce="([A-Za-z0-9_-]{22})"'
    + rf';keyid="({_KEYID})"'
    + re.escape(f';alg="{ALG}";tag="{TAG}"')
)
