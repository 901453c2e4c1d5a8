"""A re-invited engineer's carry-over, made on the confirming admin's machine (through the team server).

The server drafts the carry-over (``authority/carry_drafts.py``: ``CarryPlan.draft``) and cannot read
the audit log's sealed details or open a client key. Before anything is signed or sealed here:

* the plan's carried grants are exactly the drafted rows that are not expired, one per client, and the
  drafted clients exactly theirs;
* the previous key generation is the one the signed invitation names, older than the enrolled one, and
  its ``engineer_keys`` record is certified under the organisation key trusted from this session's pin;
* each drafted row is unrevoked and signed over that previous key (so the engineer's) by a certified,
  active admin; expired by this machine's clock exactly when the plan says so;
* each client's key versions: records signed by an active admin, the copies sealed to the recovery key
  this admin's root bundle holds, each key matching its signed fingerprint; the client's audit keys
  opened under its current version (a client drafted with none opens no event) and its grant and
  revoke events checked as a rotation's start checks its grantees (``rotation_grants.check_events``).

A carried grant the audit log takes back (a revocation a DBA cleared) or that no event vouches for is
set aside, as the in-process ledger sets it aside (``Invitations.confirmation_plan``): not re-signed,
nothing sealed for its client, and named in the commit's ``CarryMade.set_aside`` so that the server
revokes it (``authority/carry_drafts.py``); the plan shown to the admin lists it as dropped with the
audit log's reason (``shown_plan``).

Then: each other drafted row signed by this admin over the engineer's new sealing key (``grant_fields``:
only the key changes), and every live version of a carried client's key sealed to that key.

Before any of it (``named_in_plan``, through the server only): every grant the whole audit chain,
verified on this machine, says the engineer holds (``RemoteGrantHistory.live_grants``) must be a row
the plan carries or drops; a plan that leaves one out refuses the confirmation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from vault.authority.carry_draft_values import CarriedGrantRow, CarryDraft, CarryMade
from vault.authority.certificates import verify_engineer_key
from vault.authority.engineer_requests import EngineerKeyRow, PendingRows
from vault.authority.grant_signatures import grant_fields, grant_label, verify_grant
from vault.authority.requests import SealedClientKey
from vault.authority.rotation_requests import Grantee
from vault.crypto import blobs, sealing, signing
from vault.crypto.labels import LABEL_CLIENT_KEY_SEAL
from vault.errors import DecryptionFailed, UntrustedRecord, VaultError
from vault.keyholder.keys import RootBundle
from vault.keyholder.responses import ResponseChecks
from vault.keyholder.rotation_grants import check_events
from vault.storage.rows import EngineerRow, is_revoked

if TYPE_CHECKING:
    from vault.keyholder.engineers import EngineerKeyholder

NOT_DRAFTED = "the authority's carry-over is not the plan it showed: not confirmed"
TAKEN_BACK = "set aside (revoked): the audit log does not confirm it"
LEFT_OUT = "the server's plan leaves out a grant the verified audit log says the engineer holds: not confirmed"
LEFT_OUT_HINT = "the server's database or the server itself may be tampered with: tell its operator"


class CheckedCarry(NamedTuple):
    """A draft verified here: the rows to re-sign, each carried client's opened key versions, and the
    carried rows the audit log takes back (grant id -> why), set aside."""

    resign: dict[int, CarriedGrantRow]
    keys: dict[int, dict[int, bytes]]
    set_aside: dict[int, str]


def checked_carry(owner: EngineerKeyholder, pending: PendingRows, org: bytes) -> CheckedCarry | None:
    """The carry-over ``pending`` drafts, verified (module docstring), or None if it drafts none."""
    draft, plan = pending.plan.draft, pending.plan
    if draft is None:
        if plan.carried:
            raise UntrustedRecord(NOT_DRAFTED)
        return None
    identity, row = pending.identity, pending.engineer
    vault_id, now = identity.vault_id, int(owner.clock().timestamp())
    checks = ResponseChecks(vault_id, org, owner.clock())
    resign = {kept.grant.id: kept for kept in draft.resign}
    live = {gid for gid in resign if gid not in draft.expired}
    by_client = {resign[gid].grant.client_id: resign[gid] for gid in live}
    if (
        len(resign) != len(draft.resign)
        or not set(draft.expired) <= set(resign)
        or sorted(c.grant_id for c in plan.carried) != sorted(live)
        or len(by_client) != len(live)
        or any(resign[c.grant_id].grant.client_id != c.client_id for c in plan.carried)
        or sorted(c.client_id for c in draft.clients) != sorted(by_client)
    ):
        raise UntrustedRecord(NOT_DRAFTED)
    if row.sealing_public is None:
        raise UntrustedRecord(NOT_DRAFTED)
    previous = _previous(draft, pending, vault_id, org) if resign else row
    for gid, kept in resign.items():
        grant = kept.grant
        if is_revoked(grant):  # another engineer's row does not verify over this engineer's previous key
            raise UntrustedRecord("the authority's plan would carry over a revoked grant")
        verify_grant(vault_id, grant, previous, checks.admin(kept.signer, grant.granted_by))
        if (gid in draft.expired) != (grant.until is not None and grant.until <= now):
            raise UntrustedRecord(NOT_DRAFTED)
    bundle = owner.root_bundle(identity, pending.root, org)
    opened: dict[int, dict[int, bytes]] = {}
    aside: dict[int, str] = {}
    for client in draft.clients:
        keys = _opened_keys(checks, bundle, client.client_id, client.keys)
        kept = by_client[client.client_id]
        ring = b""  # no audit keys drafted: no event opens, so none vouches for the grant
        if client.audit_keys_blob is not None:
            version = blobs.blob_key_version(client.audit_keys_blob)
            if version not in keys:
                raise DecryptionFailed()
            ring = blobs.decrypt_client_field(keys[version], version, client.audit_keys_blob, client.client_id,
                                              "audit-keys")  # fmt: skip
        try:
            check_events(client.client_id, client.grant_events, (Grantee(previous, kept.grant, kept.signer),), ring)
        except UntrustedRecord as error:
            aside[kept.grant.id] = f"{TAKEN_BACK}: {error}"
            continue
        opened[client.client_id] = keys
    return CheckedCarry(resign, opened, aside)


def named_in_plan(owner: EngineerKeyholder, pending: PendingRows) -> None:
    """Through the team server, with the verified audit chain's grant history (``owner.live_grants``):
    each grant the chain says the engineer holds is a row the plan carries or drops (a server that leaves
    a row out of the plan leaves it unrevoked and not carried: the engineer loses it silently)."""
    if owner.live_grants is None:
        return
    plan = pending.plan
    named = {(r.client_id, r.grant_id) for r in plan.carried} | {(r.client_id, r.grant_id) for r in plan.dropped}
    clients = {client_id for client_id, _ in named}
    for client_id, grant_id in owner.live_grants(pending.engineer.name, int(owner.clock().timestamp())).items():
        if (client_id, grant_id) not in named and (grant_id is not None or client_id not in clients):
            raise UntrustedRecord(LEFT_OUT + f" (grant {grant_id} of client {client_id})", hint=LEFT_OUT_HINT)


def carry_made(owner: EngineerKeyholder, pending: PendingRows, org: bytes) -> CarryMade | None:
    """The admin's part of the carry-over ``pending`` drafts (module docstring), or None if it drafts none."""
    named_in_plan(owner, pending)
    checked = checked_carry(owner, pending, org)
    if checked is None:
        return None
    vault_id, row = pending.identity.vault_id, pending.engineer
    assert row.sealing_public is not None  # checked_carry refuses a row without one
    seals: list[tuple[int, int, bytes]] = []
    for client_id, keys in checked.keys.items():
        for version, key in sorted(keys.items()):
            context = (LABEL_CLIENT_KEY_SEAL, vault_id, client_id, version, "engineer", row.id)
            seals.append((client_id, version, sealing.seal(row.sealing_public, version, key, context)))
    signer = owner.keys.my_signing_key()
    signatures = tuple(
        (gid, signer.sign(grant_label(kept.grant), *grant_fields(vault_id, kept.grant, row.sealing_public)))
        for gid, kept in checked.resign.items()
        if gid not in checked.set_aside
    )
    return CarryMade(signatures, tuple(seals), tuple(sorted(checked.set_aside)))


def _previous(draft: CarryDraft, pending: PendingRows, vault_id: bytes, org: bytes) -> EngineerRow:
    """The engineer's row with the keys the signed invitation names (their record certified)."""
    row, key = pending.engineer, draft.previous
    if key is None or key.generation != pending.invitation.prev_generation or key.generation >= row.key_generation:
        raise UntrustedRecord(NOT_DRAFTED)
    record = EngineerKeyRow(row.id, key.generation, key.sealing_public, key.signing_public, key.certified_at, None)
    verify_engineer_key(vault_id, org, record, key.certificate, row.name)
    return row._replace(key_generation=key.generation, sealing_public=key.sealing_public,
                        signing_public=key.signing_public)  # fmt: skip


def _opened_keys(
    checks: ResponseChecks, bundle: RootBundle, client_id: int, sealed: tuple[SealedClientKey, ...]
) -> dict[int, bytes]:
    """Each live client-key version drafted, its record verified and its recovery copy opened."""
    keys: dict[int, bytes] = {}
    for copy in sealed:
        if not isinstance(copy, SealedClientKey):
            raise UntrustedRecord(NOT_DRAFTED)
        version = copy.record.version
        try:
            checks.client_key(copy, client_id, version)
            if version in keys or copy.blob is None or (copy.kind, copy.recipient_id) != ("recovery", bundle.version):
                raise DecryptionFailed()
            context = (LABEL_CLIENT_KEY_SEAL, checks.vault_id, client_id, version, "recovery", bundle.version)
            key = sealing.open_sealed(bundle.recovery, version, copy.blob, context)
        except VaultError:
            raise UntrustedRecord(
                f"a key version of a client the plan carries over does not verify or open (version {version})"
            ) from None
        if signing.client_key_fingerprint(key) != copy.record.fingerprint:
            raise UntrustedRecord(f"the sealed client key does not match its signed version {version}")
        keys[version] = key
    return keys
