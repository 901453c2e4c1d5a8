"""A new version of a secret, where the database is: the key it goes under, and its storage.

Both writers of a new value — ``secret add`` / ``update`` (``authority/secrets.py``) and a
check-in with a new value (``authority/checkins.py``) — go through here, in their own unit
of work, so that a new version is named and stored one way:

* ``write_key`` — what the new version goes under: the client-key version new data is
  written under (the newest admin-signed one, which must be what the clients row says and
  not destroyed: ``VersionChecks.current_key_version``, never the column alone), its signed
  record with the caller's sealed copy (``sealed_key``: the keyholder verifies both), and
  the version's number (the one after the secret's current version).
* ``store_version`` — the ``NewVersion`` the keyholder encrypted for that ``WriteKey``
  (ciphertext only: this module never opens it), checked to be of that number and key
  version and of bytes (the wrapped data key's header naming that key version), stored as
  given, counted against the client key's encryption bound (one atomic UPDATE: concurrent
  writers never lose a count), the secret moved to it
  (``clear_must_change``: its must-change flag cleared), versions beyond the signed
  retention deleted.

The audit event (``secret-create`` / ``secret-update``) is the caller's: it is appended
after, through its own seal.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Protocol, cast

from sqlalchemy import Table, bindparam, delete, insert, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from vault.authority.checkout_reads import ENGINEER_WIDTH, SEALED_KEY, CallerRead
from vault.authority.requests import ClientKeyRow, NewVersion, SealedClientKey, WriteKey
from vault.crypto.blobs import blob_key_version
from vault.errors import DecryptionFailed, IntegrityError, InvalidInput
from vault.storage import models as m
from vault.storage import rows
from vault.storage.prepared import Prepared
from vault.storage.rows import ENCRYPTION_LIMIT, ROLE_ADMIN, SECRETS, VERSIONS, EngineerRow, VersionRow

_KEYS = cast(Table, m.ClientKey.__table__)
ADD_VERSION = Prepared(
    insert(VERSIONS),
    (
        "secret_id",
        "version",
        "key_version",
        "wrapped_dek",
        "password_blob",
        "metadata_blob",
        "created_by",
        "created_at",
    ),
)
COUNT_ENCRYPTION = (  # one atomic UPDATE: concurrent writers never lose a count
    update(_KEYS)
    .where(_KEYS.c.client_id == bindparam("client"), _KEYS.c.version == bindparam("key"))
    .values(encryptions=_KEYS.c.encryptions + 1)
    .returning(_KEYS.c.encryptions)
)
_CURRENT = update(SECRETS).where(SECRETS.c.id == bindparam("secret"))
NEW_CURRENT = {  # by clear_must_change
    False: Prepared(_CURRENT.values(current_version=bindparam("new"), updated_at=bindparam("at"))),
    True: Prepared(_CURRENT.values(current_version=bindparam("new"), updated_at=bindparam("at"), must_change=False)),
}
PRUNE = delete(VERSIONS).where(VERSIONS.c.secret_id == bindparam("secret"), VERSIONS.c.version <= bindparam("cutoff"))
_BLOBS = ("wrapped_dek", "password_blob", "metadata_blob")


class VersionChecks(Protocol):
    """The signed settings a new version depends on (public keys and signatures only)."""

    def current_key_version(self, s: Session, client: m.Client) -> int:
        """The client-key version new data goes under: the newest admin-signed one, which must be
        what ``clients.current_key_version`` says and not destroyed, else IntegrityError."""

    def retention(self, s: Session) -> int:
        """Versions kept per secret (the admin-signed setting, or the default)."""


def sealed_key(conn: Connection, caller: CallerRead, client_id: int, version: int) -> SealedClientKey | None:
    """The signed record of a client-key version, its signer and the caller's sealed copy (an
    admin's: the one sealed to the current recovery key), or None if there is no such version."""
    admin = caller.me.role == ROLE_ADMIN
    kind, recipient = ("recovery", caller.root_version or 0) if admin else ("engineer", caller.me.id)
    found = SEALED_KEY.all(conn, {"client": client_id, "version": version, "kind": kind, "recipient": recipient})
    if not found:
        return None
    r = found[0]
    signer = None if r[8] is None else EngineerRow._make(r[8 : 8 + ENGINEER_WIDTH])
    return SealedClientKey(ClientKeyRow(*r[:7]), signer, kind, recipient, r[7])


def write_key(s: Session, checks: VersionChecks, caller: CallerRead, client: m.Client, current: int) -> WriteKey:
    """What the version after ``current`` of a secret of ``client`` is written under."""
    key_version = checks.current_key_version(s, client)  # never the unsigned column alone
    return WriteKey(key_version, sealed_key(rows.connection(s), caller, client.id, key_version), current + 1)


def checked_version(new: object, write: WriteKey) -> NewVersion:
    """``new`` if it is a ``NewVersion`` of ``write``'s number and key version, of bytes, else InvalidInput."""
    if not isinstance(new, NewVersion) or any(not isinstance(getattr(new, f), bytes) for f in _BLOBS):
        raise InvalidInput("the new version is not ciphertext")
    if (new.version, new.key_version) != (write.next_version, write.key_version):
        raise InvalidInput("the new version is not the one this request asked for, under the client's current key")
    try:  # the wrapped data key's own header must name that key too (a reader opens it by the header)
        wrapped_under = blob_key_version(new.wrapped_dek)
    except DecryptionFailed:
        wrapped_under = None
    if wrapped_under != write.key_version:
        raise InvalidInput("the new version's data key is not wrapped under the client's current key")
    return new


def store_version(
    s: Session,
    checks: VersionChecks,
    write: WriteKey,
    new: object,
    *,
    client_id: int,
    secret_id: int,
    created_by: int,
    now: dt.datetime,
    clear_must_change: bool,
    layer: Callable[[NewVersion], NewVersion] | None = None,
) -> VersionRow:
    """Store the keyholder's ``new`` version (see the module's docstring); the row stored.
    ``layer``: the team server's layer put on the checked version's data key before it is stored."""
    version = checked_version(new, write)
    if layer is not None:
        version = layer(version)
    conn = rows.connection(s)
    values: dict[str, Any] = {"secret_id": secret_id, "created_by": created_by, "created_at": now}
    values |= {f: getattr(version, f) for f in ("version", "key_version", *_BLOBS)}
    ADD_VERSION.run(conn, values)
    count = conn.execute(COUNT_ENCRYPTION, {"client": client_id, "key": version.key_version}).scalar_one()
    if count > ENCRYPTION_LIMIT:
        raise IntegrityError(
            f"client key version {version.key_version} has reached its encryption limit",
            hint="rotate the client key: `credvault rotate client SLUG`",
        )
    NEW_CURRENT[clear_must_change].run(conn, {"secret": secret_id, "new": version.version, "at": now})
    cutoff = version.version - checks.retention(s)
    if cutoff >= 1:
        conn.execute(PRUNE, {"secret": secret_id, "cutoff": cutoff})
    return VersionRow(version.version, version.key_version, *(getattr(version, f) for f in _BLOBS))
