"""The values of an engineer's removal through the team server: a draft, then a signed commit.

docs/server.md (session 14, helper B) and docs/format.md §5 ("An engineer's removal through the
server"); the authority is ``removal_drafts.py``, the keyholder's transport
``transport/https_engineer_writes.py``. In-process the removal keyholder is shown a ``RemovalDraft``
inside the authority's unit (``RemovalSeal.remove``), and each client-key rotation the removal starts
shows the rotation keyholder a ``StartDraft`` (``StartSeal.new_key``); over HTTPS the draft shows them
all at once: the starts as they will be made once the engineer is removed (their grantees without
them). The commit carries the keyholder's ``Removal`` (the revocations and the disabled certificate),
the revocation time it signed, one ``NewClientKey`` per start, and the digest of the draft.

**An admin's removal** (session 17, helper I; docs/format.md §5 "An admin's removal through the
server"): the draft also carries the ``AdoptionDraft`` of what they signed, and the commit the
admin's ``AdoptionMade``; between the two, ``engineers.remove_root_draft`` (the commit without its
root, a ``RemovalCommit``) answers the ``RemovalRootDraft``: the root rotation's draft and every
page of clients as the rotation will be shown them once the commit's writes are made (drafted in a
unit that makes them and is rolled back). The commit then carries the ``RemovalRoot``: the plan and
each page's answer, under their digests, replayed in the removal's own unit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from vault.authority.adoption_draft_values import AdoptionDraft, AdoptionMade
from vault.authority.engineer_requests import REMOVE, Removal, RemovalDraft
from vault.authority.requests import Caller
from vault.authority.root_draft_values import RootDrafted, RootPageCommit, RootPageDrafted
from vault.authority.root_rotation_requests import RootPlan
from vault.authority.rotation_requests import NewClientKey, StartDraft

STALE_REMOVAL = "the draft this removal was signed over is stale: the engineer, a grant or a client key changed since"
LABEL_REMOVAL_DRAFT_DIGEST = b"credvault/v1/draft-digest/removal"


@dataclass(frozen=True, repr=False)
class RemovalDraftRows:
    """What the removal will sign and start: the removal draft and one start per client."""

    removal: RemovalDraft
    starts: tuple[StartDraft, ...]
    adoption: AdoptionDraft | None = None  # an admin's removal: what they signed (adoption_drafts.py)

    def __repr__(self) -> str:
        return f"RemovalDraftRows(engineer={self.removal.engineer.id}, starts={len(self.starts)})"


def draft_digest(rows: RemovalDraftRows) -> bytes:
    from vault.wire import codec  # the codec's registry imports these values: imported when first used

    return hashlib.sha256(LABEL_REMOVAL_DRAFT_DIGEST + codec.encode(rows)).digest()


@dataclass(frozen=True, repr=False)
class RemovalDraftAnswer:
    """The server's draft of a removal and its digest; nothing is written."""

    rows: RemovalDraftRows
    digest: bytes

    def __repr__(self) -> str:
        return f"RemovalDraftAnswer(engineer={self.rows.removal.engineer.id})"


@dataclass(frozen=True, repr=False)
class RemovalCommit:
    """The keyholder's signed removal of the drafted engineer and the new key of each client started."""

    caller: Caller
    name: str
    org_pin: bytes
    engineer_id: int
    revoked_at: int
    removal: Removal
    new_keys: tuple[tuple[int, NewClientKey], ...]  # (client id, its new version)
    draft_digest: bytes
    action: str = REMOVE
    adopted: AdoptionMade | None = None  # an admin's removal: what they signed, adopted by the caller
    root: RemovalRoot | None = None  # an admin's removal: the root rotation made for the root draft

    def __repr__(self) -> str:
        return f"RemovalCommit(engineer={self.engineer_id}, starts={len(self.new_keys)})"


@dataclass(frozen=True, repr=False)
class RemovalRootDraft:
    """What the root rotation of an admin's removal will show the keyholder once the commit's writes
    are made: its draft (with its digest) and every page of clients (each with its digest), in order."""

    root: RootDrafted
    pages: tuple[RootPageDrafted, ...]

    def __repr__(self) -> str:
        return f"RemovalRootDraft(pages={len(self.pages)})"


@dataclass(frozen=True, repr=False)
class RemovalRoot:
    """The keyholder's root rotation for a ``RemovalRootDraft``: the plan for the draft ``digest``
    names, and its answer to each page, in order (as a ``RootCommit``'s)."""

    digest: bytes
    plan: RootPlan
    pages: tuple[RootPageCommit, ...]

    def __repr__(self) -> str:
        return f"RemovalRoot(root={self.plan.root_version}, pages={len(self.pages)})"
