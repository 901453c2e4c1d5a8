"""``Vault``: the public Python API of credvault, composed by noun.

    vault = Vault.open("sqlite:///vault.db", engineer="alice")
    vault.engineers.unlock("alice", passphrase)
    vault.secrets.add("acme/fw01-admin", password=..., kind="equipment", host="10.0.0.1")
    revealed = vault.checkouts.checkout("acme/fw01-admin", reason="change 4711")

The nouns: ``clients``, ``grants``, ``secrets``, ``checkouts``, ``engineers``, ``keys``
(rotation, retention, cryptoperiod), ``audit``, ``reports``, ``policies``, ``purge``,
``subjects``, ``backups``. Each is built once per ``Vault`` from the shared collaborators
(``core``, ``keyholder``: the unlocked keys, ``trust``, ``journal``, ``ledger``) and the
nouns it needs, passed in explicitly.

Every public noun method is one unit of work: it runs in one transaction and raises only
``vault.errors.VaultError`` subclasses on purpose. Who may call it is declared in
``vault/authority/permissions.py`` and checked first. A method whose transaction the
database aborts because of a concurrent one (``ConcurrentChange``: a PostgreSQL serialization
failure or deadlock) is run again from the start, up to ``RETRIES`` times with a short random
back-off: nothing of the aborted attempt was committed or revealed, so running it again is safe
(``vault/service/retrying.py``).

The flat methods of earlier versions (``vault.add_secret(...)``, ``vault.checkout(...)``)
are gone: ``vault.secrets.add(...)``, ``vault.checkouts.checkout(...)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from vault.authority import permissions
from vault.authority.journal import Journal
from vault.crypto import keyrecord
from vault.keyholder.auditkeys import AuditKeys
from vault.keyholder.keys import Keys
from vault.keyholder.signers import Signers
from vault.keyholder.trust import Trust
from vault.service.audit import Audit
from vault.service.backups import Backups
from vault.service.checkouts import Checkouts
from vault.service.clients import Clients
from vault.service.core import Clock, Core, utcnow
from vault.service.engineers import Engineers
from vault.service.grantledger import GrantLedger
from vault.service.grants import Grants
from vault.service.holds import Holds
from vault.service.invitations import Invitations
from vault.service.policies import PolicyCheck
from vault.service.policyadmin import Policies
from vault.service.purge import Purge
from vault.service.records import InitResult, RootRotation
from vault.service.reports import Reports
from vault.service.retrying import BACKOFF_SECONDS, RETRIES, retried
from vault.service.rootrotation import RootRotator
from vault.service.rotation import KeyRotation
from vault.service.secrets import Secrets
from vault.service.sessions import MemorySessionStore, SessionStore
from vault.service.subjects import Subjects
from vault.storage import engine as storage
from vault.storage.engine import Store

__all__ = ["BACKOFF_SECONDS", "NOUNS", "RETRIES", "Vault"]

# the attribute of Vault -> the class of that noun (the keys of permissions.OPERATIONS)
NOUNS: dict[str, type] = {
    "clients": Clients,
    "grants": Grants,
    "secrets": Secrets,
    "checkouts": Checkouts,
    "engineers": Engineers,
    "keys": KeyRotation,
    "audit": Audit,
    "reports": Reports,
    "policies": Policies,
    "purge": Purge,
    "subjects": Subjects,
    "backups": Backups,
}


def _operations() -> None:
    """Wrap every public noun method declared in the permissions table: the role check first,
    then the call, both run again on a concurrent change (outermost call only). An operation
    that names foreign objects runs its check and itself under one ``store.inspecting()``."""
    for noun, cls in NOUNS.items():
        inspecting = permissions.NAMES_FOREIGN_OBJECTS.get(noun, frozenset())
        reveals = permissions.REVEALS.get(noun, frozenset())
        for name, role in permissions.OPERATIONS[noun].items():
            method = getattr(cls, name)
            if name in inspecting:
                setattr(cls, name, retried(_inspected(method, role)))
                continue

            def first(self: Any, role: permissions.Role = role, reveal: bool = name in reveals) -> None:
                permissions.require(role, self, reveals=reveal)

            setattr(cls, name, retried(method, first))


def _inspected(method: Callable[..., Any], role: permissions.Role) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self.core.store.inspecting():  # the operation's own inspecting() reads nothing again
            permissions.require(role, self)
            return method(self, *args, **kwargs)

    return call


_operations()


class Vault:
    """One vault database, seen by one engineer at a time, composed by noun."""

    def __init__(
        self,
        store: Store,
        *,
        sessions: SessionStore,
        engineer: str | None = None,
        clock: Clock = utcnow,
        kdf_params: keyrecord.Argon2Params | None = None,
    ) -> None:
        core = Core(store, sessions=sessions, engineer=engineer, clock=clock, kdf_params=kdf_params)
        keys = Keys(core)
        trust = Trust(core, keys)
        keys.trust = trust  # Trust asks Keys for the session; Keys asks Trust to verify (keys.py)
        signers = Signers(trust)
        journal = Journal(core, keys, trust, AuditKeys(keys, trust))
        ledger = GrantLedger(core, trust, signers, journal)
        invitations = Invitations(core, keys, trust, ledger)
        policy_check = PolicyCheck(core, trust)
        holds = Holds(core, trust, journal)
        clients = Clients(core, keys, trust, journal, ledger)
        grants = Grants(core, keys, trust, journal, ledger, clients)
        secrets = Secrets(core, keys, trust, journal, policy_check, holds, clients)
        checkouts = Checkouts(core, keys, trust, journal, policy_check, holds, clients, secrets)
        policies = Policies(core, keys, trust, journal, policy_check, clients)
        audit = Audit(core, keys, trust, signers, journal, clients, secrets)
        reports = Reports(core, keys, trust, journal, policy_check, clients, secrets, checkouts, audit)
        root_rotator = RootRotator(core, keys, trust, signers, journal, clients)
        rotation = KeyRotation(core, keys, trust, journal, ledger, policy_check, clients, secrets, root_rotator)
        engineers = Engineers(
            core, keys, trust, journal, ledger, invitations, policies, audit, reports, rotation, root_rotator
        )
        purge = Purge(core, keys, trust, journal, clients, secrets)
        subjects = Subjects(core, keys, trust, journal, clients, secrets, purge)
        backups = Backups(core, keys, trust, journal)
        # shared collaborators
        self.core = core
        self.keyholder = keys
        self.trust = trust
        self.signers = signers
        self.journal = journal
        self.ledger = ledger
        self.invitations = invitations
        self.policy_check = policy_check
        self.holds = holds
        self.root_rotator = root_rotator
        # the nouns
        self.clients = clients
        self.grants = grants
        self.secrets = secrets
        self.checkouts = checkouts
        self.engineers = engineers
        self.keys = rotation
        self.audit = audit
        self.reports = reports
        self.policies = policies
        self.purge = purge
        self.subjects = subjects
        self.backups = backups

    @classmethod
    def open(
        cls,
        url: str,
        *,
        engineer: str | None = None,
        sessions: SessionStore | None = None,
        clock: Clock = utcnow,
        kdf_params: keyrecord.Argon2Params | None = None,
        upgrade: bool = False,
    ) -> Vault:
        store = storage.Store(url)
        if upgrade:
            storage.upgrade(store)
        return cls(
            store, sessions=sessions or MemorySessionStore(), engineer=engineer, clock=clock, kdf_params=kdf_params
        )

    @classmethod
    def create(
        cls,
        url: str,
        *,
        admin: str,
        passphrase: str,
        shares: tuple[int, int] | None = None,
        sessions: SessionStore | None = None,
        clock: Clock = utcnow,
        kdf_params: keyrecord.Argon2Params | None = None,
    ) -> tuple[Vault, InitResult]:
        """Create the schema and a new vault with its recovery key and first admin."""
        vault = cls.open(url, engineer=admin, sessions=sessions, clock=clock, kdf_params=kdf_params, upgrade=True)
        result = vault.engineers.initialise(admin, passphrase, shares)
        return vault, result

    def __repr__(self) -> str:
        return repr(self.core).replace("Core(", f"{type(self).__name__}(", 1)

    # -- the shared state, as earlier versions named it ------------------------------------------

    @property
    def store(self) -> Store:
        return self.core.store

    @property
    def sessions(self) -> SessionStore:
        return self.core.sessions

    @property
    def engineer_name(self) -> str | None:
        return self.core.engineer_name

    @engineer_name.setter
    def engineer_name(self, value: str | None) -> None:
        self.core.engineer_name = value

    @property
    def clock(self) -> Clock:
        return self.core.clock

    @clock.setter
    def clock(self, value: Clock) -> None:
        self.core.clock = value

    @property
    def kdf_params(self) -> keyrecord.Argon2Params:
        return self.core.kdf_params

    @property
    def retries(self) -> int:
        """Transactions run again after a ConcurrentChange (retrying.py), over this vault's life."""
        return self.core.retries

    @property
    def adoption_skipped(self) -> list[str]:
        """Forged records the last admin removal or rotation did not adopt."""
        return self.core.adoption_skipped

    @property
    def last_root_rotation(self) -> RootRotation | None:
        """The last root rotation of this object (its shares are printed once by the CLI)."""
        return self.core.last_root_rotation

    def vault_id(self) -> bytes:
        return self.core.vault_id()

    def upgrade_schema(self) -> str | None:
        storage.upgrade(self.store)
        return storage.current_revision(self.store)

    def schema_revision(self) -> str | None:
        return storage.current_revision(self.store)

    @staticmethod
    def schema_head() -> str:
        """The newest schema revision this version of credvault brings."""
        return storage.head_revision()

    def close(self) -> None:
        self.store.close()
