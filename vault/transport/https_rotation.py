"""The client-key rotation over HTTPS: ``RotationKeyholder``'s transport on the team server.

``HttpsRotationTransport`` has the methods of ``InProcessRotationTransport`` (``rotation.py``),
so the keyholder runs unchanged on it. ``list`` and ``versions`` cross as the signed
``keys.list`` (an admin's: 403 to an engineer) and ``keys.versions`` requests (an admin, or
an engineer holding a live grant for the client: 404 otherwise, as in-process); the answer's
rows come back in one value (``RotationList``, ``KeyVersionList``) and are handed on as the
in-process transport hands them. ``open`` and ``finish`` cross as they are (``keys.open``,
``keys.finish``).

``start`` and ``rewrap`` use the seal's hands outside the server's unit instead of inside it
(docs/server.md §4 rule 2, the values ``authority/rotation_draft_values.py``):

1. ``keys.start_draft`` answers the ``StartDraft`` the seal verifies and makes the new version
   for (a refusal sends nothing more); ``keys.start`` commits it under the draft's digest, and
   the server stores it only if the draft is unchanged and it passes the authority's checks;
2. ``keys.rewrap_draft`` answers a page (the server's layer off, its release on record first) the
   seal verifies and re-wraps; ``keys.rewrap`` commits the rows under the page's digest. A page
   is at most ``SERVED_BATCH`` data keys, whatever size the keyholder asks for; the cursor the
   server answers is past that page, so the keyholder's walk is unchanged.

A start inside another unit of work (an engineer's removal) is not served (``not_served``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from vault.authority.rotation_draft_values import SERVED_BATCH, BatchCommit, BatchDrafted, StartCommit, StartDrafted
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
from vault.errors import UntrustedRecord
from vault.transport.https_calls import Calls, answer_of, not_served


class HttpsRotationTransport:
    """The client-key rotation through a team server (module docstring)."""

    def __init__(self, https: Calls) -> None:
        self.https = https

    def __repr__(self) -> str:
        return "HttpsRotationTransport()"

    def list(self, request: ListRequest) -> tuple[RotationRow, ...]:
        return answer_of(self.https, "keys.list", request, RotationList).rotations

    def versions(self, request: VersionsRequest) -> tuple[KeyVersionRow, ...]:
        return answer_of(self.https, "keys.versions", request, KeyVersionList).versions

    def start(self, request: StartRequest, seal: Any, unit: Any = None) -> Started:
        if unit is not None:
            raise not_served("a client-key rotation inside another change (an engineer's removal)")
        drafted = answer_of(self.https, "keys.start_draft", request, StartDrafted)
        made = seal.new_key(drafted.draft)  # verified, then made on this machine; a refusal sends nothing
        return answer_of(self.https, "keys.start", StartCommit.of(request, drafted.digest, made), Started)

    def open(self, request: OpenRequest) -> RotationBasis:
        return answer_of(self.https, "keys.open", request, RotationBasis)

    def rewrap(self, request: BatchRequest, seal: Any) -> BatchDone:
        request = dataclasses.replace(request, size=min(request.size, SERVED_BATCH))
        drafted = answer_of(self.https, "keys.rewrap_draft", request, BatchDrafted)
        if drafted.batch is None:
            if drafted.done is None:
                raise UntrustedRecord("the server's answer is neither a page nor a batch's end")
            return drafted.done
        rows = tuple(seal.rewrap(drafted.batch))  # verified and re-wrapped here; a refusal sends nothing
        return answer_of(self.https, "keys.rewrap", BatchCommit(request, drafted.digest, rows), BatchDone)

    def finish(self, request: FinishRequest) -> Finished:
        return answer_of(self.https, "keys.finish", request, Finished)
