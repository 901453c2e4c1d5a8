"""The reads of a checkout's authority, as prepared statements (compiled once).

Who calls (``CALLER``: the vault's identity, the engineer, the root-key version, on SQLite
the audit head and its event's time, and the engineer's grants for the client, newest
first, with their signers), read first so that a refused caller is refused before anything of the client
or secret is read; then what is acted on (``TARGET``: the client, the secret by its name
tag, its policy, the version and, on SQLite, its open checkouts); and the smaller reads
of the append, the holds' events and a sealed client key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Select, Table, and_, bindparam, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from vault.authority.requests import OrgKeyRow
from vault.storage import models as m
from vault.storage import rows
from vault.storage.prepared import Prepared
from vault.storage.rows import (
    CHECKOUTS,
    CLIENTS,
    ENGINEERS,
    EVENTS,
    GRANTS,
    HEAD,
    INFO,
    POLICIES,
    ROOT_KEYS,
    SECRETS,
    VERSIONS,
    ClientRow,
    EngineerRow,
    GrantRow,
    HoldRow,
    PolicyRow,
    SecretRow,
    VersionRow,
)

ACTIVE = "active"
# Session.info: the vault id the unit's caller read returned (with the organisation key, in one
# statement), so that the unit's later steps (the organisation key's check, a format-3 append)
# need not read it again. Only ``note_vault_id`` sets it, from a row read in that same unit.
_UNIT_VAULT_ID = "credvault.unit.vault_id"


def _table(model: type[m.Base]) -> Table:
    return cast(Table, model.__table__)


def _cols(table: Any, row: type[tuple[object, ...]]) -> list[Any]:
    return [table.c[name] for name in row._fields]  # type: ignore[attr-defined]


_GRANTER = ENGINEERS.alias("granter")
_HEAD_EVENT = EVENTS.alias("head_event")
_ROOT_VERSION = (
    select(func.max(ROOT_KEYS.c.version)).where(ROOT_KEYS.c.state == ACTIVE).scalar_subquery().label("root_version")
)
_SERVER_KEY = select(_table(m.ServerKey).c.version).limit(1).scalar_subquery().label("server_key")
ENGINEER_WIDTH = len(EngineerRow._fields)
GRANT_WIDTH = len(GrantRow._fields)


def caller_query(sqlite: bool, head_time: bool = False) -> Select[Any]:
    """Who calls: the vault's identity, the engineer, the root-key version, (SQLite) the audit
    head, and the engineer's grants for the client, newest first, each with its signer. With
    ``head_time`` (the checkout's own read, which appends next) also the head event's time:
    no other caller check reads an audit event before it has authorised the caller."""
    joined = INFO.join(ENGINEERS, ENGINEERS.c.id == bindparam("me"))
    columns = [INFO.c.vault_id, INFO.c.org_signing_public, _ROOT_VERSION, *_cols(ENGINEERS, EngineerRow)]
    if sqlite:
        joined = joined.outerjoin(HEAD, HEAD.c.id == 1)  # a vault older than its chain has no head yet
        columns += [HEAD.c.seq, HEAD.c.hash]
        if head_time:
            joined = joined.outerjoin(_HEAD_EVENT, _HEAD_EVENT.c.seq == HEAD.c.seq)  # the next is not earlier
            columns.append(_HEAD_EVENT.c.at_us)
    if head_time:  # a vault with a server key takes no format-2 checkout event (``CallerRead.server_keyed``)
        columns.append(_SERVER_KEY)
    mine = and_(GRANTS.c.engineer_id == bindparam("me"), GRANTS.c.client_id == bindparam("client"))
    joined = joined.outerjoin(GRANTS, mine).outerjoin(_GRANTER, _GRANTER.c.id == GRANTS.c.granted_by)
    columns += [*_cols(GRANTS, GrantRow), *_cols(_GRANTER, EngineerRow)]
    query: Select[Any] = select(*columns).select_from(joined).where(INFO.c.id == 1)
    return query.order_by(*rows.GRANT_ORDER)


def target_query(by_slug_tag: bool, sqlite: bool) -> Select[Any]:
    """What is acted on: the client, the secret by its name tag, its policy, the version asked
    (or the current one) and, on SQLite (writers already serialised), its open checkouts."""
    wanted = func.coalesce(bindparam("version", type_=m.SecretVersion.version.type), SECRETS.c.current_version)
    joined = (
        CLIENTS.join(SECRETS, and_(SECRETS.c.client_id == CLIENTS.c.id, SECRETS.c.name_tag == bindparam("tag")))
        .outerjoin(POLICIES, POLICIES.c.client_id == CLIENTS.c.id)
        .outerjoin(VERSIONS, and_(VERSIONS.c.secret_id == SECRETS.c.id, VERSIONS.c.version == wanted))
    )
    columns = [*_cols(CLIENTS, ClientRow), *_cols(SECRETS, SecretRow), *_cols(POLICIES, PolicyRow)]
    columns += _cols(VERSIONS, VersionRow)
    if sqlite:
        open_holds = and_(
            CHECKOUTS.c.secret_id == SECRETS.c.id,
            CHECKOUTS.c.released_at.is_(None),
            CHECKOUTS.c.expires_at > bindparam("now"),
        )
        joined = joined.outerjoin(CHECKOUTS, open_holds)
        columns += _cols(CHECKOUTS, HoldRow)
    client = CLIENTS.c.slug_tag == bindparam("slug_tag") if by_slug_tag else CLIENTS.c.id == bindparam("client")
    query: Select[Any] = select(*columns).select_from(joined).where(client)
    return query


CALLER = {sqlite: Prepared(caller_query(sqlite)) for sqlite in (True, False)}
CHECKOUT_CALLER = {sqlite: Prepared(caller_query(sqlite, head_time=True)) for sqlite in (True, False)}
TARGET = {(tag, sqlite): Prepared(target_query(tag, sqlite)) for tag in (True, False) for sqlite in (True, False)}
# PostgreSQL's append: the head locked, then (a statement of its own: one that waited for the lock
# keeps the joined rows it read before waiting; ``journal.lock_head``) its event's time and the
# engineer's row as committed when the lock was granted.
HEAD_LOCK = Prepared(select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == 1).with_for_update())
HEAD_TIME_AND_ENGINEER = Prepared(
    select(
        select(EVENTS.c.at_us).where(EVENTS.c.seq == bindparam("seq")).scalar_subquery(),
        select(ENGINEERS.c.status).where(ENGINEERS.c.id == bindparam("me")).scalar_subquery(),
        select(ENGINEERS.c.key_generation).where(ENGINEERS.c.id == bindparam("me")).scalar_subquery(),
    )
)
_ORG = _table(m.OrgKey)
ORG_KEYS = Prepared(select(_ORG.c.version, _ORG.c.public, _ORG.c.signed_at, _ORG.c.signature).order_by(_ORG.c.version))
EVENT = Prepared(select(*EVENTS.c).where(EVENTS.c.seq == bindparam("seq")))
# The event of an engineer's request, by its id (a retry; the unique index of revision 0016).
ANSWERED = Prepared(
    select(EVENTS.c.seq, EVENTS.c.request_digest, EVENTS.c.details_json).where(
        EVENTS.c.engineer_id == bindparam("me"),
        EVENTS.c.request_id == bindparam("request_id"),
        EVENTS.c.action == bindparam("action"),
    )
)
NAME = Prepared(select(ENGINEERS.c.name).where(ENGINEERS.c.id == bindparam("id")))
_KEYS, _SEALS = (_table(t) for t in (m.ClientKey, m.ClientKeySeal))
SEALED_KEY = Prepared(
    select(
        _KEYS.c.client_id,
        _KEYS.c.version,
        _KEYS.c.fingerprint,
        _KEYS.c.signed_at,
        _KEYS.c.signed_by,
        _KEYS.c.signature,
        _KEYS.c.state,
        _SEALS.c.blob,
        *_cols(ENGINEERS, EngineerRow),
    )
    .select_from(
        _KEYS.outerjoin(
            _SEALS,
            and_(
                _SEALS.c.client_id == _KEYS.c.client_id,
                _SEALS.c.version == _KEYS.c.version,
                _SEALS.c.recipient_kind == bindparam("kind"),
                _SEALS.c.recipient_id == bindparam("recipient"),
            ),
        ).outerjoin(ENGINEERS, ENGINEERS.c.id == _KEYS.c.signed_by)
    )
    .where(_KEYS.c.client_id == bindparam("client"), _KEYS.c.version == bindparam("version"))
)


def note_vault_id(s: Session, read: CallerRead) -> None:
    """Keep the vault id of ``read`` (a caller read of this unit ``s``) for the unit's later steps."""
    s.info[_UNIT_VAULT_ID] = read.vault_id


def unit_vault_id(s: Session) -> bytes | None:
    """The vault id this unit's caller read returned (``note_vault_id``), or None if none was kept."""
    found = s.info.get(_UNIT_VAULT_ID)
    return bytes(found) if found is not None else None


def org_chain_rows(conn: Connection, pinned: bytes, current: bytes) -> tuple[OrgKeyRow, ...]:
    """The organisation keys from the one the keyholder pinned to the current one (none when
    they are the same, or when the pinned one is unknown: the keyholder refuses then)."""
    if pinned == current:
        return ()
    keys = [OrgKeyRow(*r) for r in ORG_KEYS.all(conn, {})]
    start = next((i for i, key in enumerate(keys) if key.public == pinned), None)
    return () if start is None else tuple(keys[start:])


class CallerRead:
    """The rows of ``CALLER`` split: identity, engineer, head (SQLite), grants with signers."""

    def __init__(self, found: Sequence[Sequence[Any]], sqlite: bool, head_time: bool = False) -> None:
        first = found[0]
        self.vault_id: bytes = first[0]
        self.org_signing_public: bytes = first[1]
        self.root_version: int | None = first[2]
        a = 3 + ENGINEER_WIDTH
        self.me = EngineerRow._make(first[3:a])
        # None on PostgreSQL (the head is locked and read last) and where no head row exists yet
        self.head: tuple[int, bytes] | None = (first[a], first[a + 1]) if sqlite and first[a] is not None else None
        timed = sqlite and head_time
        self.head_at: int | None = first[a + 2] if timed and self.head is not None else None  # its event's at_us
        e = a + ((3 if head_time else 2) if sqlite else 0)
        # (the checkout's own read) whether the vault has a certified server key: the team server's
        self.server_keyed: bool = head_time and first[e] is not None
        e += 1 if head_time else 0
        self.grants: list[GrantRow] = []
        self.signers: list[EngineerRow | None] = []
        for r in found:
            if r[e] is None or (self.grants and self.grants[-1].id == r[e]):
                continue
            self.grants.append(GrantRow._make(r[e : e + GRANT_WIDTH]))
            signer = r[e + GRANT_WIDTH : e + GRANT_WIDTH + ENGINEER_WIDTH]
            self.signers.append(None if signer[0] is None else EngineerRow._make(signer))
