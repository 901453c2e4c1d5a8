"""The values of an admin's client-key rotation through the team server: drafts and commits.

In-process the rotation's keyholder lends its hands to the authority's unit of work (a seal:
``authority/rotation.py``'s ``StartSeal``, ``rotation_batches.RewrapSeal``). A network cannot
carry a seal, so each of the two steps that need one is split in two requests (docs/server.md
§4 rule 2, docs/format.md §8.3):

* **start**: ``keys.rotate_draft`` (a ``StartRequest``) answers the ``StartDraft`` the seal would
  be shown and its digest, nothing written; the admin's keyholder verifies it and makes the new
  version on their machine; ``keys.rotate`` (a ``StartCommit``: the request, the digest, the
  ``NewClientKey``) runs the start again in one unit, which stores the new version only if the
  draft it reads is the one digested (else ``STALE_DRAFT``, 409, nothing written) and passes the
  authority's own checks (the record signed by the caller, one copy per grantee, fields under it).
* **re-wrap**: ``keys.rewrap_draft`` (a ``BatchRequest``) answers the page the seal would be shown
  (``BatchDrafted``): the wrapped data keys without the server's layer, once the event naming
  every version released is committed; and the digest of the page as stored. ``keys.rewrap``
  (a ``BatchCommit``: the request, the digest, the ``Rewrapped`` rows) runs the batch again, which
  stores the rows only if the page it reads is the one digested and they are exactly its rows,
  under the new version; the server puts its layer back on them in the same unit.

``keys.open`` and ``keys.finish`` cross as in-process (``OpenRequest``, ``FinishRequest``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from vault.authority.requests import Caller
from vault.authority.rotation_requests import (
    Batch,
    BatchDone,
    BatchRequest,
    NewClientKey,
    Rewrapped,
    StartDraft,
    StartRequest,
)

LABEL_START_DIGEST = b"credvault/v1/draft-digest/rotation-start"
LABEL_BATCH_DIGEST = b"credvault/v1/draft-digest/rotation-batch"
STALE_DRAFT = "the rotation's draft is stale: the client, its grantees or the page changed since; nothing written"
REWRAP_RELEASE = "client-key-rewrap"  # the event of a page released without the server's layer
SERVED_BATCH = 500  # data keys in one page through the server, at most (its event names each one)


def start_digest(draft: StartDraft) -> bytes:
    """SHA-256 of the draft's canonical encoding: the same rows give the same digest."""
    from vault.wire import codec  # the codec's registry imports these values: imported when first used

    return hashlib.sha256(LABEL_START_DIGEST + codec.encode(draft)).digest()


def batch_digest(batch: Batch) -> bytes:
    """SHA-256 of the page as stored (the server's layer on): the same rows give the same digest."""
    from vault.wire import codec

    return hashlib.sha256(LABEL_BATCH_DIGEST + codec.encode(batch)).digest()


@dataclass(frozen=True, repr=False)
class StartDrafted:
    """What a start would show the keyholder (``draft``) and its digest, for the commit to name."""

    draft: StartDraft
    digest: bytes

    def __repr__(self) -> str:
        return f"StartDrafted(client={self.draft.client.id}, version={self.draft.new_version})"


@dataclass(frozen=True, repr=False)
class StartCommit:
    """The start again (the ``StartRequest``'s fields: the caller and the client at the top, as the
    event's kept request names them), with the new version the keyholder made for the draft named
    by ``digest``."""

    caller: Caller
    client_id: int
    supersede: bool
    org_pin: bytes
    digest: bytes
    made: NewClientKey

    @classmethod
    def of(cls, request: StartRequest, digest: bytes, made: NewClientKey) -> StartCommit:
        return cls(request.caller, request.client_id, request.supersede, request.org_pin, digest, made)

    @property
    def request(self) -> StartRequest:
        return StartRequest(self.caller, self.client_id, self.supersede, self.org_pin)

    def __repr__(self) -> str:
        return f"StartCommit(client={self.client_id}, version={self.made.version})"


@dataclass(frozen=True, repr=False)
class BatchDrafted:
    """A page to re-wrap (``batch``: its keys without the server's layer) and the digest of the page
    as stored; or, when nothing is left, the batch's answer (``done``) and no page."""

    batch: Batch | None
    digest: bytes
    done: BatchDone | None

    def __repr__(self) -> str:
        return f"BatchDrafted(rows={0 if self.batch is None else len(self.batch.rows)})"


@dataclass(frozen=True, repr=False)
class BatchCommit:
    """The batch again, with the page re-wrapped by the keyholder (``rows``) for the draft ``digest`` names."""

    request: BatchRequest
    digest: bytes
    rows: tuple[Rewrapped, ...]

    def __repr__(self) -> str:
        return f"BatchCommit(rotation={self.request.rotation_id}, rows={len(self.rows)})"
