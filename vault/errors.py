"""The one error tree of credvault.

Every error the library raises on purpose is a ``VaultError``; anything else is a bug.
Messages never contain a secret, a key, a passphrase or decrypted metadata: they name
ids, slugs the caller typed, and what to do next.

    VaultError
    ├── ConfigurationError        no vault configured here, or a bad setting
    ├── StoreUnavailable          the database cannot be reached, read or written
    │   ├── ConcurrentChange      a serialization failure or deadlock (retried by Vault)
    │   └── StoreBusy             another session holds a lock past the lock time-out
    ├── InvalidInput              a malformed name, slug, time, passphrase, option
    ├── AlreadyExists             a client, secret or engineer of that name exists
    ├── NotFound                  no such client, secret or engineer (or not visible)
    ├── Locked                    no unlocked session for this engineer
    │   ├── SessionExpired        the session existed but is past its expiry
    │   └── Unauthenticated       a server refused a request's signature (401)
    ├── RateLimited               too many failed authentications: wait Retry-After (429)
    ├── AccessDenied              the engineer may not do this (role, grant, status)
    │   └── GrantExpired          the grant is past its --until time
    ├── EnrolmentError            a bad, expired or already used enrolment code
    ├── RecoveryShareError        a malformed, corrupted or wrong recovery share
    ├── AuditUnavailable          the audit event could not be written: nothing revealed
    ├── CheckoutConflict          another engineer holds the exclusive checkout
    └── IntegrityError            stored data failed a cryptographic check
        ├── DecryptionFailed      the single opaque error of every failed decryption
        │   └── WrongPassphrase   a key record did not open with the passphrase given
        ├── UntrustedRecord       a key-distribution record has no valid admin signature
        ├── LookupMismatch        a row found by its lookup tag holds another name
        ├── KeyRecordRejected     a key record's Argon2 parameters are out of bounds
        └── TamperedSchema        the database holds a trigger, view, table … credvault did not create
"""

from __future__ import annotations


class VaultError(Exception):
    """Base of every error credvault raises on purpose."""

    hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class ConfigurationError(VaultError):
    """No vault is configured on this machine, or a setting is invalid."""

    hint = "run `credvault init --admin NAME`, or pass --db URL / set CREDVAULT_DB"


class StoreUnavailable(VaultError):
    """The database cannot be reached, opened, read or written (nothing was changed)."""

    hint = "check the --db URL or CREDVAULT_DB, that the server runs, and disk space and permissions"


class ConcurrentChange(StoreUnavailable):
    """The database aborted a transaction because of a concurrent one (a serialization
    failure or a deadlock). Nothing was changed; every public ``Vault`` method retries
    its whole unit of work a few times before letting this through."""

    hint = "another change raced this one; try again"


class InvalidInput(VaultError):
    """An argument is malformed: a slug, a name, a time, a passphrase, an option."""


class AlreadyExists(VaultError):
    """A client, secret or engineer of that name already exists."""


class NotFound(VaultError):
    """No such client, secret or engineer, or none that this engineer may see."""

    hint = "check the spelling; `credvault client list` and `credvault secret list` show what you may see"


class Locked(VaultError):
    """No unlocked session is held for this engineer on this machine."""

    hint = "run `credvault unlock` (or pass --passphrase-file PATH)"


class SessionExpired(Locked):
    """An unlocked session existed but is past its expiry; it has been removed."""


class Unauthenticated(Locked):
    """A server refused a request's signature (docs/server.md §3); the message is the code:
    ``unsigned``, ``bad-signature``, ``unknown-key``, ``stale`` or ``replayed``."""

    hint = "sign every request afresh with your current key"


class RateLimited(VaultError):
    """Too many failed authentications from this address or for this engineer (docs/server.md
    §3): refused before any signature check, for ``retry_after`` seconds."""

    hint = "wait before trying again (the Retry-After time), and check the key this machine signs with"

    def __init__(self, message: str, *, hint: str | None = None, retry_after: int = 1) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class AccessDenied(VaultError):
    """The engineer may not do this: not an admin, no grant, or a disabled account."""

    hint = "ask an admin for a grant (`credvault grant ENGINEER CLIENT`)"


class GrantExpired(AccessDenied):
    """The engineer's grant for this client is past its --until time."""


class EnrolmentError(VaultError):
    """An enrolment code is malformed, expired, already used, or not for this vault."""

    hint = "ask an admin for a new code with `credvault engineer invite NAME`"


class RecoveryShareError(VaultError):
    """A recovery share is malformed or corrupted, or the shares do not fit this vault."""


class AuditUnavailable(VaultError):
    """The audit event could not be durably written, so nothing was revealed or changed."""

    hint = "the vault fails closed: fix the database (disk space, permissions, server) and retry"


class CheckoutConflict(VaultError):
    """Another engineer holds the exclusive checkout of this secret."""

    hint = "wait for them to check it in, or ask an admin to break the checkout"


class IntegrityError(VaultError):
    """Stored data failed a cryptographic check; nothing from it was used."""

    hint = "the database may have been altered; restore from a backup and tell an admin"


class DecryptionFailed(IntegrityError):
    """The single opaque error of every failed decryption (corrupted, moved, wrong key)."""

    def __init__(
        self,
        message: str = "cannot decrypt: the data is corrupted, was moved, or the key is wrong",
        *,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)


class WrongPassphrase(DecryptionFailed):
    """An engineer's key record did not open with the passphrase given."""

    hint = "try again; passphrases are case-sensitive. An admin can re-invite you if it is lost"

    def __init__(self) -> None:
        super().__init__("wrong passphrase (or the key record is damaged)")


class UntrustedRecord(IntegrityError):
    """A public key, client-key version or grant lacks a valid admin signature."""

    hint = "someone who is not an admin may have changed the database; ask an admin to check"


class LookupMismatch(IntegrityError):
    """A client or secret found by its lookup tag holds another slug or name: the tag was moved."""

    hint = "nothing was done: someone who is not an admin may have changed the database; ask an admin to check"


class KeyRecordRejected(IntegrityError):
    """A key record's Argon2 parameters are below the floor or above the ceiling."""


class StoreBusy(StoreUnavailable):
    """Another session holds a lock this change needs, past the lock time-out (nothing was changed)."""

    hint = (
        "another session (an open transaction, a stuck client) holds the lock; try again, "
        "or ask the database's administrator to end that session"
    )


class TamperedSchema(IntegrityError):
    """The database holds a trigger, rule, view, policy, table, schema or function that
    credvault's migrations did not create: credvault refuses to work on it."""

    hint = (
        "someone changed the database's schema outside credvault; an admin must inspect and drop "
        "the object(s) named (or restore from a backup), then run `credvault audit verify --full`"
    )
