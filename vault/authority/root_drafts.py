"""An admin's root rotation through the team server, where the database is: drafts and one commit.

docs/server.md (session 15, helper C); the values are ``root_draft_values.py``. The checks, reads and
writes are the in-process root rotation's (``root_rotation.RootRotationAuthority``: the caller first
— an active, certified admin, before any root key, roster row or client is read —, the plan's checks,
the pages' rows, the writes and the ``root-key-rotate`` event in one unit); what changes is where the
keyholder's hands are:

* ``draft`` runs the rotation with a seal that keeps the ``RootDraft`` it is shown and stops the unit:
  nothing is written;
* ``page`` reads one page of clients as the rotation's walk hands it, after the caller is authorised,
  in a read unit;
* ``rotate`` runs the rotation again in one write unit, the request's nonce remembered first, with a
  seal (``ReplayingSeal``) that answers the commit's plan only for the draft digested and each page's
  answer only for the page digested in that place (``STALE_ROOT``, 409); a page the walk reaches past
  the commit's last, or a page of the commit the walk never reaches, is stale as well. Before the plan
  is handed to the authority, everything in it that can be checked with public keys is
  (``verified_plan``, 403 ``NOT_MADE``): the certificates, key-generation certificates and server-key
  certificates re-issued under the new organisation key for rows drafted (since session 18 the admin's
  machine leaves out what the audit chain it verified does not vouch for, each named in the plan's
  refusals), the new bundle sealed to exactly the active admins certified, the share policy signed by
  the new key, the new key linked under the old organisation key (the authority checks the link
  again). Each page's answer must name exactly its rows (a copy or a refusal for each version handed
  out, a slug tag for each client: 403 ``OTHER_ROWS``). The authority's checks then run as in-process,
  and the event is format 3 (the caller's signed request kept, the server's signature).

The server's layer is on data keys only (§5); a root rotation re-seals client keys' recovery copies and
re-tags slugs, so it removes the layer from nothing and releases no key.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.authority.certificates import certificate_fields, verify_engineer_key
from vault.authority.checkout_events import ServerEvent, UnitCore
from vault.authority.policies_caller import CallerGate, checked_caller, checked_pin
from vault.authority.requests import Caller
from vault.authority.root_draft_values import (
    SERVED_ROOT_PAGE,
    STALE_ROOT,
    RootCommit,
    RootDrafted,
    RootPageCommit,
    RootPageDrafted,
    RootPageRequest,
    page_digest,
    root_digest,
)
from vault.authority.root_rotation import RootChecks, RootRotationAuthority
from vault.authority.root_rotation_requests import (
    ROTATE_ROOT,
    ClientPage,
    Resealed,
    RootDraft,
    RootPlan,
    RootRotated,
    RootRotateRequest,
)
from vault.authority.serverjournal import ServerJournal
from vault.crypto import serverkey, signing
from vault.crypto.labels import LABEL_SIG_ENGINEER, LABEL_SIG_ORG_KEY, LABEL_SIG_SHARE_POLICY
from vault.errors import AccessDenied, ConcurrentChange, IntegrityError, InvalidInput, UntrustedRecord
from vault.storage import models as m
from vault.storage.engine import Store
from vault.storage.rows import ACTIVE, ROLE_ADMIN

DIGEST_BYTES = 32
NOT_MADE = "the commit carries a root plan that is not made for the rows drafted"
OTHER_ROWS = "the commit's re-sealed keys are not the rows of the page drafted"


class Drafted(Exception):
    """Raised by the drafting seal once it has the draft: the unit stops, nothing written."""


class DraftingSeal:
    """A ``RootSeal`` that keeps the plan's draft and stops the rotation."""

    def __init__(self) -> None:
        self.draft: RootDraft | None = None

    def __repr__(self) -> str:
        return "RootDraftingSeal()"

    def plan(self, draft: RootDraft) -> RootPlan:
        self.draft = draft
        raise Drafted

    def reseal(self, page: ClientPage) -> Resealed:
        raise Drafted  # never reached: the plan stops the unit


def _digest(value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != DIGEST_BYTES:
        raise InvalidInput(f"the commit's draft digest is not a {DIGEST_BYTES}-byte value")
    return value


def _exactly(given: list[Any], drafted: set[Any]) -> None:
    if len(set(given)) != len(given) or set(given) != drafted:
        raise UntrustedRecord("not the rows drafted")


def _within(given: list[Any], drafted: set[Any]) -> None:
    if len(set(given)) != len(given) or not set(given) <= drafted:
        raise UntrustedRecord("rows not drafted")


def verified_plan(draft: RootDraft, plan: RootPlan) -> None:
    """Everything of ``plan`` public keys can check, for the rows of ``draft`` (module docstring); else
    AccessDenied (``NOT_MADE``). The admin's machine leaves out the certificates the audit chain it
    verified does not vouch for (``keyholder/removal_roster.py``, threat row C82): certificates for some
    of the rows drafted, a refusal named for each row left out (the event counts them), and the bundle
    sealed to exactly the active admins among them."""
    cover = _within
    vault_id, new = draft.identity.vault_id, plan.org_public
    try:
        if not isinstance(plan, RootPlan) or not isinstance(new, bytes):
            raise UntrustedRecord("no plan")
        head = draft.head.public  # the new key linked under the old one (the authority checks it again)
        signing.verify(head, plan.org_signature, LABEL_SIG_ORG_KEY, vault_id, plan.org_version, new, head,
                       plan.org_signed_at, what="the commit")  # fmt: skip
        engineers = {row.id: row for row in draft.engineers}
        certificates = dict(plan.certificates)
        cover([engineer_id for engineer_id, _ in plan.certificates], set(engineers))
        for engineer_id, certificate in certificates.items():
            signing.verify(new, certificate, LABEL_SIG_ENGINEER, *certificate_fields(vault_id, engineers[engineer_id]),
                           what="the commit")  # fmt: skip
        names, keys = dict(draft.names), {(k.engineer_id, k.generation): k for k in draft.keys}
        cover([(engineer_id, generation) for engineer_id, generation, _ in plan.key_certificates], set(keys))
        for engineer_id, generation, certificate in plan.key_certificates:
            verify_engineer_key(vault_id, new, keys[(engineer_id, generation)], certificate, names.get(engineer_id, ""))
        servers = {k.version: k for k in draft.server_keys}
        cover([version for version, _ in plan.server_certificates], set(servers))
        for version, certificate in plan.server_certificates:
            k = servers[version]
            serverkey.verify_certificate(new, certificate, vault_id, version, k.signing_public, k.certified_at)
        left_out = (len(draft.engineers) - len(certificates) + len(keys) - len(plan.key_certificates)
                    + len(servers) - len(plan.server_certificates))  # fmt: skip
        if not isinstance(plan.refused, tuple) or len(plan.refused) < len(draft.refused) + left_out:
            raise UntrustedRecord("a row left out unnamed")
        admins = {row.id for row in draft.engineers if row.role == ROLE_ADMIN and row.status == ACTIVE
                  and row.id in certificates}  # fmt: skip
        _exactly([engineer_id for engineer_id, _ in plan.root_seals], admins)
        if plan.share_policy is not None:
            k_of, n_of, signature = plan.share_policy
            signing.verify(new, signature, LABEL_SIG_SHARE_POLICY, vault_id, plan.org_version, new, k_of, n_of,
                           what="the commit")  # fmt: skip
    except (UntrustedRecord, KeyError, TypeError, ValueError):
        raise AccessDenied(NOT_MADE, hint="draft again and make the plan for what the draft shows") from None


def _same_rows(page: ClientPage, answer: Resealed) -> None:
    """``answer`` names each key version of ``page`` once (a copy or a refusal) and each client once."""
    shown = sorted((k.record.client_id, k.record.version) for k in page.keys)
    try:
        named = sorted([(c, v) for c, v, _ in answer.seals] + [(c, v) for c, v in answer.refused])
        tagged = sorted(c for c, _ in answer.slug_tags)
    except (TypeError, ValueError):
        raise AccessDenied(OTHER_ROWS, hint="draft the rotation again") from None
    if named != shown or tagged != sorted(c for c, _ in page.clients):
        raise AccessDenied(OTHER_ROWS, hint="draft the rotation again")


class ReplayingSeal:
    """A ``RootSeal`` that answers the commit's plan and pages for what was drafted, and nothing else."""

    def __init__(self, commit: RootCommit) -> None:
        self.commit, self.used = commit, 0

    def __repr__(self) -> str:
        return "RootReplayingSeal()"

    def plan(self, draft: RootDraft) -> RootPlan:
        if root_digest(draft) != self.commit.digest:
            raise ConcurrentChange(STALE_ROOT, hint="run the rotation again")
        verified_plan(draft, self.commit.plan)
        return self.commit.plan

    def reseal(self, page: ClientPage) -> Resealed:
        pages = self.commit.pages
        if self.used >= len(pages) or page_digest(page) != pages[self.used].digest:
            raise ConcurrentChange(STALE_ROOT, hint="run the rotation again")
        answer = pages[self.used].resealed
        _same_rows(page, answer)
        self.used += 1
        return answer


class _EventRecorder:
    """The rotation's ``Recorder`` on the server: its one format-3 event, the caller's request kept."""

    def __init__(self, journal: ServerJournal, event: ServerEvent, caller: Caller) -> None:
        self.journal, self.event, self.caller = journal, event, caller

    def append(self, s: Session, action: str, *, public: dict[str, Any]) -> int:
        if action != ROTATE_ROOT:
            raise InvalidInput("a root rotation appends only its own event")
        row = self.journal.append(s, action, self.event.request, engineer_id=self.caller.engineer_id,
                                  key_generation=self.caller.key_generation, public=public)  # fmt: skip
        return int(row.seq)


class NoRootEvent:
    def append(self, s: Session, action: str, *, public: dict[str, Any]) -> int:
        raise InvalidInput("a draft appends no event")


class RootDraftAuthority:
    """Drafts and the commit of an admin's root rotation (module docstring)."""

    def __init__(
        self, store: Store, checks: RootChecks, clock: Callable[[], dt.datetime], page: int = SERVED_ROOT_PAGE
    ) -> None:
        self.store, self.checks, self.clock, self.page = store, checks, clock, page
        self.reads = RootRotationAuthority(store, checks, NoRootEvent(), clock, page)

    def __repr__(self) -> str:
        return "RootDraftAuthority()"

    def draft(self, request: RootRotateRequest) -> RootDrafted:
        """What the rotation would show the keyholder's plan, and its digest; nothing written."""
        seal = DraftingSeal()
        with self.store.read() as s, contextlib.suppress(Drafted):
            self.reads.rotate(request, seal, s=s)
        if seal.draft is None:
            raise IntegrityError("the root rotation showed the keyholder no draft")
        return RootDrafted(seal.draft, root_digest(seal.draft))

    def client_page(self, request: RootPageRequest) -> RootPageDrafted:
        """The page after ``request.after`` as the rotation's walk hands it; nothing written."""
        if not isinstance(request, RootPageRequest) or type(request.after) is not int or request.after < 0:
            raise InvalidInput("not a root page request")
        caller = checked_caller(request.caller)
        checked_pin(request.org_pin)
        with self.store.read() as s:
            CallerGate(self.checks).authorise(s, caller, admin=True)  # before any root key or client is read
            root = s.scalars(
                select(m.RootKey).where(m.RootKey.state == ACTIVE).order_by(m.RootKey.version.desc())
            ).first()
            if root is None:
                raise UntrustedRecord("the vault has no active recovery key")
            page = self.reads.client_page(s, request.after, root.version, root.version + 1)
        return RootPageDrafted(page, bytes(DIGEST_BYTES) if page is None else page_digest(page))

    def rotate(self, commit: RootCommit, event: ServerEvent) -> RootRotated:
        """The rotation again, storing the keyholder's plan and pages for what was drafted."""
        if not isinstance(commit, RootCommit) or commit.action != ROTATE_ROOT:
            raise InvalidInput("not a root rotation commit")
        _digest(commit.digest)
        if not isinstance(commit.pages, tuple) or not all(isinstance(p, RootPageCommit) for p in commit.pages):
            raise InvalidInput("the commit's pages are not a list of re-sealed pages")
        seal = ReplayingSeal(commit)
        with self.store.transaction() as s:
            if event.nonce is not None:
                event.nonce(s)  # a second in-flight copy waits here, then fails as replayed
            recorder = _EventRecorder(ServerJournal(UnitCore(self.clock), event.seal), event, commit.caller)
            authority = RootRotationAuthority(self.store, self.checks, recorder, self.clock, self.page)
            done = authority.rotate(commit.request, seal, s=s)
            if seal.used != len(commit.pages):  # a page the walk never reached: rolled back with the rest
                raise ConcurrentChange(STALE_ROOT, hint="run the rotation again")
            return done
