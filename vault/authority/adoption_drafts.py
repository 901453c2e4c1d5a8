"""The adoption of an engineer's signed records in a re-key through the team server, where the database is.

``adoption_rows`` drafts, in the re-key's draft and again in its commit's unit, what the engineer signed
(``adoption_draft_values.py``): the live client-key versions whose record names them (with their copy
sealed to the recovery key), their unrevoked grants (with each grantee's row), the policies and settings
(``policy_adoption.departing_draft``). None when they signed nothing. The draft's digest covers it.

``store_adoption`` runs in the commit's unit after the digest was compared and before the keys are
destroyed (in-process order: ``engineer_rotation.py``). Before anything is written: the admin's answer
covers exactly the drafted client-key versions and grants, each either adopted or set aside and not
both; each new signature verifies under the caller's certified key — a client key's over its record
with the caller as signer (``client_key_fields``), a grant's over its fields with the grantee's sealing
key (``grant_fields``), the policies' and settings' as ``store_adopted`` checks them. Else
``AccessDenied`` (403) and nothing is written. Then as in-process (``Offboarding.adopt_signatures``):
each adopted record signed by the caller; a version set aside loses every sealed copy and its client
points at its newest version an active admin signed; a grant set aside is revoked and its grantee's
copies of the client's keys deleted unless another of their grants for it verifies. The names of what
was set aside are returned for the ``adoption-refused`` event.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Protocol

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from vault.authority.adoption_draft_values import AdoptedGrant, AdoptionDraft, AdoptionMade
from vault.authority.carry_drafts import ServedCarry
from vault.authority.engineer_requests import Identity
from vault.authority.engineers import engineer_row
from vault.authority.grant_signatures import grant_fields, grant_label, verify_grant
from vault.authority.policy_adoption import departing_draft, store_adopted
from vault.authority.record_signatures import client_key_fields
from vault.crypto import signing
from vault.crypto.labels import LABEL_SIG_CLIENT_KEY
from vault.errors import AccessDenied, UntrustedRecord, VaultError
from vault.storage import models as m
from vault.storage.rows import EngineerRecord, GrantRow

NOT_ADOPTED = "the commit's adoption is not the one drafted, or not signed by the calling admin: nothing is written"


class AdminCheck(Protocol):
    def admin(self, s: Session, row: EngineerRecord | None) -> EngineerRecord:
        """The signer of a record: certified, an admin, active; else UntrustedRecord."""

    def trusted(self, s: Session) -> tuple[bytes, bytes]:
        """(vault id, organisation key) as checked in this unit."""


def signed_records(s: Session, engineer_id: int) -> int:
    """Records naming the engineer as their signer that an adoption would re-sign."""
    counts = (
        select(func.count()).select_from(m.ClientKey)
        .where(m.ClientKey.signed_by == engineer_id, m.ClientKey.state != "destroyed"),
        select(func.count()).select_from(m.Grant)
        .where(m.Grant.granted_by == engineer_id, m.Grant.revoked_at.is_(None)),
        select(func.count()).select_from(m.ClientPolicy).where(m.ClientPolicy.signed_by == engineer_id),
        select(func.count()).select_from(m.VaultInfo).where(m.VaultInfo.settings_signed_by == engineer_id),
    )  # fmt: skip
    return sum(int(s.scalar(count) or 0) for count in counts)


def adoption_rows(s: Session, identity: Identity, row: m.Engineer, root_version: int) -> AdoptionDraft | None:
    """What ``row`` signed, as the admin's machine is shown it (module docstring)."""
    if not signed_records(s, row.id):
        return None
    keys = []
    for ck in s.scalars(
        select(m.ClientKey)
        .where(m.ClientKey.signed_by == row.id, m.ClientKey.state != "destroyed")
        .order_by(m.ClientKey.client_id, m.ClientKey.version)
    ):
        sealed = ServedCarry.sealed(s, ck.client_id, ck.version, root_version)
        if sealed is not None:
            keys.append(sealed)
    grants = []
    for grant in s.scalars(
        select(m.Grant).where(m.Grant.granted_by == row.id, m.Grant.revoked_at.is_(None)).order_by(m.Grant.id)
    ):
        grantee = s.get(m.Engineer, grant.engineer_id)
        if grantee is not None:
            grants.append(AdoptedGrant(GrantRow(*(getattr(grant, f) for f in GrantRow._fields)), engineer_row(grantee)))
    policies = departing_draft(s, identity.vault_id, identity.org_signing_public, identity.org_chain, identity.me, row)
    return AdoptionDraft(tuple(keys), tuple(grants), policies)


def store_adoption(s: Session, draft: AdoptionDraft, made: object, checks: AdminCheck, now: dt.datetime) -> list[str]:
    """Check the admin's answer in full, then write it (module docstring); what was set aside."""
    if not isinstance(made, AdoptionMade):
        raise AccessDenied(NOT_ADOPTED)
    me, vault_id = draft.policies.me, draft.policies.vault_id
    assert me.signing_public is not None  # the caller, certified: authorised in this unit
    drafted_keys = {(k.record.client_id, k.record.version): k for k in draft.client_keys}
    drafted_grants = {g.grant.id: g for g in draft.grants}
    key_sigs = {(c, v): sig for c, v, sig in made.client_keys}
    grant_sigs = dict(made.grants)
    skipped_keys, skipped_grants = set(made.skipped_keys), set(made.skipped_grants)
    if (
        len(key_sigs) != len(made.client_keys)
        or len(grant_sigs) != len(made.grants)
        or set(key_sigs) & skipped_keys
        or set(key_sigs) | skipped_keys != set(drafted_keys)
        or set(grant_sigs) & skipped_grants
        or set(grant_sigs) | skipped_grants != set(drafted_grants)
    ):
        raise AccessDenied(NOT_ADOPTED)
    try:
        for key, sig in key_sigs.items():
            record = drafted_keys[key].record
            fields = client_key_fields(vault_id, dataclasses.replace(record, signed_by=me.id))
            signing.verify(me.signing_public, sig, LABEL_SIG_CLIENT_KEY, *fields, what="a client key")
        for grant_id, sig in grant_sigs.items():
            adopted = drafted_grants[grant_id]
            fields = grant_fields(vault_id, adopted.grant, adopted.engineer.sealing_public)
            signing.verify(me.signing_public, sig, grant_label(adopted.grant), *fields, what="a grant")
        store_adopted(s, draft.policies, made.policies)  # checks each signature before it writes
    except UntrustedRecord:
        raise AccessDenied(NOT_ADOPTED) from None
    for (client_id, version), sig in key_sigs.items():
        ck = s.get(m.ClientKey, (client_id, version))
        assert ck is not None  # drafted in this unit
        ck.signed_by, ck.signature = me.id, sig
    for grant_id, sig in grant_sigs.items():
        grant = s.get(m.Grant, grant_id)
        assert grant is not None
        grant.granted_by, grant.signature = me.id, sig
    skipped = []
    for client_id, version in sorted(skipped_keys):
        s.execute(delete(m.ClientKeySeal).where(m.ClientKeySeal.client_id == client_id,
                                                m.ClientKeySeal.version == version))  # fmt: skip
        skipped.append(f"client #{client_id} key version {version}")
    s.flush()
    for client_id in sorted({c for c, _ in skipped_keys}):
        _repair_current_version(s, client_id, vault_id, checks)
    for grant_id in sorted(skipped_grants):
        grant = s.get(m.Grant, grant_id)
        assert grant is not None
        _drop_forged_grant(s, grant, drafted_grants[grant_id], vault_id, checks, now)
        skipped.append(f"grant #{grant_id} to {drafted_grants[grant_id].engineer.name}")
    return skipped


def _repair_current_version(s: Session, client_id: int, vault_id: bytes, checks: AdminCheck) -> None:
    """Point the client at its newest version an active admin signed (a forged one may be current)."""
    for ck in s.scalars(select(m.ClientKey).where(m.ClientKey.client_id == client_id)
                        .order_by(m.ClientKey.version.desc())):  # fmt: skip
        try:
            admin = checks.admin(s, s.get(m.Engineer, ck.signed_by))
            assert admin.signing_public is not None
            signing.verify(admin.signing_public, ck.signature, LABEL_SIG_CLIENT_KEY, *client_key_fields(vault_id, ck),
                           what="a client key")  # fmt: skip
        except VaultError:
            continue
        client = s.get(m.Client, client_id)
        if client is not None:
            client.current_key_version = ck.version
        return


def _drop_forged_grant(
    s: Session, grant: m.Grant, adopted: AdoptedGrant, vault_id: bytes, checks: AdminCheck, now: dt.datetime
) -> None:
    """Revoke a grant set aside; delete its grantee's copies of the client's keys unless another of
    their grants for it verifies (as ``Offboarding._drop_forged_grant``)."""
    grant.revoked_at = now
    others = s.scalars(select(m.Grant).where(m.Grant.engineer_id == grant.engineer_id,
                                             m.Grant.client_id == grant.client_id, m.Grant.revoked_at.is_(None),
                                             m.Grant.id != grant.id))  # fmt: skip
    for other in others:
        try:
            verify_grant(vault_id, other, adopted.engineer, checks.admin(s, s.get(m.Engineer, other.granted_by)))
        except VaultError:
            continue
        return
    s.execute(delete(m.ClientKeySeal).where(m.ClientKeySeal.client_id == grant.client_id,
                                            m.ClientKeySeal.recipient_kind == "engineer",
                                            m.ClientKeySeal.recipient_id == grant.engineer_id))  # fmt: skip


def set_aside_unsigned(s: Session, row: m.Engineer, checks: AdminCheck, now: dt.datetime) -> list[str]:
    """A removal through the server of an engineer who is not an admin, whom a DBA named as a record's
    signer: no record of theirs verifies (a non-admin signs no client key or grant), so, as the
    in-process adoption would, every live client-key version naming them loses its copies (its client
    pointed at its newest admin-signed version) and every unrevoked grant naming them is revoked, with
    its grantee's copies unless another of their grants verifies. It only takes access away: no
    signature is needed. Policies and settings naming them are left as stored (they read as the strict
    policy, or the default settings). What was set aside, for the ``adoption-refused`` event."""
    vault_id, _ = checks.trusted(s)
    skipped = []
    keys = s.scalars(select(m.ClientKey).where(m.ClientKey.signed_by == row.id, m.ClientKey.state != "destroyed")
                     .order_by(m.ClientKey.client_id, m.ClientKey.version)).all()  # fmt: skip
    for ck in keys:
        s.execute(delete(m.ClientKeySeal).where(m.ClientKeySeal.client_id == ck.client_id,
                                                m.ClientKeySeal.version == ck.version))  # fmt: skip
        skipped.append(f"client #{ck.client_id} key version {ck.version}")
    s.flush()
    for client_id in sorted({ck.client_id for ck in keys}):
        _repair_current_version(s, client_id, vault_id, checks)
    for grant in s.scalars(select(m.Grant).where(m.Grant.granted_by == row.id, m.Grant.revoked_at.is_(None))
                           .order_by(m.Grant.id)).all():  # fmt: skip
        grantee = s.get(m.Engineer, grant.engineer_id)
        if grantee is None:
            continue
        _drop_forged_grant(s, grant, AdoptedGrant(GrantRow(*(getattr(grant, f) for f in GrantRow._fields)),
                                                  engineer_row(grantee)), vault_id, checks, now)  # fmt: skip
        skipped.append(f"grant #{grant.id} to {grantee.name}")
    s.flush()
    return skipped
