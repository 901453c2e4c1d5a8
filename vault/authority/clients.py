"""Clients, where the database is: authorise, read the client rows, record, answer.

``client show``: one unit of work — who calls (an active engineer whose certificate
verifies, with the key generation the request names; the head of their grant ledger for
the client, or the admin role), refused before any row of the client is read; then the
client (by id, or an admin's slug tag) and its secret count; the keyholder's ``admit`` of
the draft; the ``client-view`` event; the commit.

``client list``: a read unit (no write lock) — the caller checked the same way, then every
client (an admin) or the head of each of the caller's grant ledgers that is neither
revoked nor past its until, with its signer (an engineer), the clients they name, their
secret counts, and the client keys their slug and name need that the keyholder lacks, a
statement per batch, never one per client. The keyholder verifies and opens the draft
(``admit``) outside any unit; then a short write unit checks the caller again and appends
``client-list``. A refused draft writes no event.

The authority never opens anything: the grant signatures are checked by the keyholder
(and, for ``show``, by ``checks``: public keys only).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from vault import validation
from vault.authority.checkout_reads import ENGINEER_WIDTH, CallerRead
from vault.authority.client_requests import (
    CLIENT_LIST,
    CLIENT_VIEW,
    MISSING_CLIENT,
    ClientEntry,
    ClientRows,
    ListRequest,
    ShowRequest,
)
from vault.authority.policies_caller import caller_read
from vault.authority.policies_caller import org_chain as org_chain  # also the grants' (authority/grants.py)
from vault.authority.requests import Caller, ClientKeyRow, SealedClientKey
from vault.crypto.blobs import blob_key_version
from vault.errors import AccessDenied, InvalidInput, NotFound, VaultError
from vault.storage import models as m
from vault.storage import rows
from vault.storage.engine import Store
from vault.storage.repositories import clients as client_rows
from vault.storage.repositories import grants as grant_rows
from vault.storage.rows import ENGINEERS, ROLE_ADMIN, EngineerRecord, EngineerRow, GrantRecord, GrantRow

TAG_BYTES = 32  # a lookup tag (HMAC-SHA256) and an organisation public key
MAX_KNOWN = 1_000_000  # (client, version) pairs a keyholder may name as held
BATCH = 10_000  # ids in one IN list at most


def tag(label: str, value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != TAG_BYTES:
        raise InvalidInput(f"the request's {label} is not a {TAG_BYTES}-byte value")
    return value


def checked_action(action: object, expected: str) -> str:
    """The request's action, if it is the operation's own, else InvalidInput (before any SQL):
    a caller may not have another operation journalled in their name (a ``revoke`` written by
    a ``client show`` would be counted against every grant of the client)."""
    if not isinstance(action, str) or action != expected:
        raise InvalidInput(f"the request's action is not {expected!r}")
    return action


def checked_caller(caller: object, org_pin: object) -> Caller:
    """The request's caller and pin, of their types and ranges, else InvalidInput."""
    if not isinstance(caller, Caller):
        raise InvalidInput("the request names no caller")
    validation.number("engineer id", caller.engineer_id, 1)
    validation.number("key generation", caller.key_generation, 0)
    tag("organisation key", org_pin)
    return caller


class ClientChecks(Protocol):
    """The trust checks the authority makes: signatures and public keys only."""

    def organisation_key(self, s: Session, current: bytes) -> None:
        """The vault's current organisation key, as read in this unit of work."""

    def certificate(self, s: Session, row: EngineerRecord) -> None:
        """The engineer's certificate verifies under the organisation key, else UntrustedRecord."""

    def first_valid_grant(
        self, s: Session, grants: Sequence[GrantRecord], engineer: EngineerRecord, signers: Sequence[EngineerRow | None]
    ) -> int:
        """The index of the grant that counts (the ledger head), else NotFound / GrantExpired."""


class ClientRecorder(Protocol):
    """Appends an event in the caller's unit of work (the Journal)."""

    def append(self, s: Session, action: str, *, client_id: int | None, public: dict[str, Any] | None = None) -> int:
        """The new event's seq."""


class ClientSeal(Protocol):
    """The keyholder's hands between the read and the event (the in-process seam)."""

    def admit(self, draft: ClientRows) -> None:
        """Verify (and open) what will be answered, before the event is written; raise to refuse."""


def authorise(s: Session, checks: ClientChecks, caller: Caller, client_id: int = 0) -> CallerRead:
    """An active, certified engineer of the key generation the request names (with their
    grants for ``client_id``, newest first). Nothing of any client has been read."""
    return caller_read(s, checks, caller, client_id)


_SIGNER = ENGINEERS.alias("key_signer")


def sealed_keys(
    s: Session, wanted: Iterable[tuple[int, int]], kind: str, recipient: int
) -> tuple[SealedClientKey, ...]:
    """The signed records of the client-key versions ``wanted``, each with its signer and the
    copy sealed to (``kind``, ``recipient``), a statement per batch of clients."""
    k, c = m.ClientKey.__table__.c, m.ClientKeySeal.__table__.c
    slots = set(wanted)
    ids = sorted({client for client, _ in slots})
    out = []
    for start in range(0, len(ids), BATCH):
        batch = ids[start : start + BATCH]
        query = (
            select(k.client_id, k.version, k.fingerprint, k.signed_at, k.signed_by, k.signature, k.state, c.blob)
            .add_columns(*[_SIGNER.c[name] for name in EngineerRow._fields])
            .select_from(
                m.ClientKey.__table__.outerjoin(
                    m.ClientKeySeal.__table__,
                    and_(
                        c.client_id == k.client_id,
                        c.version == k.version,
                        c.recipient_kind == kind,
                        c.recipient_id == recipient,
                    ),
                ).outerjoin(_SIGNER, _SIGNER.c.id == k.signed_by)
            )
            .where(k.client_id.in_(batch))
            .order_by(k.client_id, k.version)
        )
        for r in rows.connection(s).execute(query):
            if (r[0], r[1]) not in slots:
                continue
            signer = None if r[8] is None else EngineerRow._make(r[8 : 8 + ENGINEER_WIDTH])
            out.append(SealedClientKey(ClientKeyRow(*r[:7]), signer, kind, recipient, r[7]))
    return tuple(out)


def recipient_of(caller: CallerRead) -> tuple[str, int]:
    """Whose sealed copies the caller opens: the recovery key's (an admin), or their own."""
    if caller.me.role == ROLE_ADMIN:
        return "recovery", caller.root_version or 0
    return "engineer", caller.me.id


def field_key_versions(slug_blob: bytes, name_blob: bytes) -> set[int]:
    out = set()
    for blob in (slug_blob, name_blob):
        try:
            out.add(blob_key_version(blob))
        except VaultError:
            continue  # a damaged blob: the keyholder refuses it when it opens it
    return out


class ClientAuthority:
    """Show and list of clients, given a request (``add``: client_add.py)."""

    def __init__(self, store: Store, checks: ClientChecks, recorder: ClientRecorder, clock: Callable[[], dt.datetime]):
        self.store, self.checks, self.recorder, self.clock = store, checks, recorder, clock

    def show(self, request: ShowRequest, seal: ClientSeal) -> ClientRows:
        """One client (``client-view``), after its event is committed."""
        if not isinstance(request, ShowRequest):
            raise InvalidInput("not a client show request")
        action = checked_action(request.action, CLIENT_VIEW)
        caller = checked_caller(request.caller, request.org_pin)
        if (request.client_id is None) == (request.slug_tag is None):
            raise InvalidInput("a request names its client by id or by slug tag")
        if request.client_id is not None:
            validation.number("client id", request.client_id, 1)
        if request.slug_tag is not None:
            tag("slug tag", request.slug_tag)
        known = request.known_key_versions
        if not isinstance(known, tuple) or len(known) > MAX_KNOWN:
            raise InvalidInput("the request's known key versions are not a short tuple")
        for version in known:
            validation.number("client-key version", version, 1)
        with self.store.transaction() as s:
            read = authorise(s, self.checks, caller, request.client_id or 0)
            engineer = read.me.role != ROLE_ADMIN
            if engineer:
                if request.slug_tag is not None:
                    raise AccessDenied(f"{read.me.name!r} is not an admin", hint="name the client by its grant's id")
                self.checks.first_valid_grant(s, read.grants, read.me, read.signers)
            query = select(m.Client)
            if request.slug_tag is not None:
                query = query.where(m.Client.slug_tag == request.slug_tag)
            else:
                query = query.where(m.Client.id == request.client_id)
            client = s.scalars(query).first()
            if client is None:
                raise NotFound(MISSING_CLIENT)
            count = s.scalar(select(func.count()).select_from(m.Secret).where(m.Secret.client_id == client.id))
            entry = ClientEntry(
                client.id,
                client.slug_blob,
                client.name_blob,
                client.current_key_version,
                client.created_at,
                int(count or 0),
                read.grants[0] if engineer and read.grants else None,
                read.signers[0] if engineer and read.signers else None,
            )
            wanted = {(client.id, v) for v in field_key_versions(client.slug_blob, client.name_blob) - set(known)}
            draft = self._draft(s, read, request.org_pin, (entry,), wanted)
            seal.admit(draft)
            seq = self.recorder.append(s, action, client_id=client.id)
        return dataclasses.replace(draft, seq=seq)

    def list(self, request: ListRequest, seal: ClientSeal) -> ClientRows:
        """The clients the caller may see, read without the write lock; ``client-list`` appended
        after the keyholder admitted them, and the answer returned once it is committed."""
        if not isinstance(request, ListRequest):
            raise InvalidInput("not a client list request")
        action = checked_action(request.action, CLIENT_LIST)
        caller = checked_caller(request.caller, request.org_pin)
        known = request.known_key_versions
        if not isinstance(known, tuple) or len(known) > MAX_KNOWN:
            raise InvalidInput("the request's known key versions are not a short tuple")
        for pair in known:
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise InvalidInput("a known key version is not a (client, version) pair")
            validation.number("client id", pair[0], 1)
            validation.number("client-key version", pair[1], 1)
        with self.store.read() as s:
            read = authorise(s, self.checks, caller)
            entries = self._entries(s, read)
            held = set(known)
            wanted = set()
            for entry in entries:
                wanted |= {(entry.id, v) for v in field_key_versions(entry.slug_blob, entry.name_blob)} - held
            draft = self._draft(s, read, request.org_pin, entries, wanted)
        seal.admit(draft)  # outside any unit: nothing is held while the keyholder opens the list
        with self.store.transaction() as s:
            authorise(s, self.checks, caller)  # still active and of this key generation
            seq = self.recorder.append(s, action, client_id=None, public={"count": len(entries)})
        return dataclasses.replace(draft, seq=seq)

    # -- the rows -----------------------------------------------------------------------------

    def _entries(self, s: Session, read: CallerRead) -> tuple[ClientEntry, ...]:
        conn = rows.connection(s)
        if read.me.role == ROLE_ADMIN:
            found = list(client_rows.every(conn))
            heads: dict[int, tuple[GrantRow | None, EngineerRow | None]] = {c.id: (None, None) for c in found}
        else:
            heads = self._ledger_heads(s, read.me.id)
            by_id = {}
            ids = sorted(heads)
            for start in range(0, len(ids), BATCH):
                by_id.update(client_rows.by_ids(conn, ids[start : start + BATCH]))
            found = [by_id[i] for i in ids if i in by_id]
        counts = client_rows.secret_counts(conn, [c.id for c in found] if len(found) <= BATCH else None)
        return tuple(
            ClientEntry(
                c.id,
                c.slug_blob,
                c.name_blob,
                c.current_key_version,
                c.created_at,
                counts.get(c.id, 0),
                *heads[c.id],
            )
            for c in found
        )

    def _ledger_heads(self, s: Session, engineer_id: int) -> dict[int, tuple[GrantRow | None, EngineerRow | None]]:
        """By client: the head of each of the engineer's grant ledgers that is neither revoked
        nor past its until (a mark of revocation or an end only takes access away), with its
        signer. Whether it is signed is the keyholder's to check."""
        now = int(self.clock().timestamp())
        out: dict[int, tuple[GrantRow | None, EngineerRow | None]] = {}
        for ledger in grant_rows.ledgers(rows.connection(s), engineer_id, GrantRow._fields, EngineerRow._fields):
            head = GrantRow._make(ledger.grants[0])
            if rows.is_revoked(head) or (head.until is not None and head.until <= now):
                continue
            signer = ledger.signers[0]
            out[ledger.client_id] = (head, None if signer is None else EngineerRow._make(signer))
        return out

    def _draft(
        self,
        s: Session,
        read: CallerRead,
        pin: bytes,
        entries: tuple[ClientEntry, ...],
        wanted: set[tuple[int, int]],
    ) -> ClientRows:
        kind, recipient = recipient_of(read)
        return ClientRows(
            seq=0,
            vault_id=read.vault_id,
            org_signing_public=read.org_signing_public,
            org_chain=org_chain(s, pin, read.org_signing_public),
            me=read.me,
            clients=entries,
            sealed_keys=sealed_keys(s, wanted, kind, recipient) if wanted else (),
        )
