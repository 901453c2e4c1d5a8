"""Stand-ins for the authority's collaborators that hold no key: public-key checks that
look at the rows only, an engineer's seal that returns fixed blobs, and the same for the
client-key rotation (its checks, its event recorder, its keyholder's seal) (imported by the
authority tests: ``from standins import ...``)."""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, select

from vault.authority.requests import CheckoutResponse
from vault.authority.rotation_requests import Batch, Grantee, NewClientKey, Rewrapped, StartDraft
from vault.errors import NotFound, UntrustedRecord
from vault.service.policies import Policy
from vault.storage import models as m
from vault.storage.rows import EngineerRow, GrantRow

DETAILS, SIGNATURE = b"\x01fake details blob", b"\x5a" * 64


class Checks:
    """Public-key checks that look at the rows only (the real ones verify signatures)."""

    def __init__(self, policy: Policy) -> None:
        self.policy_ = policy

    def organisation_key(self, s: Any, current: bytes) -> None:
        pass

    def certificate(self, s: Any, row: Any) -> None:
        if row.certificate is None:
            raise UntrustedRecord("no certificate")

    def first_valid_grant(self, s: Any, grants: Sequence[Any], engineer: Any, signers: Sequence[Any]) -> int:
        if not grants or grants[0].revoked_at is not None:
            raise NotFound("no such client, or you hold no grant for it")
        return 0

    def policy(self, s: Any, client_id: int, row: Any, known: Any) -> Policy:
        return self.policy_

    def event_key(self, s: Any, engineer_id: int, generation: int) -> bytes | None:
        return None

    def server_key(self, s: Any, version: int) -> bytes | None:
        return None


class FakeSeal:
    """The acting engineer's seal, without a key: fixed blobs; it records what it is shown."""

    def __init__(self, store: Any, refuse: bool = False) -> None:
        self.store, self.refuse = store, refuse
        self.drafts: list[CheckoutResponse] = []
        self.sealed: list[tuple[int, int, str, dict[str, Any]]] = []
        self.events_when_admitted: list[int] = []

    def admit(self, draft: CheckoutResponse) -> None:
        self.drafts.append(draft)
        if self.refuse:
            raise UntrustedRecord("the keyholder refuses this answer")

    def details(self, client_id: int, seq: int, action: str, facts: dict[str, Any]) -> tuple[int, bytes]:
        self.sealed.append((client_id, seq, action, facts))
        return 1, DETAILS

    def sign(self, vault_id: bytes, seq: int, digest: bytes) -> bytes:
        return SIGNATURE

    def hold_claim(self, *args: Any) -> bool | None:
        return None


# -- the client-key rotation ---------------------------------------------------------------


def versioned_blob(version: int, body: bytes = b"ciphertext") -> bytes:
    """Ciphertext-shaped bytes whose header names client-key ``version`` (format.md §1)."""
    return b"\x01\x03" + struct.pack(">I", version) + body.ljust(40, b".")


class RotationChecks:
    """The rotation's public-key checks, looking at the rows only (the real ones verify signatures)."""

    def __init__(self) -> None:
        self.records: list[tuple[int, int, bytes | None]] = []

    def organisation_key(self, s: Any, current: bytes) -> None:
        pass

    def certificate(self, s: Any, row: Any) -> None:
        if row.certificate is None:
            raise UntrustedRecord("no certificate")

    def current_key_version(self, s: Any, client: Any) -> int:
        return int(client.current_key_version)

    def client_key_record(self, s: Any, record: Any) -> None:
        self.records.append((record.client_id, record.version, record.signature))
        if record.signature != SIGNATURE:
            raise UntrustedRecord("the record is not signed by the caller")

    def first_valid_grant(self, s: Any, grants: Sequence[Any], engineer: Any, signers: Sequence[Any]) -> int:
        if not grants or grants[0].revoked_at is not None:
            raise NotFound("no such client, or you hold no grant for it")
        return 0

    def grantees(self, s: Any, client_id: int) -> list[Grantee]:
        out = []
        for grant in s.scalars(select(m.Grant).where(m.Grant.client_id == client_id, m.Grant.revoked_at.is_(None))):
            engineer = s.get(m.Engineer, grant.engineer_id)
            row = EngineerRow(*(getattr(engineer, f) for f in EngineerRow._fields))
            out.append(Grantee(row, GrantRow(*(getattr(grant, f) for f in GrantRow._fields)), None))
        return out


class Recorder:
    """Notes each event appended, in the unit of work (nothing signed: no key here)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int | None, dict[str, Any] | None]] = []

    def append(self, s: Any, action: str, *, client_id: Any, details: Any) -> int:
        self.events.append((action, client_id, details))
        return 2000 + len(self.events)


class RotationSeal:
    """The rotation keyholder's hands without a key: it notes what it is shown, answers fixed
    ciphertext (``forge``: a change made to the answer; ``new_version``: a batch's rows are
    answered under it, the version a start makes)."""

    def __init__(self, forge: Any = None, new_version: int = 2) -> None:
        self.forge, self.new_version = forge, new_version
        self.drafts: list[StartDraft] = []
        self.batches: list[Batch] = []

    def new_key(self, draft: StartDraft) -> NewClientKey:
        self.drafts.append(draft)
        v = self.new_version = draft.new_version
        made = NewClientKey(
            version=v,
            fingerprint=b"\x11" * 32,
            signed_at=1_700_000_000,
            signature=SIGNATURE,
            recovery_seal=b"\x02recovery copy",
            engineer_seals=tuple((g.engineer.id, b"\x02copy of %d" % g.engineer.id) for g in draft.grantees),
            slug_blob=versioned_blob(v, b"slug"),
            name_blob=versioned_blob(v, b"name"),
            lookup_key_blob=versioned_blob(v, b"lookup"),
            backup_key_blob=None if draft.client.backup_key_blob is None else versioned_blob(v, b"backup"),
            audit_keys_blob=versioned_blob(v, b"audit ring"),
        )
        return made if self.forge is None else self.forge(draft, made)

    def rewrap(self, batch: Batch) -> Sequence[Rewrapped]:
        self.batches.append(batch)
        v = self.new_version
        made = [Rewrapped(r.secret_id, r.version, versioned_blob(v, b"dek %d" % r.secret_id)) for r in batch.rows]
        return made if self.forge is None else self.forge(batch, made)


@contextmanager
def recorded_statements(engine: Any) -> Iterator[list[str]]:
    """Every SQL statement ``engine`` runs while the block is open, in order (the tests that a
    refused caller is refused before any row of the target is read)."""
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)


@contextmanager
def rows_restored_after(store: Any, *models: type[m.Base]) -> Iterator[None]:
    """The rows of ``models`` written back as they were when the block ends (a DBA's change
    undone between the cases of one test)."""
    with store.transaction() as s:
        saved = [
            (model, {c.key: getattr(row, c.key) for c in model.__table__.columns})
            for model in models
            for row in s.scalars(select(model))
        ]
    yield
    with store.transaction() as s:
        for model, values in saved:
            s.merge(model(**values))
