"""The values of an admin's root rotation through the team server: drafts and one commit.

In-process the root rotation's keyholder lends its hands to the authority's unit of work (a seal:
``root_rotation.RootSeal``'s ``plan`` and ``reseal``), and the whole rotation is one unit: a half
rotated root would leave client keys sealed to two recovery keys. A network cannot carry a seal,
and a unit cannot span requests, so the keyholder's work is drafted first and committed at once
(docs/server.md §4 rule 2, docs/format.md §8.3):

* ``keys.root_draft`` (a ``RootRotateRequest``) answers the ``RootDraft`` the seal's ``plan`` would
  be shown and its digest (``RootDrafted``), nothing written;
* ``keys.root_page`` (a ``RootPageRequest``: the last client id of the page before) answers the
  next ``ClientPage`` the seal's ``reseal`` would be shown and its digest (``RootPageDrafted``), in
  pages of ``SERVED_ROOT_PAGE`` clients, nothing written; no page once no client is left;
* ``keys.rotate_root`` (a ``RootCommit``: the request's fields, the draft's digest, the keyholder's
  ``RootPlan`` and, for each page in order, its digest and the keyholder's ``Resealed``) runs the
  in-process rotation again in one unit, whose seal answers the plan only for the draft digested and
  each page's answer only for the page digested in that place (else ``STALE_ROOT``: 409, nothing
  written); the plan's signatures and rows, and each page's rows, are checked before anything is
  stored (``authority/root_drafts.py``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from vault.authority.requests import Caller
from vault.authority.root_rotation_requests import (
    ROTATE_ROOT,
    ClientPage,
    Resealed,
    RootDraft,
    RootPlan,
    RootRotateRequest,
)

LABEL_ROOT_DIGEST = b"credvault/v1/draft-digest/root-rotation"
LABEL_ROOT_PAGE_DIGEST = b"credvault/v1/draft-digest/root-rotation-page"
STALE_ROOT = (
    "the root rotation's draft is stale: the roster, the root keys or a client's keys changed since; nothing written"
)
SERVED_ROOT_PAGE = 100  # clients in one page through the server (one answer well within its 4 MiB limit)
ROOT_BODY = 32 * 1024 * 1024  # the commit: every client's re-sealed versions and slug tag (about 0.4 KiB each)


def root_digest(draft: RootDraft) -> bytes:
    """SHA-256 of the draft's canonical encoding: the same rows give the same digest."""
    from vault.wire import codec  # the codec's registry imports these values: imported when first used

    return hashlib.sha256(LABEL_ROOT_DIGEST + codec.encode(draft)).digest()


def page_digest(page: ClientPage) -> bytes:
    """SHA-256 of the page's canonical encoding (its root versions, clients and key rows)."""
    from vault.wire import codec

    return hashlib.sha256(LABEL_ROOT_PAGE_DIGEST + codec.encode(page)).digest()


@dataclass(frozen=True, repr=False)
class RootDrafted:
    """What the rotation would show the keyholder's ``plan`` (``draft``), and its digest."""

    draft: RootDraft
    digest: bytes

    def __repr__(self) -> str:
        return f"RootDrafted(root={self.draft.root.version}, engineers={len(self.draft.engineers)})"


@dataclass(frozen=True)
class RootPageRequest:
    """The page of clients after client id ``after`` (0: the first page)."""

    caller: Caller
    org_pin: bytes
    after: int


@dataclass(frozen=True, repr=False)
class RootPageDrafted:
    """The next page the rotation would hand the keyholder's ``reseal``, and its digest; ``page``
    None (and the digest zero) once no client is left."""

    page: ClientPage | None
    digest: bytes

    def __repr__(self) -> str:
        return f"RootPageDrafted(clients={0 if self.page is None else len(self.page.clients)})"


@dataclass(frozen=True, repr=False)
class RootPageCommit:
    """The keyholder's answer to one page, for the page ``digest`` names."""

    digest: bytes
    resealed: Resealed

    def __repr__(self) -> str:
        return f"RootPageCommit(seals={len(self.resealed.seals)})"


@dataclass(frozen=True, repr=False)
class RootCommit:
    """The rotation again (the ``RootRotateRequest``'s fields: the caller and the action at the top, as
    the event's kept request names them), with the plan the keyholder made for the draft ``digest``
    names and its answer to each page, in order."""

    caller: Caller
    org_pin: bytes
    shares: tuple[int, int] | None
    digest: bytes
    plan: RootPlan
    pages: tuple[RootPageCommit, ...]
    action: str = ROTATE_ROOT

    @classmethod
    def of(
        cls, request: RootRotateRequest, digest: bytes, plan: RootPlan, pages: tuple[RootPageCommit, ...]
    ) -> RootCommit:
        return cls(request.caller, request.org_pin, request.shares, digest, plan, pages)

    @property
    def request(self) -> RootRotateRequest:
        return RootRotateRequest(self.caller, self.org_pin, self.shares)

    def __repr__(self) -> str:
        return f"RootCommit(root={self.plan.root_version}, pages={len(self.pages)})"
