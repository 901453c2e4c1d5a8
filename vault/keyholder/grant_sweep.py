"""The sweep of expired grants, where the admin's keys are: sign only what verifies as ended.

``GrantSweepKeyholder.sweep()`` sends a ``SweepRequest`` and, inside the authority's unit of
work, is shown every ledger with an unrevoked row the authority says is past its end. The
revocations it records are signed by the acting admin (as before the split), but only
for rows this keyholder verified itself:

* its own row (certified, active, this session's keys, an admin) and the time of the
  revocations within ``SIGNED_AT_SLACK`` of its own clock;
* each row of a ledger the engineer's and the client's of that ledger, each id once;
* a row is signed revoked only if its grant signature verifies (an active, certified
  admin's, over the engineer's sealing key, covering its ``until``) and its ``until`` is
  past by this keyholder's clock. A DBA who moves a live grant's ``until`` into the past
  breaks its signature; an authority that names a live grant as expired is contradicted
  by the keyholder's clock: neither gets the admin to sign its revocation.

A ledger whose newest verified (or revoked) row is not live has its sealed copies
deleted (as before). The answer must show each signed revocation stored with its
signature and no copy left of a ledger cleared, else ``UntrustedRecord``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Protocol

from vault.authority.grant_requests import (
    ExpiredLedger,
    SweepRequest,
    SweepRows,
    SweepSigned,
    revocation_fields,
)
from vault.authority.requests import Caller
from vault.crypto import signing
from vault.crypto.labels import LABEL_SIG_GRANT_REVOCATION
from vault.errors import UntrustedRecord, VaultError
from vault.keyholder.clients import verified_caller
from vault.keyholder.grants import SIGNED_AT_SLACK, SigningKeys
from vault.keyholder.responses import ResponseChecks
from vault.keyholder.trust import grant_fields, grant_label
from vault.storage.rows import EngineerRow, GrantRow, is_revoked


class SweepTransport(Protocol):
    def sweep(self, request: SweepRequest, seal: Any) -> SweepRows: ...


def _newest_first(row: GrantRow) -> tuple[int, int]:
    return (-(row.seq or 0), -row.id)  # GRANT_ORDER


def _verifies(
    checks: ResponseChecks, grant: GrantRow, signer: EngineerRow | None, engineer: EngineerRow | None
) -> bool:
    """Whether ``grant`` carries a signature of an active, certified admin over ``engineer``'s key."""
    if engineer is None:
        return False
    try:
        admin = checks.admin(signer, grant.granted_by)
        assert admin.signing_public is not None
        fields = grant_fields(checks.vault_id, grant, engineer.sealing_public)
        signing.verify(admin.signing_public, grant.signature, grant_label(grant), *fields, what="the grant")
    except VaultError:
        return False
    return True


class _Seal:
    """The keyholder's side of ``SweepSeal``: one draft signed."""

    def __init__(self, sign: Callable[[SweepRows], SweepSigned]) -> None:
        self._sign: Callable[[SweepRows], SweepSigned] | None = sign
        self.draft: SweepRows | None = None
        self.signed: SweepSigned | None = None

    def __repr__(self) -> str:
        return "SweepSeal(<redacted>)"

    def sign(self, draft: SweepRows) -> SweepSigned:
        if self._sign is None or self.signed is not None:
            raise UntrustedRecord("this sweep has signed its draft already")
        signed = self._sign(draft)
        self.draft, self.signed = draft, signed
        return signed

    def close(self) -> None:
        self._sign = None


class GrantSweepKeyholder:
    """``grants.maintain`` for the admin whose keys ``keys`` holds."""

    def __init__(self, transport: SweepTransport, keys: SigningKeys, clock: Callable[[], dt.datetime]) -> None:
        self.transport, self.keys, self.clock = transport, keys, clock

    def __repr__(self) -> str:
        return "GrantSweepKeyholder()"

    def sweep(self) -> int:
        """Revoke the grants past their end and delete the copies no live grant backs; the copies deleted."""
        me = self.keys.session()
        request = SweepRequest(Caller(me.engineer_id, me.key_generation), me.org_signing_public)
        revoked: dict[int, GrantRow] = {}

        def sign(draft: SweepRows) -> SweepSigned:
            checks, admin = verified_caller(me, draft, self.keys.sealing_public(), self.clock())
            if not admin:
                raise UntrustedRecord("the authority answered as if this engineer were an admin")
            now = int(checks.now.timestamp())
            if abs(draft.revoked_at.timestamp() - now) > SIGNED_AT_SLACK:
                raise UntrustedRecord("the authority dates the revocations away from this keyholder's clock")
            signatures: list[tuple[int, bytes]] = []
            drop: list[tuple[int, int]] = []
            seen_pairs: set[tuple[int, int]] = set()
            seen_ids: set[int] = set()
            for ledger in draft.ledgers:
                self._check_ledger(ledger, seen_pairs, seen_ids)
                pairs = sorted(zip(ledger.grants, ledger.signers, strict=True), key=lambda p: _newest_first(p[0]))
                good = {
                    g.id for g, signer in pairs if not is_revoked(g) and _verifies(checks, g, signer, ledger.engineer)
                }
                head = next((g for g, _ in pairs if is_revoked(g) or g.id in good), None)
                ended = head is None or is_revoked(head) or (head.until is not None and head.until <= now)
                if ended and ledger.copies:  # a ledger with no copy left has nothing to delete
                    drop.append((ledger.engineer_id, ledger.client_id))
                for grant, _ in pairs:
                    if grant.id in good and grant.until is not None and grant.until <= now:
                        row = grant._replace(revoked_at=draft.revoked_at, revoked_by=draft.me.id)
                        signature = self.keys.sign(LABEL_SIG_GRANT_REVOCATION, *revocation_fields(draft.vault_id, row))
                        revoked[grant.id] = row._replace(revocation=signature)
                        signatures.append((grant.id, signature))
            return SweepSigned(tuple(signatures), tuple(drop))

        seal = _Seal(sign)
        try:
            answer = self.transport.sweep(request, seal)
        finally:
            seal.close()
        if seal.signed is None or seal.signed == SweepSigned((), ()):
            if answer.seq != 0 or (seal.signed is None and answer.ledgers):
                raise UntrustedRecord("the authority recorded a sweep this keyholder signed nothing for")
            return 0
        return self._check_answer(seal, answer, revoked)

    @staticmethod
    def _check_ledger(ledger: ExpiredLedger, pairs: set[tuple[int, int]], ids: set[int]) -> None:
        pair = (ledger.engineer_id, ledger.client_id)
        if pair in pairs or len(ledger.grants) != len(ledger.signers):
            raise UntrustedRecord("the authority named a ledger twice, or a grant without its signer")
        pairs.add(pair)
        if ledger.engineer is not None and ledger.engineer.id != ledger.engineer_id:
            raise UntrustedRecord("the authority's ledger names another engineer")
        for grant in ledger.grants:
            if (grant.engineer_id, grant.client_id) != pair or grant.id in ids:
                raise UntrustedRecord("the authority put a grant of another engineer or client in a ledger")
            ids.add(grant.id)

    @staticmethod
    def _check_answer(seal: _Seal, answer: SweepRows, revoked: dict[int, GrantRow]) -> int:
        """The copies deleted, once every revocation signed is stored and every ledger cleared has no copy."""
        draft, signed = seal.draft, seal.signed
        assert draft is not None and signed is not None
        if answer.seq < 1 or (answer.vault_id, answer.me, answer.revoked_at) != (
            draft.vault_id,
            draft.me,
            draft.revoked_at,
        ):
            raise UntrustedRecord("the authority's answer is not for the sweep this keyholder signed")
        stored = {g.id: g for ledger in answer.ledgers for g in ledger.grants}
        for grant_id, row in revoked.items():
            found = stored.get(grant_id)
            if found is None or (found.revoked_at, found.revoked_by, found.revocation) != (
                row.revoked_at,
                row.revoked_by,
                row.revocation,
            ):
                raise UntrustedRecord("the authority's answer does not show the revocations this keyholder signed")
        after = {(ledger.engineer_id, ledger.client_id): ledger for ledger in answer.ledgers}
        removed = 0
        for ledger in draft.ledgers:
            pair = (ledger.engineer_id, ledger.client_id)
            if pair not in signed.drop:
                continue
            if pair not in after or after[pair].copies:
                raise UntrustedRecord("the authority left copies of a client's keys that this sweep deleted")
            removed += len(ledger.copies)
        return removed
