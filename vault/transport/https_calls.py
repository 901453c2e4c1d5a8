"""What the noun transports over HTTPS share, without importing httpx (a Vault opened for
in-process work never loads it): ``Calls``, the one method of ``HttpsTransport`` they use;
``answer_of``, a call whose answer must be of the route's response type; ``not_served``, the
refusal of a transport method whose route the team server does not answer yet.

``https.py`` holds the transport itself (httpx, TLS pinning, RFC 9421 signing, problem+json);
each ``https_<noun>.py`` has the methods of that noun's in-process transport (``<noun>.py``),
so that its keyholder runs unchanged on either.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from vault.errors import ConfigurationError, UntrustedRecord

T = TypeVar("T")


class Calls(Protocol):
    """``HttpsTransport``: a signed request, its decoded answer."""

    def call(self, name: str, body: object, request_id: bytes | None = None) -> object: ...


def answer_of(https: Calls, name: str, body: object, cls: type[T]) -> T:
    """``body`` sent as operation ``name``; the answer, which must be a ``cls`` (else ``UntrustedRecord``)."""
    answer = https.call(name, body)
    if not isinstance(answer, cls):
        raise UntrustedRecord(f"the server's answer is not a {name} answer")
    return answer


def not_served(operation: str) -> ConfigurationError:
    """The refusal of a transport method whose route the team server does not answer yet."""
    return ConfigurationError(
        f"{operation} is not served by the team server yet", hint="run it in-process (embedded mode) for now"
    )
