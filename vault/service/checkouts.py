"""Checkout and check-in: revealing a secret with a reason, on the record.

The order of a reveal is fixed: check the grant and the client's policy, decrypt,
append the audit event, **commit durably**, and only then hand the value back. If the
commit fails, nothing is returned (``AuditUnavailable``): the vault fails closed.

Exclusive checkout locks the secret's row (``FOR UPDATE`` on PostgreSQL; SQLite
serialises writers with ``BEGIN IMMEDIATE``), so of two engineers racing for it
exactly one wins and the other gets ``CheckoutConflict`` naming the holder.
"""

from __future__ import annotations

import builtins
import datetime as dt
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.crypto import signing
from vault.crypto.labels import LABEL_TAG_CLIENT_SLUG, LABEL_TAG_SECRET_NAME
from vault.errors import (
    AccessDenied,
    AuditUnavailable,
    CheckoutConflict,
    ConcurrentChange,
    InvalidInput,
    NotFound,
    StoreBusy,
    StoreUnavailable,
    VaultError,
)
from vault.service import rows, validation
from vault.service.core import ROLE_ADMIN
from vault.service.passwords import generate_password
from vault.service.policies import Policy
from vault.service.records import CheckoutInfo, Revealed
from vault.service.rows import EngineerRecord, HasId, SecretRecord, VersionRecord
from vault.service.secrets import METADATA_FIELDS
from vault.storage import models as m

if TYPE_CHECKING:
    from vault.authority.journal import Journal
    from vault.keyholder.keys import Keys
    from vault.keyholder.trust import Trust
    from vault.service.clients import Clients
    from vault.service.core import Core
    from vault.service.holds import Holds
    from vault.service.policies import PolicyCheck
    from vault.service.secrets import Secrets


MAX_REASON = 500


class _Target(NamedTuple):
    """What a checkout acts on, as ORM objects or plain rows, every check on them made."""

    vault_id: bytes
    head: tuple[int, bytes] | None  # the audit head, when read under the write lock already
    me: EngineerRecord
    client: HasId
    audit_keys_blob: bytes
    secret: SecretRecord
    must_change: bool
    slug: str
    policy: Policy  # verified, or the strict policy (policies.py)
    version: VersionRecord | None  # None: read it after the holds are known


class Checkouts:
    """Checkouts: ``vault.checkouts.checkout/reveal/checkin/break_checkout/list``."""

    def __init__(
        self,
        core: Core,
        keys: Keys,
        trust: Trust,
        journal: Journal,
        policy_check: PolicyCheck,
        holds: Holds,
        clients: Clients,
        secrets: Secrets,
    ) -> None:
        self.core = core
        self.keys = keys
        self.trust = trust
        self.journal = journal
        self.policy_check = policy_check
        self.holds = holds
        self.clients = clients
        self.secrets = secrets

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
        validation.field_name(field)
        if version is not None:
            validation.number("version", version, 1)
        if reason is not None:
            reason = reason.strip()
            validation.field_value("reason", reason)
            if len(reason) > MAX_REASON:
                raise InvalidInput(f"the reason is longer than {MAX_REASON} characters")
        try:
            # The session first: loading it may read the vault id in a transaction of its own,
            # which must not wait for the write lock the unit below takes at once (SQLite).
            self.keys.me()
            with self.core.store.unit() as s:
                revealed = self._checkout(s, ref, reason or None, field, version, hold, hold_for)
        except (ConcurrentChange, StoreBusy):
            raise  # nothing was revealed or recorded: Vault retries a ConcurrentChange; a lock held elsewhere says so
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
        t = self._fast_target(s, ref, version) or self._target(s, ref)
        me, secret, policy = t.me, t.secret, t.policy
        if policy.reason_required and not reason:
            raise InvalidInput(
                f"client {t.slug!r} requires a reason for every checkout", hint='pass --reason "T-1234 reset VPN"'
            )
        now = self.core.clock()
        held = self.holds.lock_and_find_holds(s, secret)
        # Another's hold can only stop this checkout if it claims to be exclusive, or if the
        # policy is (then only when this checkout holds too): only those are verified.
        blocking = [c for c in held if c.exclusive or (policy.exclusive and hold)]
        theirs = self.holds.genuine_holds(s, t.client, t.audit_keys_blob, secret.id, blocking, me.id)
        others = [c for c in theirs if c.exclusive]
        if others or (policy.exclusive and hold and theirs):
            holder = others[0] if others else theirs[0]
            who = s.get(m.Engineer, holder.engineer_id)
            until = holder.expires_at.isoformat(timespec="minutes")
            raise CheckoutConflict(f"{ref} is checked out exclusively by {who.name if who else '?'} until {until}")
        row = t.version or self.secrets.version(s, secret, version)
        value = self.field_value(s, t.client, secret, row, field, ref, named=True)
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
        appending = rows.RowAppend(t.vault_id, t.head, t.client, t.audit_keys_blob)
        seq = self.journal.append(
            s, action, client_id=t.client.id, secret_id=secret.id, details=details, actor=me, row=appending
        )
        conn = rows.connection(s)
        if hold:
            mine = [c.id for c in held if c.engineer_id == me.id]
            if mine:  # a new checkout by the same engineer replaces theirs
                rows.REPLACE.run_many(conn, [{"checkout": i, "at": now} for i in mine])
            rows.ADD_CHECKOUT.run(
                conn,
                {
                    "secret_id": secret.id,
                    "client_id": t.client.id,
                    "engineer_id": me.id,
                    "exclusive": policy.exclusive,
                    "event_seq": seq,
                    "started_at": now,
                    "expires_at": expires,
                },
            )
        flag = policy.rotate_after_checkout and field == "password"  # a plain reveal shows the password too
        (rows.TOUCH_AND_FLAG_SECRET if flag else rows.TOUCH_SECRET).run(conn, {"secret": secret.id, "at": now})
        return Revealed(ref, field, row.version, value, expires, flag or t.must_change)

    def _target(self, s: Session, ref: str) -> _Target:
        """What a checkout acts on, found and checked through the ORM (the general path)."""
        me = self.trust.my_row(s)
        client, secret, slug = self.secrets.secret(s, ref)
        policy = self.policy_check.policy(s, client.id)
        if client.audit_keys_blob is None:
            self.journal.audit_ring(s, client)  # made on first use
        assert client.audit_keys_blob is not None
        tags = self.keys.client_keys.tags
        if len(tags) >= 4096:  # a guess per secret checked out; bounded
            tags.clear()
        tags[validation.secret_ref(ref)] = secret.name_tag
        vault_id = self.core.info(s).vault_id
        return _Target(
            vault_id, None, me, client, client.audit_keys_blob, secret, secret.must_change, slug, policy, None
        )

    def _fast_target(self, s: Session, ref: str, version: int | None) -> _Target | None:
        """``_target`` in one Core statement, or None to take the general path.

        Every check of the general path is made here on the rows read now (the engineer's
        row, certificate, status and keys, the organisation key pin, the root-key version,
        an engineer's grants and their signers); only what is a pure function of bytes
        already verified is remembered (signatures, decrypted client fields), plus a guess
        of the secret's name tag that is checked against the client's lookup key. Anything
        unexpected, an error included, goes to the general path, which says what is wrong.
        """
        try:
            slug, name = validation.secret_ref(ref)
            tag = self.keys.client_keys.tags.get((slug, name))
            if tag is None:
                return None
            me = self.keys.me()
            conn = rows.connection(s)
            sqlite = conn.dialect.name == "sqlite"
            params: dict[str, Any] = {
                "me": me.engineer_id,
                "tag": tag,
                "version": version or None,
                "now": self.core.clock(),
            }
            bundle, client_id = self.keys.root, self.keys.slugs.get(slug)
            if bundle is not None:  # an admin's (checked below): the client by its slug tag
                params["slug_tag"] = signing.lookup_tag(bundle.lookup_key, LABEL_TAG_CLIENT_SLUG, slug)
            elif client_id is not None:  # an engineer's: the client their grant named
                params["client"] = client_id
            else:
                return None
            found = rows.CHECKOUT_READ[bundle is not None, sqlite].all(conn, params)
            if not found:
                return None  # no such secret (or a stale guess): the general path says which
            read = rows.CheckoutRead(found, sqlite, engineer=bundle is None)
            self.core.cached_vault_id = read.vault_id
            self.trust.check_pin(me, read.org_signing_public, s)
            row = read.me
            self.trust.check_me(s, me, row)
            if (row.role == ROLE_ADMIN) != (bundle is not None) or (
                bundle is not None and bundle.version != read.root_version
            ):
                return None
            if bundle is None:
                self.trust.first_valid_grant(s, read.grants, row, read.signers)
            client, secret = read.client, read.secret
            policy = self.policy_check.verified_policy(s, client.id, read.policy, (row, *read.signers))
            self.clients.check_slug(s, client, client.slug_blob, slug)  # a moved slug tag: the general path refuses it
            lookup_key = self.keys.client_field(s, client, client.lookup_key_blob, "lookup-key")
            if client.audit_keys_blob is None or signing.lookup_tag(lookup_key, LABEL_TAG_SECRET_NAME, name) != tag:
                return None
        except VaultError:
            return None
        if read.holds is not None:  # read under SQLite's write lock, in this transaction: current
            s.info["holds"] = (secret.id, read.holds)
        return _Target(
            read.vault_id,
            read.head,
            row,
            client,
            client.audit_keys_blob,
            secret,
            secret.must_change,
            slug,
            policy,
            read.version,
        )

    def field_value(
        self, s: Session, client: HasId, secret: HasId, row: VersionRecord, field: str, ref: str, *, named: bool = False
    ) -> str:
        """The field's value; ``named``: ``secret`` was found by the name in ``ref``, checked here."""
        opened = self.secrets.open(s, client, secret, row)
        if named:  # the name tag found this row (the fast path too): the metadata must hold that name
            self.secrets.check_name(opened, validation.secret_ref(ref)[1])
        if field == "password":
            return self.secrets.password(client, secret, row, opened)
        if field in METADATA_FIELDS or field == "name":
            value = opened.metadata.get(field)
        else:
            value = (opened.metadata.get("fields") or {}).get(field)
        if value is None:
            raise NotFound(f"secret {ref!r} has no {validation.shown(field)} field")
        return str(value)

    # -- check-in ------------------------------------------------------------------------------------------

    def checkin(
        self, ref: str, *, new_password: str | None = None, generate: bool = False, length: int | None = None
    ) -> Revealed | None:
        """Release the engineer's checkout; store a new password if given (or generated)."""
        if new_password is not None and generate:
            raise InvalidInput("give a new password or --generate, not both")
        if generate:
            new_password = generate_password(length) if length is not None else generate_password()
        with self.core.store.transaction() as s:  # the new version and the release commit together
            if new_password is not None:
                self.secrets.update_in(s, ref, new_password, {}, None, None)
            me = self.trust.my_row(s)
            client, secret, _slug = self.secrets.secret(s, ref)
            mine = [c.id for c in self.holds.lock_and_find_holds(s, secret) if c.engineer_id == me.id]
            if not mine and new_password is None:
                raise NotFound(f"you hold no checkout of {ref!r}")
            if mine:
                rows.RELEASE.run_many(
                    rows.connection(s), [{"checkout": i, "at": self.core.clock(), "by": me.id} for i in mine]
                )
            self.journal.append(
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
        with self.core.store.transaction() as s:
            me = self.trust.my_row(s)
            if me.role != ROLE_ADMIN:
                raise AccessDenied("only an admin can break a checkout")
            client, secret, _slug = self.secrets.secret(s, ref)
            held = self.holds.lock_and_find_holds(s, secret)
            if not held:
                raise NotFound(f"{ref!r} is not checked out")
            rows.RELEASE.run_many(
                rows.connection(s), [{"checkout": c.id, "at": self.core.clock(), "by": me.id} for c in held]
            )
            names = []
            for c in held:
                who = s.get(m.Engineer, c.engineer_id)
                names.append(who.name if who else "?")
            self.journal.append(
                s,
                "checkout-break",
                client_id=client.id,
                secret_id=secret.id,
                details={"holders": names},
            )
            return ", ".join(names)

    def list(self) -> builtins.list[CheckoutInfo]:
        """Open checkouts the viewer may see (all for an admin, their own otherwise)."""
        with self.core.store.transaction() as s:
            me = self.trust.my_row(s)
            query = (
                select(m.Checkout)
                .where(m.Checkout.released_at.is_(None), m.Checkout.expires_at > self.core.clock())
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
                meta = self.secrets.open(s, client, secret, self.secrets.version(s, secret, None)).metadata
                out.append(
                    CheckoutInfo(
                        self.clients.slug(s, client), meta["name"], who.name, c.exclusive, c.started_at, c.expires_at
                    )
                )
            return out
