"""Purges, where the engineer's keys are: verify what will be destroyed, sign the receipt.

``PurgeKeyholder`` names its targets by the ids its lookup verified (a client whose slug
was checked; the secrets whose names were checked) and admits the authority's draft only
if it describes exactly those: the client asked for (its slug blob the one the lookup
opened), the secrets asked for (a subset for a subject purge: one may have gone since),
the key records and versions of that client and those secrets. It fingerprints every
destroyed data key itself (unwrapped under the client key, bound to its row) and takes the
fingerprints of a client's key versions from their records once each verifies: every
version from 1 on, none missing, each signed by an admin (an active admin's current key;
for a version destroyed already, one of its signer's certified key generations within its
lifetime: ``ResponseChecks.purged_client_key``).

The receipt is signed only if it states what was admitted (kind, request reference,
client, secrets, counts, fingerprints, this admin and key generation, a time near now)
and the authority's own count after the deletes, in the same unit, finds nothing left of
it: an authority cannot make this keyholder sign a receipt for anything else, nor one
that it reports done while a sealed copy of the client's key survives. ``verify`` checks a
stored receipt's signature under its signer's certified key and says what survives.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from vault.authority.purge_receipts import MISSING_RECEIPT
from vault.authority.purge_requests import (
    CLIENT,
    CLIENT_COUNTS,
    MISSING_CLIENT,
    NOTHING_MATCHES,
    PREVIEW,
    PURGE_KINDS,
    SECRET_COUNTS,
    PurgedVersion,
    PurgePart,
    PurgeRequest,
    PurgeRows,
    PurgeTarget,
    ReceiptRequest,
    ReceiptRow,
    ReceiptRows,
    Survivors,
    receipt_fields,
    receipt_fields_v3,
)
from vault.authority.requests import Caller
from vault.crypto import _primitives as prim
from vault.crypto import blobs, signing
from vault.crypto.labels import LABEL_FP_DATA_KEY, LABEL_SIG_RECEIPT, LABEL_SIG_RECEIPT_V3
from vault.errors import NotFound, UntrustedRecord
from vault.keyholder.policies import ClientLookup, SigningKeys, verified_caller
from vault.keyholder.responses import ResponseChecks
from vault.records import PurgePreview, ReceiptCheck, ReceiptInfo

CLOCK_SKEW_SECONDS = 300  # a receipt dated further from this keyholder's clock is not signed
REQUEST_ID_BYTES = 16


class DataKeys(Protocol):
    """Client keys, verified, as this session opens them; and forgetting a purged client's."""

    def client_key(self, client_id: int, version: int) -> bytes: ...
    def forget(self, client_id: int) -> None: ...

    def inner(self, client_id: int, v: PurgedVersion) -> bytes:
        """``v``'s wrapped data key without the server's layer (on the server's host, with its key
        file), else as stored."""


class PurgeTransport(Protocol):
    def preview(self, request: PurgeRequest) -> PurgeRows: ...
    def purge(self, request: PurgeRequest, seal: Any) -> PurgeRows: ...
    def receipts(self, request: ReceiptRequest) -> ReceiptRows: ...
    def check(self, request: ReceiptRequest) -> ReceiptRows: ...


def _as_signed(r: ReceiptRow) -> ReceiptRow:
    """An answered receipt as its keyholder signed it: no signer's name; through the team server
    (``request_id``) no event number either (the server's, unsigned, set once the event exists)."""
    if r.request_id is not None:
        if r.event_seq < 1:
            raise UntrustedRecord("the authority's receipt names no event")
        return dataclasses.replace(r, admin="?", event_seq=0)
    return dataclasses.replace(r, admin="?")


def _data_key_fingerprint(dek: bytes) -> str:
    return prim.sha256(prim.ctx(LABEL_FP_DATA_KEY, dek))[:16].hex()


def receipt_info(r: ReceiptRow) -> ReceiptInfo:
    return ReceiptInfo(
        r.id,
        r.kind,
        r.request_ref,
        r.client_id,
        list(r.secret_ids),
        dict(sorted(r.counts)),  # as stored: its JSON has sorted keys
        list(r.fingerprints),
        r.admin,
        dt.datetime.fromtimestamp(r.purged_at, dt.UTC),
        r.event_seq,
    )


class _Seal:
    """The keyholder's side of ``PurgeSeal`` for one request: admits one draft, then signs
    one receipt per admitted part, each exactly as admitted."""

    def __init__(self, holder: PurgeKeyholder, request: PurgeRequest, blobs_asked: dict[int, bytes]) -> None:
        self._holder, self._request, self._blobs = holder, request, blobs_asked
        self._admitted: dict[int, tuple[PurgePart, tuple[str, ...]]] | None = None
        self._signed: set[int] = set()
        self.made: list[ReceiptRow] = []  # the receipts signed, in order
        self.me: tuple[int, int] | None = None
        self.vault_id = b""

    def __repr__(self) -> str:
        return "PurgeSeal()"

    def admit(self, draft: PurgeRows) -> None:
        if self._admitted is not None:
            raise UntrustedRecord("the authority asked to admit a second draft")
        h, request = self._holder, self._request
        checks = h.checks(draft, admin=True)
        if draft.kind != request.kind:
            raise UntrustedRecord("the authority drafted another kind of purge than the one asked for")
        asked = {t.client_id: t.secret_ids for t in request.targets}
        admitted: dict[int, tuple[PurgePart, tuple[str, ...]]] = {}
        for part in draft.parts:
            if part.client_id not in asked or part.client_id in admitted:
                raise UntrustedRecord("the authority drafted a purge of a client not asked for")
            if part.slug_blob != self._blobs[part.client_id]:
                raise UntrustedRecord("the authority drafted a purge of another client than the one asked for")
            admitted[part.client_id] = (part, h.fingerprints(request.kind, part, asked[part.client_id], checks))
        if not admitted or (request.kind != "subject" and len(admitted) != len(asked)):
            raise UntrustedRecord("the authority drafted a purge of other clients than those asked for")
        self._admitted, self.me, self.vault_id = admitted, (draft.me.id, draft.me.key_generation), checks.vault_id

    def sign(self, receipt: ReceiptRow, survivors: Survivors) -> ReceiptRow:
        self._expected(receipt)
        if receipt.event_seq < 1 or receipt.request_id is not None:
            raise UntrustedRecord("the receipt does not state the purge this keyholder admitted")
        if not isinstance(survivors, Survivors) or any(dataclasses.astuple(survivors)):
            raise UntrustedRecord("the authority reports the purge done while some of it survives")
        self._signed.add(receipt.client_id)
        signed = dataclasses.replace(receipt, fingerprints=self._fingerprints(receipt))
        signature = self._holder.keys.sign(LABEL_SIG_RECEIPT, *receipt_fields(self.vault_id, signed))
        self.made.append(dataclasses.replace(signed, signature=signature, admin="?"))
        return dataclasses.replace(signed, signature=signature)

    def sign_v3(self, receipt: ReceiptRow, request_id: bytes) -> ReceiptRow:
        """Through the team server (a client's, one secret's, or one client's of a subject's purge): the
        draft's receipt (its id reserved, no event yet) signed before anything is deleted, over the id of
        the request that commits it (``LABEL_SIG_RECEIPT_V3``).
        The server counts what survives in the commit's unit (anything: nothing is committed), and
        ``purge check`` counts it again afterwards."""
        self._expected(receipt)
        if receipt.event_seq != 0 or receipt.request_id is not None or self._request.kind not in PURGE_KINDS:
            raise UntrustedRecord("the receipt does not state the purge this keyholder admitted")
        if not isinstance(request_id, bytes) or len(request_id) != REQUEST_ID_BYTES:
            raise UntrustedRecord("the receipt cannot be signed for a request")
        self._signed.add(receipt.client_id)
        signed = dataclasses.replace(receipt, fingerprints=self._fingerprints(receipt), request_id=request_id)
        signature = self._holder.keys.sign(LABEL_SIG_RECEIPT_V3, *receipt_fields_v3(self.vault_id, signed))
        self.made.append(dataclasses.replace(signed, signature=signature, admin="?"))
        return dataclasses.replace(signed, signature=signature)

    def _fingerprints(self, receipt: ReceiptRow) -> tuple[str, ...]:
        assert self._admitted is not None
        return self._admitted[receipt.client_id][1]

    def _expected(self, receipt: ReceiptRow) -> None:
        """``receipt`` states exactly the purge admitted (its id, time and event number the authority's)."""
        if self._admitted is None or self.me is None:
            raise UntrustedRecord("the authority asked to sign a receipt before its draft was admitted")
        found = self._admitted.get(receipt.client_id)
        if found is None or receipt.client_id in self._signed:
            raise UntrustedRecord("the authority asked to sign a receipt for a client not admitted")
        part = found[0]
        expected = ReceiptRow(
            receipt.id,
            self._request.kind,
            self._request.request_ref,
            part.client_id,
            part.secret_ids,
            receipt.counts if self._request.kind != CLIENT else part.counts,
            (),
            self.me[0],
            self.me[1],
            receipt.purged_at,
            receipt.event_seq,
            b"",
            receipt.admin,
        )
        expected = dataclasses.replace(expected, request_id=receipt.request_id)
        if receipt != expected or receipt.id < 1:
            raise UntrustedRecord("the receipt does not state the purge this keyholder admitted")
        if self._request.kind != CLIENT:
            counts = dict(receipt.counts)
            if tuple(counts) != SECRET_COUNTS or (counts["secrets"], counts["versions"]) != (
                len(part.secret_ids),
                len(part.versions),
            ):
                raise UntrustedRecord("the receipt's counts are not those of the secrets admitted")
            if not isinstance(counts["checkouts"], int) or counts["checkouts"] < 0:
                raise UntrustedRecord("the receipt's counts are not those of the secrets admitted")
        if abs(receipt.purged_at - int(self._holder.clock().timestamp())) > CLOCK_SKEW_SECONDS:
            raise UntrustedRecord("the receipt is dated away from now")

    def close(self) -> None:
        self._admitted = {}


class PurgeKeyholder:
    """Preview, purge (client, secrets), receipts and the check of a receipt."""

    def __init__(
        self,
        transport: PurgeTransport,
        keys: SigningKeys,
        lookup: ClientLookup,
        data_keys: DataKeys,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.transport, self.keys, self.lookup, self.data_keys, self.clock = transport, keys, lookup, data_keys, clock

    # -- the operations ------------------------------------------------------------------------

    def preview(self, slug: str) -> PurgePreview:
        client_id, slug_blob = self.lookup.client(slug)
        answer = self._send(lambda: self.transport.preview(self._request(PREVIEW, [(client_id, ())], "")))
        self.checks(answer, admin=True)
        if len(answer.parts) != 1 or (answer.parts[0].client_id, answer.parts[0].slug_blob) != (client_id, slug_blob):
            raise UntrustedRecord("the authority answered for another client than the one asked for")
        counts = self._counts(answer.parts[0], CLIENT_COUNTS)
        return PurgePreview(slug, *counts)

    def client(self, slug: str, request_ref: str) -> ReceiptInfo:
        """Crypto-shred the client ``slug``: its receipt, signed here."""
        client_id, slug_blob = self.lookup.client(slug)
        receipts = self._purge(CLIENT, [(client_id, slug_blob, ())], request_ref)
        self.data_keys.forget(client_id)
        return receipts[0]

    def secrets(
        self, kind: str, targets: Sequence[tuple[int, bytes, tuple[int, ...]]], request_ref: str
    ) -> list[ReceiptInfo]:
        """Destroy the secrets named, per client (id, slug blob, secret ids): one receipt each."""
        return self._purge(kind, targets, request_ref)

    def receipts(self) -> list[ReceiptInfo]:
        answer = self.transport.receipts(self._receipt_request(None))
        self.checks(answer, admin=True)
        return [receipt_info(r) for r in answer.receipts]

    def verify(self, receipt_id: int) -> ReceiptCheck:
        """The receipt's signature, what survives of it, foreign objects, its event."""
        try:
            answer = self.transport.check(self._receipt_request(receipt_id))
        except NotFound as error:
            if str(error) == MISSING_RECEIPT:
                raise NotFound(f"no purge receipt #{receipt_id}") from None
            raise
        checks = self.checks(answer, admin=False)
        if len(answer.receipts) != 1 or answer.receipts[0].id != receipt_id or answer.survivors is None:
            raise UntrustedRecord("the authority answered for another receipt than the one asked for")
        r, left = answer.receipts[0], answer.survivors
        problems = [
            f"the database holds {thing} that credvault did not create: it may have kept what the purge deleted"
            for thing in answer.foreign
        ]
        try:
            public = self._signer_key(checks, answer)
            if r.request_id is None:
                label, fields = LABEL_SIG_RECEIPT, receipt_fields(checks.vault_id, r)
            else:  # signed through the team server, before its event: over the request that committed it
                label, fields = LABEL_SIG_RECEIPT_V3, receipt_fields_v3(checks.vault_id, r)
                if answer.event_request_id != r.request_id:
                    problems.append("the receipt's audit event is not the request it was signed for")
            signing.verify(public, r.signature, label, *fields, what=f"receipt #{r.id}")
        except UntrustedRecord as error:
            problems.append(str(error))
        if left.secrets:
            problems.append("a purged secret still exists")
        if left.versions:
            problems.append("a purged secret version (and its wrapped data key) still exists")
        if r.kind == CLIENT:
            if left.client:
                problems.append("the purged client still exists")
            if left.sealed_copies:
                problems.append("a sealed copy of a purged client key still exists")
            if left.key_records:
                problems.append("a purged client-key version is still recorded")
        if answer.event_action != f"purge-{r.kind}":
            problems.append("the receipt's audit event is missing")
        return ReceiptCheck(r.id, not problems, problems)

    # -- checks --------------------------------------------------------------------------------

    def checks(self, answer: PurgeRows | ReceiptRows, *, admin: bool) -> ResponseChecks:
        if not isinstance(answer, (PurgeRows, ReceiptRows)):
            raise UntrustedRecord("the authority's answer is not a purge answer")
        parts = (answer.vault_id, answer.org_signing_public, answer.org_chain, answer.me)
        return verified_caller(self.keys.session(), self.keys.sealing_public(), self.clock(), parts, admin=admin)

    def fingerprints(
        self, kind: str, part: PurgePart, asked: tuple[int, ...], checks: ResponseChecks
    ) -> tuple[str, ...]:
        """What a receipt of ``part`` states as destroyed: the client's key versions (a client
        purge: every version from 1, each record signed by its admin) or every version's data
        key, unwrapped here under its row's binding."""
        if kind == CLIENT:
            self._counts(part, CLIENT_COUNTS)
            records, signers = part.key_records, part.key_signers
            if not records or len(signers) != len(records):
                raise UntrustedRecord("the authority drafted no signed key record of the client")
            if part.versions:
                raise UntrustedRecord("a client purge drafts no versions")
            for version, (record, signer) in enumerate(zip(records, signers, strict=True), start=1):
                checks.purged_client_key(record, signer, part.signer_keys, part.client_id, version)
            return tuple(r.fingerprint.hex() for r in records)
        if (
            not part.secret_ids
            or not set(part.secret_ids) <= set(asked)
            or list(part.secret_ids) != sorted(set(part.secret_ids))
        ):
            raise UntrustedRecord("the authority drafted a purge of secrets not asked for")
        if kind != "subject" and part.secret_ids != asked:
            raise UntrustedRecord("the authority drafted a purge of other secrets than those asked for")
        seen = set()
        out = []
        for v in part.versions:
            if v.secret_id not in part.secret_ids or (v.secret_id, v.version) in seen:
                raise UntrustedRecord("the authority drafted a version of a secret not asked for")
            seen.add((v.secret_id, v.version))
            key = self.data_keys.client_key(part.client_id, v.key_version)
            wrapped = self.data_keys.inner(part.client_id, v)
            dek = blobs.unwrap_data_key(key, v.key_version, wrapped, part.client_id, v.secret_id, v.version)
            out.append(_data_key_fingerprint(dek))
        return tuple(out)

    # -- helpers -------------------------------------------------------------------------------

    def _purge(
        self, kind: str, targets: Sequence[tuple[int, bytes, tuple[int, ...]]], request_ref: str
    ) -> list[ReceiptInfo]:
        request = self._request(kind, [(c, ids) for c, _, ids in targets], request_ref)
        seal = _Seal(self, request, {c: blob for c, blob, _ in targets})
        try:
            answer = self._send(lambda: self.transport.purge(request, seal))
        finally:
            seal.close()
        if [_as_signed(r) for r in answer.receipts] != seal.made:
            raise UntrustedRecord("the authority's receipts are not those this keyholder signed")
        return [receipt_info(dataclasses.replace(r, admin=answer.me.name)) for r in answer.receipts]

    @staticmethod
    def _counts(part: PurgePart, names: tuple[str, ...]) -> list[int]:
        if tuple(n for n, _ in part.counts) != names or not all(isinstance(c, int) and c >= 0 for _, c in part.counts):
            raise UntrustedRecord("the authority's counts are not the counts of a purge")
        return [c for _, c in part.counts]

    def _request(self, kind: str, targets: Sequence[tuple[int, tuple[int, ...]]], request_ref: str) -> PurgeRequest:
        me = self.keys.session()
        return PurgeRequest(
            kind,
            Caller(me.engineer_id, me.key_generation),
            tuple(PurgeTarget(c, tuple(ids)) for c, ids in targets),
            request_ref,
            me.org_signing_public,
        )

    def _receipt_request(self, receipt_id: int | None) -> ReceiptRequest:
        me = self.keys.session()
        return ReceiptRequest(Caller(me.engineer_id, me.key_generation), receipt_id, me.org_signing_public)

    @staticmethod
    def _send(call: Callable[[], PurgeRows]) -> PurgeRows:
        try:
            return call()
        except NotFound as error:
            if str(error) == MISSING_CLIENT:
                raise NotFound("no such client", hint="`credvault client list` shows the clients") from None
            if str(error) == NOTHING_MATCHES:
                raise NotFound("no such secret") from None
            raise

    @staticmethod
    def _signer_key(checks: ResponseChecks, answer: ReceiptRows) -> bytes:
        """The receipt signer's public key of the generation it names: its certified archive
        record, else its current row's certificate."""
        r, row, key = answer.receipts[0], answer.signer, answer.signer_key
        if row is None or row.id != r.admin_id:
            raise UntrustedRecord("the receipt's signer is unknown")
        if key is not None:
            if (key.engineer_id, key.generation) != (r.admin_id, r.admin_generation):
                raise UntrustedRecord("the receipt's signing key is unknown")
            return checks.archived_key(key, row.name)
        checks.certificate(row)
        if row.key_generation != r.admin_generation or row.signing_public is None:
            raise UntrustedRecord("the receipt's signing key is unknown")
        return row.signing_public
