"""Creating a vault, and engineers: invite, enrol, confirm, unlock, lock.

Each passphrase is known only to its engineer. An admin invites (a one-time code), the
engineer enrols on their own machine (makes their keys and key record), and an admin
confirms after comparing the fingerprint enrol printed: only then does the
organisation key certify the engineer's public keys.

The invitation is a record signed by the inviting admin, which the enrolling engineer
and the confirming admin both verify; a confirmation carries over only the grants an
admin signed over the engineer's previous key (both in ``invitations.py``), and
``pending_confirmation`` shows the admin what it will certify and carry before they do.

Every operation runs as a request to an authority through a keyholder over an in-process
transport: the engineers' (vault/authority/engineers.py; vault/keyholder/engineers.py,
unlocking.py; vault/transport/engineers.py; built by ``engineerparts.py``), and for the two
without a session, ``initialise`` and ``pending_fingerprint``, the setup's
(vault/authority/setup.py, vault/keyholder/setup.py, vault/transport/setup.py; built by
``setupparts.py``). ``lock`` is keyholder-only: it forgets the keys this process holds and
the session kept for it (no request, no event).
"""

from __future__ import annotations

import builtins
import datetime as dt
from typing import TYPE_CHECKING

from vault.authority.engineer_requests import ROLES, Identity
from vault.crypto import keyrecord, signing
from vault.errors import InvalidInput, UntrustedRecord
from vault.keyholder.engineers import EngineerKeyholder
from vault.keyholder.setup import SetupKeyholder
from vault.keyholder.unlocking import Unlocking
from vault.service import engineerparts, setupparts, validation
from vault.service.config import OrgKeyMemory
from vault.service.core import ROLE_ENGINEER, check_share_policy
from vault.service.offboarding import INVITE_TTL, Offboarding
from vault.service.records import EngineerInfo, InitResult, PendingConfirmation, SessionInfo
from vault.service.sessions import DEFAULT_TTL, UnlockedSession

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
        self._setup: SetupKeyholder | None = None

    def initialise(self, admin_name: str, passphrase: str, shares: tuple[int, int] | None) -> InitResult:
        """Create the vault and its first admin: the keys are made, signed and sealed by the
        setup keyholder, the rows written by the setup authority (``keyholder/setup.py``)."""
        validation.engineer_name(admin_name)
        keyrecord.normalise_passphrase(passphrase)
        if shares is not None:
            check_share_policy(*shares)
        founded = self._setup_keyholder().initialise(admin_name, passphrase, shares)
        self.core.cached_vault_id = founded.vault_id
        return InitResult(
            vault_id=founded.vault_id.hex(),
            admin=admin_name,
            admin_fingerprint=founded.admin_fingerprint,
            org_fingerprint=signing.org_fingerprint(founded.org_signing_public)[:8].hex(),
            db_url=self.core.store.url,
            shares=founded.shares,
        )

    def _setup_keyholder(self) -> SetupKeyholder:
        """This Vault object's keyholder for the operations without a session."""
        if self._setup is None:
            self._setup = setupparts.setup_keyholder(self.core, self.journal)
        return self._setup

    # -- invite, enrol, confirm -------------------------------------------------------

    def invite(self, name: str, *, role: str = ROLE_ENGINEER, valid_for: dt.timedelta = INVITE_TTL) -> str:
        """Create (or renew) an invitation; returns the one-time enrolment code."""
        validation.engineer_name(name)
        if role not in ROLES:
            raise InvalidInput(f"bad role {validation.shown(role)}", hint="use engineer, admin or service")
        return self._engineer_keyholder().invite(name, role, valid_for)

    def enroll(self, name: str, code: str, passphrase: str) -> str:
        """Make the engineer's keys on this machine; returns the fingerprint to compare."""
        validation.engineer_name(name)
        return self._engineer_keyholder().enroll(name, code, passphrase)

    def pending_fingerprint(self, name: str) -> str:
        """The fingerprint an enrolled (not yet confirmed) engineer's keys show (computed by the
        setup keyholder from the row the authority reads: no session, nothing certified)."""
        validation.engineer_name(name)
        return self._setup_keyholder().pending_fingerprint(name)

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
        """Forget the unlocked session of the selected engineer; True if one was held.

        Keyholder-only: no request, no authority, no event (it never wrote one). The keys
        this process holds are dropped and the session kept for it deleted."""
        self.keys.session, self.keys.root = None, None
        self.keys.client_keys.clear()
        self.keys.slugs.clear()
        if not self.core.engineer_name:
            return False
        return self.core.sessions.delete(self.core.vault_id(), self.core.engineer_name)

    def whoami(self) -> SessionInfo:
        return self._engineer_keyholder().whoami()
