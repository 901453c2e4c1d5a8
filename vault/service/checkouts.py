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
import json
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.crypto import blobs, chain, signing
from vault.crypto.labels import LABEL_TAG_CLIENT_SLUG, LABEL_TAG_SECRET_NAME
from vault.errors import (
    AccessDenied,
    AuditUnavailable,
    CheckoutConflict,
    ConcurrentChange,
    InvalidInput,
    LookupMismatch,
    NotFound,
    StoreBusy,
    StoreUnavailable,
    UntrustedRecord,
    VaultError,
)
from vault.service import rows, validation
from vault.service.base import ROLE_ADMIN
from vault.service.passwords import generate_password
from vault.service.policies import Policy
from vault.service.records import CheckoutInfo, Revealed, SecretInfo
from vault.service.rows import EngineerRecord, HasId, SecretRecord, VersionRecord
from vault.service.secrets import METADATA_FIELDS, SecretOps
from vault.storage import models as m

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


class CheckoutOps(SecretOps):
    # -- policy ----------------------------------------------------------------------------
    # A policy is used only through its admin's signature (policies.py); a missing,
    # unsigned or forged row reads as the strict policy.

    def _policy(self, s: Session, client_id: int) -> Policy:
        return self._verified_policy(s, client_id, s.get(m.ClientPolicy, client_id))

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
            self._me()
            with self.store.unit() as s:
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
        t = self._target(s, ref, version)
        me, secret, policy = t.me, t.secret, t.policy
        if policy.reason_required and not reason:
            raise InvalidInput(
                f"client {t.slug!r} requires a reason for every checkout", hint='pass --reason "T-1234 reset VPN"'
            )
        now = self.clock()
        held = self._lock_and_find_holds(s, secret)
        # Another's hold can only stop this checkout if it claims to be exclusive, or if the
        # policy is (then only when this checkout holds too): only those are verified.
        blocking = [c for c in held if c.exclusive or (policy.exclusive and hold)]
        theirs = self._genuine_holds(s, t.client, t.audit_keys_blob, secret.id, blocking, me.id)
        others = [c for c in theirs if c.exclusive]
        if others or (policy.exclusive and hold and theirs):
            holder = others[0] if others else theirs[0]
            who = s.get(m.Engineer, holder.engineer_id)
            until = holder.expires_at.isoformat(timespec="minutes")
            raise CheckoutConflict(f"{ref} is checked out exclusively by {who.name if who else '?'} until {until}")
        row = t.version or self._version(s, secret, version)
        value = self._field_value(s, t.client, secret, row, field, ref, named=True)
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
        seq = self._append(
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

    def _target(self, s: Session, ref: str, version: int | None) -> _Target:
        """What a checkout acts on, read in one Core statement with every check made on it.

        The statement needs the secret's name tag and the client (an admin's by slug tag,
        an engineer's by the id their grant named). Both are remembered per session; when
        they are not known yet, or the rows no longer fit them (a stale hint), they are
        learned through the client lookup (``_client``: grant, slug and tag checks, with
        their errors), and the same read runs once more, this time raising what it finds.
        """
        slug, name = validation.secret_ref(ref)
        hint = self._hint(slug, name)
        if hint is not None:
            try:
                return self._read_target(s, ref, version, slug, name, *hint)
            except VaultError:
                self._client_keys.tags.pop((slug, name), None)  # learned again below, which says what is wrong
        return self._read_target(s, ref, version, slug, name, *self._learn(s, slug, name))

    def _hint(self, slug: str, name: str) -> tuple[bytes, bool, int | None] | None:
        """The remembered (name tag, admin?, client id) of a secret reference, or None."""
        tag = self._client_keys.tags.get((slug, name))
        if tag is None:
            return None
        if self._root is not None:
            return tag, True, None
        client_id = self._slugs.get(slug)
        return None if client_id is None else (tag, False, client_id)

    def _learn(self, s: Session, slug: str, name: str) -> tuple[bytes, bool, int | None]:
        """Find the client through its checked lookup and compute the secret's name tag."""
        admin = self._my_row(s).role == ROLE_ADMIN
        client = self._client(s, slug)
        tag = signing.lookup_tag(self._lookup_key(s, client), LABEL_TAG_SECRET_NAME, name)
        tags = self._client_keys.tags
        if len(tags) >= 4096:  # a guess per secret checked out; bounded
            tags.clear()
        tags[(slug, name)] = tag
        return tag, admin, None if admin else client.id

    def _read_target(
        self,
        s: Session,
        ref: str,
        version: int | None,
        slug: str,
        name: str,
        tag: bytes,
        admin: bool,
        client_id: int | None,
    ) -> _Target:
        """The one read of a checkout and its checks: the engineer's row, certificate, status
        and keys, the organisation key chain from their pin, the root-key version (an admin)
        or the grant ledger's head and its signer (an engineer), the policy's signature, the
        client's slug and the name tag against the client's lookup key."""
        me = self._me()
        conn = rows.connection(s)
        sqlite = conn.dialect.name == "sqlite"
        params: dict[str, Any] = {"me": me.engineer_id, "tag": tag, "version": version or None, "now": self.clock()}
        bundle = self._root if admin else None
        if admin:
            if bundle is None:
                bundle = self._root_bundle(s)
            params["slug_tag"] = signing.lookup_tag(bundle.lookup_key, LABEL_TAG_CLIENT_SLUG, slug)
        else:
            params["client"] = client_id
        found = rows.CHECKOUT_READ[admin, sqlite].all(conn, params)
        if not found:
            raise NotFound(f"no secret {ref!r}", hint=f"`credvault secret list {slug}` shows its secrets")
        read = rows.CheckoutRead(found, sqlite, engineer=not admin)
        self._vault_id = read.vault_id
        s.info["org_current"] = read.org_signing_public
        self._org_head(s, me.org_signing_public)  # the pin leads, by signed links, to the current key
        row = read.me
        self._check_me(s, me, row)
        if (row.role == ROLE_ADMIN) != admin:
            raise ConcurrentChange("the engineer's role changed while this ran: nothing was changed")
        if bundle is not None and bundle.version != read.root_version:
            bundle = self._root_bundle(s)  # the recovery key was rotated: open the current one
            if bundle.version != read.root_version:
                raise ConcurrentChange("the recovery key changed while this ran: nothing was changed")
        if not admin:
            self._first_valid_grant(s, read.grants, row, read.signers)
        client, secret = read.client, read.secret
        policy = self._verified_policy(s, client.id, read.policy, (row, *read.signers))
        self._check_slug(s, client, client.slug_blob, slug)  # a moved slug tag is refused
        lookup_key = self._client_field(s, client, client.lookup_key_blob, "lookup-key")
        if signing.lookup_tag(lookup_key, LABEL_TAG_SECRET_NAME, name) != tag:
            raise LookupMismatch(f"the secret found for {name!r} is not the one its name leads to")
        audit_keys_blob = client.audit_keys_blob
        if audit_keys_blob is None:  # the client's audit-key ring is made on first use
            stored = s.get(m.Client, client.id)
            assert stored is not None
            self._audit_ring(s, stored)
            audit_keys_blob = stored.audit_keys_blob
            assert audit_keys_blob is not None
        if read.holds is not None:  # read under SQLite's write lock, in this transaction: current
            s.info["holds"] = (secret.id, read.holds)
        return _Target(
            read.vault_id,
            read.head,
            row,
            client,
            audit_keys_blob,
            secret,
            secret.must_change,
            slug,
            policy,
            read.version,
        )

    def _lock_and_find_holds(self, s: Session, secret: HasId) -> list[rows.HoldRow]:
        """The open checkouts of a secret, after locking its row (``FOR UPDATE`` on PostgreSQL;
        on SQLite, BEGIN IMMEDIATE has already serialised writers, so the ones the fast path
        read with the secret in this transaction are current)."""
        known = s.info.pop("holds", None)
        if known is not None and known[0] == secret.id:
            return list(known[1])
        conn = rows.connection(s)
        if conn.dialect.name != "sqlite":
            rows.LOCK_SECRET.all(conn, {"secret": secret.id})
        return [rows.HoldRow._make(r) for r in rows.HOLDS.all(conn, {"secret": secret.id, "now": self.clock()})]

    def _genuine_holds(
        self,
        s: Session,
        client: HasId,
        audit_keys_blob: bytes | None,
        secret_id: int,
        held: list[rows.HoldRow],
        me_id: int,
    ) -> list[rows.HoldRow]:
        """Other engineers' open checkouts that their audit events vouch for, each marked
        exclusive as its event says. A hold row is honoured only if the event it names is a
        ``checkout`` of this secret by that engineer, whose hash and signature (by that
        engineer's certified key) verify and whose details, sealed under the client's audit
        key, match the row's exclusivity and end. Planted or edited holds block nobody."""
        out = []
        for hold in held:
            if hold.engineer_id == me_id:
                continue
            exclusive = self._hold_event(s, client, audit_keys_blob, secret_id, hold)
            if exclusive is not None:
                out.append(hold._replace(exclusive=exclusive))
        return out

    def _hold_event(
        self, s: Session, client: HasId, audit_keys_blob: bytes | None, secret_id: int, hold: rows.HoldRow
    ) -> bool | None:
        """Whether the checkout event behind ``hold`` made it exclusive; None if it does not verify."""
        e = s.get(m.AuditEvent, hold.event_seq)
        if (
            e is None
            or audit_keys_blob is None
            or e.action != "checkout"
            or (e.engineer_id, e.client_id, e.secret_id) != (hold.engineer_id, client.id, secret_id)
            or e.signature is None
            or e.details_blob is None
            or e.key_version is None
        ):
            return None
        codec = chain.EventCodec(self._vid(s))
        row = (e.seq, e.at_us, e.engineer_id, e.key_generation, e.action, e.client_id, e.secret_id, e.key_version)
        fields = (*row, e.details_blob, e.details_json, e.prev_hash)
        # A checkout written before event format 2 (credvault upgraded while it is held) still counts.
        if e.hash not in (codec.audit_event_hash(*fields), codec.audit_event_hash_v1(*fields)):
            return None
        public = self._event_key(s, hold.engineer_id, e.key_generation)
        if public is None or not codec.signature_valid(public, e.signature, e.seq, e.hash):
            return None
        try:
            ring = self._ring(s, client, audit_keys_blob)
            if not 1 <= e.key_version <= len(ring) // 32:
                return None
            key = ring[(e.key_version - 1) * 32 : e.key_version * 32]
            raw = blobs.decrypt_audit_detail(key, e.key_version, e.details_blob, client.id, e.seq, e.action)
            details = json.loads(raw)
        except (VaultError, ValueError):
            return None
        if not isinstance(details, dict) or details.get("until") != int(hold.expires_at.timestamp()):
            return None
        return details.get("exclusive") is True

    def _event_key(self, s: Session, engineer_id: int, generation: int) -> bytes | None:
        """The certified signing key of an engineer's key generation, or None."""
        row = s.get(m.Engineer, engineer_id)
        try:
            if row is not None and row.key_generation == generation and row.signing_public is not None:
                self._verify_certificate(s, row)
                return row.signing_public
            key = s.get(m.EngineerKey, (engineer_id, generation))
            return None if key is None or row is None else self._verified_key(s, key, row.name)
        except UntrustedRecord:
            return None

    def _field_value(
        self, s: Session, client: HasId, secret: HasId, row: VersionRecord, field: str, ref: str, *, named: bool = False
    ) -> str:
        """The field's value; ``named``: ``secret`` was found by the name in ``ref``, checked here."""
        opened = self._open(s, client, secret, row)
        if named:  # the name tag found this row (the fast path too): the metadata must hold that name
            self._check_name(opened, validation.secret_ref(ref)[1])
        if field == "password":
            return self._password(client, secret, row, opened)
        if field in METADATA_FIELDS or field == "name":
            value = opened.metadata.get(field)
        else:
            value = (opened.metadata.get("fields") or {}).get(field)
        if value is None:
            raise NotFound(f"secret {ref!r} has no {validation.shown(field)} field")
        return str(value)

    def _update_in(
        self,
        s: Session,
        ref: str,
        password: str | None,
        changes: dict[str, Any],
        fields: dict[str, str] | None,
        kind: str | None,
    ) -> SecretInfo:
        """``SecretOps._update_in``, refused while another engineer holds an exclusive
        checkout (checked in the same transaction as the write: no window between them)."""
        me = self._my_row(s)
        _client, secret, _slug = self._secret(s, ref)
        holds = self._lock_and_find_holds(s, secret)
        # A hold whose row says "not exclusive" may have been edited: under an exclusive
        # policy every hold is checked against its event, which says what it was.
        exclusive_policy = bool(holds) and self._policy(s, _client.id).exclusive
        claimed = [c for c in holds if c.exclusive or exclusive_policy]
        holds = self._genuine_holds(s, _client, _client.audit_keys_blob, secret.id, claimed, me.id)
        if rows.connection(s).dialect.name != "sqlite":
            # Locked now (PostgreSQL, READ COMMITTED): read the row again, so that an update
            # committed while we waited for the lock is the one this one follows, instead of
            # both writing the same next version and one failing on the unique key.
            s.refresh(secret)
        others = [c for c in holds if c.exclusive]
        if others:
            holder = s.get(m.Engineer, others[0].engineer_id)
            until = others[0].expires_at.isoformat(timespec="minutes")
            raise CheckoutConflict(
                f"{ref} is checked out exclusively by {holder.name if holder else '?'} until {until}"
            )
        return super()._update_in(s, ref, password, changes, fields, kind)

    # -- check-in ------------------------------------------------------------------------------------------

    def checkin(
        self, ref: str, *, new_password: str | None = None, generate: bool = False, length: int | None = None
    ) -> Revealed | None:
        """Release the engineer's checkout; store a new password if given (or generated)."""
        if new_password is not None and generate:
            raise InvalidInput("give a new password or --generate, not both")
        if generate:
            new_password = generate_password(length) if length is not None else generate_password()
        with self.store.transaction() as s:  # the new version and the release commit together
            if new_password is not None:
                self._update_in(s, ref, new_password, {}, None, None)
            me = self._my_row(s)
            client, secret, _slug = self._secret(s, ref)
            mine = [c.id for c in self._lock_and_find_holds(s, secret) if c.engineer_id == me.id]
            if not mine and new_password is None:
                raise NotFound(f"you hold no checkout of {ref!r}")
            if mine:
                rows.RELEASE.run_many(
                    rows.connection(s), [{"checkout": i, "at": self.clock(), "by": me.id} for i in mine]
                )
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
            rows.RELEASE.run_many(
                rows.connection(s), [{"checkout": c.id, "at": self.clock(), "by": me.id} for c in held]
            )
            names = []
            for c in held:
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
