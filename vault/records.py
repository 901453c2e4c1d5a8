"""What the public API returns: plain, immutable values with a JSON form.

None of these hold a key. The only values that carry a secret are returned by
``Vault.reveal`` as a plain ``str``, and ``InitResult.shares`` (printed once).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, fields
from typing import Any


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(type(value), "__dataclass_fields__"):  # a record inside a record
        return _fields_json(value)
    return value


def _fields_json(record: Any) -> dict[str, Any]:
    """The record's fields, in order, each as ``_jsonable`` makes it: what ``asdict`` and
    then ``_jsonable`` made, without asdict's deep copy of every value (the agent's
    answer to a listing of 10,000 secrets spent most of its time there)."""
    return {f.name: _jsonable(getattr(record, f.name)) for f in fields(record)}


class _Record:
    def to_json(self) -> dict[str, Any]:
        return _fields_json(self)


@dataclass(frozen=True)
class EngineerInfo(_Record):
    name: str
    role: str
    status: str
    fingerprint: str | None
    key_generation: int
    created_at: dt.datetime


@dataclass(frozen=True)
class SessionInfo(_Record):
    engineer: str
    role: str
    expires_at: dt.datetime
    vault_id: str


@dataclass(frozen=True)
class ClientInfo(_Record):
    slug: str
    name: str
    key_version: int
    secrets: int
    created_at: dt.datetime


@dataclass(frozen=True)
class GrantInfo(_Record):
    engineer: str
    client: str
    granted_by: str
    created_at: dt.datetime
    until: dt.datetime | None
    state: str  # active, expired, revoked


@dataclass(frozen=True)
class SecretInfo(_Record):
    """A secret's metadata: never its password."""

    client: str
    name: str
    kind: str
    version: int
    username: str | None = None
    url: str | None = None
    host: str | None = None
    note: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    sensitive_fields: tuple[str, ...] = ()  # names only: their values are revealed by checkout

    @property
    def ref(self) -> str:
        return f"{self.client}/{self.name}"


@dataclass(frozen=True)
class VersionInfo(_Record):
    version: int
    created_at: dt.datetime
    created_by: str
    key_version: int
    current: bool


@dataclass(frozen=True, repr=False)
class InitResult:
    """What ``init`` made. ``shares`` are secret: print them once, store none."""

    vault_id: str
    admin: str
    admin_fingerprint: str
    org_fingerprint: str
    db_url: str
    shares: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"InitResult(vault_id={self.vault_id!r}, admin={self.admin!r}, shares=<{len(self.shares)} redacted>)"


@dataclass(frozen=True, repr=False)
class RootRotation:
    """What a root rotation did. ``shares`` (k of them rebuild the new root bundle) are
    secret: print them once, store none. ``admins`` are the admins the new bundle is sealed
    to; ``refused`` names records that did not verify and were left out; ``warnings`` say
    what an admin should do next."""

    root_version: int
    org_version: int
    clients: int
    admins: tuple[str, ...]
    shares: tuple[str, ...] = ()
    threshold: int | None = None
    refused: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return (
            f"RootRotation(root_version={self.root_version}, org_version={self.org_version}, "
            f"clients={self.clients}, admins={self.admins!r}, shares=<{len(self.shares)} redacted>)"
        )


@dataclass(frozen=True)
class AuditEntry(_Record):
    """One audit event as a viewer sees it; ``details`` is None where they cannot read it."""

    seq: int
    at: dt.datetime
    engineer: str | None
    action: str
    client: str | None
    client_id: int | None
    secret_id: int | None
    details: dict[str, Any] | None
    readable: bool
    secret: str | None = None


@dataclass(frozen=True)
class AuditVerification(_Record):
    ok: bool
    checked: int
    first_seq: int
    head_seq: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: str | None = None


@dataclass(frozen=True)
class AccessRecord(_Record):
    """One reveal by an engineer, for the access and at-risk reports."""

    seq: int
    at: dt.datetime
    client: str
    secret: str
    field: str
    version: int
    reason: str | None
    changed_since: bool


@dataclass(frozen=True)
class CheckoutInfo(_Record):
    client: str
    secret: str
    engineer: str
    exclusive: bool
    started_at: dt.datetime
    expires_at: dt.datetime


@dataclass(frozen=True)
class PolicyInfo(_Record):
    client: str
    reason_required: bool
    exclusive: bool
    rotate_after_checkout: bool
    checkout_minutes: int
    stale_days: int | None = None
    signed: bool = True  # False: the stored policy does not verify; the strict one applies


@dataclass(frozen=True, repr=False)
class Revealed:
    """A revealed value. ``repr`` and ``str`` never show it; read ``.value``."""

    ref: str
    field: str
    version: int
    value: str
    expires_at: dt.datetime | None = None
    must_change: bool = False

    def __repr__(self) -> str:
        return f"Revealed(ref={self.ref!r}, field={self.field!r}, version={self.version}, value=<redacted>)"

    __str__ = __repr__


@dataclass(frozen=True)
class RotationInfo(_Record):
    client: str
    from_version: int
    to_version: int
    state: str
    done: int
    total: int
    started_at: dt.datetime
    finished_at: dt.datetime | None


@dataclass(frozen=True)
class StatusReport(_Record):
    """What `credvault status` warns about."""

    warnings: list[str]
    clients: int
    secrets: int
    engineers: int
    open_rotations: int
    must_change: list[str]
    schema_problems: list[str] = field(default_factory=list)  # objects credvault did not create (issue 12)


@dataclass(frozen=True)
class PurgePreview(_Record):
    client: str
    secrets: int
    versions: int
    grants: int
    open_checkouts: int
    key_versions: int
    audit_events: int


@dataclass(frozen=True)
class ReceiptInfo(_Record):
    """A purge receipt: readable without any client key."""

    id: int
    kind: str
    request: str
    client_id: int
    secret_ids: list[int]
    counts: dict[str, Any]
    fingerprints: list[str]
    admin: str
    purged_at: dt.datetime
    event_seq: int
    scrubbed: str | None = None  # with ``--vacuum``: what the database's host ran once the purge committed


@dataclass(frozen=True)
class ReceiptCheck(_Record):
    id: int
    ok: bool
    problems: list[str]


@dataclass(frozen=True)
class SubjectMatch(_Record):
    """One place a person appears: a client's name or a field of a secret version."""

    client: str
    client_id: int
    secret: str | None
    secret_id: int | None
    version: int | None
    field: str
    value: str


@dataclass(frozen=True)
class SearchMatch(_Record):
    """A secret ``secret search`` found: where it is and which of its non-sensitive fields
    held the query (``name``, ``username``, ``host``, ``url``, ``note``, ``field KEY``)."""

    client: str
    name: str
    kind: str
    version: int
    matched: tuple[str, ...]

    @property
    def ref(self) -> str:
        return f"{self.client}/{self.name}"


@dataclass(frozen=True)
class StaleSecret(_Record):
    client: str
    secret: str
    last_used: dt.datetime
    days_unused: int
    stale_days: int


@dataclass(frozen=True)
class BackupInfo(_Record):
    path: str
    backup_id: str
    clients: int
    secrets: int
    audit_head: int
    skipped_clients: int = 0


@dataclass(frozen=True)
class CarriedGrant(_Record):
    """A grant that confirmation will re-sign and re-seal to the engineer's new keys."""

    client: str
    until: dt.datetime | None


@dataclass(frozen=True)
class DroppedGrant(_Record):
    """A grant row confirmation will not carry over, and why (``client`` None if unreadable)."""

    grant_id: int
    client: str | None
    reason: str


@dataclass(frozen=True)
class PendingConfirmation(_Record):
    """What ``confirm_engineer`` will certify: shown to the admin before they confirm."""

    name: str
    role: str
    fingerprint: str
    key_generation: int
    invited_by: str
    carried: list[CarriedGrant]
    dropped: list[DroppedGrant]
