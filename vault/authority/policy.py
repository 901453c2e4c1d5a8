"""A client's access policy as it applies (what the authority enforces on a checkout,
a check-in and a listing): verified through its admin's signature by ``PolicyCheck``
(``vault/service/policies.py``) or by the policies' keyholder (``vault/keyholder/
policies.py``), or the strict policy.

Also here, shared by both halves: the bounds a policy may have, the strict policy that
applies when a stored one cannot be trusted, and what a policy signature covers
(docs/format.md, "Signed policies and settings")."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

from vault.crypto import signing
from vault.crypto.labels import LABEL_SIG_POLICY
from vault.errors import UntrustedRecord
from vault.storage.rows import EngineerRecord

DEFAULT_CHECKOUT_MINUTES = 120
MAX_CHECKOUT_MINUTES = 7 * 24 * 60
MAX_STALE_DAYS = 36500


class Policy(NamedTuple):
    """A client's policy as it applies: verified, or the strict policy (``signed`` False)."""

    reason_required: bool
    exclusive: bool
    rotate_after_checkout: bool
    checkout_minutes: int
    stale_days: int | None
    signed: bool


class StoredPolicy(Protocol):
    """A stored policy row (ORM or plain), unverified."""

    @property
    def reason_required(self) -> bool: ...
    @property
    def exclusive(self) -> bool: ...
    @property
    def rotate_after_checkout(self) -> bool: ...
    @property
    def checkout_minutes(self) -> int: ...
    @property
    def stale_days(self) -> int | None: ...
    @property
    def signed_by(self) -> int | None: ...
    @property
    def signed_at(self) -> int | None: ...


def in_bounds(checkout_minutes: object, stale_days: object) -> bool:
    """Whether a policy's length and stale-after are within the bounds a policy may have."""
    return (
        isinstance(checkout_minutes, int)
        and not isinstance(checkout_minutes, bool)
        and 1 <= checkout_minutes <= MAX_CHECKOUT_MINUTES
        and (
            stale_days is None
            or (isinstance(stale_days, int) and not isinstance(stale_days, bool) and 0 < stale_days <= MAX_STALE_DAYS)
        )
    )


def strict_policy(row: StoredPolicy | None) -> Policy:
    """What applies when a policy cannot be trusted: every check on, the shorter length."""
    if row is None:
        return Policy(True, True, True, DEFAULT_CHECKOUT_MINUTES, None, False)
    minutes = row.checkout_minutes
    if not isinstance(minutes, int) or not 1 <= minutes <= DEFAULT_CHECKOUT_MINUTES:
        minutes = DEFAULT_CHECKOUT_MINUTES
    stale = row.stale_days
    return Policy(True, True, True, minutes, stale if isinstance(stale, int) and stale > 0 else None, False)


def policy_fields(vault_id: bytes, client_id: int, row: StoredPolicy) -> tuple[signing.ContextItem, ...]:
    """What a policy signature covers (booleans as 0/1: they are not context items)."""
    return (
        vault_id,
        client_id,
        int(bool(row.reason_required)),
        int(bool(row.exclusive)),
        int(bool(row.rotate_after_checkout)),
        int(row.checkout_minutes),
        int(row.stale_days or 0),
        int(row.signed_by or 0),
        int(row.signed_at or 0),
    )


class SignedRow(StoredPolicy, Protocol):
    """A stored policy row (ORM or plain) with its signature, unverified."""

    @property
    def signature(self) -> bytes | None: ...


def verified_policy(
    vault_id: bytes, client_id: int, row: SignedRow | None, signer: Callable[[int], EngineerRecord]
) -> Policy:
    """The policy that applies to ``client_id`` given its stored ``row`` (ORM or plain):
    verified under ``signer(id)`` (the row of the engineer it names, checked as an active
    admin, else UntrustedRecord) and within bounds, else the strict policy. The one
    definition: the service's ``PolicyCheck``, the policies' keyholder and the team server's
    checks (``vault/server/checks.py``) call it with their own signer lookup."""
    if row is None or row.signature is None:
        return strict_policy(row)
    try:
        admin = signer(row.signed_by or 0)
        assert admin.signing_public is not None
        fields = policy_fields(vault_id, client_id, row)
        signing.verify(admin.signing_public, row.signature, LABEL_SIG_POLICY, *fields, what="the client's policy")
    except UntrustedRecord:
        return strict_policy(row)
    if not in_bounds(row.checkout_minutes, row.stale_days):
        return strict_policy(row)  # signed, but out of range: never by this code
    return Policy(
        bool(row.reason_required),
        bool(row.exclusive),
        bool(row.rotate_after_checkout),
        row.checkout_minutes,
        row.stale_days,
        True,
    )
