"""The root rotation of an admin's removal through the team server, in the removal's own unit.

docs/server.md (session 17, helper I); the values are ``removal_draft_values.py``. In-process an
admin's removal rotates the root key inside its unit of work, after its writes (the removed admin's
row disabled and re-certified, their records adopted), so that when the unit commits the copy of the
organisation seed and recovery key the removed admin holds signs and opens nothing current, and the
new bundle is sealed only to the admins left. Through the server the same rotation runs in the same
place of the removal's unit; only the keyholder's hands are elsewhere:

* ``draft`` runs, in the unit the caller made the removal's writes in (and will roll back), the
  in-process ``RootRotationAuthority`` with a seal that keeps the ``RootDraft`` it is shown and stops
  it (``root_drafts.DraftingSeal``), then reads every page of clients its walk will hand the
  keyholder: the ``RemovalRootDraft``, every digest in it;
* ``rotate`` runs it again in the commit's unit after the same writes, with
  ``root_drafts.ReplayingSeal``: the plan only for the draft digested and each page's answer only for
  the page digested in that place (409 ``STALE_ROOT``), the plan's signatures and rows checked first
  (``verified_plan``, 403), then the authority's own checks and writes and the ``root-key-rotate``
  event (through the removal's recorder: one request, its events). The plan may certify *some* of the
  rows drafted (a refusal named for each left out): the admin's machine leaves out what the verified audit chain does
  not vouch for, as in-process; the new bundle must then be sealed to exactly the active admins among
  those it certifies. The removed admin's row is disabled in the draft: a seal or an active
  certificate for them never verifies (403).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable

from sqlalchemy.orm import Session

from vault.authority.removal_draft_values import RemovalRoot, RemovalRootDraft
from vault.authority.requests import Caller
from vault.authority.root_draft_values import (
    SERVED_ROOT_PAGE,
    STALE_ROOT,
    RootCommit,
    RootDrafted,
    RootPageDrafted,
    page_digest,
    root_digest,
)
from vault.authority.root_drafts import NOT_MADE, Drafted, DraftingSeal, NoRootEvent, ReplayingSeal
from vault.authority.root_rotation import Recorder, RootChecks, RootRotationAuthority
from vault.authority.root_rotation_requests import RootRotated, RootRotateRequest
from vault.errors import AccessDenied, ConcurrentChange, IntegrityError
from vault.storage.engine import Store


class RemovalRootAuthority:
    """The root rotation inside an admin's removal through the server (module docstring)."""

    def __init__(
        self, store: Store, checks: RootChecks, clock: Callable[[], dt.datetime], page: int = SERVED_ROOT_PAGE
    ) -> None:
        self.store, self.checks, self.clock, self.page = store, checks, clock, page

    def __repr__(self) -> str:
        return "RemovalRootAuthority()"

    def draft(self, s: Session, caller: Caller, pin: bytes) -> RemovalRootDraft:
        """The rotation's draft and every page, as the commit's unit will show them (nothing kept:
        the caller rolls ``s`` back)."""
        seal = DraftingSeal()
        authority = RootRotationAuthority(self.store, self.checks, NoRootEvent(), self.clock, self.page)
        with contextlib.suppress(Drafted):
            authority.rotate(RootRotateRequest(caller, pin, None), seal, s=s)
        draft = seal.draft
        if draft is None:
            raise IntegrityError("the root rotation showed the keyholder no draft")
        old = draft.root.version
        pages: list[RootPageDrafted] = []
        after = 0
        while (page := authority.client_page(s, after, old, old + 1)) is not None:
            pages.append(RootPageDrafted(page, page_digest(page)))
            after = page.clients[-1][0]
        return RemovalRootDraft(RootDrafted(draft, root_digest(draft)), tuple(pages))

    def rotate(self, s: Session, caller: Caller, pin: bytes, root: object, recorder: Recorder) -> RootRotated:
        """The rotation in the commit's unit, storing the keyholder's plan and pages for what was
        drafted (module docstring)."""
        if not isinstance(root, RemovalRoot):
            raise AccessDenied(NOT_MADE, hint="an admin's removal carries its root rotation")
        commit = RootCommit.of(RootRotateRequest(caller, pin, None), root.digest, root.plan, root.pages)
        seal = ReplayingSeal(commit)
        authority = RootRotationAuthority(self.store, self.checks, recorder, self.clock, self.page)
        done = authority.rotate(commit.request, seal, s=s)
        if seal.used != len(root.pages):  # a page the walk never reached: rolled back with the rest
            raise ConcurrentChange(STALE_ROOT, hint="remove them again")
        return done
