"""Client policies, where the database is: authorise, read the stored rows, store what the
keyholder signed, record, commit.

One unit of work per request. The caller is authorised first (``CallerGate``): an admin
for ``policy-set``, ``policy-unsigned`` and ``policy-adopt``; for ``policy-get`` an admin or
an engineer holding the head of their grant ledger for the client. Only then are the
client and its stored policy read, as stored, with the row of the engineer who signed it:
this module never decides whether a policy verifies (the keyholder does, and applies the
strict policy where one does not). A change is signed by the keyholder inside the unit
(``PolicySeal.sign``) over the draft it was shown; what it returns is checked here (the
client, the signer, the bounds) before it is stored, and one ``policy-set`` event is
appended per client through the Journal (``Recorder``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault import validation
from vault.authority.policies_caller import CallerChecks, CallerGate, checked_caller, checked_pin, org_chain
from vault.authority.policy import in_bounds
from vault.authority.policy_requests import (
    ADOPT,
    GET,
    MISSING_CLIENT,
    POLICY_SET,
    READ_ACTIONS,
    SET,
    UNSIGNED,
    WRITE_ACTIONS,
    ClientPolicy,
    PolicyRequest,
    PolicyRows,
    SignedPolicy,
)
from vault.errors import InvalidInput, NotFound
from vault.storage import models as m
from vault.storage.engine import Store
from vault.storage.rows import EngineerRow, PolicyRow

SIGNATURE_BYTES = 64
_DETAIL_TYPES = (bool, int, type(None))


class Recorder(Protocol):
    """Appends an event in the caller's unit of work (the Journal)."""

    def append(
        self, s: Session, action: str, *, client_id: int | None, secret_id: int | None, details: dict[str, Any] | None
    ) -> int:
        """The new event's seq."""


class PolicySeal(Protocol):
    """The keyholder's hands inside the unit of work (the in-process seam)."""

    def sign(self, draft: PolicyRows) -> Sequence[SignedPolicy]:
        """Verify the draft, then sign the new policies it asks for (raise to refuse: nothing is written)."""


def checked_request(request: object, actions: tuple[str, ...]) -> PolicyRequest:
    """``request`` if every field is of its type and range, else InvalidInput (before any SQL)."""
    if not isinstance(request, PolicyRequest) or request.action not in actions:
        raise InvalidInput(f"unknown action {validation.shown(str(getattr(request, 'action', '?')))}")
    checked_caller(request.caller)
    checked_pin(request.org_pin)
    if request.action in (GET, SET):
        validation.number("client id", request.client_id, 1)
    elif request.client_id is not None:
        raise InvalidInput("this request names no client")
    return request


def _details(text: object) -> dict[str, Any]:
    """An event's details as the keyholder gave them: a flat JSON object of flags and numbers."""
    try:
        details = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        details = None
    if not isinstance(details, dict) or not all(
        isinstance(k, str) and isinstance(v, _DETAIL_TYPES) for k, v in details.items()
    ):
        raise InvalidInput("the policy's event details are not a flat object of flags and numbers")
    return details


class PolicyAuthority:
    """Get, list-unsigned, set and adopt of client policies, given a request, one unit each."""

    def __init__(
        self, store: Store, checks: CallerChecks, recorder: Recorder, clock: Callable[[], dt.datetime]
    ) -> None:
        self.store, self.gate, self.recorder, self.clock = store, CallerGate(checks), recorder, clock

    def read(self, request: PolicyRequest) -> PolicyRows:
        """One client's stored policy (``policy-get``) or every stored one (``policy-unsigned``)."""
        checked_request(request, READ_ACTIONS)
        with self.store.read() as s:
            admin = request.action == UNSIGNED
            caller = self.gate.authorise(s, request.caller, admin=admin, client_id=request.client_id)
            return self._rows(s, request, caller.vault_id, caller.org_signing_public, caller.me)

    def write(self, request: PolicyRequest, seal: PolicySeal) -> PolicyRows:
        """Store the policies the keyholder signed over the draft (``policy-set``: one client;
        ``policy-adopt``: the stored ones it reviewed), one ``policy-set`` event each."""
        checked_request(request, WRITE_ACTIONS)
        with self.store.transaction() as s:
            caller = self.gate.authorise(s, request.caller, admin=True)
            draft = self._rows(s, request, caller.vault_id, caller.org_signing_public, caller.me)
            signed = list(seal.sign(draft))
            shown = {p.client_id for p in draft.policies}
            if request.action == SET and len(signed) != 1:
                raise InvalidInput("a policy-set request signs exactly one policy")
            seen: set[int] = set()
            now = self.clock()
            seq = 0
            for new in signed:
                self._check_signed(new, caller.me, shown, seen)
                stored = s.get(m.ClientPolicy, new.client_id)
                if stored is None:
                    stored = m.ClientPolicy(client_id=new.client_id)
                    s.add(stored)
                r = new.row
                stored.reason_required, stored.exclusive = r.reason_required, r.exclusive
                stored.rotate_after_checkout, stored.checkout_minutes = r.rotate_after_checkout, r.checkout_minutes
                stored.stale_days, stored.updated_at = r.stale_days, now
                stored.signed_by, stored.signed_at, stored.signature = r.signed_by, r.signed_at, r.signature
                details = _details(new.details_json)
                seq = self.recorder.append(s, POLICY_SET, client_id=new.client_id, secret_id=None, details=details)
            s.flush()
            written = self._rows(s, request, caller.vault_id, caller.org_signing_public, caller.me, only=seen)
        return dataclasses.replace(written, seq=seq)

    @staticmethod
    def _check_signed(new: SignedPolicy, me: EngineerRow, shown: set[int], seen: set[int]) -> None:
        """A signed policy for a client of the draft (once), signed by the caller, within bounds."""
        if not isinstance(new, SignedPolicy) or not isinstance(new.row, PolicyRow):
            raise InvalidInput("the keyholder returned no signed policy")
        if new.client_id not in shown or new.client_id in seen:
            raise InvalidInput("the keyholder signed a policy for a client it was not shown")
        seen.add(new.client_id)
        r = new.row
        if r.signed_by != me.id or not isinstance(r.signed_at, int) or isinstance(r.signed_at, bool):
            raise InvalidInput("the policy is not signed by the caller")
        if not isinstance(r.signature, bytes) or len(r.signature) != SIGNATURE_BYTES:
            raise InvalidInput("the policy's signature is not a signature")
        if not all(isinstance(v, bool) for v in (r.reason_required, r.exclusive, r.rotate_after_checkout)):
            raise InvalidInput("the policy's flags are not flags")
        if not in_bounds(r.checkout_minutes, r.stale_days):
            raise InvalidInput("the policy is out of bounds")

    @staticmethod
    def _rows(
        s: Session,
        request: PolicyRequest,
        vault_id: bytes,
        org_public: bytes,
        me: EngineerRow,
        only: set[int] | None = None,
    ) -> PolicyRows:
        """The client's (or every client's) stored policy as stored, with its signer's row."""
        if request.client_id is not None:
            joined = select(m.Client.id, m.Client.slug_blob, m.ClientPolicy, m.Engineer).select_from(m.Client)
            query = joined.outerjoin(m.ClientPolicy, m.ClientPolicy.client_id == m.Client.id)
            query = query.where(m.Client.id == request.client_id)
        else:
            joined = select(m.Client.id, m.Client.slug_blob, m.ClientPolicy, m.Engineer).select_from(m.Client)
            query = joined.join(m.ClientPolicy, m.ClientPolicy.client_id == m.Client.id)
            if only is not None:
                query = query.where(m.Client.id.in_(sorted(only)))
        query = query.outerjoin(m.Engineer, m.Engineer.id == m.ClientPolicy.signed_by).order_by(m.Client.id)
        policies = []
        for client_id, slug_blob, stored, signer in s.execute(query).all():
            policies.append(
                ClientPolicy(
                    client_id,
                    slug_blob,
                    None if stored is None else _policy_row(stored),
                    None if signer is None else engineer_row(signer),
                )
            )
        if request.client_id is not None and not policies:
            raise NotFound(MISSING_CLIENT)
        return PolicyRows(0, vault_id, org_public, org_chain(s, request.org_pin, org_public), me, tuple(policies))


def _policy_row(p: m.ClientPolicy) -> PolicyRow:
    return PolicyRow(
        p.reason_required,
        p.exclusive,
        p.rotate_after_checkout,
        p.checkout_minutes,
        p.stale_days,
        p.signed_by,
        p.signed_at,
        p.signature,
    )


def engineer_row(e: m.Engineer) -> EngineerRow:
    return EngineerRow(
        e.id,
        e.name,
        e.role,
        e.status,
        e.key_generation,
        e.sealing_public,
        e.signing_public,
        e.certified_at,
        e.certificate,
    )


__all__ = ["ADOPT", "GET", "SET", "UNSIGNED", "PolicyAuthority", "PolicySeal", "Recorder"]
