"""The client-key rotation's reads over HTTPS: ``RotationKeyholder``'s transport on the team server.

``HttpsRotationTransport`` has the methods of ``InProcessRotationTransport`` (``rotation.py``),
so the keyholder runs unchanged on it. ``list`` and ``versions`` cross as the signed
``keys.list`` (an admin's: 403 to an engineer) and ``keys.versions`` requests (an admin, or
an engineer holding a live grant for the client: 404 otherwise, as in-process); the answer's
rows come back in one value (``RotationList``, ``KeyVersionList``) and are handed on as the
in-process transport hands them. ``start``, ``open``, ``rewrap`` and ``finish`` need the
keyholder's hands inside the authority's unit (seals) or write: the server does not answer
them yet (drafts and signed commits, step 6), so they raise ``ConfigurationError``.
"""

from __future__ import annotations

from typing import Any

from vault.authority.rotation_reads import KeyVersionList, RotationList
from vault.authority.rotation_requests import (
    BatchDone,
    BatchRequest,
    Finished,
    FinishRequest,
    KeyVersionRow,
    ListRequest,
    OpenRequest,
    RotationBasis,
    RotationRow,
    Started,
    StartRequest,
    VersionsRequest,
)
from vault.transport.https_calls import Calls, answer_of, not_served


class HttpsRotationTransport:
    """``keys.list`` and ``keys.versions`` through a team server (module docstring)."""

    def __init__(self, https: Calls) -> None:
        self.https = https

    def __repr__(self) -> str:
        return "HttpsRotationTransport()"

    def list(self, request: ListRequest) -> tuple[RotationRow, ...]:
        return answer_of(self.https, "keys.list", request, RotationList).rotations

    def versions(self, request: VersionsRequest) -> tuple[KeyVersionRow, ...]:
        return answer_of(self.https, "keys.versions", request, KeyVersionList).versions

    def start(self, request: StartRequest, seal: Any, unit: Any = None) -> Started:
        raise not_served("keys.rotate_client")

    def open(self, request: OpenRequest) -> RotationBasis:
        raise not_served("keys.resume")

    def rewrap(self, request: BatchRequest, seal: Any) -> BatchDone:
        raise not_served("keys.resume")

    def finish(self, request: FinishRequest) -> Finished:
        raise not_served("keys.resume")
