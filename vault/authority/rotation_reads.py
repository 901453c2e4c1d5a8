"""The reads of the client-key rotation (``keys.list``, ``keys.versions``), where the database is.

Split from ``RotationAuthority`` (rotation.py, the state machine) because they take a request
value and answer values, with no seal and no event: the same class answers them in-process
and on the team server (``vault/server/read_routes.py``), under the caller checks each side
trusts (the keyholder's ``Trust``, or the server's ``ServerChecks``).

Each runs in ``Store.read()`` (no write lock), checks the request's fields before any SQL,
then authorises the caller through ``CallerGate`` before any row of a client or a rotation is
read: ``list``, an active, certified admin of the key generation named; ``versions``, such an
admin or an engineer holding the head of their grant ledger for the client (else ``NotFound``
/ ``GrantExpired``, as a checkout is refused: nothing of the client is read, not even whether
it exists). ``RotationList`` and ``KeyVersionList`` carry the rows as one value each, so that
an answer is a registered value of the wire codec.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault import validation
from vault.authority.checkout_reads import CallerRead
from vault.authority.policies_caller import CallerChecks, CallerGate
from vault.authority.requests import Caller
from vault.authority.rotation_requests import (
    NO_CLIENT,
    RUNNING,
    KeyVersionRow,
    ListRequest,
    RotationRow,
    VersionsRequest,
)
from vault.errors import InvalidInput, NotFound
from vault.storage import models as m
from vault.storage.engine import Store


@dataclass(frozen=True)
class RotationList:
    """``keys.list``'s answer: the rotations, oldest first."""

    rotations: tuple[RotationRow, ...]


@dataclass(frozen=True)
class KeyVersionList:
    """``keys.versions``' answer: a client's key versions and their states, oldest first."""

    versions: tuple[KeyVersionRow, ...]


def rotation_row(r: m.Rotation) -> RotationRow:
    return RotationRow(
        r.id, r.client_id, r.from_version, r.to_version, r.state, r.done, r.total, r.started_at, r.finished_at
    )


def checked_caller(caller: object) -> Caller:
    if not isinstance(caller, Caller):
        raise InvalidInput("the request names no caller")
    validation.number("engineer id", caller.engineer_id, 1)
    validation.number("key generation", caller.key_generation, 0)
    return caller


class RotationReads:
    """``keys.list`` and ``keys.versions``, given a request, in a read unit each."""

    def __init__(self, store: Store, checks: CallerChecks) -> None:
        self.store, self.gate = store, CallerGate(checks)

    def __repr__(self) -> str:
        return "RotationReads()"

    def list(self, request: ListRequest) -> RotationList:
        """The rotations, oldest first (``running_only``: those under way); an admin's."""
        if not isinstance(request, ListRequest) or not isinstance(request.running_only, bool):
            raise InvalidInput("not a listing request")
        checked_caller(request.caller)
        with self.store.read() as s:
            self._authorise(s, request.caller)
            query = select(m.Rotation).order_by(m.Rotation.id)
            if request.running_only:
                query = query.where(m.Rotation.state == RUNNING)
            return RotationList(tuple(rotation_row(r) for r in s.scalars(query)))

    def versions(self, request: VersionsRequest) -> KeyVersionList:
        """A client's key versions and their states, oldest first."""
        if not isinstance(request, VersionsRequest):
            raise InvalidInput("not a versions request")
        checked_caller(request.caller)
        validation.number("client id", request.client_id, 1)
        with self.store.read() as s:
            self._authorise(s, request.caller, client_id=request.client_id)
            found = s.execute(
                select(m.ClientKey.version, m.ClientKey.state)
                .where(m.ClientKey.client_id == request.client_id)
                .order_by(m.ClientKey.version)
            ).all()
            if not found and s.get(m.Client, request.client_id) is None:
                raise NotFound(NO_CLIENT)
            return KeyVersionList(tuple(KeyVersionRow(int(version), str(state)) for version, state in found))

    def _authorise(self, s: Session, caller: Caller, *, client_id: int | None = None) -> CallerRead:
        """An active admin whose certificate verifies, of the key generation the request names
        (``client_id``: or an engineer holding the head of their grant ledger for it). Nothing
        of a client or a rotation is read before: the caller's read names the client's id only."""
        return self.gate.authorise(s, caller, admin=client_id is None, client_id=client_id)
