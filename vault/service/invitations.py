"""Invitations as signed records, and what a confirmation carries over (issue 12).

An invitation is signed by the inviting admin over the vault id, the engineer's id, name
and role, their previous certified key generation, the root version, the expiry and the
sealed invite secret (docs/format.md §5). The enrolling engineer and the confirming
admin verify it against an admin whose certificate verifies, so a writer of the
database can neither raise an invited role nor make an enrolment without an invitation.

A confirmation carries over only the grants an active admin signed over the engineer's
previous sealing key (from ``engineer_keys``, verified); it re-signs them over the new
key and re-seals their client keys. Every other unrevoked grant row is reported, and
the rows no admin signed, or that the grant ledger refuses (a revocation cleared in the
database), are set aside (revoked) so that none blocks a lookup.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.authority.carry_drafts import invited_key
from vault.authority.engineers import EngineerAuthority, engineer_row
from vault.authority.grant_signatures import grant_label
from vault.errors import IntegrityError, UntrustedRecord, VaultError
from vault.keyholder.invitations import verified_invitation
from vault.service.core import epoch, is_revoked
from vault.service.records import CarriedGrant, DroppedGrant
from vault.service.rows import EngineerRecord, EngineerRow
from vault.storage import models as m

if TYPE_CHECKING:
    from vault.keyholder.keys import Keys
    from vault.keyholder.trust import Trust
    from vault.service.core import Core
    from vault.service.grantledger import GrantLedger


class _Plan(NamedTuple):
    """What a confirmation does with the engineer's unrevoked grant rows."""

    signer: EngineerRecord  # the admin who signed the invitation
    carried: list[tuple[m.Grant, CarriedGrant]]  # verified and live: re-signed and re-sealed
    expired: list[m.Grant]  # verified and expired: re-signed as history, nothing sealed
    unsigned: list[m.Grant]  # not signed over the previous key, or refused by the ledger: revoked
    dropped: list[DroppedGrant]  # every row not carried, with the reason, for the admin


class Invitations:
    """Invitations and confirmations: what an enrolment carries over."""

    def __init__(self, core: Core, keys: Keys, trust: Trust, ledger: GrantLedger) -> None:
        self.core = core
        self.keys = keys
        self.trust = trust
        self.ledger = ledger

    def verify_invite(self, s: Session, row: m.Engineer) -> EngineerRecord:
        """The invitation's signature by an admin whose certificate verifies; returns that admin
        (the keyholder's check, ``keyholder/invitations.py``, over the rows as stored)."""
        invitation = EngineerAuthority.invitation(s, row)
        vault_id, org = self.core.vid(s), self.trust.org_public(s)
        verified_invitation(vault_id, org, self.core.clock(), engineer_row(row), invitation)
        signer = s.get(m.Engineer, invitation.signed_by or 0)
        assert signer is not None  # verified above
        return signer

    # -- what a confirmation carries over ------------------------------------------------------

    def _previous_keys(self, s: Session, row: m.Engineer) -> tuple[EngineerRow | None, str]:
        """The engineer's keys as they were when invited (the generation the signed invitation
        names), verified against the organisation key; else None and why."""
        key, why_none = invited_key(s, row, self.core.vid(s), self.trust.org_public(s))
        if key is None:
            return None, why_none
        return (
            EngineerRow(
                row.id,
                row.name,
                row.role,
                row.status,
                key.generation,
                key.sealing_public,
                key.signing_public,
                key.certified_at,
                key.certificate,
            ),
            "",
        )

    def _shown_slug(self, s: Session, client_id: int) -> str | None:
        """The client's slug as the acting admin opens it, or None if it does not open."""
        client = s.get(m.Client, client_id)
        if client is None:
            return None
        try:
            return self.keys.client_field(s, client, client.slug_blob, "slug").decode("utf-8")
        except (VaultError, UnicodeDecodeError):
            return None

    def confirmation_plan(self, s: Session, row: m.Engineer) -> _Plan:
        """The signed invitation's admin, the grants to carry over and the rows to drop.

        A grant is carried over only if an active, certified admin signed it over the
        engineer's previous sealing key (the generation the invitation names) and it has
        not expired; every other unrevoked grant row of the engineer is dropped with a reason.
        """
        signer = self.verify_invite(s, row)
        previous, why_none = self._previous_keys(s, row)
        now = epoch(self.core.clock())
        plan = _Plan(signer, [], [], [], [])
        # The grant ledger decides what may be re-sealed (grantledger.py): per client, only the
        # head of the engineer's ledger, live, and confirmed by the verified audit log. A
        # revocation cleared or a newer grant deleted in the database carries nothing.
        heads: set[int] = set()
        reasons: dict[int, str] = {}
        if previous is not None:
            carry, refused = self.ledger.grants_to_carry(s, previous)
            heads = {grant.id for grant in carry}
            reasons = {grant.id: why for grant, why in refused}
        grants = [
            grant
            for grant in s.scalars(select(m.Grant).where(m.Grant.engineer_id == row.id).order_by(m.Grant.id)).all()
            if not is_revoked(grant)
        ]
        for grant in grants:
            slug = self._shown_slug(s, grant.client_id)
            try:
                if previous is None:
                    raise UntrustedRecord(why_none)
                self.trust.verify_grant(s, grant, previous)
            except IntegrityError as error:
                plan.unsigned.append(grant)
                plan.dropped.append(DroppedGrant(grant.id, slug, str(error)))
                continue
            if grant.until is not None and grant.until <= now:
                plan.expired.append(grant)
                plan.dropped.append(DroppedGrant(grant.id, slug, "expired (kept as history; nothing is sealed)"))
            elif grant.id in reasons:  # a ledger head the audit log does not confirm (a cleared revocation)
                plan.unsigned.append(grant)
                plan.dropped.append(DroppedGrant(grant.id, slug, reasons[grant.id]))
            elif grant.id not in heads:
                plan.dropped.append(DroppedGrant(grant.id, slug, "superseded by a newer grant for the same client"))
            elif slug is None:
                plan.dropped.append(DroppedGrant(grant.id, None, "its client's keys do not open or verify"))
            else:
                until = None if grant.until is None else dt.datetime.fromtimestamp(grant.until, dt.UTC)
                plan.carried.append((grant, CarriedGrant(slug, until)))
        return plan

    def carry_grants(self, s: Session, row: m.Engineer, plan: _Plan) -> None:
        """Re-sign the verified grants over the engineer's new keys and re-seal the client keys
        of the live ones; set aside (revoke) the rows the plan refused, so none blocks a lookup."""
        assert row.sealing_public is not None
        for grant in [g for g, _ in plan.carried] + plan.expired:
            grant.granted_by = self.keys.me().engineer_id
            grant.signature = self.keys.my_signing_key().sign(
                grant_label(grant), *self.trust.grant_fields(s, grant, row.sealing_public)
            )
        for grant, _ in plan.carried:
            for ck in s.scalars(
                select(m.ClientKey).where(m.ClientKey.client_id == grant.client_id, m.ClientKey.state != "destroyed")
            ):
                key = self.keys.client_key(s, grant.client_id, ck.version)
                self.keys.seal_client_key(s, grant.client_id, ck.version, key, "engineer", row.id, row.sealing_public)
        for grant in plan.unsigned:
            grant.revoked_at = self.core.clock()
