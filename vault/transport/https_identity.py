"""A team server's identity, read before any engineer key exists here (``GET /v1/identity``).

What a person compares with their admin before this machine pins the server
(``credvault server trust``, ``engineer enroll --server``): the vault id, the organisation
key (version and public key) and the server signing key (version, public key, and the
organisation key's certificate of it). ``read_identity`` checks the answer's shape strictly
and the server key's certificate under the organisation key the answer names; the person's
comparison of fingerprints is what makes that organisation key the right one.

TLS is checked against the CA file given (the admin's CA certificate, or the server's own),
never the system's trust store; plain ``http://`` only to a loopback host (tests).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from vault.crypto import serverkey, signing
from vault.errors import ConfigurationError, StoreUnavailable, UntrustedRecord, VaultError
from vault.transport.https import NO_DELAY, _loopback, problem_error

MAX_IDENTITY = 8 * 1024


@dataclass(frozen=True)
class ServerIdentity:
    """What ``/v1/identity`` answered, its server key's certificate verified."""

    vault_id: bytes
    org_key: tuple[int, bytes]
    server_key: tuple[int, bytes] | None  # None: the server has no signing key (it serves no checkout)

    def fingerprints(self) -> dict[str, str]:
        """What a person reads to their admin: short hex fingerprints of each part."""
        # as `credvault init` printed it ("org fingerprint"), for the admin to compare
        out = {"vault": self.vault_id.hex()[:16], "org fingerprint": signing.org_fingerprint(self.org_key[1])[:8].hex()}
        if self.server_key is not None:
            out["server key"] = f"v{self.server_key[0]} {fingerprint(self.server_key[1])}"
        return out


def fingerprint(public: bytes) -> str:
    """A public key's fingerprint as people compare it: 16 bytes of its SHA-256, in groups of four hex."""
    digest = hashlib.sha256(public).hexdigest()[:32]
    return " ".join(digest[i : i + 4] for i in range(0, 32, 4))


def _b64(value: object, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise UntrustedRecord("the server's identity is malformed")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise UntrustedRecord("the server's identity is malformed") from None
    if size is not None and len(raw) != size:
        raise UntrustedRecord("the server's identity is malformed")
    return raw


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**31:
        raise UntrustedRecord("the server's identity is malformed")
    return value


def parse_identity(document: object) -> ServerIdentity:
    """``document`` (the decoded answer) as a ``ServerIdentity``, its certificate verified."""
    if not isinstance(document, dict):
        raise UntrustedRecord("the server's identity is malformed")
    vault_id = _b64(document.get("vault_id"), 16)
    org = document.get("org_key")
    if not isinstance(org, dict):
        raise UntrustedRecord("the server's identity is malformed")
    org_key = (_int(org.get("version")), _b64(org.get("public"), 32))
    key = document.get("server_key")
    if key is None:
        return ServerIdentity(vault_id, org_key, None)
    if not isinstance(key, dict):
        raise UntrustedRecord("the server's identity is malformed")
    version, public = _int(key.get("version")), _b64(key.get("public"), 32)
    certificate = _b64(key.get("certificate"), 64)
    serverkey.verify_certificate(org_key[1], certificate, vault_id, version, public, _int(key.get("certified_at")))
    return ServerIdentity(vault_id, org_key, (version, public))


def read_identity(
    url: str, *, ca_file: str | None, transport: httpx.BaseTransport | None = None, timeout: float = 10.0
) -> ServerIdentity:
    """The identity ``url`` answers, over TLS checked against ``ca_file``."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigurationError("the server URL is https://HOST[:PORT]")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise ConfigurationError("refusing a server URL without TLS", hint="use https://")
    if parts.scheme == "https" and ca_file is None and transport is None:
        raise ConfigurationError("no CA file for the server", hint="pass --ca-file with the server's CA certificate")
    verify: ssl.SSLContext | bool = True
    if ca_file is not None:
        try:
            verify = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError):
            raise ConfigurationError(f"cannot use the CA file {ca_file}", hint="pass a PEM certificate") from None
    transport = transport or httpx.HTTPTransport(verify=verify, socket_options=[NO_DELAY])
    try:
        with httpx.Client(base_url=f"{parts.scheme}://{parts.netloc}", transport=transport, timeout=timeout) as client:
            response = client.get("/v1/identity")
    except httpx.HTTPError as error:
        raise StoreUnavailable(
            f"the server could not be reached ({type(error).__name__})",
            hint="check the URL, that the server runs, and that the CA file is the server's",
        ) from None
    if response.status_code != 200:
        refused: VaultError = problem_error(response)
        raise refused
    if len(response.content) > MAX_IDENTITY or response.headers.get("content-type") != "application/json":
        raise UntrustedRecord("the server's identity is malformed")
    try:
        document = json.loads(response.content)
    except ValueError:
        raise UntrustedRecord("the server's identity is malformed") from None
    return parse_identity(document)
