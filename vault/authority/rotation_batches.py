"""Client-key rotation's re-wrap, where the database is: the basis once, then the batches.

``open`` reads what no batch changes (``RotationBasis``): after the caller's check, the
rotation and every client-key version of its client, with its signer and its recovery copy
(``BASIS``: one statement), and the caller's row and organisation chain. The keyholder
verifies it once and names its digest in every ``BatchRequest``.

``rewrap``, each batch its own unit of work: the caller's check (the full ``CallerGate``:
one prepared statement and a memoised certificate check, about 20 µs), then ``BASIS`` again;
unless its digest is the one the request names, the batch is refused (``STALE_BASIS``)
before any data key is read or anything written: a rotation row or a client-key record or
copy a DBA rewrote mid-rotation is never re-wrapped under. Then a page of wrapped data keys
(``rotation_walk.next_rows``) goes to the keyholder, whose ``Rewrapped`` rows are stored only
if they are exactly the rows handed out, in order, under the new version; counted against
the new key's encryption bound; the rotation's counter advanced (plain UPDATEs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Protocol, cast

from sqlalchemy import Connection, Table, and_, bindparam, literal, select, update
from sqlalchemy.orm import Session

from vault import validation
from vault.authority.checkout_reads import ENGINEER_WIDTH, org_chain_rows
from vault.authority.policies_caller import CallerChecks, CallerGate, checked_caller, checked_pin
from vault.authority.requests import ClientKeyRow, SealedClientKey
from vault.authority.rotation_requests import (
    MAX_BATCH,
    RUNNING,
    STALE_BASIS,
    Batch,
    BatchDone,
    BatchRequest,
    OpenRequest,
    Rewrapped,
    RotationBasis,
    RotationRow,
    WrappedKey,
    basis_digest,
)
from vault.authority.rotation_walk import next_rows, write_rewrapped
from vault.crypto.blobs import blob_key_version
from vault.errors import IntegrityError, InvalidInput, NotFound, UntrustedRecord
from vault.storage import models as m
from vault.storage import rows
from vault.storage.engine import Store
from vault.storage.prepared import Prepared
from vault.storage.rows import ENCRYPTION_LIMIT, ENGINEERS, EngineerRow

MAX_ID = 2**63 - 1
RECOVERY = "recovery"

_ROTATIONS, _KEYS, _SEALS = (cast(Table, t.__table__) for t in (m.Rotation, m.ClientKey, m.ClientKeySeal))
_ROTATION_FIELDS = [f.name for f in dataclasses.fields(RotationRow)]
_RECORD_FIELDS = [f.name for f in dataclasses.fields(ClientKeyRow)]
_ROTATION_WIDTH, _RECORD_WIDTH = len(_ROTATION_FIELDS), len(_RECORD_FIELDS)
# The basis: the rotation, then each version of its client's key (oldest first) with its
# recovery copy for the caller's recovery-key version and its signer; one row per version.
BASIS = Prepared(
    select(
        *(_ROTATIONS.c[name] for name in _ROTATION_FIELDS),
        *(_KEYS.c[name] for name in _RECORD_FIELDS),
        _SEALS.c.blob,
        *(ENGINEERS.c[name] for name in EngineerRow._fields),
    )
    .select_from(
        _ROTATIONS.outerjoin(_KEYS, _KEYS.c.client_id == _ROTATIONS.c.client_id)
        .outerjoin(
            _SEALS,
            and_(
                _SEALS.c.client_id == _KEYS.c.client_id,
                _SEALS.c.version == _KEYS.c.version,
                _SEALS.c.recipient_kind == literal(RECOVERY),
                _SEALS.c.recipient_id == bindparam("recipient"),
            ),
        )
        .outerjoin(ENGINEERS, ENGINEERS.c.id == _KEYS.c.signed_by)
    )
    .where(_ROTATIONS.c.id == bindparam("rotation"))
    .order_by(_KEYS.c.version)
)
_ADVANCE = Prepared(
    update(_ROTATIONS)
    .where(_ROTATIONS.c.id == bindparam("rotation"))
    .values(done=_ROTATIONS.c.done + bindparam("n"))
    .returning(_ROTATIONS.c.done)
)
_COUNT = Prepared(  # one atomic UPDATE: concurrent writers never lose a count
    update(_KEYS)
    .where(_KEYS.c.client_id == bindparam("client"), _KEYS.c.version == bindparam("key_version"))
    .values(encryptions=_KEYS.c.encryptions + bindparam("n"))
    .returning(_KEYS.c.encryptions)
)


# The server's hands on a checked page before it is stored: (unit, client id, new version, the
# re-wrapped rows) -> the blobs to store, one per row, in order (``rotation_drafts.py``).
Outer = Callable[[Session, int, int, Sequence[Rewrapped]], list[bytes]]


class RewrapSeal(Protocol):
    """The keyholder's hands inside a batch's unit of work."""

    def rewrap(self, batch: Batch) -> Sequence[Rewrapped]:
        """Verify ``batch``, then re-wrap its rows under the new version; raise to refuse."""


def read_basis(
    conn: Connection, rotation_id: int, root_version: int
) -> tuple[RotationRow | None, tuple[SealedClientKey, ...]]:
    """The rotation (None: no such rotation) and its client's key versions, oldest first."""
    found = BASIS.all(conn, {"rotation": rotation_id, "recipient": root_version})
    if not found:
        return None, ()
    rotation = RotationRow(*found[0][:_ROTATION_WIDTH])
    keys = []
    a, b = _ROTATION_WIDTH, _ROTATION_WIDTH + _RECORD_WIDTH
    for r in found:
        if r[a] is None:  # a client without a key version: nothing to re-wrap under
            continue
        signer = None if r[b + 1] is None else EngineerRow._make(r[b + 1 : b + 1 + ENGINEER_WIDTH])
        blob = None if r[b] is None else bytes(r[b])
        keys.append(SealedClientKey(ClientKeyRow(*r[a:b]), signer, RECOVERY, root_version, blob))
    return rotation, tuple(keys)


def count_encryptions(conn: Connection, client_id: int, version: int, n: int) -> None:
    """Count ``n`` encryptions under a client-key version; refuse past the safe bound."""
    [(count,)] = _COUNT.all(conn, {"client": client_id, "key_version": version, "n": n})
    if count > ENCRYPTION_LIMIT:
        raise IntegrityError(
            f"client key version {version} has reached its encryption limit",
            hint="rotate the client key: `credvault rotate client SLUG`",
        )


class RotationBatches:
    """The re-wrap of a rotation: its basis, read once, and its batches, one unit of work each."""

    def __init__(self, store: Store, checks: CallerChecks) -> None:
        self.store, self.gate = store, CallerGate(checks)

    def open(self, request: OpenRequest) -> RotationBasis:
        """What the rotation's batches share, for the keyholder to verify once (read only)."""
        if not isinstance(request, OpenRequest):
            raise InvalidInput("not an open request")
        checked_caller(request.caller)
        validation.number("rotation id", request.rotation_id, 1)
        pin = checked_pin(request.org_pin)
        with self.store.read() as s:
            caller = self.gate.authorise(s, request.caller, admin=True)
            conn = rows.connection(s)
            root_version = caller.root_version or 0
            rotation, keys = read_basis(conn, request.rotation_id, root_version)
            if rotation is None:
                raise NotFound("no such rotation")
            chain = org_chain_rows(conn, pin, caller.org_signing_public)
            return RotationBasis(
                caller.vault_id, caller.org_signing_public, chain, caller.me, rotation, root_version, keys
            )

    def rewrap(
        self, request: BatchRequest, seal: RewrapSeal, *, s: Session | None = None, outer: Outer | None = None
    ) -> BatchDone:
        """Re-wrap the next page of data keys; ``count`` 0 when none is left. ``s``: inside the
        caller's unit of work (the team server's, its nonce remembered first); ``outer``: what the
        server stores in place of each checked re-wrapped key (its layer put back on, in the unit)."""
        if not isinstance(request, BatchRequest) or not isinstance(request.after, tuple) or len(request.after) != 2:
            raise InvalidInput("not a batch request")
        checked_caller(request.caller)
        validation.number("rotation id", request.rotation_id, 1)
        validation.number("batch size", request.size, 1, MAX_BATCH)
        for part in request.after:
            validation.number("cursor", part, 0, MAX_ID)
        if not isinstance(request.basis, bytes):
            raise InvalidInput("the batch request names no basis")
        if s is None:
            with self.store.transaction() as unit:
                return self.rewrap(request, seal, s=unit, outer=outer)
        return self._rewrap(s, request, seal, outer)

    def _rewrap(self, s: Session, request: BatchRequest, seal: RewrapSeal, outer: Outer | None) -> BatchDone:
        """The batch in the unit ``s`` (``rewrap``)."""
        caller = self.gate.authorise(s, request.caller, admin=True)
        conn = rows.connection(s)
        root_version = caller.root_version or 0
        rotation, keys = read_basis(conn, request.rotation_id, root_version)
        if rotation is None or rotation.state != RUNNING:
            done = (0, 0) if rotation is None else (rotation.done, rotation.total)
            return BatchDone(request.rotation_id, 0, request.after, *done)
        if basis_digest(rotation, root_version, keys) != request.basis:
            raise IntegrityError(STALE_BASIS, hint="run `credvault rotate resume` to verify them again")
        client_id, new_version = rotation.client_id, rotation.to_version
        found, cursor = next_rows(s, client_id, new_version, request.after, request.size)
        if not found:
            return BatchDone(rotation.id, 0, request.after, rotation.done, rotation.total)
        page = tuple(map(WrappedKey._make, found))
        answer = tuple(seal.rewrap(Batch(rotation.id, request.basis, page)))
        if (
            len(answer) != len(page)
            or not all(type(new) is Rewrapped for new in answer)
            or [new[:2] for new in answer] != [old[:2] for old in page]
            or any(blob_key_version(new.wrapped_dek) != new_version for new in answer)
        ):
            raise UntrustedRecord("the re-wrapped keys are not the rows this batch handed out")
        wrapped = [new.wrapped_dek for new in answer]
        if outer is not None:
            wrapped = outer(s, client_id, new_version, answer)
        write_rewrapped(conn, new_version, found, wrapped)
        count_encryptions(conn, client_id, new_version, len(page))
        [(done,)] = _ADVANCE.all(conn, {"rotation": rotation.id, "n": len(page)})
        return BatchDone(rotation.id, len(page), cursor, int(done), rotation.total)
