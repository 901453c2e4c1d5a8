"""Engineers' keys over their life: new keys, a new passphrase, and removal.

``rotate`` and ``remove`` run as requests to the engineers' authority (authority/
engineer_rotation.py, engineer_removal.py) through their keyholder (keyholder/engineers.py,
removal.py); what they still do in-process, inside the authority's unit of work, is here:
the records an engineer signed adopted by the acting admin (``adopt_signatures``) and the
clients whose keys they could have held (``clients_exposed_to``). ``change_passphrase`` is in
engineers.py.

* ``rotate_engineer`` (a lost laptop): the engineer's key record and sealed copies are
  destroyed at once and they are re-invited; when they enrol again and an admin
  confirms, their live grants are re-signed and re-sealed to the new keys.
* ``change_passphrase``: only the engineer's own key record changes.
* ``remove_engineer``: every grant revoked, every sealed copy deleted, the account
  disabled (its public keys kept so that old audit events still verify), every client
  key the engineer could have held rotated (all of them, and the root key, for an
  admin), and the at-risk list returned: the values they saw that have not changed.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from vault.authority.grant_signatures import grant_label
from vault.crypto.labels import LABEL_SIG_CLIENT_KEY
from vault.errors import (
    DecryptionFailed,
    IntegrityError,
    NotFound,
    UntrustedRecord,
)
from vault.keyholder.removal import EngineerRemoval
from vault.service import validation
from vault.service.core import (
    ROLE_ADMIN,
    epoch,
)
from vault.service.records import (
    AccessRecord,
    RotationInfo,
)
from vault.service.rotation import DEFAULT_BATCH, Progress
from vault.storage import models as m

if TYPE_CHECKING:
    from vault.authority.journal import Journal
    from vault.keyholder.engineers import EngineerKeyholder
    from vault.keyholder.keys import Keys
    from vault.keyholder.trust import Trust
    from vault.service.audit import Audit
    from vault.service.core import Core
    from vault.service.grantledger import GrantLedger
    from vault.service.invitations import Invitations
    from vault.service.policyadmin import Policies
    from vault.service.reports import Reports
    from vault.service.rootrotation import RootRotator
    from vault.service.rotation import KeyRotation


INVITE_TTL = dt.timedelta(hours=72)
INVITED, ENROLLED, DISABLED = "invited", "enrolled", "disabled"


class Offboarding:
    """Removing and re-keying engineers, and passphrase changes (part of ``vault.engineers``)."""

    core: Core
    keys: Keys
    trust: Trust
    journal: Journal
    ledger: GrantLedger
    invitations: Invitations
    policies: Policies
    audit: Audit
    reports: Reports
    rotation: KeyRotation
    root_rotator: RootRotator

    def _engineer_keyholder(self) -> EngineerKeyholder:
        raise NotImplementedError  # built by Engineers (engineers.py), over the in-process transport

    def _engineer(self, s: Session, name: str) -> m.Engineer:
        row = s.scalars(select(m.Engineer).where(m.Engineer.name == validation.engineer_name(name))).first()
        if row is None:
            raise NotFound(f"no engineer named {name!r}", hint="`credvault engineer list` shows them")
        return row

    def rotate(self, name: str, *, valid_for: dt.timedelta = INVITE_TTL) -> str:
        """Destroy an engineer's keys now and re-invite them; returns the new enrolment code.

        The new invitation is signed with the role the engineer's certificate holds and
        names their current key generation: re-confirmation carries over only the grants
        an admin signed over that generation's key."""
        validation.engineer_name(name)
        return self._engineer_keyholder().rotate(name, valid_for)

    def remove(
        self, name: str, *, batch_size: int = DEFAULT_BATCH, progress: Progress | None = None
    ) -> tuple[list[AccessRecord], list[RotationInfo]]:
        """Offboard an engineer; returns the at-risk list and the client-key rotations run.

        One transaction revokes, disables, rotates the root key (for an admin) and *starts*
        a rotation of every client key the engineer could have held, so that when it
        commits no current key is one they know. The re-wrapping batches follow; if they
        are cut short, `rotate resume` finishes them and `status` says so.
        """
        # Exposure comes from signed history: the audit log is checked first, and if it does
        # not verify, every client is rotated (when in doubt, rotate).
        check = self.audit.verify()
        log_verified = check.ok
        self.core.last_root_rotation = None
        validation.engineer_name(name)
        chain_admins = None
        if log_verified:  # whom the verified chain made admins (a row's role alone can be rewritten)
            signers = self.audit.signers
            with self.core.store.read() as s:
                chain_admins = frozenset(signers.key_lifetimes(s, signers.signing_keys(s))[2])
        removed = EngineerRemoval(self._engineer_keyholder()).remove(
            name, log_verified=log_verified, chain_admins=chain_admins
        )
        rotation_ids = removed.rotation_ids
        rotations = [self.rotation.run_rotation(rotation_id, batch_size, progress) for rotation_id in rotation_ids]
        rotations += self.rotation.resume(batch_size=batch_size, progress=progress)
        try:
            verified = (check.head_seq, bytes.fromhex(check.head_hash)) if log_verified else self.reports.verified_log()
            at_risk = self.reports.report_at_risk(name, verified)
        except IntegrityError as exc:
            raise IntegrityError(
                f"{name!r} is removed and every client key they could hold is rotated, but {exc}", hint=exc.hint
            ) from None
        return at_risk, rotations

    def clients_exposed_to(self, s: Session, row: m.Engineer, *, log_verified: bool = True) -> set[int]:
        """Clients whose current key the engineer could have held: every client for an admin,
        or when the audit log does not verify; else every client that the verified log, a
        grant row (in any state, verified or not) or a sealed copy ties to the engineer,
        unless the log proves that their access ended before the current key version was
        made (a revoke event, or the until of the last grant, before the rotation's event)."""
        everyone = set(s.scalars(select(m.Client.id)))
        if row.role == ROLE_ADMIN or not log_verified:
            return everyone
        candidates = set(s.scalars(select(m.Grant.client_id).where(m.Grant.engineer_id == row.id)))
        candidates |= set(
            s.scalars(
                select(m.ClientKeySeal.client_id).where(
                    m.ClientKeySeal.recipient_kind == "engineer", m.ClientKeySeal.recipient_id == row.id
                )
            )
        )
        history = self.ledger.grant_history(s)
        candidates |= history.clients_of(row.name) | set(history.doubts)
        now = epoch(self.core.clock())
        exposed = set()
        for client_id in candidates & everyone:
            client = s.get(m.Client, client_id)
            assert client is not None
            version = client.current_key_version
            sealed = s.get(m.ClientKeySeal, (client_id, version, "engineer", row.id)) is not None
            if not sealed and history.ended_before(row.name, client_id, version, now):
                continue
            exposed.add(client_id)
        return exposed

    def adopt_signatures(self, s: Session, row: m.Engineer) -> list[str]:
        """Re-sign, as the acting admin, the records ``row`` signed: they stay trusted after it goes.

        Only records that verify are adopted: a client-key version whose signature is by
        ``row``'s certified key (while ``row`` is still an active admin) and whose
        recovery-sealed copy opens to the signed fingerprint; a grant whose signature is
        by ``row``. Anything else was planted by a writer of the database: it is not
        re-signed, its sealed copies are deleted (a grant is also revoked), and it is
        named in the returned list (also kept in ``adoption_skipped`` and the audit event)."""
        me = self.trust.my_admin_row(s)
        sign = self.keys.my_signing_key()
        skipped: list[str] = []
        touched: set[int] = set()
        for ck in s.scalars(
            select(m.ClientKey).where(m.ClientKey.signed_by == row.id, m.ClientKey.state != "destroyed")
        ).all():
            if not self._adoptable_client_key(s, ck):
                skipped.append(f"client #{ck.client_id} key version {ck.version}")
                self._drop_client_key_copies(s, ck)
                touched.add(ck.client_id)
                continue
            ck.signed_by = me.id
            ck.signature = sign.sign(LABEL_SIG_CLIENT_KEY, *self.trust.client_key_fields(s, ck))
        for client_id in touched:
            self._repair_current_version(s, client_id)
        for grant in s.scalars(select(m.Grant).where(m.Grant.granted_by == row.id, m.Grant.revoked_at.is_(None))).all():
            engineer = s.get(m.Engineer, grant.engineer_id)
            if engineer is None:
                continue
            try:
                self.trust.verify_grant(s, grant, engineer, self.trust.check_admin(s, row))
            except UntrustedRecord:
                skipped.append(f"grant #{grant.id} to {validation.shown(engineer.name)}")
                self._drop_forged_grant(s, grant, engineer)
                continue
            grant.granted_by = me.id
            grant.signature = sign.sign(grant_label(grant), *self.trust.grant_fields(s, grant, engineer.sealing_public))
        self.policies.adopt_policies(s, row)
        self.core.adoption_skipped = skipped
        if skipped:
            self.journal.append(
                s, "adoption-refused", public={"engineer": row.name, "count": len(skipped), "records": skipped[:20]}
            )
        return skipped

    def _adoptable_client_key(self, s: Session, ck: m.ClientKey) -> bool:
        """True if the version's record verifies and its recovery copy opens to its fingerprint."""
        self.keys.client_keys.pop((ck.client_id, ck.version), None)
        try:
            self.keys.client_key(s, ck.client_id, ck.version)
        except (UntrustedRecord, DecryptionFailed, NotFound):
            return False
        return True

    def _drop_client_key_copies(self, s: Session, ck: m.ClientKey) -> None:
        s.execute(
            delete(m.ClientKeySeal).where(
                m.ClientKeySeal.client_id == ck.client_id, m.ClientKeySeal.version == ck.version
            )
        )
        self.keys.client_keys.pop((ck.client_id, ck.version), None)

    def _repair_current_version(self, s: Session, client_id: int) -> None:
        """Point the client at its newest signed key version (a forged one may have been made current)."""
        client = s.get(m.Client, client_id)
        newest = self.trust.newest_signed_key(s, client_id)
        if client is not None and newest is not None:
            client.current_key_version = newest.version

    def _drop_forged_grant(self, s: Session, grant: m.Grant, engineer: m.Engineer) -> None:
        """Revoke a grant that does not verify; delete the engineer's copies of the client's
        keys unless another of their grants for it verifies."""
        grant.revoked_at = self.core.clock()
        for other in s.scalars(
            select(m.Grant).where(
                m.Grant.engineer_id == engineer.id,
                m.Grant.client_id == grant.client_id,
                m.Grant.revoked_at.is_(None),
                m.Grant.id != grant.id,
            )
        ).all():
            try:
                self.trust.verify_grant(s, other, engineer)
            except UntrustedRecord:
                continue
            return
        s.execute(
            delete(m.ClientKeySeal).where(
                m.ClientKeySeal.client_id == grant.client_id,
                m.ClientKeySeal.recipient_kind == "engineer",
                m.ClientKeySeal.recipient_id == engineer.id,
            )
        )
