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
from collections.abc import Generator, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vault.crypto import blobs, chain
from vault.errors import InvalidInput, NotFound, UntrustedRecord, VaultError
from vault.service import auditverify
from vault.service.base import ROLE_ADMIN, epoch
from vault.service.journal import from_us, us
from vault.service.records import AuditEntry, AuditVerification
from vault.service.secrets import SecretOps
from vault.storage import models as m

REVEAL_ACTIONS = ("reveal", "checkout")
CHECKPOINT_PREFIX = "credvault-checkpoint:1"


class AuditOps(SecretOps):
    # -- reading ----------------------------------------------------------------------------

    def audit_log(
        self,
        *,
        client: str | None = None,
        engineer: str | None = None,
        since: dt.datetime | None = None,
        limit: int | None = None,
    ) -> list[AuditEntry]:
        """Events the viewer may see, details decrypted where the viewer holds the key."""
        with self.store.transaction() as s:
            me = self._my_row(s)
            query = select(m.AuditEvent).order_by(m.AuditEvent.seq)
            if client is not None:
                query = query.where(m.AuditEvent.client_id == self._client(s, client).id)
            if engineer is not None:
                row = s.scalars(select(m.Engineer).where(m.Engineer.name == engineer)).first()
                if row is None:
                    raise NotFound(f"no engineer named {engineer!r}")
                query = query.where(m.AuditEvent.engineer_id == row.id)
            if me.role != ROLE_ADMIN:
                query = query.where(m.AuditEvent.engineer_id == me.id)
            if since is not None:
                query = query.where(m.AuditEvent.at_us >= us(since))
            if limit is not None:
                query = query.order_by(None).order_by(m.AuditEvent.seq.desc()).limit(limit)
            events = sorted(s.scalars(query), key=lambda e: e.seq)
            names = {e.id: e.name for e in s.scalars(select(m.Engineer))}
            return [self._entry(s, e, names) for e in events]

    def export_audit(self, **filters: Any) -> Iterable[str]:
        """The log as JSON lines (one event per line) for a SIEM."""
        for entry in self.audit_log(**filters):
            yield json.dumps(entry.to_json(), sort_keys=True)

    def _entry(self, s: Session, e: m.AuditEvent, names: dict[int, str]) -> AuditEntry:
        details: dict[str, Any] | None = json.loads(e.details_json) if e.details_json else None
        slug = None
        readable = e.details_blob is None
        if e.client_id is not None:
            client = s.get(m.Client, e.client_id)
            if client is None:
                receipt = s.scalars(
                    select(m.PurgeReceipt.id).where(
                        m.PurgeReceipt.client_id == e.client_id, m.PurgeReceipt.kind == "client"
                    )
                ).first()
                slug = f"(purged client #{e.client_id}, receipt #{receipt})" if receipt else f"(client #{e.client_id})"
                readable = e.details_blob is None
            else:
                try:
                    slug = self._slug(s, client)
                    if e.details_blob is not None and e.key_version is not None:
                        key = self._audit_key(s, client, e.key_version)
                        raw = blobs.decrypt_audit_detail(
                            key, e.key_version, e.details_blob, e.client_id, e.seq, e.action
                        )
                        details = {**(details or {}), **json.loads(raw)}
                        readable = True
                except VaultError:
                    slug = slug or f"(client #{e.client_id})"
        name = names.get(e.engineer_id) if e.engineer_id is not None else None
        secret = self._secret_name(s, e.secret_id) if e.secret_id is not None else None
        return AuditEntry(
            e.seq, from_us(e.at_us), name, e.action, slug, e.client_id, e.secret_id, details, readable, secret
        )

    def _secret_name(self, s: Session, secret_id: int) -> str:
        """A secret's current name, looked up when shown (events never store it), or a marker."""
        secret = s.get(m.Secret, secret_id)
        client = s.get(m.Client, secret.client_id) if secret is not None else None
        if secret is None or client is None:
            return f"(purged secret #{secret_id})"
        try:
            return str(self._open(s, client, secret, self._version(s, secret, None)).metadata["name"])
        except VaultError:
            return f"(secret #{secret_id})"

    # -- verifying ------------------------------------------------------------------------------

    def verify_audit(
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
        with self.store.inspecting() as foreign:
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
        with self.store.transaction() as s:
            self._my_row(s)
            vault_id = self._vid(s)
            start_seq, running = since if since is not None else (0, chain.GENESIS)
            keys = self._signing_keys(s)
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
                problem = self._anchor_problem(s, vault_id, keys, start_seq)
                if problem is not None:
                    return self._bad(0, start_seq + 1, start_seq, running, start_seq, problem + " (the anchor)")
            end = s.scalar(select(func.max(m.AuditEvent.seq)).where(m.AuditEvent.seq > start_seq)) or start_seq
            checked, last = 0, start_seq
            with contextlib.closing(self._ranges(s, vault_id, keys, start_seq + 1, end, workers)) as ranges:
                for lo, hi, r in ranges:  # in order: each range's first link is checked against the one before
                    if r.first_prev is not None and r.first_prev != running:
                        unlinked = "it does not link to the event before it"
                        return self._bad(checked, start_seq + 1, last, running, lo, unlinked)
                    if r.last_hash is not None:
                        checked, last, running = checked + r.good, lo + r.good - 1, r.last_hash
                    if r.bad_seq is not None:
                        return self._bad(checked, start_seq + 1, last, running, r.bad_seq, str(r.problem))
                    if last < hi:  # the rows stop here and nothing follows
                        break
            head = s.get(m.AuditHead, 1)
            if head is not None and (head.seq != last or head.hash != running):
                return self._bad(
                    checked,
                    start_seq + 1,
                    last,
                    running,
                    last + 1,
                    "the chain's recorded head does not match its last event (events deleted?)",
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
    def _anchor_problem(s: Session, vault_id: bytes, keys: auditverify.Keys, seq: int) -> str | None:
        """The anchor of an incremental verify checked again: its hash from its fields, its
        signature, and its link to the event before it (its stored hash)."""
        if seq <= 0:
            return None
        connection = s.connection()
        r = auditverify.check_range(connection.connection, connection.dialect, vault_id, keys, seq, seq)
        if r.problem is not None:
            return r.problem
        before = s.get(m.AuditEvent, seq - 1) if seq > 1 else None
        if r.first_prev != (before.hash if before is not None else chain.GENESIS):
            return "it does not link to the event before it"
        return None

    @staticmethod
    def _bad(checked: int, first: int, last: int, running: bytes, seq: int, problem: str) -> AuditVerification:
        return AuditVerification(False, checked, first, last, running.hex(), seq, f"event {seq}: {problem}")

    def _ranges(
        self, s: Session, vault_id: bytes, keys: auditverify.Keys, lo: int, hi: int, workers: int | None
    ) -> Generator[tuple[int, int, auditverify.RangeResult], None, None]:
        """Events lo..hi checked range by range, in order: over worker processes once the
        chain is long enough to be worth it, else here in the caller's transaction."""
        workers = workers or os.cpu_count() or 1
        events = hi - lo + 1
        if workers < 2 or events < chain.PARALLEL_THRESHOLD or not auditverify.shareable(self.store.url):
            connection = s.connection()
            if events > 0:
                yield lo, hi, auditverify.check_range(connection.connection, connection.dialect, vault_id, keys, lo, hi)
            return
        size = auditverify.chunk_size(events, workers)
        pool = ProcessPoolExecutor(max_workers=workers)
        try:
            starts = range(lo, hi + 1, size)
            check = auditverify.check_range_at
            futures = [(a, min(a + size - 1, hi)) for a in starts]
            pending = [pool.submit(check, self.store.url, vault_id, keys, a, b) for a, b in futures]
            for (a, b), future in zip(futures, pending, strict=True):
                yield a, b, future.result()
        finally:
            pool.shutdown(cancel_futures=True)

    def _signing_keys(self, s: Session) -> dict[tuple[int | None, int], bytes]:
        """Certified signing keys of every engineer and key generation, by (id, generation)."""
        keys: dict[tuple[int | None, int], bytes] = {}
        names = {}
        for row in s.scalars(select(m.Engineer)):
            names[row.id] = row.name
            if row.signing_public is None:
                continue
            try:
                self._verify_certificate(s, row)
            except UntrustedRecord:
                continue
            keys[(row.id, row.key_generation)] = row.signing_public
        for key in s.scalars(select(m.EngineerKey)):
            try:
                keys[(key.engineer_id, key.generation)] = self._verified_key(s, key, names.get(key.engineer_id, ""))
            except UntrustedRecord:
                keys.pop((key.engineer_id, key.generation), None)
        return keys

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

    def audit_checkpoint(self) -> str:
        """A signed statement of the current head, to keep somewhere else."""
        with self.store.transaction() as s:
            me = self._my_row(s)
            info = self._info(s)
            head = s.get(m.AuditHead, 1)
            seq, digest = (head.seq, head.hash) if head else (0, chain.GENESIS)
            at = epoch(self.clock())
            signature = chain.sign_checkpoint(self._me().signing_seed, info.vault_id, seq, digest, at)
            sig = base64.b64encode(signature).decode("ascii")
            return f"{CHECKPOINT_PREFIX}:{info.vault_id.hex()}:{seq}:{digest.hex()}:{at}:{me.name}:{sig}"

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
        self._verify_certificate(s, signer)
        if not chain.checkpoint_valid(signer.signing_public, signature, vault_id, seq, digest, at):
            raise UntrustedRecord("the checkpoint's signature is invalid")
        return seq, digest

    def audit_head(self) -> tuple[int, bytes]:
        with self.store.transaction() as s:
            head = s.get(m.AuditHead, 1)
            return (head.seq, head.hash) if head else (0, chain.GENESIS)
