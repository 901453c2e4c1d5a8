"""The access log: a hash-chained, signed, append-only sequence of audit events.

Appends lock the single ``audit_head`` row, so concurrent writers on either engine
queue up and the chain never forks; the event commits in the same transaction as the
change it records. Details (reason, ticket, fields revealed, secret name) are
encrypted under the client's key, so a purge of the client leaves only pseudonymous
ids. Verification recomputes every hash and signature and names the first bad event;
the tail is checked against the head this machine last saw and signed checkpoints.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import json
import os
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Any, Literal, overload

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vault.authority.audit import AuditAuthority
from vault.authority.audit_requests import HEAD, LOG, EventQuery, HeadRequest
from vault.authority.journal import us
from vault.authority.requests import Caller
from vault.crypto import chain
from vault.errors import InvalidInput, NotFound, UntrustedRecord
from vault.keyholder.audit import AuditKeyholder
from vault.service import auditpages, auditverify, rows, validation
from vault.service.core import ROLE_ADMIN, epoch
from vault.service.records import AuditEntry, AuditVerification
from vault.storage import models as m
from vault.storage.repositories import audit as event_rows
from vault.storage.rows import EngineerRow
from vault.transport.audit import InProcessAuditTransport

if TYPE_CHECKING:
    from vault.authority.journal import Journal
    from vault.keyholder.keys import Keys
    from vault.keyholder.signers import Signers
    from vault.keyholder.trust import Trust
    from vault.service.clients import Clients
    from vault.service.core import Core
    from vault.service.secrets import Secrets


REVEAL_ACTIONS = ("reveal", "checkout")
CHECKPOINT_PREFIX = "credvault-checkpoint:1"


def _details(text: str | None) -> dict[str, Any]:
    try:
        details = json.loads(text) if text else {}
    except ValueError:
        return {}  # never so in a genuine event: the full pass refuses it at its own seq
    return details if isinstance(details, dict) else {}


class _CallerChecks:
    """The authority's checks of the caller (signatures and public keys only), by the Vault's trust."""

    def __init__(self, trust: Trust) -> None:
        self._trust = trust

    def organisation_key(self, s: Session, current: bytes) -> None:
        s.info["org_current"] = current  # the vault's current key as read in this unit: no second read

    def certificate(self, s: Session, row: EngineerRow) -> None:
        self._trust.verify_certificate(s, row)


class Audit:
    """The audit log: ``vault.audit.log/export/verify/checkpoint/head``."""

    def __init__(
        self,
        core: Core,
        keys: Keys,
        trust: Trust,
        signers: Signers,
        journal: Journal,
        clients: Clients,
        secrets: Secrets,
    ) -> None:
        self.core = core
        self.keys = keys
        self.trust = trust
        self.signers = signers
        self.journal = journal  # the clients' audit-key rings, to read events' details (auditpages.py)
        self.clients = clients
        self.secrets = secrets  # the names of the secrets events refer to
        authority = AuditAuthority(core.store, _CallerChecks(trust))
        self.keyholder = AuditKeyholder(InProcessAuditTransport(authority), core.vault_id, self._signer_keys)

    @overload
    def log(
        self,
        *,
        client: str | None = None,
        engineer: str | None = None,
        since: dt.datetime | None = None,
        limit: int | None = None,
        stream: Literal[False] = False,
    ) -> list[AuditEntry]: ...

    @overload
    def log(
        self,
        *,
        client: str | None = None,
        engineer: str | None = None,
        since: dt.datetime | None = None,
        limit: int | None = None,
        stream: Literal[True],
    ) -> Iterator[AuditEntry]: ...

    def log(
        self,
        *,
        client: str | None = None,
        engineer: str | None = None,
        since: dt.datetime | None = None,
        limit: int | None = None,
        stream: bool = False,
    ) -> list[AuditEntry] | Iterator[AuditEntry]:
        """Events the viewer may see, details decrypted where the viewer holds the key.

        ``stream=True``: the events as an iterator, a page read as the caller consumes
        them, each page in a short read transaction of its own and checked by the keyholder
        (its links, hashes and signatures) before it is shown (bounded memory at any length
        of the log, no transaction held while the caller is slow; ``credvault audit log``
        prints as it reads). A page that does not verify raises IntegrityError. Nothing is
        read, and no error raised, before the first ``next()``. Reading
        the log appends no event, streamed or not."""
        entries = self._entries(client=client, engineer=engineer, since=since, limit=limit)
        return entries if stream else list(entries)

    def _entries(
        self,
        *,
        client: str | None = None,
        engineer: str | None = None,
        since: dt.datetime | None = None,
        limit: int | None = None,
    ) -> Iterator[AuditEntry]:
        """``log`` as a stream: the filters resolved and the viewer checked in a short read,
        then the events a verified page at a time (keyholder/audit.py), each page asked of
        the authority in a read unit of its own and opened in another (auditpages.py): a
        slow consumer holds no transaction between pages."""
        with self.core.store.read() as s:
            me = self.trust.my_row(s)
            client_id = self.clients.client(s, client).id if client is not None else None
            engineer_id: int | None = None
            if engineer is not None:
                validation.engineer_name(engineer)
                found = event_rows.engineer_id(rows.connection(s), engineer)
                if found is None:
                    raise NotFound(f"no engineer named {engineer!r}")
                engineer_id = found
            admin = me.role == ROLE_ADMIN
        if limit is not None:
            validation.number("limit", limit, 1)
        if not admin:
            if engineer_id not in (None, me.id):
                return  # another engineer's events: none of them for an engineer who is not an admin
            engineer_id = me.id
        since_us = us(since) if since is not None else None
        query = EventQuery(LOG, self._caller(), client_id, engineer_id, since_us)
        pages = self.keyholder.pages(query, limit)
        yield from auditpages.entries(auditpages.EntryReader(self), self.core.store, pages)

    def _caller(self) -> Caller:
        me = self.keys.me()
        return Caller(me.engineer_id, me.key_generation)

    def _signer_keys(self, _refresh: bool = False) -> auditverify.Keys:
        """The chain's certified signing keys, verified, each with the sequence numbers it may
        sign between (its lifetime in the chain), in a read unit of the keyholder's own."""
        with self.core.store.read() as s:
            keys, _, _ = self.signers.key_lifetimes(s, self.signers.signing_keys(s))
            return keys

    def export(self, **filters: Any) -> Iterator[str]:
        """The log as JSON lines (one event per line) for a SIEM, streamed: each line is
        yielded as its page is read (``_entries``), never the whole log in memory."""
        for entry in self._entries(**filters):
            yield json.dumps(entry.to_json(), sort_keys=True)

    # -- verifying ------------------------------------------------------------------------------

    def verify(
        self,
        *,
        since: tuple[int, bytes] | None = None,
        known_head: tuple[int, bytes] | None = None,
        checkpoints: Sequence[str] = (),
        workers: int | None = None,
    ) -> AuditVerification:
        """Recompute hashes and signatures from ``since`` (a trusted (seq, hash)) to the head.

        A database holding objects credvault did not create (a trigger that deletes events
        at commit, a view, …) does not verify, whatever its events say.
        """
        with self.core.store.inspecting() as foreign:
            result = self._verify_chain(since, known_head, checkpoints, workers)
        if not foreign:
            return result
        problem = (
            f"the database holds {', '.join(foreign)} that credvault did not create: they can hide or rewrite "
            "events, so the log cannot be trusted"
        )
        if not result.ok:
            problem += f"; and {result.problem}"
        return AuditVerification(
            False, result.checked, result.first_seq, result.head_seq, result.head_hash, result.first_bad_seq, problem
        )

    def _verify_chain(
        self,
        since: tuple[int, bytes] | None,
        known_head: tuple[int, bytes] | None,
        checkpoints: Sequence[str],
        workers: int | None,
    ) -> AuditVerification:
        # A read unit (no write lock on SQLite: checkouts go on while the chain is checked). The
        # chain is checked up to the head as recorded when the check starts; events appended
        # meanwhile are left to the next check (see the end for events beyond the head).
        with self.core.store.read() as s:
            self.trust.my_row(s)
            vault_id = self.core.vid(s)
            start_head = s.execute(select(m.AuditHead.seq, m.AuditHead.hash).where(m.AuditHead.id == 1)).first()
            start_seq, running = since if since is not None else (0, chain.GENESIS)
            keys, problems, _ = self.signers.key_lifetimes(s, self.signers.signing_keys(s))
            if since is not None:
                anchor = s.get(m.AuditEvent, start_seq)
                if anchor is None or anchor.hash != running:
                    return self._bad(
                        0,
                        start_seq + 1,
                        start_seq,
                        running,
                        start_seq,
                        "the event this machine verified last is missing or changed",
                    )
                problem = self.signers.anchor_problem(s, vault_id, keys, problems, start_seq)
                if problem is not None:
                    return self._bad(0, start_seq + 1, start_seq, running, start_seq, problem + " (the anchor)")
            prev_at, prev_format = self._time_and_format(s, vault_id, start_seq)
            end = max(start_head[0], start_seq) if start_head is not None else start_seq
            checked, last = 0, start_seq
            with contextlib.closing(self._ranges(s, vault_id, keys, problems, start_seq + 1, end, workers)) as ranges:
                for lo, hi, r in ranges:  # in order: each range's first link is checked against the one before
                    if r.first_prev is not None and r.first_prev != running:
                        unlinked = "it does not link to the event before it"
                        return self._bad(checked, start_seq + 1, last, running, lo, unlinked)
                    boundary = self._boundary(r, prev_at, prev_format)
                    if boundary is not None:
                        return self._bad(checked, start_seq + 1, last, running, lo, boundary)
                    if r.last_hash is not None:
                        checked, last, running = checked + r.good, lo + r.good - 1, r.last_hash
                        prev_at, prev_format = r.last_at, r.last_format
                    if r.bad_seq is not None:
                        return self._bad(checked, start_seq + 1, last, running, r.bad_seq, str(r.problem))
                    if last < hi:  # the rows stop here and nothing follows
                        break
            if start_head is not None and (start_head[0] != last or start_head[1] != running):
                return self._bad(
                    checked,
                    start_seq + 1,
                    last,
                    running,
                    last + 1,
                    "the chain's recorded head does not match its last event (events deleted?)",
                )
            # An event past the head that no append made: the newest event is read before the
            # head, and the head moves in the transaction of every event, so a concurrent append
            # cannot put the newest event past the head read after it.
            newest = s.scalar(select(func.max(m.AuditEvent.seq)))
            head_now = s.scalar(select(m.AuditHead.seq).where(m.AuditHead.id == 1))
            if newest is not None and (head_now is None or newest > head_now):
                return self._bad(
                    checked, start_seq + 1, last, running, last + 1, "events lie beyond the chain's recorded head"
                )
            for known_seq, known_hash in [known_head] if known_head else []:
                problem = self._check_known(s, known_seq, known_hash, last)
                if problem:
                    return self._bad(
                        checked,
                        start_seq + 1,
                        last,
                        running,
                        min(known_seq, last + 1),
                        problem + " (the head this machine saw)",
                    )
            for text in checkpoints:
                seq, digest = self._parse_checkpoint(s, vault_id, text)
                problem = self._check_known(s, seq, digest, last)
                if problem:
                    return self._bad(
                        checked, start_seq + 1, last, running, min(seq, last + 1), problem + " (a signed checkpoint)"
                    )
            return AuditVerification(True, checked, start_seq + 1, last, running.hex())

    @staticmethod
    def _bad(checked: int, first: int, last: int, running: bytes, seq: int, problem: str) -> AuditVerification:
        return AuditVerification(False, checked, first, last, running.hex(), seq, f"event {seq}: {problem}")

    @staticmethod
    def _boundary(r: auditverify.RangeResult, prev_at: int | None, prev_format: int | None) -> str | None:
        """The first event of a range against the last of the range before (its time, its format)."""
        if r.first_format == 2 and prev_at is not None and r.first_at is not None and r.first_at < prev_at:
            return f"it is dated before the event before it (backdated: {r.first_at} < {prev_at})"
        if r.first_format == 1 and prev_format == 2:
            return "it is in the old event format (1) after an event in format 2"
        return None

    @staticmethod
    def _time_and_format(s: Session, vault_id: bytes, seq: int) -> tuple[int | None, int | None]:
        """The time and format of the (trusted) event a verification starts after, if any."""
        e = s.get(m.AuditEvent, seq) if seq else None
        if e is None:
            return None, None
        fields = (e.at_us, e.engineer_id, e.key_generation, e.action, e.client_id, e.secret_id, e.key_version)
        fields += (e.details_blob, e.details_json)  # type: ignore[assignment]
        current = chain.event_hash(vault_id, e.seq, *fields, prev_hash=e.prev_hash) == e.hash
        return e.at_us, 2 if current else 1

    def _ranges(
        self,
        s: Session,
        vault_id: bytes,
        keys: auditverify.Keys,
        problems: auditverify.Problems,
        lo: int,
        hi: int,
        workers: int | None,
    ) -> Generator[tuple[int, int, auditverify.RangeResult], None, None]:
        """Events lo..hi checked range by range, in order: over worker processes once the
        chain is long enough to be worth it, else here in the caller's transaction."""
        workers = workers or os.cpu_count() or 1
        events = hi - lo + 1
        if workers < 2 or events < chain.PARALLEL_THRESHOLD or not auditverify.shareable(self.core.store.url):
            connection = s.connection()
            if events > 0:
                checked = auditverify.check_range(
                    connection.connection, connection.dialect, vault_id, keys, lo, hi, problems
                )
                yield lo, hi, checked
            return
        size = auditverify.chunk_size(events, workers)
        pool = ProcessPoolExecutor(max_workers=workers)
        try:
            starts = range(lo, hi + 1, size)
            check = auditverify.check_range_at
            futures = [(a, min(a + size - 1, hi)) for a in starts]
            pending = [
                pool.submit(
                    check, self.core.store.url, vault_id, keys, a, b, {k: v for k, v in problems.items() if a <= k <= b}
                )
                for a, b in futures
            ]
            for (a, b), future in zip(futures, pending, strict=True):
                yield a, b, future.result()
        finally:
            pool.shutdown(cancel_futures=True)

    @staticmethod
    def _check_known(s: Session, seq: int, digest: bytes, last: int) -> str | None:
        if seq > last:
            return f"the log ends at event {last} but event {seq} was seen before: the tail was truncated"
        if seq > 0:
            event = s.get(m.AuditEvent, seq)
            if event is None or event.hash != digest:
                return f"event {seq} differs from the one seen before"
        return None

    # -- checkpoints ------------------------------------------------------------------------------

    def checkpoint(self) -> str:
        """A signed statement of the current head, to keep somewhere else: the head asked of
        the authority, its event verified by the keyholder (keyholder/audit.py), then signed."""
        with self.core.store.read() as s:
            me = self.trust.my_row(s)
        vault_id, seq, digest = self.keyholder.checkpoint_head(self._caller())
        at = epoch(self.core.clock())
        signature = chain.sign_checkpoint(self.keys.me().signing_seed, vault_id, seq, digest, at)
        sig = base64.b64encode(signature).decode("ascii")
        return f"{CHECKPOINT_PREFIX}:{vault_id.hex()}:{seq}:{digest.hex()}:{at}:{me.name}:{sig}"

    def _parse_checkpoint(self, s: Session, vault_id: bytes, text: str) -> tuple[int, bytes]:
        parts = text.strip().split(":")
        if len(parts) != 8 or ":".join(parts[:2]) != CHECKPOINT_PREFIX:
            raise InvalidInput(
                "malformed audit checkpoint", hint="paste the whole line `credvault audit checkpoint` printed"
            )
        try:
            cp_vault, seq, digest, at = bytes.fromhex(parts[2]), int(parts[3]), bytes.fromhex(parts[4]), int(parts[5])
            signature = base64.b64decode(parts[7], validate=True)
        except (ValueError, binascii.Error):
            raise InvalidInput("malformed audit checkpoint") from None
        if cp_vault != vault_id:
            raise InvalidInput("this checkpoint belongs to another vault")
        signer = s.scalars(select(m.Engineer).where(m.Engineer.name == parts[6])).first()
        if signer is None or signer.signing_public is None:
            raise UntrustedRecord("the checkpoint's signer is unknown")
        self.trust.verify_certificate(s, signer)
        if not chain.checkpoint_valid(signer.signing_public, signature, vault_id, seq, digest, at):
            raise UntrustedRecord("the checkpoint's signature is invalid")
        return seq, digest

    def head(self) -> tuple[int, bytes]:
        """The chain's head (seq, hash) as the authority records it (no session needed)."""
        answer = self.keyholder.transport.head(HeadRequest(HEAD))
        return answer.seq, answer.hash
