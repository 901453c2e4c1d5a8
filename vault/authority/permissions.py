"""Who may call each public operation of the vault, declared in one place.

Every public noun method (``vault.secrets.add``, ``vault.grants.grant``, ...) appears in
``OPERATIONS`` with the role it needs, and ``Vault`` wraps each one so that ``require`` runs
first, before the operation reads any row of its own:

* ``ADMIN``: an unlocked session whose engineer row verifies as an active admin (checked in
  a short read transaction of its own: the operation's own admin check then finds the same row);
* ``ENGINEER``: an unlocked session of an engineer (admin or not); the operation verifies the
  engineer's row (certificate, status) in its own transaction, as the first thing it reads;
* ``ANYONE_UNLOCKED``: an unlocked session, whatever it is for (``whoami``, a passphrase change);
* ``NO_SESSION``: nothing (unlock, enrolment, the audit head, a restore from a backup file,
  scrubbing freed pages after a purge).

A new operation is added here first; ``tests/service/test_structure.py`` fails for a public
noun method that is missing.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Literal, Protocol

from vault.errors import AuditUnavailable, ConcurrentChange, StoreBusy, StoreUnavailable

Role = Literal["admin", "engineer", "anyone-unlocked", "no session"]
ADMIN: Role = "admin"
ENGINEER: Role = "engineer"
ANYONE_UNLOCKED: Role = "anyone-unlocked"
NO_SESSION: Role = "no session"

OPERATIONS: dict[str, dict[str, Role]] = {
    "clients": {
        "add": ADMIN,
        "list": ENGINEER,
        "show": ENGINEER,
    },
    "grants": {
        "grant": ADMIN,
        "revoke": ADMIN,
        "list": ENGINEER,
        "maintain": ADMIN,
    },
    "secrets": {
        "add": ENGINEER,
        "update": ENGINEER,
        "list": ENGINEER,
        "search": ENGINEER,  # the listing's pages, searched on the caller's machine (service/secret_search.py)
        "show": ENGINEER,
        "history": ENGINEER,
    },
    "checkouts": {
        "reveal": ENGINEER,
        "checkout": ENGINEER,
        "checkin": ENGINEER,
        "break_checkout": ENGINEER,
        "list": ENGINEER,
    },
    "engineers": {
        "invite": ADMIN,
        "enroll": NO_SESSION,
        "pending_fingerprint": NO_SESSION,
        "pending_confirmation": ADMIN,
        "confirm": ADMIN,
        "list": ENGINEER,
        "initialise": NO_SESSION,
        "unlock": NO_SESSION,
        "lock": NO_SESSION,
        "whoami": ANYONE_UNLOCKED,
        "rotate": ADMIN,
        "change_passphrase": ANYONE_UNLOCKED,
        "remove": ADMIN,
    },
    "keys": {
        "rotate_client": ADMIN,
        "resume": ADMIN,
        "list": ADMIN,
        "rotate_secret": ENGINEER,
        "set_retention": ADMIN,
        "versions": ENGINEER,
        "rotate_root": ADMIN,
        "set_cryptoperiod": ADMIN,
    },
    "audit": {
        "log": ENGINEER,
        "export": ENGINEER,
        "verify": ENGINEER,
        "checkpoint": ENGINEER,
        "head": NO_SESSION,
    },
    "reports": {
        "access": ADMIN,
        "at_risk": ADMIN,
        "status": ENGINEER,
        "stale": ENGINEER,
    },
    "policies": {
        "get": ENGINEER,
        "set": ADMIN,
        "unsigned": ADMIN,
        "adopt": ADMIN,
    },
    "purge": {
        "preview": ADMIN,
        "client": ADMIN,
        "secret": ADMIN,
        "scrub": NO_SESSION,
        "receipts": ADMIN,
        "verify_receipt": ENGINEER,
    },
    "subjects": {
        "find": ADMIN,
        "report": ADMIN,
        "purge": ADMIN,
    },
    "backups": {
        "export_keys": ADMIN,
        "create": ADMIN,
        "restore": NO_SESSION,
        "server_master_keys": NO_SESSION,  # opened with a passphrase or the recovery shares, as restore
    },
}

# Operations that name the objects credvault did not create instead of refusing to work
# (engine.Store.inspecting): their check runs under the same allowance.
NAMES_FOREIGN_OBJECTS: dict[str, frozenset[str]] = {
    "reports": frozenset({"status"}),
    "audit": frozenset({"verify"}),
    "purge": frozenset({"verify_receipt"}),
}

# Operations that reveal a value: a store failure while checking the caller is reported as
# the operation reports it ("the access could not be recorded; nothing was revealed").
REVEALS: dict[str, frozenset[str]] = {
    "checkouts": frozenset({"checkout", "reveal"}),
}

# Requests a keyholder makes on its own behalf, routed by the team server but not methods of a
# noun: ``checkouts.context`` (the rows a client's key context is built on, read-only),
# ``checkouts.answer_refused`` (an answer it refused after its event was committed) and
# ``audit.answer_refused`` (any answer the engineer's client refused: unsigned, or rows refused).
KEYHOLDER_REQUESTS: dict[str, dict[str, Role]] = {
    "checkouts": {"context": ENGINEER, "answer_refused": ENGINEER},
    # the drafts of add and update (server.md §4), and a listing's page through the server
    "secrets": {"add_draft": ENGINEER, "update_draft": ENGINEER, "list_page": ENGINEER},
    "engineers": {"enroll_draft": NO_SESSION},  # the open invitation an enrolment is made for (invite code)
    "audit": {"answer_refused": ENGINEER},
}
# An admin's grant and revoke through the team server: their drafts, and the admin's own copy of
# the root bundle their keyholder opens off the database (server/grant_routes.py).
KEYHOLDER_REQUESTS["grants"] = {"grant_draft": ADMIN, "revoke_draft": ADMIN, "sweep_draft": ADMIN, "sweep": ADMIN}
KEYHOLDER_REQUESTS["engineers"]["root_seal"] = ADMIN
KEYHOLDER_REQUESTS["engineers"]["invite_draft"] = ADMIN  # server/invite_routes.py
KEYHOLDER_REQUESTS["engineers"]["rotate_draft"] = ADMIN  # server/engineer_write_routes.py
KEYHOLDER_REQUESTS["engineers"]["remove_draft"] = ADMIN
KEYHOLDER_REQUESTS["engineers"]["remove_root_draft"] = ADMIN  # an admin's removal: its root rotation drafted
KEYHOLDER_REQUESTS["clients"] = {"add_draft": ADMIN}
# An admin's client-key rotation through the team server (server/rotation_routes.py): each step's request.
KEYHOLDER_REQUESTS["keys"] = dict.fromkeys(("start_draft", "start", "open", "rewrap_draft", "rewrap", "finish"), ADMIN)
# An admin's root rotation through the team server (server/root_routes.py); its commit is ``rotate_root``.
KEYHOLDER_REQUESTS["keys"].update(dict.fromkeys(("root_draft", "root_page"), ADMIN))
# An engineer's passphrase change through the team server: their own stored key record, read first.
KEYHOLDER_REQUESTS["engineers"]["passphrase_draft"] = ANYONE_UNLOCKED
# The rows an engineer's machine with no database checks the audit log's signatures under.
KEYHOLDER_REQUESTS["audit"]["signers"] = ENGINEER
# The whole chain for an admin's `audit verify` off the database (server/chain_routes.py).
KEYHOLDER_REQUESTS["audit"]["points"] = ADMIN
KEYHOLDER_REQUESTS["audit"]["chain"] = ADMIN
KEYHOLDER_REQUESTS["policies"] = {"set_draft": ADMIN}  # server/policy_routes.py
KEYHOLDER_REQUESTS["purge"] = {"client_draft": ADMIN, "secret_draft": ADMIN}  # server/purge_routes.py
# A data subject's search pages, and per client its purge's draft and commit (the noun's ``subjects.purge``).
KEYHOLDER_REQUESTS["purge"].update(dict.fromkeys(("subject_search", "subject_draft", "subject"), ADMIN))
# ``--vacuum`` on a purge through the server: the vacuum its host runs after the commit (authority/purge_vacuum.py).
KEYHOLDER_REQUESTS["purge"]["vacuum"] = ADMIN
# The vault settings through the team server: the settings' keyholder's own read and change (the
# Vault's nouns are ``keys.set_retention`` / ``set_cryptoperiod``): server/settings_routes.py
KEYHOLDER_REQUESTS["settings"] = {"get": ENGINEER, "set": ADMIN}
# An admin's backup through the team server: the backup keys' context its keyholder verifies first
# (server/backup_routes.py; the create is the noun's ``backups.create``).
KEYHOLDER_REQUESTS["backups"] = {"context": ADMIN}

# Public methods of a noun that are not operations: other nouns call them inside a unit of
# work of their own (an engineer's removal runs the rotations and the at-risk report it needs).
COMPOSED: dict[str, frozenset[str]] = {
    "keys": frozenset({"run_rotation"}),
    "reports": frozenset({"report_at_risk", "verified_log"}),
}


class _Store(Protocol):
    def transaction(self) -> AbstractContextManager[Any]: ...

    def read(self) -> AbstractContextManager[Any]: ...

    def inspecting(self) -> AbstractContextManager[Any]: ...


class _Core(Protocol):
    @property
    def store(self) -> _Store: ...


class _Keys(Protocol):
    def me(self) -> object: ...


class _Trust(Protocol):
    def my_admin_row(self, s: Any) -> object: ...


class Guarded(Protocol):
    """What a noun hands the guard: the store, the unlocked keys and the trust checks."""

    core: _Core
    keys: _Keys
    trust: _Trust


def require(role: Role, noun: Guarded, *, reveals: bool = False) -> None:
    """Refuse the call unless the acting engineer holds ``role`` (``Locked``, ``AccessDenied``)."""
    if role == NO_SESSION:
        return
    try:
        noun.keys.me()
    except (ConcurrentChange, StoreBusy):
        raise
    except StoreUnavailable as error:
        if not reveals:
            raise
        raise AuditUnavailable(f"the access could not be recorded ({error}); nothing was revealed") from None
    if role == ADMIN:
        with noun.core.store.read() as s:  # no write lock: the operation's own unit takes what it needs
            noun.trust.my_admin_row(s)
