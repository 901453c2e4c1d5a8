"""Creating a vault, and engineers: invite, enrol, confirm, unlock, lock.

Each passphrase is known only to its engineer. An admin invites (a one-time code), the
engineer enrols on their own machine (makes their keys and key record), and an admin
confirms after comparing the fingerprint enrol printed: only then does the
organisation key certify the engineer's public keys.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.crypto import _primitives as prim
from vault.crypto import keyrecord, sealing, shamir, signing
from vault.crypto.labels import FORMAT_VERSION, LABEL_INVITE, LABEL_SIG_GRANT
from vault.errors import (
    AlreadyExists,
    EnrolmentError,
    InvalidInput,
    NotFound,
    UntrustedRecord,
    WrongPassphrase,
)
from vault.service import validation
from vault.service.base import ACTIVE, ROLE_ADMIN, ROLE_ENGINEER, RootBundle
from vault.service.journal import JournalOps
from vault.service.records import EngineerInfo, InitResult, SessionInfo
from vault.service.sessions import DEFAULT_TTL, UnlockedSession
from vault.storage import models as m

INVITE_TTL = dt.timedelta(hours=72)
MAX_SESSION_TTL = dt.timedelta(hours=12)
INVITED, ENROLLED, DISABLED = "invited", "enrolled", "disabled"


def _fingerprint(row: m.Engineer) -> str | None:
    if row.sealing_public is None or row.signing_public is None:
        return None
    return signing.engineer_fingerprint(row.sealing_public, row.signing_public)


def normalise_fingerprint(text: str) -> str:
    raw = "".join(text.split()).lower()
    return " ".join(raw[i : i + 4] for i in range(0, len(raw), 4))


class EngineerOps(JournalOps):
    # -- init ----------------------------------------------------------------------

    def _initialise(self, admin_name: str, passphrase: str, shares: tuple[int, int] | None) -> InitResult:
        validation.engineer_name(admin_name)
        keyrecord.normalise_passphrase(passphrase)
        if shares is not None:
            k, n = shares
            if not 2 <= k <= n <= 16 or k > 9:
                raise InvalidInput(
                    "bad recovery shares", hint="use --shares K-of-N with 2 <= K <= N <= 16 and K <= 9 (e.g. 3-of-5)"
                )
        now = self.clock()
        with self.store.transaction() as s:
            if s.get(m.VaultInfo, 1) is not None:
                raise AlreadyExists(
                    "this database already holds a vault", hint="use it, or pass --db to create another"
                )
            vault_id = prim.random_bytes(16)
            org = signing.SigningKey.generate()
            bundle = RootBundle(prim.random_bytes(32) + org.seed, 1)
            s.add(
                m.VaultInfo(
                    id=1,
                    vault_id=vault_id,
                    format_version=FORMAT_VERSION,
                    org_signing_public=org.public,
                    created_at=now,
                )
            )
            s.add(m.RootKey(version=1, recovery_public=bundle.recovery.public, state=ACTIVE, created_at=now))
            admin = m.Engineer(name=admin_name, role=ROLE_ADMIN, status=ACTIVE, key_generation=0, created_at=now)
            s.add(admin)
            s.flush()
            self._vault_id = vault_id
            keys = self._make_keys(s, admin, passphrase, org.public)
            self._sign_certificate(s, admin, org)
            self._record_engineer_key(s, admin, org)
            self._seal_root_to(s, bundle, admin)
            self._append(
                s, "vault-init", actor=admin, seed=keys.signing_seed, public={"admin": admin_name, "root_version": 1}
            )
            share_texts: tuple[str, ...] = ()
            if shares is not None:
                k, n = shares
                share_texts = tuple(
                    shamir.encode_share(vault_id, k, x, y) for x, y in shamir.split(bundle.to_bytes(), k, n)
                )
            assert admin.sealing_public is not None and admin.signing_public is not None
            return InitResult(
                vault_id=vault_id.hex(),
                admin=admin_name,
                admin_fingerprint=signing.engineer_fingerprint(admin.sealing_public, admin.signing_public),
                org_fingerprint=signing.org_fingerprint(org.public)[:8].hex(),
                db_url=self.store.url,
                shares=share_texts,
            )

    def _make_keys(self, s: Session, row: m.Engineer, passphrase: str, org_public: bytes) -> keyrecord.PrivateBundle:
        keypair = sealing.KeyPair.generate()
        sign_key = signing.SigningKey.generate()
        row.key_generation += 1
        row.sealing_public, row.signing_public = keypair.public, sign_key.public
        bundle = keyrecord.PrivateBundle(keypair.private, sign_key.seed, org_public)
        row.key_record = keyrecord.lock_record(
            bundle, passphrase, self._vid(s), row.id, row.key_generation, self.kdf_params
        )
        return bundle

    def _engineer(self, s: Session, name: str) -> m.Engineer:
        row = s.scalars(select(m.Engineer).where(m.Engineer.name == validation.engineer_name(name))).first()
        if row is None:
            raise NotFound(f"no engineer named {name!r}", hint="`credvault engineer list` shows them")
        return row

    # -- invite, enrol, confirm -------------------------------------------------------

    def invite_engineer(self, name: str, *, role: str = ROLE_ENGINEER, valid_for: dt.timedelta = INVITE_TTL) -> str:
        """Create (or renew) an invitation; returns the one-time enrolment code."""
        validation.engineer_name(name)
        if role not in (ROLE_ENGINEER, ROLE_ADMIN):
            raise InvalidInput(f"bad role {validation.shown(role)}", hint="use engineer or admin")
        with self.store.transaction() as s:
            bundle = self._root_bundle(s)
            row = s.scalars(select(m.Engineer).where(m.Engineer.name == name)).first()
            if row is None:
                row = m.Engineer(name=name, role=role, status=INVITED, key_generation=0, created_at=self.clock())
                s.add(row)
                s.flush()
            elif row.status not in (INVITED, ENROLLED):
                raise AlreadyExists(f"engineer {name!r} already exists ({row.status})")
            row.role = role
            return self._issue_invite(s, row, bundle, valid_for)

    def _issue_invite(self, s: Session, row: m.Engineer, bundle: RootBundle, valid_for: dt.timedelta) -> str:
        """Reset ``row`` to invited with a fresh one-time code (sealed to the recovery key)."""
        row.status = INVITED
        row.sealing_public = row.signing_public = row.key_record = row.enroll_mac = row.certificate = None
        row.certified_at = None
        secret = prim.random_bytes(signing.INVITE_SECRET_SIZE)
        context = (LABEL_INVITE, self._vid(s), row.id, bundle.version)
        row.invite_seal = sealing.seal(bundle.recovery.public, bundle.version, secret, context)
        row.invite_root_version = bundle.version
        row.invite_expires_at = self.clock() + valid_for
        self._append(
            s, "engineer-invite", public={"engineer": row.name, "role": row.role, "key_generation": row.key_generation}
        )
        return signing.make_enrolment_code(secret, self._org_public(s))

    def enroll_engineer(self, name: str, code: str, passphrase: str) -> str:
        """Make the engineer's keys on this machine; returns the fingerprint to compare."""
        validation.engineer_name(name)
        invite_secret, org_fp = signing.parse_enrolment_code(code)
        keyrecord.normalise_passphrase(passphrase)
        with self.store.transaction() as s:
            info = self._info(s)
            if not signing.org_matches(info.org_signing_public, org_fp):
                raise EnrolmentError(
                    "this enrolment code is for another vault (or the vault's key was replaced)",
                    hint="check --db, or ask the admin",
                )
            row = s.scalars(select(m.Engineer).where(m.Engineer.name == name)).first()
            if row is None or row.status != INVITED:
                raise EnrolmentError(f"there is no open invitation for {name!r}")
            if row.invite_expires_at is None or row.invite_expires_at <= self.clock():
                raise EnrolmentError(f"the invitation for {name!r} has expired")
            keys = self._make_keys(s, row, passphrase, info.org_signing_public)
            assert row.sealing_public is not None and row.signing_public is not None
            row.enroll_mac = signing.enrolment_mac(
                invite_secret, info.vault_id, row.id, row.name, row.sealing_public, row.signing_public
            )
            row.status = ENROLLED
            public = {"engineer": name, "signing_public": row.signing_public.hex()}  # signed by the new key
            self._append(s, "enroll", actor=row, seed=keys.signing_seed, public=public)
            return signing.engineer_fingerprint(row.sealing_public, row.signing_public)

    def _reseal_grants(self, s: Session, row: m.Engineer) -> None:
        """After new keys (engineer rotation): re-sign live grants and re-seal their client keys."""
        now = int(self.clock().timestamp())
        grants = s.scalars(select(m.Grant).where(m.Grant.engineer_id == row.id, m.Grant.revoked_at.is_(None))).all()
        assert row.sealing_public is not None
        for grant in grants:
            if grant.until is not None and grant.until <= now:
                continue
            grant.granted_by = self._me().engineer_id
            grant.signature = self._my_signing_key().sign(
                LABEL_SIG_GRANT, *self._grant_fields(s, grant, row.sealing_public)
            )
            for ck in s.scalars(
                select(m.ClientKey).where(m.ClientKey.client_id == grant.client_id, m.ClientKey.state != "destroyed")
            ):
                key = self._client_key(s, grant.client_id, ck.version)
                self._seal_client_key(s, grant.client_id, ck.version, key, "engineer", row.id, row.sealing_public)

    def pending_fingerprint(self, name: str) -> str:
        """The fingerprint an enrolled (not yet confirmed) engineer's keys show."""
        with self.store.transaction() as s:
            row = self._engineer(s, name)
            fingerprint = _fingerprint(row)
            if row.status != ENROLLED or fingerprint is None:
                raise EnrolmentError(
                    f"engineer {name!r} has not enrolled yet (status: {row.status})",
                    hint="they run `credvault engineer enroll NAME --code CODE`",
                )
            return fingerprint

    def confirm_engineer(self, name: str, fingerprint: str) -> EngineerInfo:
        """Certify an enrolled engineer's keys, after a person compared ``fingerprint``."""
        with self.store.transaction() as s:
            bundle = self._root_bundle(s)
            row = self._engineer(s, name)
            if row.status != ENROLLED or row.invite_seal is None or row.invite_root_version is None:
                raise EnrolmentError(f"engineer {name!r} is not waiting for confirmation (status: {row.status})")
            assert row.sealing_public is not None and row.signing_public is not None
            if signing.is_weak_signing_key(row.signing_public) or sealing.is_weak_public(row.sealing_public):
                raise UntrustedRecord(
                    f"the keys {name!r} enrolled are weak (small-order): not confirmed",
                    hint="invite the engineer again",
                )
            if normalise_fingerprint(fingerprint) != _fingerprint(row):
                raise UntrustedRecord(
                    f"the fingerprint does not match the keys {name!r} enrolled: not confirmed",
                    hint="compare again with the engineer in person or by phone; re-invite if in doubt",
                )
            if row.invite_root_version != bundle.version:
                raise EnrolmentError(
                    "the invitation predates a recovery-key rotation", hint="invite the engineer again"
                )
            info = self._info(s)
            secret = sealing.open_sealed(
                bundle.recovery, bundle.version, row.invite_seal, (LABEL_INVITE, info.vault_id, row.id, bundle.version)
            )
            if not signing.check_enrolment_mac(
                secret, row.enroll_mac, info.vault_id, row.id, row.name, row.sealing_public, row.signing_public
            ):
                raise UntrustedRecord(
                    f"the keys of {name!r} were not made with their enrolment code: not confirmed",
                    hint="invite the engineer again",
                )
            row.status = ACTIVE
            row.invite_seal = row.enroll_mac = row.invite_expires_at = row.invite_root_version = None
            self._sign_certificate(s, row, bundle.org)
            self._record_engineer_key(s, row, bundle.org)
            if row.role == ROLE_ADMIN:
                self._seal_root_to(s, bundle, row)
            self._reseal_grants(s, row)
            self._append(
                s, "engineer-confirm", public={"engineer": name, "role": row.role, "key_generation": row.key_generation}
            )
            return self._engineer_info(row)

    def list_engineers(self) -> list[EngineerInfo]:
        with self.store.transaction() as s:
            self._my_row(s)
            rows = s.scalars(select(m.Engineer).order_by(m.Engineer.name)).all()
            self._append(s, "engineer-list")
            return [self._engineer_info(row) for row in rows]

    @staticmethod
    def _engineer_info(row: m.Engineer) -> EngineerInfo:
        return EngineerInfo(row.name, row.role, row.status, _fingerprint(row), row.key_generation, row.created_at)

    # -- sessions -------------------------------------------------------------------------

    def unlock(
        self, name: str, passphrase: str, *, ttl: dt.timedelta = DEFAULT_TTL, remember: bool = True
    ) -> SessionInfo:
        """Open the engineer's key record once and hold the session until ``ttl`` passes.

        A wrong passphrase is recorded as an (unsigned) ``unlock-failed`` audit event.
        """
        if not dt.timedelta(seconds=1) <= ttl <= MAX_SESSION_TTL:
            raise InvalidInput("bad session length", hint="use between 1s and 12h, e.g. --ttl 15m")
        with self.store.transaction() as s:
            info = self._info(s)
            row = self._engineer(s, name)
            if row.key_record is None or row.status != ACTIVE:
                raise NotFound(
                    f"engineer {name!r} has no usable keys (status: {row.status})",
                    hint="an admin must confirm the enrolment first",
                )
            record, engineer_id, generation = row.key_record, row.id, row.key_generation
        try:
            bundle = keyrecord.open_record(record, passphrase, info.vault_id, engineer_id, generation)
        except WrongPassphrase:
            with self.store.transaction() as s:
                self._append(
                    s, "unlock-failed", actor=s.get(m.Engineer, engineer_id), sign=False, public={"engineer": name}
                )
            raise
        if bundle.org_signing_public != info.org_signing_public:
            raise UntrustedRecord("the vault's organisation key is not the one this engineer enrolled with")
        session = UnlockedSession(
            vault_id=info.vault_id,
            engineer_id=engineer_id,
            name=name,
            key_generation=generation,
            sealing_private=bundle.sealing_private,
            signing_seed=bundle.signing_seed,
            org_signing_public=bundle.org_signing_public,
            expires_at=self.clock() + ttl,
        )
        self._session, self.engineer_name = session, name
        self._client_keys.clear()
        self._slugs.clear()
        self._root = None
        with self.store.transaction() as s:
            self._my_row(s)  # the certificate is verified before the session is kept
            self._append(s, "unlock", public={"engineer": name, "ttl_seconds": int(ttl.total_seconds())})
        if remember:
            self.sessions.put(session)
        return self.whoami()

    def lock(self) -> bool:
        """Forget the unlocked session of the selected engineer; True if one was held."""
        self._session, self._root = None, None
        self._client_keys.clear()
        self._slugs.clear()
        if not self.engineer_name:
            return False
        return self.sessions.delete(self.vault_id(), self.engineer_name)

    def whoami(self) -> SessionInfo:
        with self.store.transaction() as s:
            row = self._my_row(s)
            return SessionInfo(row.name, row.role, self._me().expires_at, self._vid(s).hex())
