"""Client policies for admins: show, set, and adopt (sign as stored) after an upgrade.

A policy is used only through its admin's signature (policies.py). Revision 0008 added
the signatures: on a vault upgraded from before, every stored policy reads as the strict
one until an admin signs it. ``set`` changes and signs one client's policy;
``unsigned`` lists the stored policies that do not verify, as stored, and ``adopt`` signs
exactly those the admin reviewed (refused if any changed since), so that an upgrade need
not be followed by one ``policy set`` per client. The keyholder verifies and signs, the
authority reads and stores (vault/keyholder/policies.py, vault/authority/policies.py).
``adopt_policies`` (an admin's removal re-signs what the departing admin signed) is a
request to ``DepartingPolicyAuthority`` run in the removal's own unit of work, signed by
``DepartingAdoption`` (vault/authority/policy_adoption.py, vault/keyholder/policy_adoption.py).
"""

from __future__ import annotations

import builtins
import datetime as dt
import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from vault.authority.policies import PolicyAuthority
from vault.authority.policy_adoption import DepartingPolicyAuthority
from vault.keyholder.policies import PolicyKeyholder, wanted_values
from vault.keyholder.policy_adoption import DepartingAdoption
from vault.service.policyparts import CallerTrust, ClientLookup, Recorder, SigningKeys
from vault.service.records import PolicyInfo
from vault.storage import models as m
from vault.transport.https_policies import HttpsPolicyTransport
from vault.transport.policies import InProcessPolicyTransport
from vault.transport.policy_adoption import InProcessAdoptionTransport

if TYPE_CHECKING:
    from vault.authority.journal import Journal
    from vault.keyholder.keys import Keys
    from vault.keyholder.trust import Trust
    from vault.service.clients import Clients
    from vault.service.core import Core
    from vault.service.policies import PolicyCheck
    from vault.transport.https import HttpsTransport


class Policies:
    """Checkout policies: ``vault.policies.get/set/unsigned/adopt``, through the policies'
    keyholder (vault/keyholder/policies.py) and authority (vault/authority/policies.py)."""

    def __init__(
        self, core: Core, keys: Keys, trust: Trust, journal: Journal, policy_check: PolicyCheck, clients: Clients
    ) -> None:
        self.core = core
        self.keys = keys
        self.trust = trust
        self.journal = journal
        self.policy_check = policy_check
        self.clients = clients
        lookup = ClientLookup(core, clients)
        authority = PolicyAuthority(core.store, CallerTrust(trust), Recorder(journal), core.clock)
        self.keyholder = PolicyKeyholder(
            InProcessPolicyTransport(authority), SigningKeys(keys), lookup, lookup, core.clock
        )
        adoption = DepartingPolicyAuthority(CallerTrust(trust))
        self.adoption = DepartingAdoption(InProcessAdoptionTransport(adoption), SigningKeys(keys), core.clock)

    def get(self, client: str) -> PolicyInfo:
        """The policy that applies (``signed`` False: the stored one fails verification, the strict one applies)."""
        return self.keyholder.get(client)

    def set(
        self,
        client: str,
        *,
        reason_required: bool | None = None,
        exclusive: bool | None = None,
        rotate_after_checkout: bool | None = None,
        checkout_for: dt.timedelta | None = None,
        stale_days: int | None = None,
    ) -> PolicyInfo:
        """Change a client's policy and sign it (admin). What is not given keeps its value
        as it applies now: the strict one when the stored policy does not verify."""
        return self.keyholder.set(
            client,
            functools.partial(
                wanted_values,
                reason_required=reason_required,
                exclusive=exclusive,
                rotate_after_checkout=rotate_after_checkout,
                checkout_for=checkout_for,
                stale_days=stale_days,
            ),
        )

    def adopt_policies(self, s: Session, departing: m.Engineer) -> None:
        """Re-sign, as the acting admin, the policies and settings ``departing`` signed that
        verify now (before they lose the admin role); the others stay unverified. A request
        to ``DepartingPolicyAuthority`` inside the removal's unit of work ``s``, signed by the
        keyholder (``keyholder/policy_adoption.py``)."""
        self.adoption.adopt(departing.id, s)

    def unsigned(self) -> builtins.list[PolicyInfo]:
        """Admin: every client whose stored policy does not verify, with the values as stored
        (``signed`` False) and within the bounds a policy may have: what ``adopt`` would
        sign. A stored row out of bounds is not listed (``policy set`` fixes it)."""
        return self.keyholder.unsigned()

    def adopt(self, shown: Sequence[PolicyInfo]) -> builtins.list[PolicyInfo]:
        """Admin: sign, as stored, the unverified policies ``shown`` (what ``unsigned``
        returned and the admin reviewed); one ``policy-set`` event per client. Nothing is
        signed if the stored policies changed since they were shown."""
        return self.keyholder.adopt(shown)


def https_policy_keyholder(policies: Policies, https: HttpsTransport) -> PolicyKeyholder:
    """A policies keyholder of this Vault object over a team server (``https``): ``get`` and
    ``unsigned`` read through the server; the client lookup still reads the local database
    (docs/server.md §8 step 7); ``set`` and ``adopt`` are not served yet."""
    lookup = ClientLookup(policies.core, policies.clients)
    return PolicyKeyholder(HttpsPolicyTransport(https), SigningKeys(policies.keys), lookup, lookup, policies.core.clock)
