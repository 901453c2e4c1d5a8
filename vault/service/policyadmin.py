"""Client policies for admins: show, set, and adopt (sign as stored) after an upgrade.

A policy is used only through its admin's signature (policies.py). Revision 0008 added
the signatures: on a vault upgraded from before, every stored policy reads as the strict
one until an admin signs it. ``set_policy`` changes and signs one client's policy;
``unsigned_policies`` lists the stored policies that do not verify, as stored, and
``adopt_policies`` signs exactly those the admin reviewed (refused if any changed since),
so that an upgrade need not be followed by one ``policy set`` per client.
"""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.errors import IntegrityError, InvalidInput, VaultError
from vault.service import policies
from vault.service.core import epoch
from vault.service.policies import Policy
from vault.service.records import PolicyInfo
from vault.service.rows import EngineerRecord
from vault.storage import models as m

if TYPE_CHECKING:
    from vault.authority.journal import Journal
    from vault.keyholder.keys import Keys
    from vault.keyholder.trust import Trust
    from vault.service.clients import Clients
    from vault.service.core import Core
    from vault.service.policies import PolicyCheck


class Policies:
    """Checkout policies: ``vault.policies.get/set/unsigned/adopt``."""

    def __init__(
        self, core: Core, keys: Keys, trust: Trust, journal: Journal, policy_check: PolicyCheck, clients: Clients
    ) -> None:
        self.core = core
        self.keys = keys
        self.trust = trust
        self.journal = journal
        self.policy_check = policy_check
        self.clients = clients

    @staticmethod
    def _policy_info(client: str, p: Policy) -> PolicyInfo:
        return PolicyInfo(
            client, p.reason_required, p.exclusive, p.rotate_after_checkout, p.checkout_minutes, p.stale_days, p.signed
        )

    def get(self, client: str) -> PolicyInfo:
        """The policy that applies (``signed`` False: the stored one fails verification, the strict one applies)."""
        with self.core.store.transaction() as s:
            row = self.clients.client(s, client)
            return self._policy_info(client, self.policy_check.policy(s, row.id))

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
        with self.core.store.transaction() as s:
            admin = self.trust.my_admin_row(s)
            row = self.clients.client(s, client)
            stored = s.get(m.ClientPolicy, row.id)
            current = self.policy_check.verified_policy(s, row.id, stored, (admin,))
            wanted = current._asdict()
            for name, value in (
                ("reason_required", reason_required),
                ("exclusive", exclusive),
                ("rotate_after_checkout", rotate_after_checkout),
            ):
                if value is not None:
                    wanted[name] = value
            if checkout_for is not None:
                minutes = int(checkout_for.total_seconds() // 60)
                if not 1 <= minutes <= policies.MAX_CHECKOUT_MINUTES:
                    raise InvalidInput("bad checkout length", hint="use between 1m and 7d")
                wanted["checkout_minutes"] = minutes
            if stale_days is not None:
                if not 0 <= stale_days <= policies.MAX_STALE_DAYS:
                    raise InvalidInput("bad stale-after", hint="use a number of days; 0 turns the flag off")
                wanted["stale_days"] = stale_days or None
            changes: dict[str, object] = {
                name: value for name, value in wanted.items() if name != "signed" and getattr(current, name) != value
            }
            if not current.signed:
                changes["signed"] = True  # a policy that did not verify is signed afresh
            if stored is None:
                stored = m.ClientPolicy(client_id=row.id)
                s.add(stored)
            for name in ("reason_required", "exclusive", "rotate_after_checkout", "checkout_minutes", "stale_days"):
                setattr(stored, name, wanted[name])
            now = self.core.clock()
            stored.updated_at = now
            policies.sign_policy(self.keys.my_signing_key(), self.core.vid(s), stored, admin.id, epoch(now))
            self.journal.append(s, "policy-set", client_id=row.id, details=changes)
            return self._policy_info(client, Policy(**{**wanted, "signed": True}))

    def adopt_policies(self, s: Session, departing: m.Engineer) -> None:
        """Re-sign, as the acting admin, the policies and settings ``departing`` signed that
        verify now (before they lose the admin role); the others stay unverified."""
        me = self.trust.my_admin_row(s)
        at = epoch(self.core.clock())
        for stored in s.scalars(select(m.ClientPolicy).where(m.ClientPolicy.signed_by == departing.id)):
            if self.policy_check.verified_policy(s, stored.client_id, stored).signed:
                policies.sign_policy(self.keys.my_signing_key(), self.core.vid(s), stored, me.id, at)
        info = self.core.info(s)
        if info.settings_signed_by == departing.id and self.policy_check.settings_signed(s):
            policies.sign_settings(self.keys.my_signing_key(), info, me.id, at)

    def unsigned(self) -> builtins.list[PolicyInfo]:
        """Admin: every client whose stored policy does not verify, with the values as stored
        (``signed`` False) and within the bounds a policy may have: what ``adopt_policies``
        would sign. A stored row out of bounds is not listed (``policy set`` fixes it)."""
        with self.core.store.transaction() as s:
            return [info for _, info in self._unsigned_policies(s, self.trust.my_admin_row(s))]

    def adopt(self, shown: Sequence[PolicyInfo]) -> builtins.list[PolicyInfo]:
        """Admin: sign, as stored, the unverified policies ``shown`` (what ``unsigned_policies``
        returned and the admin reviewed); one ``policy-set`` event per client. Nothing is
        signed if the stored policies changed since they were shown."""
        with self.core.store.transaction() as s:
            admin = self.trust.my_admin_row(s)
            pending = self._unsigned_policies(s, admin)
            if [info for _, info in pending] != list(shown):
                raise IntegrityError(
                    "the stored policies changed since they were shown: nothing was signed",
                    hint="run `credvault policy adopt` again and check what it shows",
                )
            now = self.core.clock()
            signed = []
            for stored, info in pending:
                stored.updated_at = now
                policies.sign_policy(self.keys.my_signing_key(), self.core.vid(s), stored, admin.id, epoch(now))
                details = {
                    "adopted": True,
                    "reason_required": info.reason_required,
                    "exclusive": info.exclusive,
                    "rotate_after_checkout": info.rotate_after_checkout,
                    "checkout_minutes": info.checkout_minutes,
                    "stale_days": info.stale_days,
                }
                self.journal.append(s, "policy-set", client_id=stored.client_id, details=details)
                signed.append(PolicyInfo(**{**info.to_json(), "signed": True}))
            return signed

    def _unsigned_policies(self, s: Session, admin: EngineerRecord) -> builtins.list[tuple[m.ClientPolicy, PolicyInfo]]:
        out = []
        for stored in s.scalars(select(m.ClientPolicy).order_by(m.ClientPolicy.client_id)):
            if self.policy_check.verified_policy(s, stored.client_id, stored, (admin,)).signed:
                continue
            minutes, stale = stored.checkout_minutes, stored.stale_days
            if not 1 <= minutes <= policies.MAX_CHECKOUT_MINUTES or not (
                stale is None or 0 < stale <= policies.MAX_STALE_DAYS
            ):
                continue
            client = s.get(m.Client, stored.client_id)
            try:
                slug = self.clients.slug(s, client) if client is not None else None
            except (VaultError, UnicodeDecodeError):
                slug = None
            if slug is None:
                continue  # a client whose keys do not open: nothing to show, nothing signed
            as_stored = Policy(
                bool(stored.reason_required),
                bool(stored.exclusive),
                bool(stored.rotate_after_checkout),
                minutes,
                stale,
                False,
            )
            out.append((stored, self._policy_info(slug, as_stored)))
        return out
