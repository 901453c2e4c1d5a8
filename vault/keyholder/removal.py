"""An engineer removed, where the keys are: sign the revocation of each of their grants, re-issue
their certificate as disabled, and check the answer: nothing of theirs left unrevoked.

``EngineerRemoval`` asks the authority to remove an engineer by name. Inside the authority's
unit of work it is shown the engineer's row and their unrevoked grant rows; it checks that
the row is the engineer asked for and that each grant is theirs and unrevoked, then signs a
revocation of exactly those grants (docs/format.md: the grant-revocation signature) and, if
the engineer was ever certified, a certificate of their row with the status disabled, under
the organisation key of the root bundle sealed to this admin. The committed answer lists
every grant row of the engineer: a removal the authority claims done while a grant of theirs
is still live, or whose revocation is not the one signed here, is refused (``IntegrityError``);
so is the removal of an admin (the row shown) after which this keyholder holds no root bundle
newer than the one the draft named: the root rotation the removal must start was skipped.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vault.authority.engineer_requests import DISABLED, Removal, RemovalAnswer, RemovalDraft, RemoveRequest
from vault.crypto import signing
from vault.crypto.labels import LABEL_SIG_ENGINEER, LABEL_SIG_GRANT_REVOCATION
from vault.errors import IntegrityError, UntrustedRecord
from vault.keyholder.grants import revocation_fields
from vault.keyholder.responses import ResponseChecks
from vault.keyholder.trust import certificate_fields
from vault.storage.rows import ACTIVE, ROLE_ADMIN, is_revoked

if TYPE_CHECKING:
    from vault.keyholder.engineers import EngineerKeyholder

CLOCK_SLACK = 300  # seconds between the authority's revocation time and this keyholder's clock


@dataclass(frozen=True)
class Removed:
    """A verified removal: the client-key rotations started, and whether an admin was removed."""

    rotation_ids: tuple[int, ...]
    was_admin: bool


class _RemovalSeal:
    """The keyholder's side of a removal: signs for the draft it verified, and remembers what."""

    def __init__(self, owner: EngineerKeyholder, name: str, chain_admins: frozenset[int] | None = None) -> None:
        self._owner, self._name, self._chain_admins = owner, name, chain_admins
        self.engineer_id: int | None = None
        self.revoked: dict[int, bytes] = {}  # grant id -> the revocation signed here
        self.was_admin = False  # the row shown was an admin's: the root key must be rotated
        self.root_version = 0  # the recovery key the draft named (before the removal's rotation)

    def __repr__(self) -> str:
        return "RemovalSeal(<redacted>)"

    def remove(self, draft: RemovalDraft) -> Removal:
        owner = self._owner
        org = owner.verified_me(draft.identity, admin=True)
        row, vault_id, me = draft.engineer, draft.identity.vault_id, draft.identity.me
        if row.name != self._name or row.status == DISABLED or row.id == me.id:
            raise UntrustedRecord(f"the authority showed another engineer than {self._name!r} to remove")
        if row.role != ROLE_ADMIN and self._chain_admins is not None and row.id in self._chain_admins:
            # a departing admin who rewrote her row as an engineer would keep the root key she holds
            raise UntrustedRecord(
                f"the row of {self._name!r} says engineer, but the signed audit log made them an admin",
                hint="the row was changed outside credvault: restore it from a backup, then remove them",
            )
        if abs(draft.revoked_at - int(owner.clock().timestamp())) > CLOCK_SLACK:
            raise UntrustedRecord("the authority's revocation time is not now")
        sign = owner.keys.my_signing_key()
        revocations = []
        for grant in draft.grants:
            if grant.engineer_id != row.id or is_revoked(grant):
                raise UntrustedRecord(f"a grant shown for removal is not a live grant of {self._name!r}")
            revoked = grant._replace(revoked_at=dt.datetime.fromtimestamp(draft.revoked_at, dt.UTC), revoked_by=me.id)
            fields = revocation_fields(vault_id, revoked)
            revocations.append((grant.id, sign.sign(LABEL_SIG_GRANT_REVOCATION, *fields)))
        certified_at = certificate = None
        recertify = row.status == ACTIVE or row.certified_at is not None  # read from the row, not the flag
        if recertify:
            # the row's keys as certified: a key a DBA swapped in is never certified (as disabled)
            ResponseChecks(vault_id, org, owner.clock()).certificate(row)
            bundle = owner.root_bundle(draft.identity, draft.root, org)
            certified_at = int(owner.clock().timestamp())
            disabled = row._replace(status=DISABLED, certified_at=certified_at)
            certificate = bundle.org.sign(LABEL_SIG_ENGINEER, *certificate_fields(vault_id, disabled))
        self.engineer_id, self.revoked = row.id, dict(revocations)
        self.was_admin, self.root_version = row.role == ROLE_ADMIN, draft.root.version
        return Removal(tuple(revocations), certified_at, certificate)


class EngineerRemoval:
    """Removes engineers for the admin whose keys ``owner`` holds, through its transport."""

    def __init__(self, owner: EngineerKeyholder) -> None:
        self.owner = owner

    def __repr__(self) -> str:
        return "EngineerRemoval()"

    def remove(self, name: str, *, log_verified: bool, chain_admins: frozenset[int] | None = None) -> Removed:
        """Remove ``name``; ``chain_admins``: the engineers a verified audit chain made admins
        (None: the log did not verify), so that a row rewritten from admin to engineer is refused."""
        owner = self.owner
        me = owner.keys.me()
        request = RemoveRequest(owner.caller(), name, me.org_signing_public, log_verified)
        seal = _RemovalSeal(owner, name, chain_admins)
        answer: RemovalAnswer = owner.transport.remove(request, seal)
        self.check(answer, seal, name)
        return Removed(answer.rotation_ids, answer.was_admin)

    def check(self, answer: RemovalAnswer, seal: _RemovalSeal, name: str) -> None:
        """Every grant row of the removed engineer revoked (those shown, by this admin's signature)."""
        row = answer.engineer
        if seal.engineer_id is None or row.id != seal.engineer_id or row.status != DISABLED:
            raise IntegrityError(f"the authority did not disable {name!r}: not removed")
        public = self.owner.keys.my_signing_key().public
        vault_id, me = answer.identity.vault_id, answer.identity.me.id
        for grant in answer.grants:
            if grant.engineer_id != row.id:
                raise IntegrityError(f"the removal of {name!r} answered another engineer's grant")
            if not is_revoked(grant):
                raise IntegrityError(
                    f"the removal of {name!r} left grant #{grant.id} live",
                    hint="run `credvault engineer remove` again; the database was changed outside credvault",
                )
            if grant.id in seal.revoked:
                if grant.revocation != seal.revoked[grant.id] or grant.revoked_by != me or grant.revoked_at is None:
                    raise IntegrityError(f"grant #{grant.id} of {name!r} does not carry the revocation signed")
                fields = revocation_fields(vault_id, grant)
                signing.verify(public, grant.revocation, LABEL_SIG_GRANT_REVOCATION, *fields, what="a revocation")
        missing = set(seal.revoked) - {grant.id for grant in answer.grants}
        if missing:
            raise IntegrityError(f"the removal of {name!r} answered without grant #{min(missing)}")
        if seal.was_admin:  # they hold the root bundle: only a new one made here shuts them out
            held = self.owner.keys.root
            if not answer.was_admin or held is None or held.version <= seal.root_version:
                raise IntegrityError(
                    f"the removal of admin {name!r} did not rotate the root key",
                    hint="run `credvault rotate root` now; the authority skipped it",
                )
