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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.authority.checkouts import CheckoutAuthority
from vault.crypto import blobs, sealing, signing
from vault.crypto.labels import LABEL_TAG_CLIENT_SLUG
from vault.errors import (
    AccessDenied,
    AuditUnavailable,
    ConcurrentChange,
    DecryptionFailed,
    InvalidInput,
    NotFound,
    StoreBusy,
    StoreUnavailable,
)
from vault.keyholder.checkouts import CheckoutKeyholder, ClientContext
from vault.service import rows, validation
from vault.service.core import ROLE_ADMIN
from vault.service.passwords import generate_password
from vault.service.policies import Policy
from vault.service.records import CheckoutInfo, Revealed
from vault.service.rows import EngineerRecord, EngineerRow, GrantRecord, HasId, PolicyRow, VersionRecord
from vault.service.secrets import METADATA_FIELDS
from vault.service.sessions import UnlockedSession
from vault.storage import models as m
from vault.transport.inprocess import InProcessTransport

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


# -- the in-process collaborators of the checkout's two halves ------------------------------------------
# Adapters over this Vault object's checks and keys, passed to the authority and the keyholder
# (issue 13: to become vault/authority/permissions.py and vault/keyholder/{keys,trust}.py).


class _PublicChecks:
    """The authority's checks (signatures and public keys only), made by the Vault's trust."""

    def __init__(self, checkouts: Checkouts) -> None:
        self._trust, self._policies, self._holds = checkouts.trust, checkouts.policy_check, checkouts.holds

    def certificate(self, s: Session, row: EngineerRecord) -> None:
        self._trust.verify_certificate(s, row)

    def first_valid_grant(
        self, s: Session, grants: Sequence[GrantRecord], engineer: EngineerRecord, signers: Sequence[EngineerRow | None]
    ) -> int:
        return self._trust.first_valid_grant(s, grants, engineer, signers)

    def policy(
        self, s: Session, client_id: int, row: PolicyRow | None, known: tuple[EngineerRow | None, ...]
    ) -> Policy:
        return self._policies.verified_policy(s, client_id, row, known)

    def event_key(self, s: Session, engineer_id: int, generation: int) -> bytes | None:
        return self._holds.event_key(s, engineer_id, generation)

    def organisation_key(self, s: Session, current: bytes) -> None:
        s.info["org_current"] = current  # the vault's current key as read in this unit: no second read


class _EngineerKeys:
    """The acting engineer's unlocked keys, as the checkout keyholder asks for them."""

    def __init__(self, keys: Keys) -> None:
        self._keys = keys

    def session(self) -> UnlockedSession:
        return self._keys.me()

    def sealing_public(self) -> bytes:
        return self._keys.session_sealing_public(self._keys.me())

    def open_sealed(self, kind: str, recipient_id: int, version: int, blob: bytes, context: tuple[Any, ...]) -> bytes:
        if kind == "recovery":
            bundle = self._keys.root
            if bundle is None or bundle.version != recipient_id:
                raise DecryptionFailed()
            return sealing.open_sealed(bundle.recovery, version, blob, context)
        if kind != "engineer" or recipient_id != self._keys.me().engineer_id:
            raise DecryptionFailed()
        return sealing.open_sealed(self._keys.my_keypair(), version, blob, context)

    def recovery_version(self) -> int | None:
        bundle = self._keys.root  # opened when the client's context was learned
        return None if bundle is None else bundle.version


class _ClientLookup:
    """A client's key context, learned through the Vault's checked client lookup (the grant,
    the slug, the lookup key; the audit-key ring made on first use)."""

    def __init__(self, checkouts: Checkouts) -> None:
        self._c = checkouts

    def context(self, slug: str) -> ClientContext:
        c = self._c
        with c.core.store.transaction() as s:
            admin = c.trust.my_row(s).role == ROLE_ADMIN
            client = c.clients.client(s, slug)
            slug_tag = None
            if admin:  # by its slug tag, under the current recovery key (opened: it opens client keys too)
                slug_tag = signing.lookup_tag(c.keys.root_bundle(s).lookup_key, LABEL_TAG_CLIENT_SLUG, slug)
            lookup_key = c.secrets.lookup_key(s, client)
            ring = c.journal.audit_keys.audit_ring(s, client)
            blob = client.audit_keys_blob
            assert blob is not None
            key = c.keys.client_keys[(client.id, blobs.blob_key_version(blob))]
            return ClientContext(client.id, slug, slug_tag, client.slug_blob, lookup_key, blob, ring, key)

    def known(self, slug: str) -> int | None:
        return self._c.keys.slugs.get(slug)


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
        self.policy_check = policy_check
        self._keyholder: CheckoutKeyholder | None = None
        self.core = core
        self.keys = keys
        self.trust = trust
        self.journal = journal
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
            self.keys.me()
            return self._checkout_keyholder().checkout(
                ref, reason=reason, field=field, version=version, hold=hold, hold_for=hold_for
            )
        except (ConcurrentChange, StoreBusy, AuditUnavailable):
            raise  # nothing was revealed or recorded: Vault retries a ConcurrentChange
        except StoreUnavailable as error:
            raise AuditUnavailable(f"the access could not be recorded ({error}); nothing was revealed") from None

    def _checkout_keyholder(self) -> CheckoutKeyholder:
        """This Vault object's checkout keyholder, over an in-process transport to its authority."""
        if self._keyholder is None:
            authority = CheckoutAuthority(self.core.store, _PublicChecks(self), self.core.clock)
            self._keyholder = CheckoutKeyholder(
                InProcessTransport(authority),
                _EngineerKeys(self.keys),
                _ClientLookup(self),
                self.keys.client_keys,
                self.core.clock,
            )
        return self._keyholder

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
