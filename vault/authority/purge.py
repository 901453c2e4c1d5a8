"""Purges, where the database is: authorise, count, delete, store the receipt, record, commit.

Crypto-shredding. One unit of work per request: the caller is authorised first (an
admin, ``CallerGate``), before any row of a target is read; then each client and the
secrets named, what will be destroyed (counts, the client-key records, the wrapped data
keys) shown to the keyholder (``PurgeSeal.admit``: a refusal deletes nothing); then the
rows deleted, what survives counted again, the receipt row and its ``purge-<kind>`` event
written, and the receipt signed by the keyholder (``PurgeSeal.sign``) over exactly that.
This module never sees a key: the data keys' fingerprints and the signature are the
keyholder's. Receipts are listed and checked here by their rows; the keyholder verifies
their signatures (vault/keyholder/purge.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from vault import validation
from vault.authority.policies import engineer_row
from vault.authority.policies_caller import CallerChecks, CallerGate, checked_caller, checked_pin, org_chain
from vault.authority.purge_requests import (
    CLIENT,
    CLIENT_COUNTS,
    MISSING_CLIENT,
    NOTHING_MATCHES,
    PREVIEW,
    PURGE_KINDS,
    REQUEST_REF,
    SECRET,
    Counts,
    EngineerKeyRow,
    PurgedVersion,
    PurgePart,
    PurgeRequest,
    PurgeRows,
    PurgeTarget,
    ReceiptRow,
    Survivors,
    counts_json,
)
from vault.authority.requests import ClientKeyRow
from vault.errors import InvalidInput, NotFound
from vault.storage import models as m
from vault.storage.engine import Store

SIGNATURE_BYTES = 64
MAX_SECRETS = 1_000_000  # secrets named in one request


class Recorder(Protocol):
    """Appends an event in the caller's unit of work (the Journal)."""

    def append(
        self,
        s: Session,
        action: str,
        *,
        client_id: int | None,
        secret_id: int | None,
        details: dict[str, Any] | None = None,
        public: dict[str, Any] | None = None,
    ) -> int:
        """The new event's seq."""


class PurgeSeal(Protocol):
    """The keyholder's hands inside the unit of work (the in-process seam)."""

    def admit(self, draft: PurgeRows) -> None:
        """Verify what will be destroyed, before anything is (raise to refuse)."""

    def sign(self, receipt: ReceiptRow, survivors: Survivors) -> ReceiptRow:
        """``receipt`` with the destroyed keys' fingerprints and its signature, if it states
        what was admitted and nothing survives (raise to refuse: nothing is committed)."""


def checked_request(request: object) -> PurgeRequest:
    """``request`` if every field is of its type and range, else InvalidInput (before any SQL)."""
    if not isinstance(request, PurgeRequest) or request.kind not in (PREVIEW, *PURGE_KINDS):
        raise InvalidInput(f"unknown purge {validation.shown(str(getattr(request, 'kind', '?')))}")
    checked_caller(request.caller)
    checked_pin(request.org_pin)
    targets = request.targets
    if not isinstance(targets, tuple) or not targets or not all(isinstance(t, PurgeTarget) for t in targets):
        raise InvalidInput("the request names no target")
    if request.kind in (PREVIEW, CLIENT, SECRET) and len(targets) != 1:
        raise InvalidInput("this request names one client")
    clients = [validation.number("client id", t.client_id, 1) for t in targets]
    if len(set(clients)) != len(clients):
        raise InvalidInput("the request names a client twice")
    total = 0
    for t in targets:
        if not isinstance(t.secret_ids, tuple):
            raise InvalidInput("the request's secret ids are not a tuple")
        total += len(t.secret_ids)
        for secret_id in t.secret_ids:
            validation.number("secret id", secret_id, 1)
        if len(set(t.secret_ids)) != len(t.secret_ids) or total > MAX_SECRETS:
            raise InvalidInput("the request names a secret twice, or too many")
        if (request.kind in (PREVIEW, CLIENT)) != (not t.secret_ids):
            raise InvalidInput("a client purge names no secret; a secret purge names at least one")
    if request.kind == SECRET and len(targets[0].secret_ids) != 1:
        raise InvalidInput("a secret purge names one secret")
    if request.kind != PREVIEW and (
        not isinstance(request.request_ref, str) or not REQUEST_REF.fullmatch(request.request_ref)
    ):
        raise InvalidInput("bad request reference")
    return request


def _count(s: Session, query: Any) -> int:
    return int(s.scalar(query) or 0)


class PurgeAuthority:
    """Preview and purge of clients and secrets, given a request, one unit of work each."""

    def __init__(
        self, store: Store, checks: CallerChecks, recorder: Recorder, clock: Callable[[], dt.datetime]
    ) -> None:
        self.store, self.gate, self.recorder, self.clock = store, CallerGate(checks), recorder, clock

    def preview(self, request: PurgeRequest) -> PurgeRows:
        """What a client purge would destroy (no event, nothing changed)."""
        checked_request(request)
        if request.kind != PREVIEW:
            raise InvalidInput("not a preview")
        with self.store.read() as s:
            caller = self.gate.authorise(s, request.caller, admin=True)
            part = self._client_part(s, request.targets[0].client_id)
            chain = org_chain(s, request.org_pin, caller.org_signing_public)
            return PurgeRows(caller.vault_id, caller.org_signing_public, chain, caller.me, PREVIEW, (part,))

    def purge(self, request: PurgeRequest, seal: PurgeSeal) -> PurgeRows:
        """Destroy the targets, one signed receipt and one event per client."""
        checked_request(request)
        if request.kind == PREVIEW:
            raise InvalidInput("a preview destroys nothing")
        with self.store.transaction() as s:
            caller = self.gate.authorise(s, request.caller, admin=True)
            if request.kind == CLIENT:
                parts = [self._client_part(s, request.targets[0].client_id)]
            else:
                parts = [self._secret_part(s, t, strict=request.kind == SECRET) for t in request.targets]
                parts = [p for p in parts if p.secret_ids]
                if not parts:
                    raise NotFound(NOTHING_MATCHES)
            chain = org_chain(s, request.org_pin, caller.org_signing_public)
            draft = PurgeRows(caller.vault_id, caller.org_signing_public, chain, caller.me, request.kind, tuple(parts))
            seal.admit(draft)
            receipts = []
            for part in parts:
                if request.kind == CLIENT:
                    self._delete_client(s, part.client_id)
                    counts = part.counts
                else:
                    counts = self._delete_secrets(s, part)
                survivors = self._survivors(s, request.kind, part)
                receipts.append(
                    self._receipt(s, request, caller.me.id, caller.me.key_generation, part, counts, survivors, seal)
                )
        return PurgeRows(
            caller.vault_id, caller.org_signing_public, chain, caller.me, request.kind, tuple(parts), tuple(receipts)
        )

    # -- what is destroyed ---------------------------------------------------------------------

    def _client_part(self, s: Session, client_id: int) -> PurgePart:
        client = s.get(m.Client, client_id)
        if client is None:
            raise NotFound(MISSING_CLIENT)
        secret_ids = select(m.Secret.id).where(m.Secret.client_id == client_id)
        counts = (
            _count(s, select(func.count()).select_from(m.Secret).where(m.Secret.client_id == client_id)),
            _count(
                s, select(func.count()).select_from(m.SecretVersion).where(m.SecretVersion.secret_id.in_(secret_ids))
            ),
            _count(s, select(func.count()).select_from(m.Grant).where(m.Grant.client_id == client_id)),
            _count(
                s,
                select(func.count())
                .select_from(m.Checkout)
                .where(
                    m.Checkout.client_id == client_id,
                    m.Checkout.released_at.is_(None),
                    m.Checkout.expires_at > self.clock(),
                ),
            ),
            _count(s, select(func.count()).select_from(m.ClientKey).where(m.ClientKey.client_id == client_id)),
            _count(s, select(func.count()).select_from(m.AuditEvent).where(m.AuditEvent.client_id == client_id)),
        )
        keys = s.execute(
            select(m.ClientKey, m.Engineer)
            .outerjoin(m.Engineer, m.Engineer.id == m.ClientKey.signed_by)
            .where(m.ClientKey.client_id == client_id)
            .order_by(m.ClientKey.version)
        ).all()
        return PurgePart(
            client_id,
            client.slug_blob,
            tuple(sorted(s.scalars(secret_ids))),
            tuple(zip(CLIENT_COUNTS, counts, strict=True)),
            tuple(
                ClientKeyRow(k.client_id, k.version, k.fingerprint, k.signed_at, k.signed_by, k.signature, k.state)
                for k, _ in keys
            ),
            (),
            tuple(None if signer is None else engineer_row(signer) for _, signer in keys),
            tuple(
                EngineerKeyRow(
                    k.engineer_id, k.generation, k.sealing_public, k.signing_public, k.certified_at, k.certificate
                )
                for k in s.scalars(
                    select(m.EngineerKey)
                    .where(m.EngineerKey.engineer_id.in_({k.signed_by for k, _ in keys}))
                    .order_by(m.EngineerKey.engineer_id, m.EngineerKey.generation)
                )
            ),
        )

    @staticmethod
    def _secret_part(s: Session, target: PurgeTarget, *, strict: bool) -> PurgePart:
        client = s.get(m.Client, target.client_id)
        if client is None:
            raise NotFound(MISSING_CLIENT)
        found = sorted(
            s.scalars(select(m.Secret.id).where(m.Secret.client_id == client.id, m.Secret.id.in_(target.secret_ids)))
        )
        if strict and len(found) != len(target.secret_ids):
            raise NotFound(NOTHING_MATCHES)
        versions = tuple(
            PurgedVersion(v.secret_id, v.version, v.key_version, v.wrapped_dek)
            for v in s.scalars(
                select(m.SecretVersion)
                .where(m.SecretVersion.secret_id.in_(found))
                .order_by(m.SecretVersion.secret_id, m.SecretVersion.version)
            )
        )
        checkouts = _count(s, select(func.count()).select_from(m.Checkout).where(m.Checkout.secret_id.in_(found)))
        counts = (("secrets", len(found)), ("versions", len(versions)), ("checkouts", checkouts))
        return PurgePart(client.id, client.slug_blob, tuple(found), counts, (), versions)

    @staticmethod
    def _delete_client(s: Session, client_id: int) -> None:
        secret_ids = select(m.Secret.id).where(m.Secret.client_id == client_id)
        s.execute(delete(m.Checkout).where(m.Checkout.client_id == client_id))
        s.execute(delete(m.SecretVersion).where(m.SecretVersion.secret_id.in_(secret_ids)))
        s.execute(delete(m.Secret).where(m.Secret.client_id == client_id))
        s.execute(delete(m.ClientKeySeal).where(m.ClientKeySeal.client_id == client_id))
        s.execute(delete(m.Rotation).where(m.Rotation.client_id == client_id))
        s.execute(delete(m.Grant).where(m.Grant.client_id == client_id))
        s.execute(delete(m.ClientPolicy).where(m.ClientPolicy.client_id == client_id))
        s.execute(delete(m.ClientKey).where(m.ClientKey.client_id == client_id))
        s.execute(delete(m.ServerClientKey).where(m.ServerClientKey.client_id == client_id))  # its layer, destroyed
        s.execute(delete(m.Client).where(m.Client.id == client_id))

    @staticmethod
    def _delete_secrets(s: Session, part: PurgePart) -> Counts:
        ids = list(part.secret_ids)
        checkouts = s.execute(delete(m.Checkout).where(m.Checkout.secret_id.in_(ids))).rowcount or 0  # type: ignore[attr-defined]
        s.execute(delete(m.SecretVersion).where(m.SecretVersion.secret_id.in_(ids)))
        s.execute(delete(m.Secret).where(m.Secret.id.in_(ids)))
        return (("secrets", len(ids)), ("versions", len(part.versions)), ("checkouts", int(checkouts)))

    @staticmethod
    def _survivors(s: Session, kind: str, part: PurgePart) -> Survivors:
        """What the store still holds of ``part``, counted after the deletes in the same unit."""
        ids = list(part.secret_ids)
        client = part.client_id
        s.flush()
        secrets = _count(s, select(func.count()).select_from(m.Secret).where(m.Secret.id.in_(ids))) if ids else 0
        versions = (
            _count(s, select(func.count()).select_from(m.SecretVersion).where(m.SecretVersion.secret_id.in_(ids)))
            if ids
            else 0
        )
        if kind != CLIENT:
            return Survivors(secrets, versions, 0, 0, 0)
        fingerprints = [r.fingerprint for r in part.key_records]
        return Survivors(
            secrets + _count(s, select(func.count()).select_from(m.Secret).where(m.Secret.client_id == client)),
            versions,
            _count(s, select(func.count()).select_from(m.Client).where(m.Client.id == client)),
            _count(s, select(func.count()).select_from(m.ClientKeySeal).where(m.ClientKeySeal.client_id == client)),
            _count(
                s,
                select(func.count())
                .select_from(m.ClientKey)
                .where((m.ClientKey.client_id == client) | m.ClientKey.fingerprint.in_(fingerprints)),
            ),
        )

    # -- the receipt ---------------------------------------------------------------------------

    def _receipt(
        self,
        s: Session,
        request: PurgeRequest,
        admin_id: int,
        generation: int,
        part: PurgePart,
        counts: Counts,
        survivors: Survivors,
        seal: PurgeSeal,
    ) -> ReceiptRow:
        """The receipt row and its event, then the keyholder's signature over both."""
        row = m.PurgeReceipt(
            kind=request.kind,
            request_ref=request.request_ref,
            client_id=part.client_id,
            secret_ids=json.dumps(list(part.secret_ids)),
            counts=counts_json(counts),
            fingerprints="[]",
            admin_id=admin_id,
            admin_generation=generation,
            purged_at=int(self.clock().timestamp()),
            event_seq=0,
            signature=b"",
        )
        s.add(row)
        s.flush()
        ids = part.secret_ids
        row.event_seq = self.recorder.append(
            s,
            f"purge-{request.kind}",
            client_id=part.client_id,
            secret_id=ids[0] if len(ids) == 1 else None,
            public={"receipt": row.id, "request": request.request_ref, "counts": dict(counts)},
        )
        receipt = receipt_row(row, counts, (), b"")
        signed = self._fingerprinted(seal, receipt, survivors)
        row.fingerprints, row.signature = json.dumps(list(signed.fingerprints)), signed.signature
        return signed

    @staticmethod
    def _fingerprinted(seal: PurgeSeal, receipt: ReceiptRow, survivors: Survivors) -> ReceiptRow:
        """The receipt as the keyholder signed it: what was drafted here, with the fingerprints
        of the destroyed keys (the keyholder's: data keys are only its to open) and its signature."""
        signed = seal.sign(receipt, survivors)
        if not isinstance(signed, ReceiptRow) or dataclasses.replace(signed, fingerprints=(), signature=b"") != receipt:
            raise InvalidInput("the keyholder signed another receipt than the one drafted")
        if not isinstance(signed.fingerprints, tuple) or not all(isinstance(f, str) for f in signed.fingerprints):
            raise InvalidInput("the receipt's fingerprints are not text")
        if not isinstance(signed.signature, bytes) or len(signed.signature) != SIGNATURE_BYTES:
            raise InvalidInput("the receipt's signature is not a signature")
        return signed


def receipt_row(
    r: m.PurgeReceipt,
    counts: Counts | None = None,
    fingerprints: tuple[str, ...] | None = None,
    signature: bytes | None = None,
    admin: str = "?",
) -> ReceiptRow:
    """A stored receipt as a plain row (the JSON columns read back)."""
    return ReceiptRow(
        r.id,
        r.kind,
        r.request_ref,
        r.client_id,
        tuple(json.loads(r.secret_ids)),
        counts if counts is not None else tuple(json.loads(r.counts).items()),
        fingerprints if fingerprints is not None else tuple(json.loads(r.fingerprints)),
        r.admin_id,
        r.admin_generation,
        r.purged_at,
        r.event_seq,
        r.signature if signature is None else signature,
        admin,
        r.request_id,
    )
