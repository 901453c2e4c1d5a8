"""Checkout and check-in: revealing a secret with a reason, on the record.

The order of a reveal is fixed: check the grant and the client's policy, decrypt,
append the audit event, **commit durably**, and only then hand the value back. If the
commit fails, nothing is returned (``AuditUnavailable``): the vault fails closed.

Exclusive checkout locks the secret's row (``FOR UPDATE`` on PostgreSQL; SQLite
serialises writers with ``BEGIN IMMEDIATE``), so of two engineers racing for it
exactly one wins and the other gets ``CheckoutConflict`` naming the holder.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.errors import (
    AccessDenied,
    AuditUnavailable,
    CheckoutConflict,
    ConcurrentChange,
    InvalidInput,
    NotFound,
    StoreUnavailable,
)
from vault.service import validation
from vault.service.base import ROLE_ADMIN
from vault.service.passwords import generate_password
from vault.service.records import CheckoutInfo, PolicyInfo, Revealed, SecretInfo
from vault.service.secrets import METADATA_FIELDS, SecretOps
from vault.storage import models as m

MAX_REASON = 500


class CheckoutOps(SecretOps):
    # -- policy --------------------------------------------------------------------------

    def _policy(self, s: Session, client_id: int) -> m.ClientPolicy:
        policy = s.get(m.ClientPolicy, client_id)
        if policy is None:  # clients made before policies existed get the defaults
            policy = m.ClientPolicy(
                client_id=client_id,
                reason_required=True,
                exclusive=False,
                rotate_after_checkout=False,
                checkout_minutes=120,
                updated_at=self.clock(),
            )
            s.add(policy)
        return policy

    def get_policy(self, client: str) -> PolicyInfo:
        with self.store.transaction() as s:
            row = self._client(s, client)
            p = self._policy(s, row.id)
            return PolicyInfo(
                client, p.reason_required, p.exclusive, p.rotate_after_checkout, p.checkout_minutes, p.stale_days
            )

    def set_policy(
        self,
        client: str,
        *,
        reason_required: bool | None = None,
        exclusive: bool | None = None,
        rotate_after_checkout: bool | None = None,
        checkout_for: dt.timedelta | None = None,
        stale_days: int | None = None,
    ) -> PolicyInfo:
        with self.store.transaction() as s:
            self._my_admin_row(s)
            row = self._client(s, client)
            p = self._policy(s, row.id)
            changes: dict[str, object] = {}
            for name, value in (
                ("reason_required", reason_required),
                ("exclusive", exclusive),
                ("rotate_after_checkout", rotate_after_checkout),
            ):
                if value is not None and getattr(p, name) != value:
                    setattr(p, name, value)
                    changes[name] = value
            if checkout_for is not None:
                minutes = int(checkout_for.total_seconds() // 60)
                if not 1 <= minutes <= 7 * 24 * 60:
                    raise InvalidInput("bad checkout length", hint="use between 1m and 7d")
                p.checkout_minutes = minutes
                changes["checkout_minutes"] = minutes
            if stale_days is not None:
                if not 0 <= stale_days <= 36500:
                    raise InvalidInput("bad stale-after", hint="use a number of days; 0 turns the flag off")
                p.stale_days = stale_days or None
                changes["stale_days"] = stale_days
            p.updated_at = self.clock()
            self._append(s, "policy-set", client_id=row.id, details=changes)
            return PolicyInfo(
                client, p.reason_required, p.exclusive, p.rotate_after_checkout, p.checkout_minutes, p.stale_days
            )

    # -- reveal and checkout ---------------------------------------------------------------------

    def reveal(
        self, ref: str, field: str = "password", *, version: int | None = None, reason: str | None = None
    ) -> str:
        """Reveal one field: audited like a checkout, without holding the secret."""
        return self.checkout(ref, field=field, version=version, reason=reason, hold=False).value

    def checkout(
        self,
        ref: str,
        *,
        reason: str | None = None,
        field: str = "password",
        version: int | None = None,
        hold: bool = True,
        hold_for: dt.timedelta | None = None,
    ) -> Revealed:
        """Reveal a field of a secret after its audit event is durably committed."""
        if reason is not None:
            reason = reason.strip()
            validation.field_value("reason", reason)
            if len(reason) > MAX_REASON:
                raise InvalidInput(f"the reason is longer than {MAX_REASON} characters")
        try:
            with self.store.transaction() as s:
                revealed = self._checkout(s, ref, reason or None, field, version, hold, hold_for)
        except ConcurrentChange:
            raise  # nothing was revealed or recorded: Vault retries the whole checkout
        except StoreUnavailable as error:
            raise AuditUnavailable(f"the access could not be recorded ({error}); nothing was revealed") from None
        return revealed  # only now, after the commit, does the value leave the vault

    def _checkout(
        self,
        s: Session,
        ref: str,
        reason: str | None,
        field: str,
        version: int | None,
        hold: bool,
        hold_for: dt.timedelta | None,
    ) -> Revealed:
        me = self._my_row(s)
        client, secret, slug = self._secret(s, ref)
        policy = self._policy(s, client.id)
        if policy.reason_required and not reason:
            raise InvalidInput(
                f"client {slug!r} requires a reason for every checkout", hint='pass --reason "T-1234 reset VPN"'
            )
        now = self.clock()
        held = self._lock_and_find_holds(s, secret)
        others = [c for c in held if c.engineer_id != me.id and c.exclusive]
        if others or (policy.exclusive and hold and any(c.engineer_id != me.id for c in held)):
            holder = others[0] if others else next(c for c in held if c.engineer_id != me.id)
            who = s.get(m.Engineer, holder.engineer_id)
            until = holder.expires_at.isoformat(timespec="minutes")
            raise CheckoutConflict(f"{ref} is checked out exclusively by {who.name if who else '?'} until {until}")
        row = self._version(s, secret, version)
        value = self._field_value(s, client, secret, row, field, ref)
        expires = None
        details = {"field": field, "version": row.version, "reason": reason}
        action = "reveal"
        if hold:
            length = hold_for if hold_for is not None else dt.timedelta(minutes=policy.checkout_minutes)
            if not dt.timedelta(minutes=1) <= length <= dt.timedelta(days=7):
                raise InvalidInput("bad checkout length", hint="use between 1m and 7d, e.g. --for 2h")
            expires = now + length
            action = "checkout"
            details.update({"exclusive": policy.exclusive, "until": int(expires.timestamp())})
        event = self._append(s, action, client_id=client.id, secret_id=secret.id, details=details)
        if hold:
            for mine in (c for c in held if c.engineer_id == me.id):
                mine.released_at = now  # a new checkout by the same engineer replaces theirs
            assert expires is not None
            s.add(
                m.Checkout(
                    secret_id=secret.id,
                    client_id=client.id,
                    engineer_id=me.id,
                    exclusive=policy.exclusive,
                    event_seq=event.seq,
                    started_at=now,
                    expires_at=expires,
                )
            )
        if policy.rotate_after_checkout and field == "password":
            secret.must_change = True  # a plain reveal shows the password too
        secret.last_used_at = now
        return Revealed(ref, field, row.version, value, expires, secret.must_change)

    def _lock_and_find_holds(self, s: Session, secret: m.Secret) -> list[m.Checkout]:
        s.execute(select(m.Secret.id).where(m.Secret.id == secret.id).with_for_update())
        return list(
            s.scalars(
                select(m.Checkout).where(
                    m.Checkout.secret_id == secret.id,
                    m.Checkout.released_at.is_(None),
                    m.Checkout.expires_at > self.clock(),
                )
            )
        )

    def _field_value(
        self, s: Session, client: m.Client, secret: m.Secret, row: m.SecretVersion, field: str, ref: str
    ) -> str:
        opened = self._open(s, client, secret, row)
        if field == "password":
            return self._password(client, secret, row, opened)
        if field in METADATA_FIELDS or field == "name":
            value = opened.metadata.get(field)
        else:
            value = (opened.metadata.get("fields") or {}).get(field)
        if value is None:
            raise NotFound(f"secret {ref!r} has no {validation.shown(field)} field")
        return str(value)

    def update_secret(self, ref: str, **changes: Any) -> SecretInfo:
        """``SecretOps.update_secret``, refused while another engineer holds an exclusive checkout."""
        with self.store.transaction() as s:
            me = self._my_row(s)
            _client, secret, _slug = self._secret(s, ref)
            others = [c for c in self._lock_and_find_holds(s, secret) if c.engineer_id != me.id and c.exclusive]
            if others:
                holder = s.get(m.Engineer, others[0].engineer_id)
                until = others[0].expires_at.isoformat(timespec="minutes")
                raise CheckoutConflict(
                    f"{ref} is checked out exclusively by {holder.name if holder else '?'} until {until}"
                )
        return super().update_secret(ref, **changes)

    # -- check-in ------------------------------------------------------------------------------------------

    def checkin(
        self, ref: str, *, new_password: str | None = None, generate: bool = False, length: int | None = None
    ) -> Revealed | None:
        """Release the engineer's checkout; store a new password if given (or generated)."""
        if new_password is not None and generate:
            raise InvalidInput("give a new password or --generate, not both")
        if generate:
            new_password = generate_password(length) if length else generate_password()
        if new_password is not None:
            self.update_secret(ref, password=new_password)
        with self.store.transaction() as s:
            me = self._my_row(s)
            client, secret, _slug = self._secret(s, ref)
            mine = [c for c in self._lock_and_find_holds(s, secret) if c.engineer_id == me.id]
            if not mine and new_password is None:
                raise NotFound(f"you hold no checkout of {ref!r}")
            for c in mine:
                c.released_at, c.released_by = self.clock(), me.id
            self._append(
                s,
                "checkin",
                client_id=client.id,
                secret_id=secret.id,
                details={"new_version": new_password is not None, "released": len(mine)},
            )
            if secret.must_change:
                return Revealed(ref, "password", secret.current_version, "", None, True)
            return None

    def break_checkout(self, ref: str) -> str:
        """Admin: release every open checkout of a secret; returns who held it."""
        with self.store.transaction() as s:
            me = self._my_row(s)
            if me.role != ROLE_ADMIN:
                raise AccessDenied("only an admin can break a checkout")
            client, secret, _slug = self._secret(s, ref)
            held = self._lock_and_find_holds(s, secret)
            if not held:
                raise NotFound(f"{ref!r} is not checked out")
            names = []
            for c in held:
                c.released_at, c.released_by = self.clock(), me.id
                who = s.get(m.Engineer, c.engineer_id)
                names.append(who.name if who else "?")
            self._append(
                s,
                "checkout-break",
                client_id=client.id,
                secret_id=secret.id,
                details={"holders": names},
            )
            return ", ".join(names)

    def list_checkouts(self) -> list[CheckoutInfo]:
        """Open checkouts the viewer may see (all for an admin, their own otherwise)."""
        with self.store.transaction() as s:
            me = self._my_row(s)
            query = (
                select(m.Checkout)
                .where(m.Checkout.released_at.is_(None), m.Checkout.expires_at > self.clock())
                .order_by(m.Checkout.started_at)
            )
            if me.role != ROLE_ADMIN:
                query = query.where(m.Checkout.engineer_id == me.id)
            out = []
            for c in s.scalars(query):
                client = s.get(m.Client, c.client_id)
                secret = s.get(m.Secret, c.secret_id)
                who = s.get(m.Engineer, c.engineer_id)
                if client is None or secret is None or who is None:
                    continue
                meta = self._open(s, client, secret, self._version(s, secret, None)).metadata
                out.append(
                    CheckoutInfo(self._slug(s, client), meta["name"], who.name, c.exclusive, c.started_at, c.expires_at)
                )
            return out
