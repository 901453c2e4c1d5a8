"""Plain rows for the checkout path: the columns a check reads, as tuples, not ORM objects.

The checks in ``keyholder/trust.py`` read records through the protocols below, so verifying a
certificate or a grant is the same code whether the record came as an ORM object or
as a row of one of the Core queries here. The statements are built once, as
``Prepared`` statements (vault/storage/prepared.py: compiled once, run on the driver's
cursor on SQLite), and the read fetches in one statement what the ORM would fetch in
several: the vault's identity with the acting engineer, a client with the secret, its
policy and the version to reveal, the open checkouts (SQLite) and an engineer's grants
for the client (issue 7, workload W1). The ``KeyCache`` holds a Vault object's
unsealed client keys and what was opened with them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, NamedTuple, Protocol, cast

from sqlalchemy import FromClause, Table, bindparam, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from vault.storage import models as m
from vault.storage.prepared import Prepared


def connection(s: Session) -> Connection:
    """The Core connection of a transaction: the one ``Store.unit`` keeps, else the Session's."""
    conn = s.info.get("connection")
    return conn if isinstance(conn, Connection) else s.connection()


def _table(model: type[m.Base]) -> Table:
    return cast(Table, model.__table__)


INFO, ENGINEERS, ROOT_KEYS, HEAD = (_table(t) for t in (m.VaultInfo, m.Engineer, m.RootKey, m.AuditHead))
CLIENTS, SECRETS, VERSIONS, POLICIES = (_table(t) for t in (m.Client, m.Secret, m.SecretVersion, m.ClientPolicy))
GRANTS, CHECKOUTS, EVENTS = (_table(t) for t in (m.Grant, m.Checkout, m.AuditEvent))


# -- what the checks read ------------------------------------------------------------------


class EngineerRecord(Protocol):
    """The columns of an engineer that its certificate covers (an ORM row or a tuple)."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def key_generation(self) -> int: ...
    @property
    def sealing_public(self) -> bytes | None: ...
    @property
    def signing_public(self) -> bytes | None: ...
    @property
    def certified_at(self) -> int | None: ...
    @property
    def certificate(self) -> bytes | None: ...


class GrantRecord(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def engineer_id(self) -> int: ...
    @property
    def client_id(self) -> int: ...
    @property
    def granted_by(self) -> int: ...
    @property
    def signed_at(self) -> int: ...
    @property
    def until(self) -> int | None: ...
    @property
    def signature(self) -> bytes | None: ...
    @property
    def seq(self) -> int | None: ...
    @property
    def event_seq(self) -> int | None: ...
    @property
    def revoked_at(self) -> dt.datetime | None: ...
    @property
    def revoked_by(self) -> int | None: ...
    @property
    def revocation(self) -> bytes | None: ...
    @property
    def request_id(self) -> bytes | None: ...


class HasId(Protocol):
    @property
    def id(self) -> int: ...


class SecretRecord(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def current_version(self) -> int: ...


class VersionRecord(Protocol):
    @property
    def version(self) -> int: ...
    @property
    def key_version(self) -> int: ...
    @property
    def wrapped_dek(self) -> bytes: ...
    @property
    def password_blob(self) -> bytes: ...
    @property
    def metadata_blob(self) -> bytes: ...


class EngineerRow(NamedTuple):
    id: int
    name: str
    role: str
    status: str
    key_generation: int
    sealing_public: bytes | None
    signing_public: bytes | None
    certified_at: int | None
    certificate: bytes | None


class GrantRow(NamedTuple):
    id: int
    engineer_id: int
    client_id: int
    granted_by: int
    signed_at: int
    until: int | None
    signature: bytes | None
    seq: int | None
    event_seq: int | None
    revoked_at: dt.datetime | None
    revoked_by: int | None
    revocation: bytes | None
    request_id: bytes | None = None  # a grant through the team server: what its signature binds


class ClientRow(NamedTuple):
    id: int
    slug_blob: bytes  # opened to check that the slug tag (or an engineer's cached id) found the slug asked for
    lookup_key_blob: bytes
    audit_keys_blob: bytes | None


class SecretRow(NamedTuple):
    id: int
    name_tag: bytes
    current_version: int
    must_change: bool


class PolicyRow(NamedTuple):
    """A client's stored policy, unverified (``Checkouts`` verifies it: policies.py)."""

    reason_required: bool
    exclusive: bool
    rotate_after_checkout: bool
    checkout_minutes: int
    stale_days: int | None
    signed_by: int | None
    signed_at: int | None
    signature: bytes | None


class HoldRow(NamedTuple):
    """An open checkout of a secret, as stored: honoured only once its ``event_seq``
    event verifies (``Holds.genuine_holds``)."""

    id: int
    engineer_id: int
    exclusive: bool
    expires_at: dt.datetime
    event_seq: int


class VersionRow(NamedTuple):
    version: int
    key_version: int
    wrapped_dek: bytes
    password_blob: bytes
    metadata_blob: bytes


def _columns(table: FromClause, row: type[tuple[object, ...]]) -> list[object]:
    return [table.c[name] for name in row._fields]  # type: ignore[attr-defined]


# -- the caches of a Vault object ------------------------------------------------------------


class KeyCache(dict[tuple[int, int], bytes]):
    """Unsealed client keys by (client id, version), and the client fields opened with them.

    A client field (slug, name, lookup key, audit-key ring) is remembered keyed by the
    exact blob it was decrypted from, next to the key that decrypted it, and forgotten
    with that key (lock, unlock, rotation, purge). ``tags`` remembers which secret-name
    tag a (slug, name) had; it is only a guess, checked against the row it finds.
    ``grants`` is the engineer's client index (``listing.granted_client_ids``): by client
    id, the exact grant and signer rows last verified and the keys they were verified
    under; a row that differs in any column is verified again.
    """

    GRANTS_LIMIT = 100_000  # a bound against churn, far above any engineer's grants

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[tuple[int, int], dict[tuple[bytes, str], bytes]] = {}
        self.tags: dict[tuple[str, str], bytes] = {}
        self.grants: dict[int, tuple[Any, ...]] = {}

    def __setitem__(self, slot: tuple[int, int], key: bytes) -> None:
        if self.get(slot) is not key:
            self.fields.pop(slot, None)
        super().__setitem__(slot, key)

    def __delitem__(self, slot: tuple[int, int]) -> None:
        self.fields.pop(slot, None)
        super().__delitem__(slot)

    def pop(self, slot: tuple[int, int], *default: bytes | None) -> bytes | None:  # type: ignore[override]
        self.fields.pop(slot, None)
        return super().pop(slot, *default)

    def clear(self) -> None:
        self.fields.clear()
        self.tags.clear()
        self.grants.clear()
        super().clear()


# -- the queries of a checkout ----------------------------------------------------------------

# Newest first: by the signed ledger position, rows from before it (NULL) after every other.
GRANT_ORDER = (func.coalesce(GRANTS.c.seq, 0).desc(), GRANTS.c.id.desc())


LOCK_SECRET = Prepared(select(SECRETS.c.id).where(SECRETS.c.id == bindparam("secret")).with_for_update())
HOLDS = Prepared(
    select(*_columns(CHECKOUTS, HoldRow)).where(  # type: ignore[call-overload]
        CHECKOUTS.c.secret_id == bindparam("secret"),
        CHECKOUTS.c.released_at.is_(None),
        CHECKOUTS.c.expires_at > bindparam("now"),
    )
)
# Releasing checkouts, one row per parameter set (usually one).
RELEASE = Prepared(
    update(CHECKOUTS)
    .where(CHECKOUTS.c.id == bindparam("checkout"))
    .values(released_at=bindparam("at"), released_by=bindparam("by"))
)
REPLACE = Prepared(update(CHECKOUTS).where(CHECKOUTS.c.id == bindparam("checkout")).values(released_at=bindparam("at")))
CHECKOUT_COLUMNS = ("secret_id", "client_id", "engineer_id", "exclusive", "event_seq", "started_at", "expires_at")
ADD_CHECKOUT = Prepared(insert(CHECKOUTS), CHECKOUT_COLUMNS)
_TOUCH = update(SECRETS).where(SECRETS.c.id == bindparam("secret")).values(last_used_at=bindparam("at"))
TOUCH_SECRET, TOUCH_AND_FLAG_SECRET = Prepared(_TOUCH), Prepared(_TOUCH.values(must_change=True))

# The audit chain's head (locked on PostgreSQL) and the append itself.
HEAD_FOR_UPDATE = Prepared(select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == 1).with_for_update())
EVENT_COLUMNS = tuple(c.name for c in EVENTS.columns)
# The columns only a format-3 event sets (docs/format.md §8.2); the in-process fast path appends
# format 2 and leaves them NULL.
FORMAT3_COLUMNS = ("request_id", "request_digest", "request_sig", "request_body", "server_key_version")
ADD_EVENT = Prepared(insert(EVENTS), tuple(c for c in EVENT_COLUMNS if c not in FORMAT3_COLUMNS))
MOVE_HEAD = Prepared(update(HEAD).where(HEAD.c.id == 1).values(seq=bindparam("new_seq"), hash=bindparam("new_hash")))


# -- the stored vocabulary of roles and statuses (re-exported by vault/service/core.py) -----------------

ROLE_ADMIN = "admin"
ROLE_ENGINEER = "engineer"
ROLE_SERVICE = "service"  # a script's identity (RMM, CI): never an admin (vault/service/servicekeys.py)
ACTIVE = "active"
# NIST SP 800-38D bounds random 96-bit nonces to 2^32 encryptions per key; stop well short.
ENCRYPTION_LIMIT = 2**32 - 2**24
ENCRYPTION_WARNING = 2**31  # `status` warns of a client key past this many encryptions


def is_revoked(grant: GrantRecord) -> bool:
    """Whether a grant row carries any mark of revocation. A revocation is never undone, so
    any mark counts, signed or not (a row revoked before revision 0007 has no signature);
    clearing every mark is what the ledger's ``seq`` and the audit log catch."""
    return grant.revoked_at is not None or grant.revocation is not None or grant.revoked_by is not None
