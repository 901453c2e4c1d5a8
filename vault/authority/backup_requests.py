"""The values that cross between the keyholder and the authority, for backups.

As for the checkout and the secrets (``requests.py``, ``secret_requests.py``): frozen values
of ints, bytes, strings and the storage layer's plain rows, so that the same requests can
be serialised and cross a network later.

* ``BackupRequest`` names the action (``backup-create`` or ``backup-keys-export``), the
  caller (an admin) and the organisation key the admin pinned.
* ``BackupContext`` is what the authority shows the keyholder before anything is written:
  the caller's own row, the vault's backup-key seal (sealed to the recovery key), each
  client's backup-key blob with the signed records and recovery-sealed copies of the client
  keys it is under (and the one a new blob goes under), and, for a key export, the active
  admins with their key records. The keyholder verifies every one of them, opens or makes
  the backup keys, and answers ``NewBackupKeys`` (only blobs the authority had none of).
* ``SectionRows`` is one section's rows (``TableRows``: a table's name, its columns, its
  rows), as the authority read them for a backup (``kind``: ``audit``, ``client`` with
  its id, or ``global``) or as the keyholder opened them for a restore (``RestorePlan``:
  the global section and the id counters; the other sections follow one at a time).

The section's name in the file (``audit:N``, ``client:ID``, ``global``), its encryption
and the manifest of every section are the keyholder's: the authority never sees a backup
key, and a section of one client's rows is sealed under that client's key only after the
keyholder has checked that every row in it is that client's (``CLIENT_BINDING``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from vault.authority.requests import Caller, OrgKeyRow, SealedClientKey
from vault.storage.rows import EngineerRow

CREATE, EXPORT = "backup-create", "backup-keys-export"
ACTIONS = (CREATE, EXPORT)
AUDIT, CLIENT, GLOBAL = "audit", "client", "global"

# A column value as a backup carries it (no float column exists: refused).
Value = int | str | bytes | dt.datetime | None

# The tables of the global section, parents first: the first seven are written before any
# client's rows (their parents), the rest after (a format-1 backup has its audit log here).
# ``server_keys``: the team server's certified signing keys, which format-3 events are signed
# with (a backup made before session 13 has none; its vault had no server).
GLOBAL_TABLES = (
    "vault_info",
    "org_keys",
    "root_keys",
    "engineers",
    "engineer_keys",
    "root_seals",
    "server_keys",
    "audit_head",
    "audit_events",
    "purge_receipts",
)
GLOBAL_PARENTS = 7
AUDIT_TABLE = "audit_events"
# The tables of a client's section, parents first, and how each row names its client: by a
# column holding the client's id, or (``secret_versions``) by the secret it belongs to.
# ``server_client_keys``: the key of the server's layer over the client's data keys, wrapped
# under the server's master key (docs/format.md §4.8), so that a restored layered vault opens.
CLIENT_BINDING = {
    "clients": "id",
    "server_client_keys": "client_id",
    "client_keys": "client_id",
    "client_key_seals": "client_id",
    "client_policies": "client_id",
    "grants": "client_id",
    "secrets": "client_id",
    "secret_versions": "secret_id",
    "checkouts": "client_id",
    "rotations": "client_id",
}
CLIENT_TABLES = tuple(CLIENT_BINDING)
SERIAL_TABLES = ("engineers", "clients", "grants", "secrets", "checkouts", "rotations", "purge_receipts")


@dataclass(frozen=True)
class BackupRequest:
    """A backup or a key export, asked for by an admin."""

    action: str
    caller: Caller
    org_pin: bytes  # the organisation key the admin trusts
    # a key export on the team server's host: the versions of the server master keys it carries
    server_master_versions: tuple[int, ...] = ()


@dataclass(frozen=True)
class ClientBackupKey:
    """A client's backup key as stored (``blob``: under a client-key version; None: none yet)
    and the client keys needed: the version new data goes under first, then the blob's."""

    client_id: int
    blob: bytes | None
    keys: tuple[SealedClientKey, ...]


@dataclass(frozen=True, repr=False)
class AdminKeys:
    """An active admin a key export is sealed to: the row (certified) and the key record a
    passphrase opens (checked by the record's own authenticated encryption)."""

    row: EngineerRow
    key_record: bytes

    def __repr__(self) -> str:
        return f"AdminKeys(admin={self.row.id})"


@dataclass(frozen=True, repr=False)
class BackupContext:
    """What the backup keys are read from and checked against, before anything is written."""

    vault_id: bytes
    org_signing_public: bytes
    org_chain: tuple[OrgKeyRow, ...]
    me: EngineerRow
    root_version: int
    vault_key_seal: bytes | None
    clients: tuple[ClientBackupKey, ...]
    admins: tuple[AdminKeys, ...]  # a key export's recipients; empty for a backup

    def __repr__(self) -> str:
        return f"BackupContext(clients={len(self.clients)})"


@dataclass(frozen=True, repr=False)
class NewBackupKeys:
    """Backup keys the keyholder made for rows that had none: ciphertext only."""

    vault_key_seal: bytes | None
    client_blobs: tuple[tuple[int, bytes], ...]

    def __repr__(self) -> str:
        return f"NewBackupKeys(clients={len(self.client_blobs)})"


@dataclass(frozen=True)
class BackupHeader:
    """The authority's part of a backup's header: the vault, its schema, the backup's event."""

    vault_id: bytes
    schema: str
    audit_head: int


@dataclass(frozen=True, repr=False)
class TableRows:
    """Rows of one table: its name, its columns, each row's values in that order."""

    table: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Value, ...], ...]

    def __repr__(self) -> str:
        return f"TableRows({self.table!r}, rows={len(self.rows)})"


@dataclass(frozen=True, repr=False)
class SectionRows:
    """One section's rows: ``audit`` (a page of the log), ``client`` (``client_id``'s) or ``global``."""

    kind: str
    client_id: int | None
    tables: tuple[TableRows, ...]

    def __repr__(self) -> str:
        return f"SectionRows({self.kind!r}, client={self.client_id})"


@dataclass(frozen=True)
class BackupDone:
    """A committed backup or key export: its event, and how many clients it covers."""

    seq: int
    clients: int


@dataclass(frozen=True, repr=False)
class RestorePlan:
    """A restore's global section (opened and checked) and the last id each serial table used."""

    global_rows: SectionRows
    counters: tuple[tuple[str, int], ...]

    def __repr__(self) -> str:
        return "RestorePlan()"


# -- through the team server (authority/backup_served.py) ------------------------------------------


@dataclass(frozen=True, repr=False)
class BackupCommit:
    """An admin's ``backups.create`` through the server: the request, the backup keys their
    keyholder made for rows that had none (ciphertext only), and the clients it opened keys for."""

    request: BackupRequest
    new_keys: NewBackupKeys
    client_ids: tuple[int, ...]  # the clients of the context the keyholder verified, in order

    @property
    def caller(self) -> Caller:
        """The request's caller (what ``audit verify`` compares with the event's engineer)."""
        return self.request.caller

    @property
    def action(self) -> str:
        return self.request.action

    def __repr__(self) -> str:
        return f"BackupCommit({self.new_keys!r})"


@dataclass(frozen=True)
class BackupRecorded:
    """The committed ``backup-create`` event: its seq and the number of clients of its context."""

    seq: int
    clients: int
