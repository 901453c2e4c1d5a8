"""``secret list``, where the database is: authorise, then the secrets in keyset pages, ciphertext only.

One read unit (``Store.read()``: no write lock on SQLite, no row lock on PostgreSQL) per
listing, in this order: who calls (the caller's own rows, checked as for every secrets
request: ``secrets.authorised_caller``); what they may list — an admin, every client or
the ones named; an engineer, only clients they hold a live grant for, read here from their
grant ledgers and each head verified by the authority's own check (``first_valid_grant``),
never taken from the keyholder's memory: a client named without one is refused before any
secret is read, while a listing of their clients drops the ids whose grant ended since the
keyholder read its scope; then the secrets of those clients with their current version, one keyset
page per statement (``repositories/secrets.current_pages``), and per page one statement
for the client rows first met on it and one for the client keys it needs that the
keyholder did not name as held (signed records, their signers and the caller's sealed
copies). A secret whose current version row is missing is listed with no version, never
passed over: the keyholder reports it as damaged.

The listing's event (``secret-list``) is appended by the service after the read, in a
short write of its own (``service/listing.py``), and what was read is handed back only once
it is committed. What leaves is ids, ciphertext, public records and signatures: the
keyholder (``keyholder/secret_list.py``) verifies each page and opens the slugs and names.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Sequence
from typing import Protocol, cast

from sqlalchemy import Table, and_, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from vault import validation
from vault.authority.checkout_reads import ENGINEER_WIDTH, CallerRead
from vault.authority.checkout_reads import org_chain_rows as org_chain
from vault.authority.requests import Caller, ClientKeyRow, OrgKeyRow, SealedClientKey
from vault.authority.secret_requests import LIST, ListedSecretRow, ListSecretsRequest, SecretPage
from vault.authority.secrets import TAG_BYTES, CallerChecks, authorised_caller
from vault.crypto.blobs import blob_key_version
from vault.errors import AccessDenied, InvalidInput, NotFound, VaultError
from vault.storage import models as m
from vault.storage import rows
from vault.storage.engine import Store
from vault.storage.repositories import grants as grant_rows
from vault.storage.repositories import paging
from vault.storage.repositories import secrets as secret_rows
from vault.storage.rows import ROLE_ADMIN, ClientRow, EngineerRecord, EngineerRow, GrantRecord, GrantRow, VersionRow

MAX_CLIENTS = 1_000_000  # client ids a listing may name: far more than a vault holds
MAX_KNOWN_KEYS = 4 * MAX_CLIENTS  # (client, version) pairs a keyholder may name as held
NO_GRANT = "no such client, or you hold no grant for it"
_KEYS, _SEALS, _ENGINEERS, _CLIENTS = (
    cast(Table, t.__table__) for t in (m.ClientKey, m.ClientKeySeal, m.Engineer, m.Client)
)
BATCH = 10_000  # ids in one IN list at most


class ListChecks(CallerChecks, Protocol):
    """The caller's checks, and the check of an engineer's grant (its signature verified)."""

    def first_valid_grant(
        self, s: Session, grants: Sequence[GrantRecord], engineer: EngineerRecord, signers: Sequence[EngineerRow | None]
    ) -> int:
        """The index of the grant that counts (the ledger head), else NotFound / GrantExpired."""


def checked_request(request: object) -> ListSecretsRequest:
    """``request`` if every field is of its type and range, else InvalidInput (before any SQL)."""
    if not isinstance(request, ListSecretsRequest) or not isinstance(request.caller, Caller):
        raise InvalidInput("not a secret-list request")
    if request.action != LIST:
        raise InvalidInput(f"not a {LIST} request")
    if not isinstance(request.named, bool):
        raise InvalidInput("the request's named flag is not a bool")
    validation.number("engineer id", request.caller.engineer_id, 1)
    validation.number("key generation", request.caller.key_generation, 0)
    ids = request.client_ids
    if ids is not None:
        if not isinstance(ids, tuple) or len(ids) > MAX_CLIENTS:
            raise InvalidInput("the request's client ids are not a tuple")
        for client_id in ids:
            validation.number("client id", client_id, 1)
    known = request.known_key_versions
    if not isinstance(known, tuple) or len(known) > MAX_KNOWN_KEYS:
        raise InvalidInput("the request's known key versions are not a short tuple")
    for slot in known:
        if not isinstance(slot, tuple) or len(slot) != 2:
            raise InvalidInput("a known key version is not a (client id, version) pair")
        validation.number("client id", slot[0], 1)
        validation.number("client-key version", slot[1], 1)
    if not isinstance(request.org_pin, bytes) or len(request.org_pin) != TAG_BYTES:
        raise InvalidInput(f"the request's organisation key is not a {TAG_BYTES}-byte value")
    return request


class SecretListAuthority:
    """``secret list``: the pages of secrets a caller may see, read in one read unit."""

    def __init__(self, store: Store, checks: ListChecks, *, page: int = paging.PAGE) -> None:
        self.store, self.checks, self.page = store, checks, page

    def __repr__(self) -> str:
        return "SecretListAuthority()"

    def pages(self, request: ListSecretsRequest, *, after: int = 0) -> Generator[SecretPage, None, None]:
        """The pages, in secret-id order (at least one). A generator: the read unit stays open
        while the pages are consumed, one page in memory at a time. ``after``: the secrets with
        a greater id only (a page of the team server's ``secrets.list_page``)."""
        checked_request(request)  # before the unit: a forged request reads nothing
        with self.store.read() as s:
            caller = authorised_caller(s, self.checks, request.caller, 0)
            ids = self._clients(s, caller, request.client_ids, request.named)
            conn = rows.connection(s)
            chain = org_chain(conn, request.org_pin, caller.org_signing_public)
            known, sent = set(request.known_key_versions), set[int]()
            empty = True
            for found in secret_rows.current_pages(conn, ids, page=self.page, missing=True, after=after):
                empty = False
                yield self._page(conn, caller, chain, found, known, sent)
            if empty:
                yield self._page(conn, caller, chain, (), known, sent)

    def _clients(self, s: Session, caller: CallerRead, asked: tuple[int, ...] | None, named: bool) -> list[int] | None:
        """The client ids to list (None: every client, an admin's), checked before any is read.
        An engineer's: the ids asked that they still hold a verified grant for; a client named
        (``named``) without one is refused, while a listing of their clients drops the ids whose
        grant was revoked or expired since the keyholder read its scope (never fails whole)."""
        me = caller.me
        if me.role == ROLE_ADMIN:
            return None if asked is None else sorted(set(asked))
        if asked is None:
            raise AccessDenied(f"{me.name!r} is not an admin", hint="list the clients your grants name")
        granted = self._granted(s, me, set(asked))
        if named and granted != set(asked):
            raise NotFound(NO_GRANT)
        return sorted(granted)

    def _granted(self, s: Session, me: EngineerRecord, asked: set[int]) -> set[int]:
        """The ids of ``asked`` that ``me`` holds a live grant for, read here (the caller's
        ledgers, one statement) and each ledger head verified by the authority's own check
        (``first_valid_grant``): nothing is taken from the keyholder's memory. A ledger with
        no unrevoked row is passed over; an expired or revoked head hides its client; the
        error of a forged or ill-signed head goes through."""
        out: set[int] = set()
        for ledger in grant_rows.ledgers(rows.connection(s), me.id, GrantRow._fields, EngineerRow._fields):
            if ledger.client_id not in asked:
                continue
            grants = [GrantRow._make(g) for g in ledger.grants]
            if all(g.revoked_at is not None for g in grants):
                continue
            signers = [None if r is None else EngineerRow._make(r) for r in ledger.signers]
            try:
                self.checks.first_valid_grant(s, grants, me, signers)
            except (AccessDenied, NotFound):
                continue  # expired or revoked: hidden
            out.add(ledger.client_id)
        return out

    def _page(
        self,
        conn: Connection,
        caller: CallerRead,
        chain: tuple[OrgKeyRow, ...],
        found: Sequence[secret_rows.ListedSecret],
        known: set[tuple[int, int]],
        sent: set[int],
    ) -> SecretPage:
        """One page: its secrets, the client rows not sent before, the client keys not held."""
        new = sorted({r.client_id for r in found} - sent)
        clients = self._client_rows(conn, new)
        sent.update(c.id for c in clients)
        listed = []
        wanted: set[tuple[int, int]] = set()
        for client in clients:
            try:
                wanted.add((client.id, blob_key_version(client.slug_blob)))
            except VaultError:
                continue  # a damaged slug blob: the keyholder's opening of it fails
        for r in found:
            if r.client_id not in sent:
                continue  # its client was removed meanwhile (PostgreSQL): not listed
            version = None
            if r.version is not None:
                version = VersionRow(r.version, r.key_version, r.wrapped_dek, r.password_blob, r.metadata_blob)
                wanted.add((r.client_id, r.key_version))
            listed.append(
                ListedSecretRow(r.client_id, r.id, r.kind, r.current_version, r.created_at, r.updated_at, version)
            )
        wanted -= known
        known |= wanted
        return SecretPage(
            vault_id=caller.vault_id,
            org_signing_public=caller.org_signing_public,
            org_chain=chain,
            me=caller.me,
            clients=tuple(clients),
            secrets=tuple(listed),
            sealed_keys=self._sealed_keys(conn, caller, wanted),
        )

    @staticmethod
    def _client_rows(conn: Connection, ids: Sequence[int]) -> list[ClientRow]:
        c = _CLIENTS.c
        out: list[ClientRow] = []
        for start in range(0, len(ids), BATCH):
            query = select(c.id, c.slug_blob, c.lookup_key_blob, c.audit_keys_blob).where(
                c.id.in_(ids[start : start + BATCH])
            )
            out += [ClientRow(*r) for r in conn.execute(query.order_by(c.id))]
        return out

    @staticmethod
    def _sealed_keys(
        conn: Connection, caller: CallerRead, wanted: Iterable[tuple[int, int]]
    ) -> tuple[SealedClientKey, ...]:
        """The signed records of the client keys ``wanted``, their signers and the caller's sealed
        copies (an admin's: sealed to the current recovery key), one statement per batch of clients."""
        wanted = set(wanted)
        if not wanted:
            return ()
        admin = caller.me.role == ROLE_ADMIN
        kind, recipient = ("recovery", caller.root_version or 0) if admin else ("engineer", caller.me.id)
        k, c, e = _KEYS.c, _SEALS.c, _ENGINEERS.c
        ids = sorted({client_id for client_id, _ in wanted})
        out: list[SealedClientKey] = []
        for start in range(0, len(ids), BATCH):
            query = (
                select(
                    k.client_id,
                    k.version,
                    k.fingerprint,
                    k.signed_at,
                    k.signed_by,
                    k.signature,
                    k.state,
                    c.blob,
                    *(e[name] for name in EngineerRow._fields),
                )
                .select_from(
                    _KEYS.outerjoin(
                        _SEALS,
                        and_(
                            c.client_id == k.client_id,
                            c.version == k.version,
                            c.recipient_kind == kind,
                            c.recipient_id == recipient,
                        ),
                    ).outerjoin(_ENGINEERS, e.id == k.signed_by)
                )
                .where(k.client_id.in_(ids[start : start + BATCH]))
                .order_by(k.client_id, k.version)
            )
            for r in conn.execute(query):
                if (r[0], r[1]) not in wanted:
                    continue
                signer = None if r[8] is None else EngineerRow._make(r[8 : 8 + ENGINEER_WIDTH])
                out.append(SealedClientKey(ClientKeyRow(*r[:7]), signer, kind, recipient, r[7]))
        return tuple(out)
