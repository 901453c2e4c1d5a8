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
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, cast

from sqlalchemy import FromClause, Integer, Select, Table, and_, bindparam, func, insert, select, update
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


class RowAppend(NamedTuple):
    """What ``Journal.append`` needs to write a hot path's event with Core statements."""

    vault_id: bytes
    head: tuple[int, bytes] | None  # (seq, hash) read under the write lock, or None: read it then
    client: HasId
    audit_keys_blob: bytes


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

_ENGINEER = _columns(ENGINEERS, EngineerRow)
_GRANTER = ENGINEERS.alias("granter")
_ROOT_VERSION = (
    select(func.max(ROOT_KEYS.c.version)).where(ROOT_KEYS.c.state == "active").scalar_subquery().label("root_version")
)

# Every grant of an engineer for a client (revoked ones too: the newest signed entry of the
# ledger decides, docs/format.md §5), newest first, each with its signer's row.
_MY_GRANTS = and_(GRANTS.c.engineer_id == bindparam("me"), GRANTS.c.client_id == CLIENTS.c.id)
# Newest first: by the signed ledger position, rows from before it (NULL) after every other.
GRANT_ORDER = (func.coalesce(GRANTS.c.seq, 0).desc(), GRANTS.c.id.desc())


_OPEN_HOLDS = and_(
    CHECKOUTS.c.secret_id == SECRETS.c.id, CHECKOUTS.c.released_at.is_(None), CHECKOUTS.c.expires_at > bindparam("now")
)


def _checkout_query(by_slug_tag: bool, sqlite: bool) -> Select[Any]:
    """Everything a checkout reads, in one statement: the vault's identity, the acting
    engineer and the current root-key version; a client (by slug tag or id) with one of its
    secrets (by name tag), its policy and one version. On SQLite, whose BEGIN IMMEDIATE
    already serialises writers, also the audit head and one row per open checkout of the
    secret (PostgreSQL reads those after locking the rows). For an engineer (a client by
    id), also one row per grant of theirs for the client, newest first, with its
    signer's row. Rows are the product of holds and grants: ``CheckoutRead`` splits them."""
    wanted = func.coalesce(bindparam("version", type_=Integer), SECRETS.c.current_version)
    client = CLIENTS.c.slug_tag == bindparam("slug_tag") if by_slug_tag else CLIENTS.c.id == bindparam("client")
    joined = INFO.join(ENGINEERS, ENGINEERS.c.id == bindparam("me"))
    columns = [INFO.c.vault_id, INFO.c.org_signing_public, _ROOT_VERSION, *_ENGINEER]
    if sqlite:
        joined = joined.join(HEAD, HEAD.c.id == 1)
        columns += [HEAD.c.seq, HEAD.c.hash]
    joined = (
        joined.join(CLIENTS, client)
        .join(SECRETS, and_(SECRETS.c.client_id == CLIENTS.c.id, SECRETS.c.name_tag == bindparam("tag")))
        .outerjoin(POLICIES, POLICIES.c.client_id == CLIENTS.c.id)
        .outerjoin(VERSIONS, and_(VERSIONS.c.secret_id == SECRETS.c.id, VERSIONS.c.version == wanted))
    )
    columns += [
        *_columns(CLIENTS, ClientRow),
        *_columns(SECRETS, SecretRow),
        *_columns(POLICIES, PolicyRow),
        *_columns(VERSIONS, VersionRow),
    ]
    if sqlite:
        joined = joined.outerjoin(CHECKOUTS, _OPEN_HOLDS)
        columns += _columns(CHECKOUTS, HoldRow)
    if not by_slug_tag:
        joined = joined.outerjoin(GRANTS, _MY_GRANTS).outerjoin(_GRANTER, _GRANTER.c.id == GRANTS.c.granted_by)
        columns += [*_columns(GRANTS, GrantRow), *_columns(_GRANTER, EngineerRow)]
    query: Select[Any] = select(*columns).select_from(joined).where(INFO.c.id == 1)  # type: ignore[call-overload]
    return query.order_by(*GRANT_ORDER) if not by_slug_tag else query


CHECKOUT_READ = {
    (by_slug_tag, sqlite): Prepared(_checkout_query(by_slug_tag, sqlite))
    for by_slug_tag in (True, False)
    for sqlite in (True, False)
}
ME_WIDTH = 3 + len(EngineerRow._fields)  # then the head (SQLite), then the client, secret, policy, version, hold
TARGET_WIDTHS = tuple(len(r._fields) for r in (ClientRow, SecretRow, PolicyRow, VersionRow))
HOLD_WIDTH = len(HoldRow._fields)


class CheckoutRead:
    """The rows of a ``CHECKOUT_READ`` split into their records (see ``_checkout_query``)."""

    def __init__(self, found: Sequence[Sequence[Any]], sqlite: bool, engineer: bool) -> None:
        first = found[0]
        self.vault_id: bytes = first[0]
        self.org_signing_public: bytes = first[1]
        self.root_version: int | None = first[2]
        self.me = EngineerRow._make(first[3:ME_WIDTH])
        self.head: tuple[int, bytes] | None = (first[ME_WIDTH], first[ME_WIDTH + 1]) if sqlite else None
        a = ME_WIDTH + (2 if sqlite else 0)
        b, c, d, e = (a + sum(TARGET_WIDTHS[: i + 1]) for i in range(4))
        self.client, self.secret = ClientRow._make(first[a:b]), SecretRow._make(first[b:c])
        self.policy = None if first[c] is None else PolicyRow._make(first[c:d])
        self.version = None if first[d] is None else VersionRow._make(first[d:e])
        self.holds: list[HoldRow] | None = None
        if sqlite:
            seen: dict[int, HoldRow] = {}
            for r in found:
                if r[e] is not None and r[e] not in seen:
                    seen[r[e]] = HoldRow._make(r[e : e + HOLD_WIDTH])
            self.holds = list(seen.values())
            e += HOLD_WIDTH
        # An engineer's grants, newest first (the rows are in that order), each with its signer.
        self.grants: list[GrantRow] = []
        self.signers: list[EngineerRow | None] = []
        if engineer:
            n = len(GrantRow._fields)
            for r in found:
                if r[e] is None or (self.grants and self.grants[-1].id == r[e]):
                    continue
                self.grants.append(GrantRow._make(r[e : e + n]))
                self.signers.append(None if r[e + n] is None else EngineerRow._make(r[e + n : e + n + ME_WIDTH - 3]))


# The secret's row lock (PostgreSQL; SQLite's writers are serialised by BEGIN IMMEDIATE)
# and the open checkouts of the secret.
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
ADD_EVENT = Prepared(insert(EVENTS), EVENT_COLUMNS)
MOVE_HEAD = Prepared(update(HEAD).where(HEAD.c.id == 1).values(seq=bindparam("new_seq"), hash=bindparam("new_hash")))
