"""An admin's policy change through the team server, where the database is: a draft, a commit.

docs/server.md §4 rule 2 (the values: ``policy_draft_values.py``). The checks and rows are the
in-process policies authority's (``PolicyAuthority``: the caller first — an active, certified
admin, before any row of the client is read —, the client's stored policy as stored with its
signer's row, the checks of the signed row), driven in another order:

* ``set_draft`` — a read: the caller, the client the id names, which must be the one its slug
  tag names (else 400), and the ``PolicyRows`` the in-process seal is shown, with its digest.
  Nothing written, no event.
* ``set`` — the commit, one write unit: the request's nonce first; the caller; the client and
  its slug tag again; the draft recomputed and its digest compared (``STALE_POLICY``, 409,
  nothing written); then, before any write, the row the keyholder signed: signed by the caller,
  flags and bounds (``PolicyAuthority._check_signed``), and its signature verified under the
  caller's certified signing key over this vault and this client (else ``AccessDenied``, 403:
  what the server would store is not what this admin signed). Only then the row is stored and
  the format-3 ``policy-set`` event appended (the keyholder's details sealed to the request
  id), in the same unit. The answer is the stored policy, which the keyholder checks as it
  checks the in-process answer.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

from sqlalchemy.orm import Session

from vault import validation
from vault.authority.checkout_events import ServerEvent, UnitCore
from vault.authority.checkout_reads import CallerRead
from vault.authority.clients import checked_action, tag
from vault.authority.policies import PolicyAuthority
from vault.authority.policies_caller import CallerChecks, CallerGate, checked_caller, checked_pin
from vault.authority.policy import policy_fields
from vault.authority.policy_draft_values import (
    STALE_POLICY,
    PolicyCommit,
    PolicyDraft,
    PolicySetDraftRequest,
    draft_digest,
)
from vault.authority.policy_requests import MISSING_CLIENT, POLICY_SET, SET, PolicyRequest, PolicyRows, SignedPolicy
from vault.authority.serverjournal import ServerJournal
from vault.crypto import signing
from vault.crypto.labels import LABEL_SIG_POLICY
from vault.errors import AccessDenied, ConcurrentChange, InvalidInput, NotFound, UntrustedRecord
from vault.storage import models as m
from vault.storage.engine import Store
from vault.storage.rows import PolicyRow

DIGEST_BYTES = 32
BLOB_LIMIT = 4096  # the sealed details of a policy change: a few flags and numbers
NOT_SIGNED = "the commit carries a policy the calling admin did not sign for this client"
OTHER_CLIENT = "the request's client id is not the client its slug tag names"


class PolicyDraftAuthority:
    """Drafts and commits of an admin's ``policy set`` (module docstring)."""

    def __init__(self, store: Store, checks: CallerChecks, clock: Callable[[], dt.datetime]) -> None:
        self.store, self.checks, self.clock = store, checks, clock
        self.gate = CallerGate(checks)

    def __repr__(self) -> str:
        return "PolicyDraftAuthority()"

    def set_draft(self, request: PolicySetDraftRequest) -> PolicyDraft:
        if not isinstance(request, PolicySetDraftRequest):
            raise InvalidInput("not a policy draft request")
        asked = _asked(request.action, request.caller, request.org_pin, request.slug_tag, request.client_id)
        with self.store.read() as s:
            caller = self.gate.authorise(s, request.caller, admin=True)  # before any row of the client
            rows = self._draft(s, asked, request.slug_tag, caller)
        return PolicyDraft(rows, draft_digest(rows))

    def set(self, request: PolicyCommit, event: ServerEvent) -> PolicyRows:
        if not isinstance(request, PolicyCommit):
            raise InvalidInput("not a policy commit")
        asked = _asked(request.action, request.caller, request.org_pin, request.slug_tag, request.client_id)
        digest = request.draft_digest
        if not isinstance(digest, bytes) or len(digest) != DIGEST_BYTES:
            raise InvalidInput(f"the commit's draft digest is not a {DIGEST_BYTES}-byte value")
        blob = request.details_blob
        if not isinstance(blob, bytes) or not 0 < len(blob) <= BLOB_LIMIT:
            raise InvalidInput("the commit's sealed details are not a blob")
        validation.number("audit key version", request.details_key_version, 1)
        if not isinstance(request.row, PolicyRow):
            raise InvalidInput("the commit carries no policy")
        with self.store.transaction() as s:
            if event.nonce is not None:
                event.nonce(s)  # a second in-flight copy waits here, then fails as replayed
            caller = self.gate.authorise(s, request.caller, admin=True)
            draft = self._draft(s, asked, request.slug_tag, caller)
            if draft_digest(draft) != digest:
                raise ConcurrentChange(STALE_POLICY)
            me = caller.me
            row = request.row
            try:
                signed = SignedPolicy(request.client_id, row, "{}")
                PolicyAuthority._check_signed(signed, me, {request.client_id}, set())
            except InvalidInput as error:
                raise AccessDenied(str(error)) from None  # not what this admin signs
            _verified(me.signing_public, row, caller.vault_id, request.client_id)
            stored = s.get(m.ClientPolicy, request.client_id)
            if stored is None:
                stored = m.ClientPolicy(client_id=request.client_id)
                s.add(stored)
            stored.reason_required, stored.exclusive = row.reason_required, row.exclusive
            stored.rotate_after_checkout, stored.checkout_minutes = row.rotate_after_checkout, row.checkout_minutes
            stored.stale_days, stored.updated_at = row.stale_days, self.clock()
            stored.signed_by, stored.signed_at, stored.signature = row.signed_by, row.signed_at, row.signature
            s.flush()
            appended = ServerJournal(UnitCore(self.clock), event.seal).append(
                s, POLICY_SET, event.request, engineer_id=me.id, key_generation=me.key_generation,
                client_id=request.client_id, key_version=request.details_key_version, details_blob=blob,
            )  # fmt: skip
            s.flush()
            written = PolicyAuthority._rows(s, asked, caller.vault_id, caller.org_signing_public, me)
        return dataclasses.replace(written, seq=int(appended.seq))

    @staticmethod
    def _draft(s: Session, asked: PolicyRequest, slug_tag: bytes, caller: CallerRead) -> PolicyRows:
        client = s.get(m.Client, asked.client_id)
        if client is None:
            raise NotFound(MISSING_CLIENT)
        if client.slug_tag != slug_tag:
            raise InvalidInput(OTHER_CLIENT)
        return PolicyAuthority._rows(s, asked, caller.vault_id, caller.org_signing_public, caller.me)


def _asked(action: object, caller: object, pin: object, slug_tag: object, client_id: object) -> PolicyRequest:
    """The in-process request a draft or commit stands for, its fields checked before any SQL."""
    checked_action(action, SET)
    tag("slug tag", slug_tag)
    validation.number("client id", client_id, 1)
    assert isinstance(client_id, int)
    return PolicyRequest(SET, checked_caller(caller), client_id, checked_pin(pin))


def _verified(public: bytes | None, row: PolicyRow, vault_id: bytes, client_id: int) -> None:
    """``row``'s signature by the caller's key, for this vault and client, else AccessDenied."""
    if public is None or row.signature is None:
        raise AccessDenied(NOT_SIGNED)
    try:
        fields = policy_fields(vault_id, client_id, row)
        signing.verify(public, row.signature, LABEL_SIG_POLICY, *fields, what="the commit")
    except UntrustedRecord:
        raise AccessDenied(NOT_SIGNED, hint="draft again and sign what the draft shows") from None
