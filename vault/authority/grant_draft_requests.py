"""The values of an admin's grant and revoke through the team server: a draft, then a commit.

docs/server.md §4 rule 2. In-process the admin's keyholder signs inside the grants
authority's unit of work (``GrantSeal``): the revocations, the new grant over the number of
its audit event, the client keys sealed to the engineer. Over HTTPS nothing it signs may
name a number the commit's unit assigns, so a grant or a revoke is two requests, with no
state on the server between them but a grant id reservation:

1. **The draft** (``grants.grant_draft`` / ``grants.revoke_draft``): the ``GrantRows`` the
   in-process seal is shown (the admin's own row and key chain, the engineer with their
   certificate, the client, the unrevoked rows of their ledger, for a grant the new row —
   its id reserved from the grants' sequence (``id_reservations``, five minutes), dated by
   the reservation — and each client-key record with its recovery copy), and ``digest``
   (``draft_digest``). A draft writes no event: it releases nothing an admin may not read.
2. **The commit** (``grants.grant`` / ``grants.revoke``): what the keyholder signed and
   sealed for that draft — each revocation's signature (at the draft's ``revoked_at``, by
   the caller), for a grant its signature in format 3 (``LABEL_SIG_GRANT_V3``: the request id
   of this commit in place of the event's number) and the client keys sealed to the engineer
   — its details sealed to the request id (``LABEL_AUDIT_DETAIL_V3``), and the digest. The
   server recomputes the draft in the commit's unit, under the engineer's row lock, and
   refuses another digest, an expired or another admin's reservation (``STALE_GRANT``, 409
   ``stale-draft``); it verifies every signature under the caller's certified key before it
   writes, so that nothing an admin did not sign is stored.

A revoke's ``revoked_at`` is the keyholder's (the draft's, sent back; within
``REVOKED_AT_SLACK`` of the server's clock at the commit). A commit names its caller, action
and client (what ``audit verify`` compares with the event).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from vault.authority.grant_requests import GRANT, REVOKE, GrantRows, SealedCopy
from vault.authority.requests import Caller, OrgKeyRow

STALE_GRANT = "the draft this grant or revoke was made on is stale: the engineer's grants or the client changed since"
LABEL_GRANT_DRAFT_DIGEST = b"credvault/v1/draft-digest/grant"
RESERVED_GRANT_ID = "grant"  # id_reservations.kind of a grant's id
RESERVATION_SECONDS = 300
REVOKED_AT_SLACK = 300  # seconds a revoke's time (the keyholder's draft's) may be from the server's clock


def draft_digest(rows: GrantRows) -> bytes:
    """SHA-256 of the label and the canonical encoding of ``rows`` (every field)."""
    from vault.wire import codec  # the codec's registry imports these values: imported when first used

    return hashlib.sha256(LABEL_GRANT_DRAFT_DIGEST + codec.encode(rows)).digest()


@dataclass(frozen=True)
class GrantDraftRequest:
    """Draft a grant of the client under ``slug_tag`` to ``engineer`` until ``until``."""

    caller: Caller
    engineer: str
    slug_tag: bytes
    until: int | None
    org_pin: bytes

    def __repr__(self) -> str:
        return f"GrantDraftRequest(engineer={self.engineer!r}, until={self.until})"


@dataclass(frozen=True)
class RevokeDraftRequest:
    """Draft the revocation of every unrevoked grant of ``engineer`` for the client under ``slug_tag``."""

    caller: Caller
    engineer: str
    slug_tag: bytes
    org_pin: bytes

    def __repr__(self) -> str:
        return f"RevokeDraftRequest(engineer={self.engineer!r})"


@dataclass(frozen=True, repr=False)
class GrantDraft:
    """What the keyholder verifies and signs for (``rows``: the in-process seal's draft), the
    digest its commit carries, and when a grant's reserved id lapses (None for a revoke)."""

    rows: GrantRows
    digest: bytes
    expires_at: dt.datetime | None

    def __repr__(self) -> str:
        return f"GrantDraft({self.rows!r})"


@dataclass(frozen=True, repr=False)
class GrantCommit:
    """The grant the keyholder signed for the draft: the reserved ``grant_id``, the
    revocations of the ledger's unrevoked rows, its signature (format 3, over this commit's
    request id), the client keys sealed to the engineer, its details sealed to the request id."""

    caller: Caller
    engineer: str
    slug_tag: bytes
    client_id: int
    until: int | None
    org_pin: bytes
    grant_id: int
    revocations: tuple[bytes, ...]
    signature: bytes
    copies: tuple[SealedCopy, ...]
    details_key_version: int
    details_blob: bytes
    draft_digest: bytes
    action: str = GRANT

    def __repr__(self) -> str:
        return f"GrantCommit(engineer={self.engineer!r}, grant={self.grant_id})"


@dataclass(frozen=True, repr=False)
class RevokeCommit:
    """The revocations the keyholder signed for the draft, at the draft's ``revoked_at``."""

    caller: Caller
    engineer: str
    slug_tag: bytes
    client_id: int
    org_pin: bytes
    revoked_at: dt.datetime
    revocations: tuple[bytes, ...]
    details_key_version: int
    details_blob: bytes
    draft_digest: bytes
    action: str = REVOKE

    def __repr__(self) -> str:
        return f"RevokeCommit(engineer={self.engineer!r})"


# -- engineers.root_seal: an admin's copy of the root bundle, for their keyholder off the database ---


@dataclass(frozen=True)
class RootSealRequest:
    """The caller's (an admin's) sealed copy of the vault's current root bundle."""

    caller: Caller
    org_pin: bytes


@dataclass(frozen=True, repr=False)
class RootSealAnswer:
    """The current root version and the copy of its bundle sealed to the caller (ciphertext:
    only the caller's sealing key opens it; the keyholder believes the bundle only if the
    organisation key inside it is the one it pinned)."""

    vault_id: bytes
    root_version: int
    blob: bytes
    # the vault's current organisation key and the signed chain to it from the caller's pin (empty:
    # the pin is current); a bundle made by a root rotation holds the new key (the keyholder follows
    # the chain, each link signed by the key before it, as a checkout's context does)
    org_signing_public: bytes = b""
    org_chain: tuple[OrgKeyRow, ...] = ()

    def __repr__(self) -> str:
        return f"RootSealAnswer(version={self.root_version}, <ciphertext>)"
