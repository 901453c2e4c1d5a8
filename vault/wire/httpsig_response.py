"""HTTP message signatures of the team server's responses (docs/server.md §3, "Responses are signed").

The server signs every response to a POST operation (200 and problem+json alike) with its
signing key, in one fixed profile of RFC 9421 beside the request's (``httpsig.py``)::

    Content-Digest: sha-256=:<RFC 9530 digest of the response body>:
    Signature-Input: sv=("@status" "content-digest" "signature";req;key="cv");created=<unix s>;
        keyid="s:<server key version>";alg="ed25519";tag="credvault/v1/response"
    Signature: sv=:<Ed25519 over the signature base, base64>:

    signature base:
    "@status": 200
    "content-digest": sha-256=:…:
    "signature";req;key="cv": :<the request's cv signature, base64>:
    "@signature-params": ("@status" "content-digest" "signature";req;key="cv");created=…;keyid=…;alg=…;tag=…

Covering the request's own signature (``req``, RFC 9421 §2.4) binds an answer to the one
request it answers: every request signature is fresh (its nonce), so a captured answer does
not verify for another request, a retry's new signature included. A TLS-terminating proxy
cannot alter the status or the body. The verifier (the keyholder's, against its pinned
server key) refuses every other profile, as the request side does: fewer, more or reordered
components, other parameters, another label, keyid, algorithm or tag, a header sent twice.
Each refusal is ``UntrustedRecord``; no hint holds a value of the response.

**Domains.** The base starts with ``"@st``: read as ``ctx``'s 4-byte length prefix that is
574 649 204, more than any base (a few hundred bytes), so no response base is a labelled
``ctx(…)`` message the same key signs (format-3 events, checkpoints). It is not a request
base either (those start with ``"@method"`` and carry ``tag="credvault/v1/request"``), and
each verifier accepts only its own label (``sv`` here, ``cv`` there).

A request without one well-formed ``cv`` signature (``request_signature`` returns None) gets an
unsigned answer: there is nothing to bind it to, and the keyholder never sends one.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from vault.crypto.serverkey import ServerSigningKey
from vault.crypto.signing import is_weak_signing_key
from vault.errors import InvalidInput, UntrustedRecord
from vault.wire import httpsig

LABEL = "sv"
TAG = "credvault/v1/response"
ALG = "ed25519"
REQUEST_LABEL = httpsig.LABEL
# The covered component identifiers, serialised (RFC 9421 §2.1: a string with parameters).
COMPONENTS = ('"@status"', '"content-digest"', f'"signature";req;key="{REQUEST_LABEL}"')
KEYID_PREFIX = "s:"

_SIGNED_HEADERS = ("content-digest", "signature-input", "signature")
_B64_SIGNATURE = r"[A-Za-z0-9+/]{86}=="  # 64 bytes, canonical base64
_REQUEST_SIGNATURE = re.compile(re.escape(f"{REQUEST_LABEL}=:") + f"({_B64_SIGNATURE})" + re.escape(":"))
_SIGNATURE = re.compile(re.escape(f"{LABEL}=:") + f"({_B64_SIGNATURE})" + re.escape(":"))
_VERSION = r"[1-9][0-9]{0,9}"
_INPUT = re.compile(
    re.escape(f"{LABEL}=({' '.join(COMPONENTS)})")
    + r";created=(0|[1-9][0-9]{0,14})"
    + re.escape(f';keyid="{KEYID_PREFIX}')
    + f"({_VERSION})"
    + re.escape(f'";alg="{ALG}";tag="{TAG}"')
)

PinnedServerKey = tuple[int, bytes]  # (server key version, its Ed25519 public key)


@dataclass(frozen=True)
class VerifiedResponse:
    """What a verified response proves: the pinned key version signed it at ``created``."""

    key_version: int
    created: int


def request_signature(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> str | None:
    """The ``"signature";req;key="cv"`` component value of a request: its one ``Signature``
    field's ``cv`` member as a byte sequence (``:base64:``), if the request has exactly one
    field holding exactly one well-formed ``cv`` signature; else None (answered unsigned)."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    found = [value for name, value in pairs if name.lower() == "signature"]
    if len(found) != 1:
        return None
    match = _REQUEST_SIGNATURE.fullmatch(found[0])
    return f":{match.group(1)}:" if match is not None else None


def signature_params(created: int, key_version: int) -> str:
    """The ``@signature-params`` value of a response signed by server key ``key_version``."""
    params: list[httpsig.Param] = [
        ("created", created),
        ("keyid", f"{KEYID_PREFIX}{key_version}"),
        ("alg", ALG),
        ("tag", TAG),
    ]
    return f"({' '.join(COMPONENTS)})" + "".join(f";{key}={_item(value)}" for key, value in params)


def signature_base(status: int, digest: str, request_sig: str, created: int, key_version: int) -> bytes:
    """The response's signature base (RFC 9421 §2.5): the three covered lines, then
    ``"@signature-params"``, without a final newline. ``request_sig`` is the request's
    ``cv`` signature as a byte sequence (``:base64:``)."""
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 999:
        raise InvalidInput("an HTTP status is three digits")
    values = (str(status), digest.strip(" \t"), request_sig)
    for value in values:
        if not (value.isascii() and value.isprintable()):
            raise InvalidInput("a covered component value is printable ASCII on one line")
    lines = [f"{name}: {value}\n" for name, value in zip(COMPONENTS, values, strict=True)]
    lines.append(f'"@signature-params": {signature_params(created, key_version)}')
    return "".join(lines).encode("ascii")


def sign_response(
    status: int, body: bytes, request_sig: str, key: ServerSigningKey, created: int | None = None
) -> dict[str, str]:
    """The ``Content-Digest``, ``Signature-Input`` and ``Signature`` headers of a response with
    ``status`` and ``body`` to the request whose ``cv`` signature is ``request_sig``
    (``request_signature``'s value). ``created`` defaults to now; tests pass it."""
    if _REQUEST_SIGNATURE.fullmatch(f"{REQUEST_LABEL}={request_sig}") is None:
        raise InvalidInput("a response binds one well-formed request signature")
    created = int(time.time()) if created is None else created
    digest = httpsig.content_digest(body)
    base = signature_base(status, digest, request_sig, created, key.version)
    signature = base64.b64encode(httpsig._ed25519_sign(key.key.seed, base)).decode("ascii")
    return {
        "Content-Digest": digest,
        "Signature-Input": f"{LABEL}={signature_params(created, key.version)}",
        "Signature": f"{LABEL}=:{signature}:",
    }


def verify_response(
    status: int,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes,
    request_signature_field: str,
    pin: PinnedServerKey,
) -> VerifiedResponse:
    """Check a response signed under this profile by the pinned server key, in this order: the
    three headers there once each, the digest matches the body, the profile is exactly ours,
    its keyid names the pinned version, and the signature verifies over this status, this
    digest and ``request_signature_field`` (the ``Signature`` field the request was sent with).
    ``UntrustedRecord`` at the first check that fails."""
    version, public = pin
    request_sig = request_signature([("signature", request_signature_field)])
    if request_sig is None:
        raise ValueError("the request was not signed under credvault's profile")
    fields = _single_fields(headers)
    if not hmac.compare_digest(fields["content-digest"].encode("ascii", "replace"), _digest(body)):
        raise _refused("its Content-Digest does not match its body")
    match = _INPUT.fullmatch(fields["signature-input"])
    if match is None:
        raise _refused("its Signature-Input is not credvault's response profile")
    created, signed_version = int(match.group(1)), int(match.group(2))
    if signed_version != version:
        raise _refused(f"it names server key version {signed_version}, not the pinned version {version}")
    signature = _parse_signature(fields["signature"])
    if is_weak_signing_key(public):
        raise _refused("the pinned server key is a weak (small-order) key")
    try:
        base = signature_base(status, fields["content-digest"], request_sig, created, version)
    except InvalidInput:
        raise _refused("a covered component is not a plain field value") from None
    if not httpsig._ed25519_verify(public, signature, base):
        raise _refused("its signature does not verify under the pinned server key for this request and status")
    return VerifiedResponse(version, created)


def signed_version(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> int | None:
    """The server key version a response's one ``Signature-Input`` names under this profile, or
    None (no such field, or not this profile). Read before anything is verified: only to ask
    whether the server names a newer key than the pinned one (``HttpsTransport``)."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    found = [value for name, value in pairs if name.lower() == "signature-input"]
    match = _INPUT.fullmatch(found[0]) if len(found) == 1 else None
    return int(match.group(2)) if match is not None else None


def _digest(body: bytes) -> bytes:
    return httpsig.content_digest(body).encode("ascii")


def _single_fields(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    found: dict[str, str] = {}
    for name, value in pairs:
        lower = name.lower()
        if lower not in _SIGNED_HEADERS:
            continue
        if lower in found:
            raise _refused(f"its {lower} header is sent more than once")
        found[lower] = value
    missing = [name for name in _SIGNED_HEADERS if name not in found]
    if missing:
        raise _refused(f"it lacks {', '.join(missing)}")
    return found


def _parse_signature(value: str) -> bytes:
    match = _SIGNATURE.fullmatch(value)
    if match is None:
        raise _refused(f"its Signature is not one {LABEL}= Ed25519 signature")
    try:
        raw = base64.b64decode(match.group(1), validate=True)
    except binascii.Error:
        raise _refused("its Signature is not base64") from None
    if base64.b64encode(raw).decode("ascii") != match.group(1):
        raise _refused("its Signature is not canonical base64")
    return raw


def _item(value: int | str) -> str:
    if isinstance(value, int):
        return str(value)
    return '"' + value + '"'  # the profile's strings hold no quote or backslash


def _refused(why: str) -> UntrustedRecord:
    return UntrustedRecord(
        f"the server's answer is not signed by the pinned server key: {why}",
        hint="compare the server key's fingerprint with your admin; a proxy or another server may be answering",
    )
