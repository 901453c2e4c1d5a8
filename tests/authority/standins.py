"""Stand-ins for the authority's collaborators that hold no key: public-key checks that
look at the rows only, and an engineer's seal that returns fixed blobs (imported by the
authority tests: ``from standins import ...``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from vault.authority.requests import CheckoutResponse
from vault.errors import NotFound, UntrustedRecord
from vault.service.policies import Policy

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
