"""The values that cross between the keyholder and the authority, for client policies.

Frozen values of ints, bytes, strings and the storage layer's plain rows, as for the
checkout (``requests.py``), so that they can cross a network later. A request names the
action, the caller, the client by id (none: every stored policy) and the organisation key
the engineer pinned. The authority answers with each stored policy as it is stored
(``PolicyRow``: unverified) with the row of the engineer who signed it, and the caller's
own row: the keyholder verifies each signature and applies the strict policy where one
does not verify (``vault/authority/policy.py``).

A change is signed by the keyholder inside the authority's unit of work (``SignedPolicy``:
the values, the signer, the time and the signature, and the event's details), for the
client and the stored policy it was shown, and for nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from vault.authority.requests import Caller, OrgKeyRow
from vault.storage.rows import EngineerRow, PolicyRow

GET, UNSIGNED, SET, ADOPT = "policy-get", "policy-unsigned", "policy-set", "policy-adopt"
READ_ACTIONS = (GET, UNSIGNED)
WRITE_ACTIONS = (SET, ADOPT)
MISSING_CLIENT = "no such client"
POLICY_SET = "policy-set"  # the event of a change (set or adopt)
CHANGED_SINCE_SHOWN = "the stored policies changed since they were shown: nothing was signed"


@dataclass(frozen=True)
class PolicyRequest:
    """``policy-get`` / ``policy-set`` of one client (``client_id``); ``policy-unsigned`` /
    ``policy-adopt`` of every stored policy (``client_id`` None)."""

    action: str
    caller: Caller
    client_id: int | None
    org_pin: bytes


@dataclass(frozen=True)
class ClientPolicy:
    """One client's stored policy as stored (None: no row), and the row of its signer."""

    client_id: int
    slug_blob: bytes
    stored: PolicyRow | None
    signer: EngineerRow | None


@dataclass(frozen=True, repr=False)
class PolicyRows:
    """What the authority read (the draft a change is signed over) or wrote (``seq`` set)."""

    seq: int  # the last event's number; 0 for a read or a draft
    vault_id: bytes
    org_signing_public: bytes
    org_chain: tuple[OrgKeyRow, ...]
    me: EngineerRow
    policies: tuple[ClientPolicy, ...]

    def __repr__(self) -> str:
        return f"PolicyRows(seq={self.seq}, clients={[p.client_id for p in self.policies]})"


@dataclass(frozen=True)
class SignedPolicy:
    """A client's new policy, signed by the keyholder (``row.signed_by`` the caller), and the
    details of its ``policy-set`` event (JSON, sealed under the client's audit key)."""

    client_id: int
    row: PolicyRow
    details_json: str
