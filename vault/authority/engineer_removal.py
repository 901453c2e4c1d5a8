"""An engineer removed (offboarded), where the database is.

One unit of work: the caller authorised as an admin (``EngineerAuthority.authorise``, before
the engineer acted on is read); the engineer's row (not the caller, not removed already);
the clients whose current key they could have held (``RemovalSeams.exposed``: from the grant
ledger and the verified audit log, in-process); the keyholder shown the engineer's unrevoked
grant rows and signing a revocation of each one, and re-issuing their certificate with the
status disabled (old events still verify); the revocations stored as signed; the records
the engineer signed adopted; every sealed copy of theirs deleted, their key record destroyed
(the public keys kept); for an admin, the root key rotated; a client-key rotation started
for every exposed client; the ``engineer-remove`` event; the commit. The answer carries every
grant row of the engineer as committed, which the keyholder checks are all revoked.

``RemovalSeams`` runs the rest in this unit of work. The rotations are requests of their
own, each authorised again and verified by its keyholder: the root rotation
(``RootRotationAuthority`` / ``RootRotationKeyholder``) and each client-key start
(``RotationAuthority.start`` / ``RotationKeyholder``), as is the adoption of the policies
and settings the engineer signed (``DepartingPolicyAuthority`` / ``DepartingAdoption``).
Still in-process with the keyholder's hands (``service/offboarding.py``): the clients exposed
(grant ledger and verified audit log) and the adoption of the client-key records and grants
the engineer signed.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault import validation
from vault.authority.engineer_requests import (
    DISABLED,
    REMOVE,
    Removal,
    RemovalAnswer,
    RemovalDraft,
    RemoveRequest,
    RootCopy,
)
from vault.authority.engineer_rotation import destroy_keys
from vault.authority.engineers import (
    KEY_BYTES,
    SIGNATURE_BYTES,
    EngineerAuthority,
    EngineerSeal,
    checked_bytes,
    checked_caller,
    checked_name,
    engineer_row,
)
from vault.errors import InvalidInput
from vault.storage import models as m
from vault.storage.rows import ACTIVE, ROLE_ADMIN, GrantRow, is_revoked


class RemovalSeams(Protocol):
    """What a removal runs inside its unit of work: exposure and adoption (in-process, service),
    the root rotation and the client-key rotations (requests to their own authorities)."""

    def exposed(self, s: Session, engineer_id: int, log_verified: bool) -> set[int]: ...
    def adopt(self, s: Session, engineer_id: int) -> None: ...
    def rotate_root(self, s: Session) -> None: ...
    def start_rotation(self, s: Session, client_id: int) -> int: ...


class RemovalSeal(EngineerSeal, Protocol):
    def remove(self, draft: RemovalDraft) -> Removal: ...


def grant_row(grant: m.Grant) -> GrantRow:
    return GrantRow(*(getattr(grant, name) for name in GrantRow._fields))


class EngineerRemovalAuthority:
    """``remove``: offboard an engineer in one unit of work."""

    def __init__(self, engineers: EngineerAuthority, seams: RemovalSeams) -> None:
        self.engineers, self.seams = engineers, seams

    def __repr__(self) -> str:
        return "EngineerRemovalAuthority()"

    def remove(self, request: RemoveRequest, seal: RemovalSeal) -> RemovalAnswer:
        if not isinstance(request, RemoveRequest) or request.action != REMOVE:
            raise InvalidInput("not a removal request")
        caller, name = checked_caller(request.caller), checked_name(request.name)
        if not isinstance(request.log_verified, bool):
            raise InvalidInput("the request does not say whether the audit log verified")
        pin = checked_bytes("organisation key", request.org_pin, KEY_BYTES)
        e, seams = self.engineers, self.seams
        with e.store.transaction() as s:
            identity = e.authorise(s, caller, org_pin=pin, admin=True)
            me = identity.me
            row = e.engineer(s, name)
            if row.id == me.id:
                raise InvalidInput("you cannot remove yourself", hint="another admin can")
            if row.status == DISABLED:
                raise InvalidInput(f"engineer {name!r} is already removed")
            was_admin, recertify = row.role == ROLE_ADMIN, row.status == ACTIVE or row.certified_at is not None
            root = e.root_copy(s, me) if recertify else RootCopy(0, b"", None)  # the bundle signs the certificate
            exposed = seams.exposed(s, row.id, request.log_verified)
            grants = [g for g in s.scalars(select(m.Grant).where(m.Grant.engineer_id == row.id)) if not is_revoked(g)]
            revoked_at = int(e.clock().timestamp())
            draft = RemovalDraft(
                identity, root, engineer_row(row), tuple(grant_row(g) for g in grants), revoked_at, recertify
            )
            made = seal.remove(draft)
            if not isinstance(made, Removal):
                raise InvalidInput("the keyholder's removal is not a removal")
            signatures = dict(made.revocations)
            if sorted(signatures) != sorted(g.id for g in grants) or (made.certificate is None) == recertify:
                raise InvalidInput("the keyholder's removal is not for the grants and certificate shown")
            for grant in grants:
                signature = checked_bytes("revocation signature", signatures[grant.id], SIGNATURE_BYTES)
                grant.revoked_at = dt.datetime.fromtimestamp(revoked_at, dt.UTC)
                grant.revoked_by, grant.revocation = me.id, signature
            seams.adopt(s, row.id)
            destroy_keys(s, row, e.clock(), keep_public=True)
            row.status, row.disabled_at = DISABLED, e.clock()
            if recertify:
                row.certified_at = validation.number("certification time", made.certified_at, 1, 2**40)
                row.certificate = checked_bytes("certificate", made.certificate, SIGNATURE_BYTES)
            if was_admin:  # a new recovery key, organisation key and shares: old ones open nothing current
                seams.rotate_root(s)
            rotation_ids = tuple(
                seams.start_rotation(s, client_id)
                for client_id in sorted(exposed)
                if s.get(m.Client, client_id) is not None
            )
            public: dict[str, object] = {"engineer": name, "clients_rotated": len(rotation_ids), "admin": was_admin}
            if not request.log_verified:
                public["audit_log_verified"] = False
            seq = e.recorder.append(s, REMOVE, public=public)
            s.flush()
            after = tuple(
                grant_row(g)
                for g in s.scalars(select(m.Grant).where(m.Grant.engineer_id == row.id).order_by(m.Grant.id))
            )
            answer = RemovalAnswer(seq, identity, engineer_row(row), after, rotation_ids, was_admin)
        return answer
