"""Engineers' keys over their life: new keys, a new passphrase, and removal.

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

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from vault.crypto import keyrecord
from vault.crypto.labels import LABEL_SIG_CLIENT_KEY, LABEL_SIG_GRANT
from vault.errors import AccessDenied, DecryptionFailed, IntegrityError, InvalidInput, NotFound, UntrustedRecord
from vault.service import listing, policies, validation
from vault.service.base import ACTIVE, ROLE_ADMIN, epoch, is_revoked
from vault.service.engineers import DISABLED, INVITE_TTL, EngineerOps
from vault.service.records import AccessRecord, RotationInfo, StatusReport
from vault.service.rootrotation import RootRotationOps
from vault.service.rotation import DEFAULT_BATCH, RUNNING, Progress
from vault.storage import engine as storage
from vault.storage import models as m


class OffboardingOps(EngineerOps, RootRotationOps):
    def rotate_engineer(self, name: str, *, valid_for: dt.timedelta = INVITE_TTL) -> str:
        """Destroy an engineer's keys now and re-invite them; returns the new enrolment code.

        The new invitation is signed with the role the engineer's certificate holds and
        names their current key generation: re-confirmation carries over only the grants
        an admin signed over that generation's key."""
        with self.store.transaction() as s:
            me = self._my_admin_row(s)
            row = self._engineer(s, name)
            if row.id == me.id:
                raise InvalidInput(
                    "you cannot rotate your own keys this way", hint="another admin can; or use `credvault passwd`"
                )
            if row.status != ACTIVE:
                raise InvalidInput(f"engineer {name!r} is {row.status}, not active")
            self._verify_certificate(s, row)  # the role re-invited is the certified one, not the row's word
            bundle = self._root_bundle(s)
            if s.get(m.EngineerKey, (row.id, row.key_generation)) is None:
                self._record_engineer_key(s, row, bundle.org)  # the generation whose grants carry over
            self._adopt_signatures(s, row)
            self._destroy_engineer_keys(s, row)
            code = self._issue_invite(s, row, bundle, valid_for)
            self._append(s, "engineer-key-rotate", public={"engineer": name, "old_generation": row.key_generation})
            return code

    def change_passphrase(self, old: str, new: str) -> None:
        """Re-encrypt the acting engineer's key record under a new passphrase."""
        keyrecord.normalise_passphrase(new)
        with self.store.transaction() as s:
            row = self._my_row(s)
            info = self._info(s)
            assert row.key_record is not None
            bundle = keyrecord.open_record(row.key_record, old, info.vault_id, row.id, row.key_generation)
            row.key_record = keyrecord.lock_record(
                bundle, new, info.vault_id, row.id, row.key_generation, self.kdf_params
            )
            self._append(s, "passphrase-change", public={"engineer": row.name})

    def remove_engineer(
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
        check = self.verify_audit()
        log_verified = check.ok
        self.last_root_rotation = None
        with self.store.transaction() as s:
            me = self._my_admin_row(s)
            row = self._engineer(s, name)
            if row.id == me.id:
                raise InvalidInput("you cannot remove yourself", hint="another admin can")
            if row.status == DISABLED:
                raise InvalidInput(f"engineer {name!r} is already removed")
            was_admin, was_active = row.role == ROLE_ADMIN, row.status == ACTIVE
            exposed = self._clients_exposed_to(s, row, log_verified=log_verified)
            for grant in s.scalars(select(m.Grant).where(m.Grant.engineer_id == row.id)):
                if not is_revoked(grant):
                    self._revoke_grant(s, grant, me)
            now = self.clock()
            self._adopt_signatures(s, row)
            self._destroy_engineer_keys(s, row, keep_public=True)
            row.status, row.disabled_at = DISABLED, now
            if was_active or row.certified_at is not None:
                self._sign_certificate(s, row, self._root_bundle(s).org)
            if was_admin:  # a new recovery key, organisation key and shares: old ones open nothing current
                self._rotate_root(s)
            rotation_ids = []
            for client_id in sorted(exposed):
                client = s.get(m.Client, client_id)
                if client is not None:
                    rotation_ids.append(self._start_client_rotation(s, client))
            public = {"engineer": name, "clients_rotated": len(rotation_ids), "admin": was_admin}
            if not log_verified:
                public["audit_log_verified"] = False
            self._append(s, "engineer-remove", public=public)
        rotations = [self._run_rotation(rotation_id, batch_size, progress) for rotation_id in rotation_ids]
        rotations += self.resume_rotations(batch_size=batch_size, progress=progress)
        try:
            verified = (check.head_seq, bytes.fromhex(check.head_hash)) if log_verified else self._verified_log()
            at_risk = self._report_at_risk(name, verified)
        except IntegrityError as exc:
            raise IntegrityError(
                f"{name!r} is removed and every client key they could hold is rotated, but {exc}", hint=exc.hint
            ) from None
        return at_risk, rotations

    def _clients_exposed_to(self, s: Session, row: m.Engineer, *, log_verified: bool = True) -> set[int]:
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
        history = self._grant_history(s)
        candidates |= history.clients_of(row.name) | set(history.doubts)
        now = epoch(self.clock())
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

    def _destroy_engineer_keys(self, s: Session, row: m.Engineer, *, keep_public: bool = False) -> None:
        s.execute(
            delete(m.ClientKeySeal).where(
                m.ClientKeySeal.recipient_kind == "engineer", m.ClientKeySeal.recipient_id == row.id
            )
        )
        s.execute(delete(m.RootSeal).where(m.RootSeal.engineer_id == row.id))
        key = s.get(m.EngineerKey, (row.id, row.key_generation))
        if key is not None:
            key.state, key.destroyed_at = "destroyed", self.clock()
        row.key_record = None
        if not keep_public:
            row.sealing_public = row.signing_public = row.certificate = None
            row.certified_at = None

    def _adopt_signatures(self, s: Session, row: m.Engineer) -> list[str]:
        """Re-sign, as the acting admin, the records ``row`` signed: they stay trusted after it goes.

        Only records that verify are adopted: a client-key version whose signature is by
        ``row``'s certified key (while ``row`` is still an active admin) and whose
        recovery-sealed copy opens to the signed fingerprint; a grant whose signature is
        by ``row``. Anything else was planted by a writer of the database: it is not
        re-signed, its sealed copies are deleted (a grant is also revoked), and it is
        named in the returned list (also kept in ``adoption_skipped`` and the audit event)."""
        me = self._my_admin_row(s)
        sign = self._my_signing_key()
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
            ck.signature = sign.sign(LABEL_SIG_CLIENT_KEY, *self._client_key_fields(s, ck))
        for client_id in touched:
            self._repair_current_version(s, client_id)
        for grant in s.scalars(select(m.Grant).where(m.Grant.granted_by == row.id, m.Grant.revoked_at.is_(None))).all():
            engineer = s.get(m.Engineer, grant.engineer_id)
            if engineer is None:
                continue
            try:
                self._verify_grant(s, grant, engineer, self._check_admin(s, row))
            except UntrustedRecord:
                skipped.append(f"grant #{grant.id} to {validation.shown(engineer.name)}")
                self._drop_forged_grant(s, grant, engineer)
                continue
            grant.granted_by = me.id
            grant.signature = sign.sign(LABEL_SIG_GRANT, *self._grant_fields(s, grant, engineer.sealing_public))
        self._adopt_policies(s, row)
        self.adoption_skipped = skipped
        if skipped:
            self._append(
                s, "adoption-refused", public={"engineer": row.name, "count": len(skipped), "records": skipped[:20]}
            )
        return skipped

    def _adoptable_client_key(self, s: Session, ck: m.ClientKey) -> bool:
        """True if the version's record verifies and its recovery copy opens to its fingerprint."""
        self._client_keys.pop((ck.client_id, ck.version), None)
        try:
            self._client_key(s, ck.client_id, ck.version)
        except (UntrustedRecord, DecryptionFailed, NotFound):
            return False
        return True

    def _drop_client_key_copies(self, s: Session, ck: m.ClientKey) -> None:
        s.execute(
            delete(m.ClientKeySeal).where(
                m.ClientKeySeal.client_id == ck.client_id, m.ClientKeySeal.version == ck.version
            )
        )
        self._client_keys.pop((ck.client_id, ck.version), None)

    def _repair_current_version(self, s: Session, client_id: int) -> None:
        """Point the client at its newest signed key version (a forged one may have been made current)."""
        client = s.get(m.Client, client_id)
        newest = self._newest_signed_key(s, client_id)
        if client is not None and newest is not None:
            client.current_key_version = newest.version

    def _drop_forged_grant(self, s: Session, grant: m.Grant, engineer: m.Engineer) -> None:
        """Revoke a grant that does not verify; delete the engineer's copies of the client's
        keys unless another of their grants for it verifies."""
        grant.revoked_at = self.clock()
        for other in s.scalars(
            select(m.Grant).where(
                m.Grant.engineer_id == engineer.id,
                m.Grant.client_id == grant.client_id,
                m.Grant.revoked_at.is_(None),
                m.Grant.id != grant.id,
            )
        ).all():
            try:
                self._verify_grant(s, other, engineer)
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

    # -- status ------------------------------------------------------------------------------

    def status(self) -> StatusReport:
        """Warnings an admin should act on: old keys, unfinished rotations, values to change,
        a schema older than this version of credvault.

        Read without the write lock, the clients a page per statement with their current
        key and policy (listing.py: ``status_warnings``)."""
        revision, head = storage.current_revision(self.store), storage.head_revision()  # before: own connection
        with self.store.inspecting() as foreign, self.store.read() as s:  # names foreign objects, not refused
            me = self._my_row(s)
            if me.role != ROLE_ADMIN:
                raise AccessDenied("only an admin can see the vault's status")
            period = self._cryptoperiod(s)  # verified and bounded (policies.py)
            now = self.clock()
            old = now - dt.timedelta(days=period)
            warnings: list[str] = []
            if foreign:
                warnings.append(
                    f"the database holds {len(foreign)} object(s) credvault did not create ({', '.join(foreign)}): "
                    "every other command refuses to work until an admin removes them"
                )
            if revision != head:
                warnings.append(
                    f"the database schema is at revision {revision}; this version of credvault brings {head}: "
                    "run `credvault db upgrade`"
                )
            warnings += self._settings_warnings(s)
            root = self._current_root(s)
            if root.created_at < old:
                warnings.append(f"the recovery key is older than {period} days: run `credvault rotate root`")
            warnings += listing.client_warnings(self, s, old, period)
            for key in s.scalars(select(m.EngineerKey).where(m.EngineerKey.state == ACTIVE)):
                certified = dt.datetime.fromtimestamp(key.certified_at, dt.UTC)
                engineer = s.get(m.Engineer, key.engineer_id)
                if certified < old and engineer is not None and engineer.status == ACTIVE:
                    warnings.append(f"engineer {engineer.name}: keys older than {period} days")
            running = list(s.scalars(select(m.Rotation).where(m.Rotation.state == RUNNING)))
            for rotation in running:
                progress = f"{rotation.done}/{rotation.total}"
                warnings.append(f"a client-key rotation is incomplete ({progress}): run `credvault rotate resume`")
            must_change = listing.must_change(self, s)
            if must_change:
                warnings.append(f"{len(must_change)} secret(s) must be changed after checkout")
            counts = [int(s.scalar(select(func.count()).select_from(t)) or 0) for t in (m.Client, m.Secret, m.Engineer)]
            return StatusReport(
                warnings, counts[0], counts[1], counts[2], len(running), sorted(must_change), schema_problems=foreign
            )

    def set_cryptoperiod(self, days: int) -> None:
        """Days before keys are reported old (admin); signs both settings as they now apply."""
        if not policies.MIN_CRYPTOPERIOD <= days <= policies.MAX_CRYPTOPERIOD:
            raise InvalidInput("bad cryptoperiod", hint="use between 1 and 3650 days")
        with self.store.transaction() as s:
            admin = self._my_admin_row(s)
            info = self._info(s)
            info.retention_versions = self._retention(s)  # an unverified value is not signed as it stands
            info.cryptoperiod_days = days
            policies.sign_settings(self._my_signing_key(), info, admin.id, epoch(self.clock()))
            self._append(s, "settings", public={"cryptoperiod_days": days})
