"""The values of a new client through the team server: a draft (its id reserved), then a commit.

docs/server.md §4 rule 2; the authority is ``client_add_drafts.py``, the keyholder's transport
``transport/https_client_add.py``. The draft is the ``AddDraft`` the in-process seal is shown;
the commit carries what the keyholder made for it (``NewClient``), the client's audit-key ring
and the ``client-create`` details sealed to the commit's request id, and the draft's digest.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from vault.authority.client_requests import CLIENT_CREATE, AddDraft, NewClient
from vault.authority.requests import Caller

STALE_CLIENT = "the draft this client was made on is stale: its reserved id lapsed, or the vault's keys changed since"
LABEL_CLIENT_DRAFT_DIGEST = b"credvault/v1/draft-digest/client"
RESERVED_CLIENT_ID = "client"
RESERVATION_SECONDS = 300


def draft_digest(draft: AddDraft) -> bytes:
    from vault.wire import codec  # the codec's registry imports these values: imported when first used

    return hashlib.sha256(LABEL_CLIENT_DRAFT_DIGEST + codec.encode(draft)).digest()


@dataclass(frozen=True, repr=False)
class ClientDraft:
    """The draft of a new client (its id reserved) and the digest its commit carries."""

    draft: AddDraft
    digest: bytes
    expires_at: dt.datetime

    def __repr__(self) -> str:
        return f"ClientDraft({self.draft!r})"


@dataclass(frozen=True, repr=False)
class ClientCommit:
    """What the keyholder made for the reserved ``client_id``: the client's ciphertext and
    signatures, its audit-key ring (under the new client key) and the event's details sealed
    to this request's id under it."""

    caller: Caller
    slug_tag: bytes
    org_pin: bytes
    client_id: int
    made: NewClient
    audit_keys_blob: bytes
    details_key_version: int
    details_blob: bytes
    draft_digest: bytes
    action: str = CLIENT_CREATE

    def __repr__(self) -> str:
        return f"ClientCommit(client={self.client_id})"
