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
from vault.errors import AccessDenied, InvalidInput
from vault.service.base import ACTIVE, ENCRYPTION_WARNING, ROLE_ADMIN
from vault.service.engineers import DISABLED, INVITE_TTL, EngineerOps
from vault.service.records import AccessRecord, RotationInfo, StatusReport
from vault.service.rotation import DEFAULT_BATCH, RUNNING, Progress, RotationOps
from vault.storage import engine as storage
from vault.storage import models as m


class OffboardingOps(EngineerOps, RotationOps):
    def rotate_engineer(self, name: str, *, valid_for: dt.timedelta = INVITE_TTL) -> str:
        """Destroy an engineer's keys now and re-invite them; returns the new enrolment code."""
        with self.store.transaction() as s:
            me = self._my_admin_row(s)
            row = self._engineer(s, name)
            if row.id == me.id:
                raise InvalidInput(
                    "you cannot rotate your own keys this way", hint="another admin can; or use `credvault passwd`"
                )
            if row.status != ACTIVE:
                raise InvalidInput(f"engineer {name!r} is {row.status}, not active")
            bundle = self._root_bundle(s)
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
        with self.store.transaction() as s:
            me = self._my_admin_row(s)
            row = self._engineer(s, name)
            if row.id == me.id:
                raise InvalidInput("you cannot remove yourself", hint="another admin can")
            if row.status == DISABLED:
                raise InvalidInput(f"engineer {name!r} is already removed")
            was_admin, was_active = row.role == ROLE_ADMIN, row.status == ACTIVE
            exposed = self._clients_exposed_to(s, row)
            now = self.clock()
            for grant in s.scalars(select(m.Grant).where(m.Grant.engineer_id == row.id, m.Grant.revoked_at.is_(None))):
                grant.revoked_at = now
            self._adopt_signatures(s, row)
            self._destroy_engineer_keys(s, row, keep_public=True)
            row.status, row.disabled_at = DISABLED, now
            if was_active or row.certified_at is not None:
                self._sign_certificate(s, row, self._root_bundle(s).org)
            if was_admin:
                self._rotate_root(s)
            rotation_ids = []
            for client_id in sorted(exposed):
                client = s.get(m.Client, client_id)
                if client is not None:
                    rotation_ids.append(self._start_client_rotation(s, client))
            self._append(
                s,
                "engineer-remove",
                public={"engineer": name, "clients_rotated": len(rotation_ids), "admin": was_admin},
            )
        rotations = [self._run_rotation(rotation_id, batch_size, progress) for rotation_id in rotation_ids]
        rotations += self.resume_rotations(batch_size=batch_size, progress=progress)
        return self.report_at_risk(name), rotations

    def _clients_exposed_to(self, s: Session, row: m.Engineer) -> set[int]:
        """Clients whose current key the engineer could have held (every client for an admin)."""
        if row.role == ROLE_ADMIN:
            return set(s.scalars(select(m.Client.id)))
        exposed = set()
        for grant in s.scalars(select(m.Grant).where(m.Grant.engineer_id == row.id)):
            client = s.get(m.Client, grant.client_id)
            if client is None:
                continue
            ck = s.get(m.ClientKey, (client.id, client.current_key_version))
            ended = grant.revoked_at
            if grant.until is not None:
                until = dt.datetime.fromtimestamp(grant.until, dt.UTC)
                ended = min(ended, until) if ended else until
            if ck is not None and (ended is None or ck.created_at < ended):
                exposed.add(client.id)
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

    def _adopt_signatures(self, s: Session, row: m.Engineer) -> None:
        """Re-sign, as the acting admin, the records ``row`` signed: they stay trusted after it goes."""
        me = self._my_admin_row(s)
        sign = self._my_signing_key()
        for ck in s.scalars(
            select(m.ClientKey).where(m.ClientKey.signed_by == row.id, m.ClientKey.state != "destroyed")
        ):
            ck.signed_by = me.id
            ck.signature = sign.sign(LABEL_SIG_CLIENT_KEY, *self._client_key_fields(s, ck))
        for grant in s.scalars(select(m.Grant).where(m.Grant.granted_by == row.id, m.Grant.revoked_at.is_(None))):
            engineer = s.get(m.Engineer, grant.engineer_id)
            if engineer is None:
                continue
            grant.granted_by = me.id
            grant.signature = sign.sign(LABEL_SIG_GRANT, *self._grant_fields(s, grant, engineer.sealing_public))

    # -- status ------------------------------------------------------------------------------

    def status(self) -> StatusReport:
        """Warnings an admin should act on: old keys, unfinished rotations, values to change,
        a schema older than this version of credvault."""
        revision, head = storage.current_revision(self.store), storage.head_revision()  # before: own connection
        with self.store.inspecting() as foreign, self.store.transaction() as s:  # names foreign objects, not refused
            me = self._my_row(s)
            if me.role != ROLE_ADMIN:
                raise AccessDenied("only an admin can see the vault's status")
            info = self._info(s)
            now = self.clock()
            old = now - dt.timedelta(days=info.cryptoperiod_days)
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
            root = self._current_root(s)
            if root.created_at < old:
                warnings.append(
                    f"the recovery key is older than {info.cryptoperiod_days} days: run `credvault rotate root`"
                )
            for client in s.scalars(select(m.Client)):
                ck = s.get(m.ClientKey, (client.id, client.current_key_version))
                slug = self._slug(s, client)
                if ck is not None and ck.created_at < old:
                    warnings.append(
                        f"client {slug}: key version {ck.version} is older than {info.cryptoperiod_days} days"
                    )
                if ck is not None and ck.encryptions > ENCRYPTION_WARNING:
                    warnings.append(
                        f"client {slug}: key version {ck.version} has made {ck.encryptions} encryptions; rotate it"
                    )
            for key in s.scalars(select(m.EngineerKey).where(m.EngineerKey.state == ACTIVE)):
                certified = dt.datetime.fromtimestamp(key.certified_at, dt.UTC)
                engineer = s.get(m.Engineer, key.engineer_id)
                if certified < old and engineer is not None and engineer.status == ACTIVE:
                    warnings.append(f"engineer {engineer.name}: keys older than {info.cryptoperiod_days} days")
            running = list(s.scalars(select(m.Rotation).where(m.Rotation.state == RUNNING)))
            for rotation in running:
                progress = f"{rotation.done}/{rotation.total}"
                warnings.append(f"a client-key rotation is incomplete ({progress}): run `credvault rotate resume`")
            must_change = []
            for secret in s.scalars(select(m.Secret).where(m.Secret.must_change.is_(True))):
                owner = s.get(m.Client, secret.client_id)
                assert owner is not None
                meta = self._open(s, owner, secret, self._version(s, secret, None)).metadata
                must_change.append(f"{self._slug(s, owner)}/{meta['name']}")
            if must_change:
                warnings.append(f"{len(must_change)} secret(s) must be changed after checkout")
            counts = [int(s.scalar(select(func.count()).select_from(t)) or 0) for t in (m.Client, m.Secret, m.Engineer)]
            return StatusReport(
                warnings, counts[0], counts[1], counts[2], len(running), sorted(must_change), schema_problems=foreign
            )

    def set_cryptoperiod(self, days: int) -> None:
        if not 1 <= days <= 3650:
            raise InvalidInput("bad cryptoperiod", hint="use between 1 and 3650 days")
        with self.store.transaction() as s:
            self._my_admin_row(s)
            self._info(s).cryptoperiod_days = days
            self._append(s, "settings", public={"cryptoperiod_days": days})
