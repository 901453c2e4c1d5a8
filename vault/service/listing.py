"""Listings read without the write lock, set-based, and audited after they read.

A listing (``secret list``, ``client list``, ``status``, the audit log and the reports)
reads in ``Store.read()``: on SQLite a deferred transaction that takes no write lock, so a
checkout in another connection goes on while it runs; on PostgreSQL a transaction that
locks no row. Its rows come from the repositories (``vault/storage/repositories``) one
page per statement, never one statement per row. The audit event a listing must append
is written afterwards by ``append_after_read``, in a short write transaction that checks
the acting engineer again and holds the audit head (locked on PostgreSQL) only for the
append and its commit, never across the decryption of what was listed; what the listing
read is handed back only once that event is durably committed (fail closed).

``granted_clients`` finds an engineer's clients from their whole grant ledger in one
statement, and remembers each verified grant in the Vault object's key cache
(``KeyCache.grants``: the exact rows verified, with the keys they were verified under) so
that the next lookup verifies only what changed: with 10 grants or 1,000, the same
statements. Nothing is trusted from memory that the rows read now do not match. That
memory is the keyholder's: only the keyholder's own verifications (here, for its scope and
the audit pages, and ``keyholder/clients.py``) write it, and no authority reads or writes
it (``authority/secret_list.py`` reads the grant ledgers again and checks each head itself).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.crypto import blobs, sealing, signing
from vault.errors import AccessDenied, NotFound, VaultError
from vault.service import rows
from vault.service.core import ROLE_ADMIN, epoch, is_revoked
from vault.service.records import ClientInfo
from vault.service.rows import EngineerRecord, EngineerRow, GrantRow
from vault.storage import models as m
from vault.storage.repositories import clients as client_rows
from vault.storage.repositories import grants as grant_rows

BATCH = 10_000  # ids in one IN list at most (PostgreSQL takes 65,535 parameters a statement, SQLite 32,766)

if TYPE_CHECKING:
    from vault.authority.journal import Journal
    from vault.keyholder.keys import Keys
    from vault.keyholder.trust import Trust
    from vault.service.clients import Clients
    from vault.service.core import Core


class Reads(Protocol):
    """What a listing reads with: the shared parts every noun holds."""

    core: Core
    keys: Keys
    trust: Trust


class Writes(Reads, Protocol):
    """... and the journal its event is appended to."""

    journal: Journal


def append_after_read(vault: Writes, action: str, **event: Any) -> None:
    """Append a listing's event in a short write transaction of its own, after the listing
    read its rows: the acting engineer is checked again first (still certified, active,
    with the session's keys: the event is signed inside its key's lifetime), and the audit
    head is held only for the append and the durable commit."""
    with vault.core.store.transaction() as s:
        vault.trust.my_row(s)
        vault.journal.append(s, action, **event)


# -- an engineer's clients ------------------------------------------------------------------------


def granted_client_ids(vault: Reads, s: Session, me: EngineerRecord) -> list[int]:
    """The ids of the clients ``me`` holds a live, verified grant for, from the whole ledger
    in one statement. A ledger with no unrevoked row is passed over unread, as before; the
    head of each other ledger must verify (``first_valid_grant``), else the client is
    hidden (expired, revoked) or the error of a forged grant goes through."""
    index, now = vault.keys.client_keys.grants, epoch(vault.core.clock())
    org, sealing_public = vault.trust.org_public(s), me.sealing_public
    out = []
    for ledger in grant_rows.ledgers(rows.connection(s), me.id, GrantRow._fields, EngineerRow._fields):
        grants = [GrantRow._make(g) for g in ledger.grants]
        if all(g.revoked_at is not None for g in grants):
            continue  # no unrevoked row: not a client of theirs (the query of old)
        signers = [None if r is None else EngineerRow._make(r) for r in ledger.signers]
        head = grants[0]
        proof = (head, signers[0], org, sealing_public, me.id)
        if index.get(ledger.client_id) == proof and not is_revoked(head):
            if head.until is not None and head.until <= now:
                continue  # expired since it was verified: hidden, as first_valid_grant would
            out.append(ledger.client_id)
            continue
        try:
            vault.trust.first_valid_grant(s, grants, me, signers)
        except (AccessDenied, NotFound):
            continue  # expired or revoked grants hide the client
        if len(index) >= vault.keys.client_keys.GRANTS_LIMIT:
            index.clear()
        index[ledger.client_id] = proof
        out.append(ledger.client_id)
    return out


def granted_clients(vault: Reads, s: Session, me: EngineerRecord) -> list[m.Client]:
    """``granted_client_ids`` as client rows (one more statement), their client keys
    unsealed in a few statements for all of them (``unseal_client_keys``), and their slugs
    kept as the session's hints (``Keys.slugs``): a walk through every grant is made once
    per session in a process, not once per client named."""
    ids = granted_client_ids(vault, s, me)
    if not ids:
        return []
    found = {c.id: c for c in s.scalars(select(m.Client).where(m.Client.id.in_(ids)))}
    clients = [found[i] for i in ids if i in found]
    unseal_client_keys(vault, s, me, clients, granted=set(ids))
    hints = vault.keys.slugs  # every slug learned at once (a cheap decryption each, their keys now open)
    for client in clients:
        try:
            hints[vault.keys.client_field(s, client, client.slug_blob, "slug").decode("utf-8")] = client.id
        except (VaultError, UnicodeDecodeError):
            continue  # the per-client path meets it later and raises what it always raised
    return clients


class _Sealed(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def slug_blob(self) -> bytes: ...
    @property
    def name_blob(self) -> bytes: ...


def unseal_client_keys(
    vault: Reads,
    s: Session,
    me: EngineerRecord,
    clients: Iterable[_Sealed],
    *,
    granted: set[int] | None = None,
) -> None:
    """Unseal, into the Vault object's key cache, the client keys that ``clients``' slug and
    name are encrypted under, with their records and sealed copies read in one statement
    each for all of them: what ``_client_key`` does for one client, for a page of them.

    An admin opens the recovery copy; an engineer only the copies of the clients in
    ``granted`` (those whose grant the caller verified in this transaction). A key whose
    record, signature, copy or fingerprint is not right is left alone: the per-client path
    meets it later and raises what it always raised."""
    admin = me.role == ROLE_ADMIN
    wanted: set[tuple[int, int]] = set()
    for client in clients:
        if not admin and (granted is None or client.id not in granted):
            continue
        for blob in (client.slug_blob, client.name_blob):
            try:
                slot = (client.id, blobs.blob_key_version(blob))
            except VaultError:
                continue
            if slot not in vault.keys.client_keys:
                wanted.add(slot)
    if not wanted:
        return
    if admin:
        bundle = vault.keys.root_bundle(s)
        kind, recipient, keypair = "recovery", bundle.version, bundle.recovery
    else:
        kind, recipient, keypair = "engineer", me.id, vault.keys.my_keypair()
    signers = list(s.scalars(select(m.Engineer).where(m.Engineer.role == ROLE_ADMIN)))  # held: no lookup per key
    ids = sorted({client_id for client_id, _ in wanted})
    for start in range(0, len(ids), BATCH):  # a bounded IN list per statement
        batch = ids[start : start + BATCH]
        records = {
            (k.client_id, k.version): k for k in s.scalars(select(m.ClientKey).where(m.ClientKey.client_id.in_(batch)))
        }
        copies = {
            (c.client_id, c.version): c.blob
            for c in s.scalars(
                select(m.ClientKeySeal).where(
                    m.ClientKeySeal.client_id.in_(batch),
                    m.ClientKeySeal.recipient_kind == kind,
                    m.ClientKeySeal.recipient_id == recipient,
                )
            )
        }
        for client_id, version in sorted(slot for slot in wanted if batch[0] <= slot[0] <= batch[-1]):
            ck, copy = records.get((client_id, version)), copies.get((client_id, version))
            if ck is None or ck.state == "destroyed" or copy is None:
                continue
            try:
                vault.trust.verify_client_key_record(s, ck)
                context = vault.keys.seal_context(s, client_id, version, kind, recipient)
                key = sealing.open_sealed(keypair, version, copy, context)
            except VaultError:
                continue
            if signing.client_key_fingerprint(key) == ck.fingerprint:
                vault.keys.client_keys[(client_id, version)] = key
    del signers


# -- clients ----------------------------------------------------------------------------------------


def client_infos(vault: Clients, s: Session, clients: Iterable[m.Client]) -> list[ClientInfo]:
    """``ClientInfo`` of each client, sorted by slug, the secret counts in one statement."""
    listed = list(clients)
    unseal_client_keys(vault, s, vault.trust.my_row(s), listed)  # an engineer's: unsealed with their grants
    ids = [c.id for c in listed]
    counts = client_rows.secret_counts(rows.connection(s), ids if len(ids) <= BATCH else None)
    out = [
        ClientInfo(
            slug=vault.slug(s, client),
            name=vault.keys.client_field(s, client, client.name_blob, "name").decode("utf-8"),
            key_version=client.current_key_version,
            secrets=counts.get(client.id, 0),
            created_at=client.created_at,
        )
        for client in listed
    ]
    return sorted(out, key=lambda c: c.slug)
