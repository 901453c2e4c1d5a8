"""Creating a vault, and engineers: invite, enrol, confirm, unlock, lock.

Each passphrase is known only to its engineer. An admin invites (a one-time code), the
engineer enrols on their own machine (makes their keys and key record), and an admin
confirms after comparing the fingerprint enrol printed: only then does the
organisation key certify the engineer's public keys.

The invitation is a record signed by the inviting admin, which the enrolling engineer
and the confirming admin both verify; a confirmation carries over only the grants an
admin signed over the engineer's previous key (both in ``invitations.py``), and
``pending_confirmation`` shows the admin what it will certify and carry before they do.

Every operation but ``initialise``, ``pending_fingerprint`` and ``lock`` runs as a request to
the engineers' authority (vault/authority/engineers.py) through their keyholder
(vault/keyholder/engineers.py, unlocking.py) over the in-process transport
(vault/transport/engineers.py); ``engineerparts.py`` builds the three.
"""

from __future__ import annotations

import builtins
import datetime as dt
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from vault.authority.engineer_requests import Identity
from vault.crypto import _primitives as prim
from vault.crypto import keyrecord, sealing, shamir, signing
from vault.crypto.labels import FORMAT_VERSION, LABEL_SIG_SHARE_POLICY
from vault.errors import AlreadyExists, EnrolmentError, InvalidInput, UntrustedRecord
from vault.keyholder.engineers import EngineerKeyholder
from vault.keyholder.keys import RootBundle
from vault.keyholder.unlocking import Unlocking
from vault.service import engineerparts, validation
from vault.service.config import OrgKeyMemory
from vault.service.core import ACTIVE, ROLE_ADMIN, ROLE_ENGINEER, check_share_policy, epoch, share_policy_fields
from vault.service.offboarding import ENROLLED, INVITE_TTL, Offboarding
from vault.service.records import EngineerInfo, InitResult, PendingConfirmation, SessionInfo
from vault.service.sessions import DEFAULT_TTL, UnlockedSession
from vault.storage import models as m

if TYPE_CHECKING:
    from vault.authority.journal import Journal
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

MAX_SESSION_TTL = dt.timedelta(hours=12)


def _fingerprint(row: m.Engineer) -> str | None:
    if row.sealing_public is None or row.signing_public is None:
        return None
    return signing.engineer_fingerprint(row.sealing_public, row.signing_public)


class Engineers(Offboarding):
    """Engineers: ``vault.engineers.invite/enroll/confirm/list/unlock/lock/whoami/remove/rotate``."""

    def __init__(
        self,
        core: Core,
        keys: Keys,
        trust: Trust,
        journal: Journal,
        ledger: GrantLedger,
        invitations: Invitations,
        policies: Policies,
        audit: Audit,
        reports: Reports,
        rotation: KeyRotation,
        root_rotator: RootRotator,
    ) -> None:
        self.core = core
        self.keys = keys
        self.trust = trust
        self.journal = journal
        self.ledger = ledger
        self.invitations = invitations
        self.policies = policies
        self.audit = audit
        self.reports = reports
        self.rotation = rotation
        self.root_rotator = root_rotator
        self._keyholder: EngineerKeyholder | None = None

    def initialise(self, admin_name: str, passphrase: str, shares: tuple[int, int] | None) -> InitResult:
        validation.engineer_name(admin_name)
        keyrecord.normalise_passphrase(passphrase)
        if shares is not None:
            check_share_policy(*shares)
        now = self.core.clock()
        with self.core.store.transaction() as s:
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
            first = m.OrgKey(version=1, public=org.public, signed_at=epoch(now), signature=None, created_at=now)
            s.add(first)
            admin = m.Engineer(name=admin_name, role=ROLE_ADMIN, status=ACTIVE, key_generation=0, created_at=now)
            s.add(admin)
            s.flush()
            self.core.cached_vault_id = vault_id
            keys = self._make_keys(s, admin, passphrase, org.public)
            self.trust.sign_certificate(s, admin, org)
            self.trust.record_engineer_key(s, admin, org)
            self.keys.seal_root_to(s, bundle, admin)
            public = {"admin": admin_name, "root_version": 1, "fingerprint": _fingerprint(admin)}
            self.journal.append(s, "vault-init", actor=admin, seed=keys.signing_seed, public=public)
            share_texts: tuple[str, ...] = ()
            if shares is not None:
                k, n = shares
                first.share_threshold, first.share_count = k, n  # signed: rotations issue new k-of-n shares
                first.share_signature = org.sign(
                    LABEL_SIG_SHARE_POLICY, *share_policy_fields(s, self.core, first, k, n)
                )
                share_texts = tuple(
                    shamir.encode_share(vault_id, k, x, y) for x, y in shamir.split(bundle.to_bytes(), k, n)
                )
            assert admin.sealing_public is not None and admin.signing_public is not None
            return InitResult(
                vault_id=vault_id.hex(),
                admin=admin_name,
                admin_fingerprint=signing.engineer_fingerprint(admin.sealing_public, admin.signing_public),
                org_fingerprint=signing.org_fingerprint(org.public)[:8].hex(),
                db_url=self.core.store.url,
                shares=share_texts,
            )

    def _make_keys(self, s: Session, row: m.Engineer, passphrase: str, org_public: bytes) -> keyrecord.PrivateBundle:
        keypair = sealing.KeyPair.generate()
        sign_key = signing.SigningKey.generate()
        row.key_generation += 1
        row.sealing_public, row.signing_public = keypair.public, sign_key.public
        bundle = keyrecord.PrivateBundle(keypair.private, sign_key.seed, org_public)
        row.key_record = keyrecord.lock_record(
            bundle, passphrase, self.core.vid(s), row.id, row.key_generation, self.core.kdf_params
        )
        return bundle

    # -- invite, enrol, confirm -------------------------------------------------------

    def invite(self, name: str, *, role: str = ROLE_ENGINEER, valid_for: dt.timedelta = INVITE_TTL) -> str:
        """Create (or renew) an invitation; returns the one-time enrolment code."""
        validation.engineer_name(name)
        if role not in (ROLE_ENGINEER, ROLE_ADMIN):
            raise InvalidInput(f"bad role {validation.shown(role)}", hint="use engineer or admin")
        return self._engineer_keyholder().invite(name, role, valid_for)

    def enroll(self, name: str, code: str, passphrase: str) -> str:
        """Make the engineer's keys on this machine; returns the fingerprint to compare."""
        validation.engineer_name(name)
        return self._engineer_keyholder().enroll(name, code, passphrase)

    @staticmethod
    def _enrolled(row: m.Engineer, name: str) -> str:
        fingerprint = _fingerprint(row)
        if row.status != ENROLLED or fingerprint is None:
            raise EnrolmentError(
                f"engineer {name!r} has not enrolled yet (status: {row.status})",
                hint="they run `credvault engineer enroll NAME` and type the code when asked",
            )
        return fingerprint

    def pending_fingerprint(self, name: str) -> str:
        """The fingerprint an enrolled (not yet confirmed) engineer's keys show."""
        with self.core.store.transaction() as s:
            return self._enrolled(self._engineer(s, name), name)

    def pending_confirmation(self, name: str) -> PendingConfirmation:
        """What confirming ``name`` would certify (admin only): their name, the role their
        signed invitation gives, their fingerprint, and the grants it would carry over and
        drop. Raises ``UntrustedRecord`` if the invitation is not signed by an admin."""
        validation.engineer_name(name)
        return self._engineer_keyholder().pending(name)

    def confirm(self, name: str, fingerprint: str, *, shown: PendingConfirmation | None = None) -> EngineerInfo:
        """Certify an enrolled engineer's keys, after a person compared ``fingerprint``.

        The invitation must be signed by an admin (its role is the one certified), and only
        the grants ``pending_confirmation`` lists as carried over are re-signed and re-sealed.
        With ``shown`` (what ``pending_confirmation`` returned and the admin saw), nothing is
        confirmed if the role, fingerprint or grants carried over have changed since.
        """
        validation.engineer_name(name)
        return self._engineer_keyholder().confirm(name, fingerprint, shown)

    def change_passphrase(self, old: str, new: str) -> None:
        """Re-encrypt the acting engineer's key record under a new passphrase."""
        self._engineer_keyholder().change_passphrase(old, new)

    def list(self) -> builtins.list[EngineerInfo]:
        return self._engineer_keyholder().list()

    def _engineer_keyholder(self) -> EngineerKeyholder:
        """This Vault object's engineers' keyholder, over the in-process transport to its authority."""
        if self._keyholder is None:
            self._keyholder = engineerparts.engineer_keyholder(self)
        return self._keyholder

    # -- sessions -------------------------------------------------------------------------

    def unlock(
        self,
        name: str,
        passphrase: str,
        *,
        ttl: dt.timedelta = DEFAULT_TTL,
        remember: bool = True,
        org_memory: OrgKeyMemory | None = None,
    ) -> SessionInfo:
        """Open the engineer's key record once and hold the session until ``ttl`` passes.

        A wrong passphrase is recorded as an (unsigned) ``unlock-failed`` audit event. With
        ``org_memory`` (this machine's record of the newest organisation key it verified),
        an organisation-key chain that does not reach that key is refused, and the key
        reached is remembered.
        """
        if not dt.timedelta(seconds=1) <= ttl <= MAX_SESSION_TTL:
            raise InvalidInput("bad session length", hint="use between 1s and 12h, e.g. --ttl 15m")
        validation.engineer_name(name)
        keyholder = self._engineer_keyholder()
        unlocking = Unlocking(keyholder.transport)
        seen = org_memory.head(self.core.vault_id().hex()) if org_memory is not None else None
        opened = unlocking.open(name, passphrase, seen)
        bundle = opened.bundle
        session = UnlockedSession(
            vault_id=opened.vault_id,
            engineer_id=opened.engineer_id,
            name=name,
            key_generation=opened.key_generation,
            sealing_private=bundle.sealing_private,
            signing_seed=bundle.signing_seed,
            org_signing_public=bundle.org_signing_public,
            expires_at=self.core.clock() + ttl,
        )
        self.keys.session, self.core.engineer_name = session, name
        self.keys.client_keys.clear()
        self.keys.slugs.clear()
        self.keys.root = None
        keyholder.verified_me(Identity(opened.vault_id, opened.head[1], (), opened.engineer), admin=False)
        answer = unlocking.record(opened, int(ttl.total_seconds()))
        if answer.identity is None:
            raise UntrustedRecord("the authority answered no caller")
        keyholder.verified_me(answer.identity, admin=False)  # the row the event was appended for
        if org_memory is not None:
            org_memory.remember(opened.vault_id.hex(), opened.head)
        if remember:
            self.core.sessions.put(session)
        return self.whoami()

    def lock(self) -> bool:
        """Forget the unlocked session of the selected engineer; True if one was held."""
        self.keys.session, self.keys.root = None, None
        self.keys.client_keys.clear()
        self.keys.slugs.clear()
        if not self.core.engineer_name:
            return False
        return self.core.sessions.delete(self.core.vault_id(), self.core.engineer_name)

    def whoami(self) -> SessionInfo:
        return self._engineer_keyholder().whoami()
