"""A re-invited engineer's carry-over on the team server: the plan drafted, the admin's part checked.

``ServedCarry`` is the ``engineers.Carry`` of a confirmation through the server
(``server/confirm_routes.py``; the values: ``carry_draft_values.py``). In-process the plan and the
carry are ``Invitations.confirmation_plan`` and ``carry_grants`` (service/invitations.py); here:

* ``plan`` — in the confirmation's unit, as in-process and with the same reasons: each unrevoked grant
  row of the engineer is checked under their previous key generation (the one the signed invitation
  names, its ``engineer_keys`` record certified by the organisation key the server trusts) and its
  signer (a certified, active admin). A row that does not verify is set aside (revoked by the commit);
  a verified one past its until is re-signed as history; a verified ledger head (the newest entry of
  the (engineer, client) ledger that verifies or is revoked) is carried; any other is superseded. The
  draft hands the admin's machine the rows to re-sign, every live client-key version of a carried
  grant's client sealed to the recovery key, the client's audit keys and its grant and revoke events
  (the audit log's word, which the server cannot read: the admin's machine opens them).
* ``carry`` — after the admin's certification was compared with the rows recomputed in the unit (the
  draft's digest), before anything of the carry is written: the rows the admin's machine set aside
  (the audit log takes them back: ``CarryMade.set_aside``) distinct and among the live carried ones; a
  signature for exactly each other row drafted for re-signing (none for a row set aside), each
  verifying under the calling admin's certified key over the engineer's new sealing key; a sealed
  copy for exactly each drafted client-key version of a client still carried. Else ``AccessDenied``
  (403) and the unit, the certification with it, is rolled back. Then the grants are re-signed
  (signed by the caller), the copies stored, the rows set aside (the server's and the admin's)
  revoked, as in-process the ledger's refusals are (``Invitations.carry_grants``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.authority.carry_draft_values import (
    MAX_SEAL,
    CarriedClient,
    CarriedGrantRow,
    CarryDraft,
    CarryMade,
    PreviousKey,
)
from vault.authority.certificates import verify_engineer_key
from vault.authority.checkout_reads import ENGINEER_WIDTH, SEALED_KEY
from vault.authority.engineer_requests import CarriedRow, CarryPlan, DroppedRow
from vault.authority.engineers import engineer_row
from vault.authority.grant_signatures import grant_fields, grant_label, verify_grant
from vault.authority.requests import ClientKeyRow, SealedClientKey
from vault.authority.rotation_requests import GRANT_ACTIONS, GrantEvent
from vault.crypto import signing
from vault.crypto.blobs import blob_key_version
from vault.errors import AccessDenied, UntrustedRecord, VaultError
from vault.storage import models as m
from vault.storage import rows
from vault.storage.rows import GRANT_ORDER, EngineerRecord, EngineerRow, GrantRow, is_revoked

NOT_DRAFTED = "the commit's carry-over is not the one drafted: nothing is written"
NOT_SIGNED = "a re-signed grant of the carry-over is not signed by the calling admin over the engineer's new key"
EXPIRED = "expired (kept as history; nothing is sealed)"
SUPERSEDED = "superseded by a newer grant for the same client"
NO_KEYS = "its client's keys do not open or verify"


class CarryChecks(Protocol):
    """The server's checks of a record's signer and the organisation key it trusts."""

    def admin(self, s: Session, row: EngineerRecord | None) -> EngineerRecord:
        """The signer of a record: certified, an admin, active; else UntrustedRecord."""

    def trusted(self, s: Session) -> tuple[bytes, bytes]:
        """(vault id, organisation key) as checked in this unit."""


def invited_key(s: Session, row: m.Engineer, vault_id: bytes, org: bytes) -> tuple[m.EngineerKey | None, str]:
    """The engineer's keys as they were when invited (the generation the signed invitation names),
    their ``engineer_keys`` record certified under ``org`` for this vault; else None and why. A
    confirmation carries over only the grants signed over them: in-process (``Invitations``,
    service/invitations.py) and through the team server (``ServedCarry``) alike."""
    generation = row.invite_prev_generation or 0
    if generation <= 0:
        return None, "the engineer had no certified keys when invited, so no admin signed a grant for them"
    key = s.get(m.EngineerKey, (row.id, generation))
    try:
        if key is None or generation >= row.key_generation:
            raise UntrustedRecord(f"key generation {generation} is missing")
        verify_engineer_key(vault_id, org, key, key.certificate, row.name)
    except UntrustedRecord as error:
        return None, f"the engineer's previous keys do not verify: {error}"
    return key, ""


def _grant_row(grant: m.Grant) -> GrantRow:
    return GrantRow(*(getattr(grant, f) for f in GrantRow._fields))


class ServedCarry:
    """``engineers.Carry`` through the server, for one confirmation (module docstring)."""

    def __init__(
        self, checks: CarryChecks, clock: Callable[[], dt.datetime], made: CarryMade | None, caller_id: int
    ) -> None:
        self.checks, self.clock, self.made, self.caller_id = checks, clock, made, caller_id
        self.kept: tuple[int, CarryDraft] | None = None

    def __repr__(self) -> str:
        return "ServedCarry()"

    # -- the plan ---------------------------------------------------------------------------------

    def plan(self, s: Session, engineer_id: int, root_version: int) -> CarryPlan:
        row = s.get(m.Engineer, engineer_id)
        assert row is not None  # the authority read it in this unit
        vault_id, org = self.checks.trusted(s)
        previous, why_none = self._previous(s, row, vault_id, org)
        grants = list(s.scalars(select(m.Grant).where(m.Grant.engineer_id == row.id).order_by(*GRANT_ORDER)))
        heads: dict[int, int] = {}
        problems: dict[int, str] = {}
        for grant in grants:  # newest first per client: the first that verifies (or is revoked) is the head
            if grant.client_id in heads or is_revoked(grant):
                heads.setdefault(grant.client_id, grant.id)
                continue
            problem = self._unverified(s, vault_id, grant, previous, why_none)
            if problem is None:
                heads[grant.client_id] = grant.id
            else:
                problems[grant.id] = problem
        now = int(self.clock().timestamp())
        carried, dropped, resign, history, expired, set_aside = [], [], [], [], [], []
        for grant in sorted((g for g in grants if not is_revoked(g)), key=lambda g: g.id):
            client = s.get(m.Client, grant.client_id)
            slug = None if client is None else client.slug_blob
            problem = problems.get(grant.id) or self._unverified(s, vault_id, grant, previous, why_none)
            signer = s.get(m.Engineer, grant.granted_by)
            kept = CarriedGrantRow(_grant_row(grant), None if signer is None else engineer_row(signer))
            if problem is not None:
                set_aside.append(grant.id)
                dropped.append(DroppedRow(grant.id, grant.client_id, slug, problem))
            elif grant.until is not None and grant.until <= now:
                history.append(kept)
                expired.append(grant.id)
                dropped.append(DroppedRow(grant.id, grant.client_id, slug, EXPIRED))
            elif heads.get(grant.client_id) != grant.id:
                dropped.append(DroppedRow(grant.id, grant.client_id, slug, SUPERSEDED))
            elif slug is None:
                dropped.append(DroppedRow(grant.id, grant.client_id, None, NO_KEYS))
            else:
                resign.append(kept)
                carried.append(CarriedRow(grant.id, grant.client_id, slug, grant.until))
        clients = tuple(self._client(s, c.client_id, root_version) for c in carried)
        signer_row = s.get(m.Engineer, row.invite_signed_by or 0)
        resign += history
        draft = CarryDraft(previous, tuple(resign), tuple(expired), tuple(set_aside), clients)
        self.kept = (engineer_id, draft)
        return CarryPlan(
            signer_row.name if signer_row is not None else "",
            tuple(carried),
            tuple(dropped),
            self._slug_keys(s, [(d.client_id, d.slug_blob) for d in dropped + carried], root_version),
            draft if resign or set_aside or clients else None,
        )

    def _previous(self, s: Session, row: m.Engineer, vault_id: bytes, org: bytes) -> tuple[PreviousKey | None, str]:
        key, why_none = invited_key(s, row, vault_id, org)
        if key is None:
            return None, why_none
        found = PreviousKey(key.generation, key.sealing_public, key.signing_public, key.certified_at, key.certificate)
        return found, ""

    def _unverified(
        self, s: Session, vault_id: bytes, grant: m.Grant, previous: PreviousKey | None, why_none: str
    ) -> str | None:
        """Why the grant does not verify over the previous key, or None."""
        if previous is None:
            return why_none
        engineer = EngineerRow(grant.engineer_id, "", "", "", previous.generation, previous.sealing_public,
                               previous.signing_public, previous.certified_at, previous.certificate)  # fmt: skip
        try:
            verify_grant(vault_id, grant, engineer, self.checks.admin(s, s.get(m.Engineer, grant.granted_by)))
        except VaultError as error:
            return str(error)
        return None

    @staticmethod
    def sealed(s: Session, client_id: int, version: int, root_version: int) -> SealedClientKey | None:
        params = {"client": client_id, "version": version, "kind": "recovery", "recipient": root_version}
        for r in SEALED_KEY.all(rows.connection(s), params)[:1]:
            signer = None if r[8] is None else EngineerRow._make(r[8 : 8 + ENGINEER_WIDTH])
            return SealedClientKey(ClientKeyRow(*r[:7]), signer, "recovery", root_version, r[7])
        return None

    def _client(self, s: Session, client_id: int, root_version: int) -> CarriedClient:
        client = s.get(m.Client, client_id)
        assert client is not None  # a carried grant's client is read above
        versions = s.scalars(
            select(m.ClientKey.version)
            .where(m.ClientKey.client_id == client_id, m.ClientKey.state != "destroyed")
            .order_by(m.ClientKey.version)
        )
        keys = tuple(k for v in versions if (k := self.sealed(s, client_id, v, root_version)) is not None)
        events = s.execute(
            select(m.AuditEvent.seq, m.AuditEvent.action, m.AuditEvent.key_version, m.AuditEvent.details_blob,
                   m.AuditEvent.request_id)
            .where(m.AuditEvent.client_id == client_id, m.AuditEvent.action.in_(GRANT_ACTIONS))
            .order_by(m.AuditEvent.seq)
        )  # fmt: skip
        return CarriedClient(client_id, keys, client.audit_keys_blob, tuple(GrantEvent(*r) for r in events))

    def _slug_keys(
        self, s: Session, slugs: list[tuple[int, bytes | None]], root_version: int
    ) -> tuple[SealedClientKey, ...]:
        """The client-key version each slug is under, sealed to the recovery key (its slug shown)."""
        found: dict[tuple[int, int], SealedClientKey] = {}
        for client_id, blob in slugs:
            if blob is None or (client_id, blob_key_version(blob)) in found:
                continue
            sealed = self.sealed(s, client_id, blob_key_version(blob), root_version)
            if sealed is not None:
                found[(client_id, blob_key_version(blob))] = sealed
        return tuple(found[k] for k in sorted(found))

    # -- the carry --------------------------------------------------------------------------------

    def carry(self, s: Session, engineer_id: int) -> None:
        if self.kept is None or self.kept[0] != engineer_id:
            raise UntrustedRecord("no confirmation plan was made for this engineer in this unit of work")
        draft, made = self.kept[1], self.made or CarryMade((), ())  # none: nothing may be drafted
        row, caller = s.get(m.Engineer, engineer_id), s.get(m.Engineer, self.caller_id)
        assert row is not None and row.sealing_public is not None and caller is not None  # read in this unit
        resign = {kept.grant.id: kept for kept in draft.resign}
        aside = set(made.set_aside)  # carried rows the audit log takes back: the admin's machine read it
        live = {gid: kept.grant.client_id for gid, kept in resign.items() if gid not in draft.expired}
        kept_out = {live[gid] for gid in aside if gid in live}
        carried = [c for c in draft.clients if c.client_id not in kept_out]
        drafted = {(c.client_id, k.record.version) for c in carried for k in c.keys}
        signatures = dict(made.signatures)
        seals = {(client_id, version): blob for client_id, version, blob in made.seals}
        if (
            len(aside) != len(made.set_aside)
            or not aside <= set(live)
            or len(signatures) != len(made.signatures)
            or set(signatures) != set(resign) - aside
            or len(seals) != len(made.seals)
            or set(seals) != drafted
            or any(not isinstance(b, bytes) or not 0 < len(b) <= MAX_SEAL for b in seals.values())
        ):
            raise AccessDenied(NOT_DRAFTED)
        vault_id, _ = self.checks.trusted(s)
        grants = {grant_id: s.get(m.Grant, grant_id) for grant_id in resign if grant_id not in aside}
        for grant_id, grant in grants.items():
            assert grant is not None and caller.signing_public is not None  # drafted, authorised in this unit
            fields = grant_fields(vault_id, grant, row.sealing_public)
            try:
                signing.verify(caller.signing_public, signatures[grant_id], grant_label(grant), *fields, what="grant")
            except UntrustedRecord:
                raise AccessDenied(NOT_SIGNED) from None
        for grant_id, grant in grants.items():  # every check passed: the writes
            assert grant is not None
            grant.granted_by, grant.signature = caller.id, signatures[grant_id]
        for (client_id, version), blob in sorted(seals.items()):
            key = (client_id, version, "engineer", row.id)
            existing = s.get(m.ClientKeySeal, key)
            if existing is None:
                s.add(m.ClientKeySeal(client_id=client_id, version=version, recipient_kind="engineer",
                                      recipient_id=row.id, blob=blob))  # fmt: skip
            else:
                existing.blob = blob
        for grant_id in (*draft.set_aside, *sorted(aside)):  # revoked, as in-process (``carry_grants``)
            found = s.get(m.Grant, grant_id)
            assert found is not None
            found.revoked_at = self.clock()
