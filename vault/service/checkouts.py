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
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.authority.checkouts import CheckoutAuthority
from vault.crypto import blobs, chain, sealing, signing
from vault.crypto.labels import LABEL_TAG_CLIENT_SLUG
from vault.errors import (
    AccessDenied,
    AuditUnavailable,
    CheckoutConflict,
    ConcurrentChange,
    DecryptionFailed,
    InvalidInput,
    NotFound,
    StoreBusy,
    StoreUnavailable,
    UntrustedRecord,
    VaultError,
)
from vault.keyholder.checkouts import CheckoutKeyholder, ClientContext
from vault.service import rows, validation
from vault.service.base import ROLE_ADMIN
from vault.service.passwords import generate_password
from vault.service.policies import Policy
from vault.service.records import CheckoutInfo, Revealed, SecretInfo
from vault.service.rows import EngineerRecord, EngineerRow, GrantRecord, HasId, PolicyRow, VersionRecord
from vault.service.secrets import METADATA_FIELDS, SecretOps
from vault.service.sessions import UnlockedSession
from vault.storage import models as m
from vault.transport.inprocess import InProcessTransport

MAX_REASON = 500


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
        return self._checkout(ref, reason or None, field, version, hold, hold_for)

    def _checkout(
        self,
        ref: str,
        reason: str | None,
        field: str,
        version: int | None,
        hold: bool,
        hold_for: dt.timedelta | None,
    ) -> Revealed:
        """One attempt: the keyholder's request through the in-process transport to the
        authority, which commits the audit event before it answers; the answer verified."""
        try:
            # The session first: loading it may read the vault id in a transaction of its own.
            self._me()
            return self._checkout_keyholder().checkout(
                ref, reason=reason, field=field, version=version, hold=hold, hold_for=hold_for
            )
        except (ConcurrentChange, StoreBusy, AuditUnavailable):
            raise  # nothing was revealed or recorded: Vault retries a ConcurrentChange
        except StoreUnavailable as error:
            raise AuditUnavailable(f"the access could not be recorded ({error}); nothing was revealed") from None

    def _checkout_keyholder(self) -> CheckoutKeyholder:
        """This Vault object's checkout keyholder, over an in-process transport to its authority."""
        keyholder: CheckoutKeyholder | None = self.__dict__.get("_keyholder")
        if keyholder is None:
            authority = CheckoutAuthority(self.store, _PublicChecks(self), self.clock)
            keyholder = CheckoutKeyholder(
                InProcessTransport(authority), _EngineerKeys(self), _ClientLookup(self), self._client_keys, self.clock
            )
            self.__dict__["_keyholder"] = keyholder
        return keyholder

    def _lock_and_find_holds(self, s: Session, secret: HasId) -> list[rows.HoldRow]:
        """The open checkouts of a secret, after locking its row (``FOR UPDATE`` on PostgreSQL;
        on SQLite, BEGIN IMMEDIATE has already serialised writers)."""
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


# -- the in-process collaborators of the checkout's two halves ------------------------------------------
# Adapters over this Vault object's checks and keys, passed to the authority and the keyholder
# (issue 13: to become vault/authority/permissions.py and vault/keyholder/{keys,trust}.py).


class _PublicChecks:
    """The authority's checks (signatures and public keys only), as this Vault object makes them."""

    def __init__(self, vault: CheckoutOps) -> None:
        self._vault = vault

    def certificate(self, s: Session, row: EngineerRecord) -> None:
        self._vault._verify_certificate(s, row)

    def first_valid_grant(
        self, s: Session, grants: Sequence[GrantRecord], engineer: EngineerRecord, signers: Sequence[EngineerRow | None]
    ) -> int:
        return self._vault._first_valid_grant(s, grants, engineer, signers)

    def policy(
        self, s: Session, client_id: int, row: PolicyRow | None, known: tuple[EngineerRow | None, ...]
    ) -> Policy:
        return self._vault._verified_policy(s, client_id, row, known)

    def event_key(self, s: Session, engineer_id: int, generation: int) -> bytes | None:
        return self._vault._event_key(s, engineer_id, generation)

    def organisation_key(self, s: Session, current: bytes) -> None:
        s.info["org_current"] = current  # the vault's current key as read in this unit: no second read


class _EngineerKeys:
    """The acting engineer's unlocked keys, as the checkout keyholder asks for them."""

    def __init__(self, vault: CheckoutOps) -> None:
        self._vault = vault

    def session(self) -> UnlockedSession:
        return self._vault._me()

    def sealing_public(self) -> bytes:
        return self._vault._session_sealing_public(self._vault._me())

    def open_sealed(self, kind: str, recipient_id: int, version: int, blob: bytes, context: tuple[Any, ...]) -> bytes:
        if kind == "recovery":
            bundle = self._vault._root
            if bundle is None or bundle.version != recipient_id:
                raise DecryptionFailed()
            return sealing.open_sealed(bundle.recovery, version, blob, context)
        if kind != "engineer" or recipient_id != self._vault._me().engineer_id:
            raise DecryptionFailed()
        return sealing.open_sealed(self._vault._my_keypair(), version, blob, context)

    def recovery_version(self) -> int | None:
        bundle = self._vault._root  # opened when the client's context was learned
        return None if bundle is None else bundle.version


class _ClientLookup:
    """A client's key context, learned through this Vault object's checked client lookup (the
    grant, the slug, the lookup key; the audit-key ring made on first use)."""

    def __init__(self, vault: CheckoutOps) -> None:
        self._vault = vault

    def context(self, slug: str) -> ClientContext:
        vault = self._vault
        with vault.store.transaction() as s:
            admin = vault._my_row(s).role == ROLE_ADMIN
            client = vault._client(s, slug)
            slug_tag = None
            if admin:  # by its slug tag, under the current recovery key (opened: it opens client keys too)
                slug_tag = signing.lookup_tag(vault._root_bundle(s).lookup_key, LABEL_TAG_CLIENT_SLUG, slug)
            lookup_key = vault._lookup_key(s, client)
            ring = vault._audit_ring(s, client)
            blob = client.audit_keys_blob
            assert blob is not None
            key = vault._client_keys[(client.id, blobs.blob_key_version(blob))]
            return ClientContext(client.id, slug, slug_tag, client.slug_blob, lookup_key, blob, ring, key)

    def known(self, slug: str) -> int | None:
        return self._vault._slugs.get(slug)
