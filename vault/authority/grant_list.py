"""The listing of grants (``grants.list``), where the database is: one read unit, no event.

In this order: the request's fields, before any SQL; who calls (an active, certified
engineer of the request's key generation), before any grant row is read; the engineer
named, by name; then, set-based, the grant rows the caller may see (an admin: every row;
an engineer: their own, whatever else the request names), narrowed to the engineer and
the client named, in one statement; the rows of the engineers they name (grantees and
signers) in one statement; each client's slug blob; the client keys the slugs are
encrypted under that the keyholder does not hold (signed record and the caller's copy, a
statement per batch of clients). Nothing is decided here: which row of a ledger counts,
whether it is signed, expired or backed by the audit log, is the keyholder's to say.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy import select

from vault import validation
from vault.authority.clients import (
    BATCH,
    MAX_KNOWN,
    ClientChecks,
    authorise,
    checked_action,
    checked_caller,
    field_key_versions,
    org_chain,
    recipient_of,
    sealed_keys,
)
from vault.authority.grant_requests import GRANT_LIST, NO_ENGINEER, GrantListRequest, GrantListRows, ListedGrant
from vault.errors import InvalidInput, NotFound
from vault.storage import models as m
from vault.storage.engine import Store
from vault.storage.rows import GRANT_ORDER, ROLE_ADMIN, EngineerRow, GrantRow


def _known(value: object) -> set[tuple[int, int]]:
    if not isinstance(value, tuple) or len(value) > MAX_KNOWN:
        raise InvalidInput("the request's known key versions are not a short tuple")
    for pair in value:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise InvalidInput("a known key version is not a (client, version) pair")
        validation.number("client id", pair[0], 1)
        validation.number("client-key version", pair[1], 1)
    return set(value)


class GrantListAuthority:
    """``grants.list``, given a request."""

    def __init__(self, store: Store, checks: ClientChecks, clock: Callable[[], dt.datetime]) -> None:
        self.store, self.checks, self.clock = store, checks, clock

    def list(self, request: GrantListRequest) -> GrantListRows:
        if not isinstance(request, GrantListRequest):
            raise InvalidInput("not a grant list request")
        checked_action(request.action, GRANT_LIST)
        caller = checked_caller(request.caller, request.org_pin)
        name = request.engineer
        if name is not None:
            if not isinstance(name, str):
                raise InvalidInput("the request's engineer is not a name")
            validation.engineer_name(name)
        if request.client_id is not None:
            validation.number("client id", request.client_id, 1)
        known = _known(request.known_key_versions)
        with self.store.read() as s:
            read = authorise(s, self.checks, caller)
            query = select(m.Grant)
            if name is not None:
                found = s.scalars(select(m.Engineer.id).where(m.Engineer.name == name)).first()
                if found is None:
                    raise NotFound(NO_ENGINEER)
                query = query.where(m.Grant.engineer_id == found)
            if read.me.role != ROLE_ADMIN:
                query = query.where(m.Grant.engineer_id == read.me.id)
            if request.client_id is not None:
                query = query.where(m.Grant.client_id == request.client_id)
            order = (m.Grant.engineer_id, m.Grant.client_id, *GRANT_ORDER)
            grants = tuple(
                ListedGrant(GrantRow(*(getattr(g, f) for f in GrantRow._fields)), g.created_at)
                for g in s.scalars(query.order_by(*order))
            )
            people = {g.row.engineer_id for g in grants} | {g.row.granted_by for g in grants}
            engineers: list[EngineerRow] = []
            columns = [getattr(m.Engineer, f) for f in EngineerRow._fields]
            slugs: list[tuple[int, bytes]] = []
            clients = sorted({g.row.client_id for g in grants})
            ids = sorted(people)
            for start in range(0, len(ids), BATCH):
                found_rows = s.execute(select(*columns).where(m.Engineer.id.in_(ids[start : start + BATCH])))
                engineers += [EngineerRow._make(r) for r in found_rows]
            for start in range(0, len(clients), BATCH):
                batch = clients[start : start + BATCH]
                query_slugs = select(m.Client.id, m.Client.slug_blob).where(m.Client.id.in_(batch))
                slugs += [(int(i), bytes(blob)) for i, blob in s.execute(query_slugs.order_by(m.Client.id))]
            wanted = {(cid, v) for cid, blob in slugs for v in field_key_versions(blob, blob)} - known
            kind, recipient = recipient_of(read)
            return GrantListRows(
                vault_id=read.vault_id,
                org_signing_public=read.org_signing_public,
                org_chain=org_chain(s, request.org_pin, read.org_signing_public),
                me=read.me,
                grants=grants,
                engineers=tuple(engineers),
                slugs=tuple(slugs),
                sealed_keys=sealed_keys(s, wanted, kind, recipient) if wanted else (),
            )
