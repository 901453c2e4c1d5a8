"""The listing of open checkouts, where the database is: read without the write lock.

``CheckoutListAuthority.list`` runs in ``Store.read()`` (on SQLite a deferred transaction,
so a checkout in another connection is not blocked; on PostgreSQL one that locks no row).
The request's fields are checked first (the pin's size, a short tuple of held key
versions: ``InvalidInput`` before any SQL); then the caller (present, certified, active,
of the key generation the request names); then one statement reads every open checkout
the caller may see (an admin: all; an engineer: their own), oldest first, with its client, secret, current version and
holder's name (a checkout whose current-version row is missing is reported as damaged,
``IntegrityError``, as ``secret list`` does, never left out); then the client keys those
rows need that the keyholder does not hold (the version's, and the one the client's slug is
sealed under), with their signed records.
Nothing is written: the listing records no event (as before the split).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import Select, and_, bindparam, select

from vault.authority.checkout_reads import CallerRead
from vault.authority.checkouts import ROLE_ADMIN, CheckoutAuthority
from vault.authority.clients import MAX_KNOWN
from vault.authority.policies_caller import checked_pin
from vault.authority.requests import ListedCheckout, ListRequest, ListResponse, SealedClientKey
from vault.crypto.blobs import blob_key_version
from vault.errors import IntegrityError, InvalidInput
from vault.storage.engine import Store
from vault.storage.prepared import Prepared
from vault.storage.rows import (
    CHECKOUTS,
    CLIENTS,
    ENGINEERS,
    SECRETS,
    VERSIONS,
    ClientRow,
    SecretRow,
    VersionRow,
)

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_WIDTHS = [len(t._fields) for t in (ClientRow, SecretRow, VersionRow)]


def _cols(table: Any, row: type[tuple[object, ...]]) -> list[Any]:
    return [table.c[name] for name in row._fields]  # type: ignore[attr-defined]


def listing_query(own: bool) -> Select[Any]:
    """Open checkouts (unreleased, unexpired), oldest first, each with its client, secret,
    current version and holder; ``own``: only the caller's."""
    joined = (
        CHECKOUTS.join(CLIENTS, CLIENTS.c.id == CHECKOUTS.c.client_id)
        .join(SECRETS, SECRETS.c.id == CHECKOUTS.c.secret_id)
        .outerjoin(  # a missing current version is damage, reported (``_listed``), never passed over
            VERSIONS, and_(VERSIONS.c.secret_id == SECRETS.c.id, VERSIONS.c.version == SECRETS.c.current_version)
        )
        .join(ENGINEERS, ENGINEERS.c.id == CHECKOUTS.c.engineer_id)
    )
    columns = [*_cols(CLIENTS, ClientRow), *_cols(SECRETS, SecretRow), *_cols(VERSIONS, VersionRow)]
    columns += [CHECKOUTS.c.engineer_id, ENGINEERS.c.name, CHECKOUTS.c.exclusive]
    columns += [CHECKOUTS.c.started_at, CHECKOUTS.c.expires_at]
    query: Select[Any] = (
        select(*columns)
        .select_from(joined)
        .where(CHECKOUTS.c.released_at.is_(None), CHECKOUTS.c.expires_at > bindparam("now"))
        .order_by(CHECKOUTS.c.started_at, CHECKOUTS.c.id)
    )
    return query.where(CHECKOUTS.c.engineer_id == bindparam("me")) if own else query


LISTED = {own: Prepared(listing_query(own)) for own in (True, False)}


def exact_us(value: dt.datetime) -> int:
    """Microseconds since the epoch, exactly (no float on the way)."""
    return (value - EPOCH) // dt.timedelta(microseconds=1)


class CheckoutListAuthority:
    """The open checkouts a caller may see, read in one read unit of work."""

    def __init__(self, store: Store, checkouts: CheckoutAuthority, clock: Callable[[], dt.datetime]) -> None:
        self.store, self.checkouts, self.clock = store, checkouts, clock

    def __repr__(self) -> str:
        return "CheckoutListAuthority()"

    def list(self, request: ListRequest) -> ListResponse:
        if not isinstance(request, ListRequest):
            raise InvalidInput("not a checkout listing request")
        checked_pin(request.org_pin)  # fields before any SQL (a request may come over HTTPS)
        if not isinstance(request.known_key_versions, tuple) or len(request.known_key_versions) > MAX_KNOWN:
            raise InvalidInput("the request's known key versions are not a short tuple")
        with self.store.read() as s:
            conn = s.info["connection"]
            sqlite = conn.dialect.name == "sqlite"
            caller = self.checkouts._caller(s, conn, sqlite, request.caller, 0, appends=False)
            me = caller.me
            own = me.role != ROLE_ADMIN
            found = LISTED[own].all(conn, {"now": self.clock(), "me": me.id})
            listed = tuple(self._listed(r) for r in found)
            sealed = self._sealed_keys(conn, caller, listed, set(request.known_key_versions))
            return ListResponse(
                vault_id=caller.vault_id,
                org_signing_public=caller.org_signing_public,
                org_chain=self.checkouts._org_chain(conn, request.org_pin, caller.org_signing_public),
                me=me,
                checkouts=listed,
                sealed_keys=sealed,
            )

    @staticmethod
    def _listed(r: Any) -> ListedCheckout:
        a, b, c = (sum(_WIDTHS[: i + 1]) for i in range(3))
        engineer_id, holder, exclusive, started, expires = r[c : c + 5]
        secret = SecretRow._make(r[a:b])
        if r[b] is None:  # the current version's row is gone: a writer of the database hid it
            raise IntegrityError(
                f"secret #{secret.id} of client #{r[0]} is damaged: its current version "
                f"{secret.current_version} is missing (checked out by {holder})",
                hint="the database was changed outside credvault; restore it from a backup",
            )
        return ListedCheckout(
            client=ClientRow._make(r[:a]),
            secret=secret,
            version=VersionRow._make(r[b:c]),
            engineer_id=engineer_id,
            holder=holder,
            exclusive=bool(exclusive),
            started_us=exact_us(started),
            expires_us=exact_us(expires),
        )

    def _sealed_keys(
        self, conn: Any, caller: CallerRead, listed: tuple[ListedCheckout, ...], known: set[tuple[int, int]]
    ) -> tuple[SealedClientKey, ...]:
        """The client keys the rows need (each version's, and the one each client's slug is
        sealed under) that the keyholder does not hold: signed record and the caller's copy."""
        needed: dict[tuple[int, int], None] = {}
        for item in listed:
            for version in (item.version.key_version, blob_key_version(item.client.slug_blob)):
                if (item.client.id, version) not in known:
                    needed[(item.client.id, version)] = None
        out = []
        for client_id, version in needed:
            sealed = self.checkouts._sealed_key(conn, caller, client_id, version)
            if sealed is not None:
                out.append(sealed)
        return tuple(out)
