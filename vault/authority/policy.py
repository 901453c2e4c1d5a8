"""A client's access policy as it applies (what the authority enforces on a checkout,
a check-in and a listing): verified through its admin's signature by ``PolicyCheck``
(``vault/service/policies.py``), or the strict policy."""

from __future__ import annotations

from typing import NamedTuple


class Policy(NamedTuple):
    """A client's policy as it applies: verified, or the strict policy (``signed`` False)."""

    reason_required: bool
    exclusive: bool
    rotate_after_checkout: bool
    checkout_minutes: int
    stale_days: int | None
    signed: bool
