"""Purge receipts, where the database is: list them, and gather what checks one.

``receipts``: an admin's request (refused before any receipt is read), every receipt
with the name of its signer. ``check``: any active, certified engineer's; the receipt, its
signer's row and archived key generation (for the keyholder to verify the signature under
the organisation key), the objects of the database credvault did not create (read under
``Store.inspecting``: they are named, not refused), what survives of the receipt's targets
(secrets, versions; for a client: the client row, sealed copies of its key, its key
records or any with a destroyed fingerprint) and the action of the receipt's event. This
module judges nothing: the keyholder verifies and says what is wrong (keyholder/purge.py).
"""

from __future__ import annotations

import json

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vault import validation
from vault.authority.policies import engineer_row as _engineer_row
from vault.authority.policies_caller import CallerChecks, CallerGate, checked_caller, checked_pin, org_chain
from vault.authority.purge import receipt_row as _receipt_row
from vault.authority.purge_requests import CLIENT, EngineerKeyRow, ReceiptRequest, ReceiptRows, Survivors
from vault.errors import InvalidInput, NotFound
from vault.storage import models as m
from vault.storage.engine import Store

MISSING_RECEIPT = "no such purge receipt"


def checked_request(request: object, *, one: bool) -> ReceiptRequest:
    """``request`` if every field is of its type and range, else InvalidInput (before any SQL)."""
    if not isinstance(request, ReceiptRequest):
        raise InvalidInput("not a receipt request")
    checked_caller(request.caller)
    checked_pin(request.org_pin)
    if one:
        validation.number("receipt number", request.receipt_id, 1)
    elif request.receipt_id is not None:
        raise InvalidInput("a listing names no receipt")
    return request


class ReceiptAuthority:
    """Purge receipts: the listing (admin) and what checks one (any engineer)."""

    def __init__(self, store: Store, checks: CallerChecks) -> None:
        self.store, self.gate = store, CallerGate(checks)

    def receipts(self, request: ReceiptRequest) -> ReceiptRows:
        checked_request(request, one=False)
        with self.store.read() as s:
            caller = self.gate.authorise(s, request.caller, admin=True)
            found = s.execute(
                select(m.PurgeReceipt, m.Engineer.name)
                .outerjoin(m.Engineer, m.Engineer.id == m.PurgeReceipt.admin_id)
                .order_by(m.PurgeReceipt.id)
            ).all()
            chain = org_chain(s, request.org_pin, caller.org_signing_public)
            receipts = tuple(_receipt_row(r, admin=name or "?") for r, name in found)
            return ReceiptRows(caller.vault_id, caller.org_signing_public, chain, caller.me, receipts)

    def check(self, request: ReceiptRequest) -> ReceiptRows:
        checked_request(request, one=True)
        with self.store.inspecting() as foreign, self.store.transaction() as s:
            caller = self.gate.authorise(s, request.caller, admin=False)
            row = s.get(m.PurgeReceipt, request.receipt_id)
            if row is None:
                raise NotFound(MISSING_RECEIPT)
            signer = s.get(m.Engineer, row.admin_id)
            key = s.get(m.EngineerKey, (row.admin_id, row.admin_generation))
            event = s.get(m.AuditEvent, row.event_seq)
            chain = org_chain(s, request.org_pin, caller.org_signing_public)
            return ReceiptRows(
                caller.vault_id,
                caller.org_signing_public,
                chain,
                caller.me,
                (_receipt_row(row, admin=signer.name if signer else "?"),),
                signer=None if signer is None else _engineer_row(signer),
                signer_key=None
                if key is None
                else EngineerKeyRow(
                    key.engineer_id,
                    key.generation,
                    key.sealing_public,
                    key.signing_public,
                    key.certified_at,
                    key.certificate,
                ),
                foreign=tuple(foreign),
                survivors=self._survivors(s, row),
                event_action=None if event is None else event.action,
                event_request_id=None if event is None else event.request_id,
            )

    @staticmethod
    def _survivors(s: Session, r: m.PurgeReceipt) -> Survivors:
        def count(query: object) -> int:
            return int(s.scalar(query) or 0)  # type: ignore[call-overload]

        secret_ids = json.loads(r.secret_ids)
        fingerprints = [bytes.fromhex(f) for f in json.loads(r.fingerprints)]
        secrets = versions = client = seals = keys = 0
        if secret_ids:
            secrets = count(select(func.count()).select_from(m.Secret).where(m.Secret.id.in_(secret_ids)))
            versions = count(
                select(func.count()).select_from(m.SecretVersion).where(m.SecretVersion.secret_id.in_(secret_ids))
            )
        if r.kind == CLIENT:
            client = int(s.get(m.Client, r.client_id) is not None)
            seals = count(
                select(func.count()).select_from(m.ClientKeySeal).where(m.ClientKeySeal.client_id == r.client_id)
            )
            if fingerprints:
                keys = count(
                    select(func.count())
                    .select_from(m.ClientKey)
                    .where((m.ClientKey.client_id == r.client_id) | m.ClientKey.fingerprint.in_(fingerprints))
                )
        return Survivors(secrets, versions, client, seals, keys)
