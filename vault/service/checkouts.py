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
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from vault.authority.checkins import CheckinAuthority
from vault.authority.checkout_context import ContextAuthority
from vault.authority.checkout_list import CheckoutListAuthority
from vault.authority.checkouts import CheckoutAuthority
from vault.authority.requests import BREAK, CHECKIN
from vault.authority.server_keys import certified_key
from vault.crypto import blobs, signing
from vault.crypto.labels import LABEL_TAG_CLIENT_SLUG
from vault.errors import (
    AuditUnavailable,
    ConcurrentChange,
    InvalidInput,
    NotFound,
    StoreBusy,
    StoreUnavailable,
)
from vault.keyholder.checkins import CheckinKeyholder
from vault.keyholder.checkouts import CheckoutKeyholder, ClientContext
from vault.keyholder.sessionkeys import SessionKeys
from vault.service import validation
from vault.service.core import ROLE_ADMIN
from vault.service.passwords import generate_password
from vault.service.policies import Policy
from vault.service.records import CheckoutInfo, Revealed
from vault.service.rows import EngineerRecord, EngineerRow, GrantRecord, HasId, PolicyRow, VersionRecord
from vault.service.secrets import METADATA_FIELDS
from vault.transport.https_checkouts import HttpsCheckoutTransport
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
    from vault.storage import models as m
    from vault.transport.https import HttpsTransport


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

    def retention(self, s: Session) -> int:
        return self._policies.retention(s)

    def current_key_version(self, s: Session, client: m.Client) -> int:
        return self._trust.current_key_version(s, client)

    def organisation_key(self, s: Session, current: bytes) -> None:
        s.info["org_current"] = current  # the vault's current key as read in this unit: no second read

    def server_key(self, s: Session, version: int) -> bytes | None:
        return certified_key(s, version, self._trust.core.vid(s), self._trust.org_public(s))


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
        self._checkins: CheckinKeyholder | None = None
        self._transport: InProcessTransport | HttpsCheckoutTransport | None = None
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
        return self._checkout(ref, checked_reason(field, version, reason), field, version, hold, hold_for)

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
        if self._keyholder is None and self.core.host_server is not None:  # the server's host (server/host.py)
            from vault.transport.https import HttpsTransport

            host = self.core.host_server
            https = HttpsTransport(
                host.url, self.keys, transport=host.transport, server_key=host.pinned(), clock=host.clock
            )
            self._keyholder = https_checkout_keyholder(self, https)
            assert isinstance(self._keyholder.transport, HttpsCheckoutTransport)
            self._transport = self._keyholder.transport
        if self._keyholder is None:
            checks = _PublicChecks(self)
            authority = CheckoutAuthority(self.core.store, checks, self.core.clock)
            transport = InProcessTransport(
                authority,
                CheckinAuthority(authority, checks, checks),
                CheckoutListAuthority(self.core.store, authority, self.core.clock),
                ContextAuthority(self.core.store, authority),
            )
            self._transport = transport
            self._keyholder = CheckoutKeyholder(
                transport,
                SessionKeys(self.keys, self.core.store),
                _ClientLookup(self),
                self.keys.client_keys,
                self.core.clock,
                transport,
            )
        return self._keyholder

    def _checkin_keyholder(self) -> CheckinKeyholder:
        """This Vault object's check-in keyholder (over the checkout keyholder's transport)."""
        if self._checkins is None:
            checkouts = self._checkout_keyholder()
            assert self._transport is not None
            self._checkins = CheckinKeyholder(checkouts, self._transport)
        return self._checkins

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
        """Release the engineer's checkout; store a new password if given (or generated).
        The new version and the release commit together (one request to the authority)."""
        new_password = new_value(new_password, generate, length)
        self.keys.me()  # the session first: loading it may read the vault id in a transaction of its own
        response = self._checkin_keyholder().release(ref, CHECKIN, new_password)
        if response.must_change:
            return Revealed(ref, "password", response.version, "", None, True)
        return None

    def break_checkout(self, ref: str) -> str:
        """Admin: release every open checkout of a secret; returns who held it."""
        self.keys.me()
        return ", ".join(self._checkin_keyholder().release(ref, BREAK).holders)

    def list(self) -> builtins.list[CheckoutInfo]:
        """Open checkouts the viewer may see (all for an admin, their own otherwise), read
        without the write lock (``Store.read()``); the listing records no event."""
        self.keys.me()
        return self._checkin_keyholder().list()


def checked_reason(field: str, version: int | None, reason: str | None) -> str | None:
    """A checkout's field and version checked, and its reason stripped and checked (None: none)."""
    validation.field_name(field)
    if version is not None:
        validation.number("version", version, 1)
    if reason is not None:
        reason = reason.strip()
        validation.field_value("reason", reason)
        if len(reason) > MAX_REASON:
            raise InvalidInput(f"the reason is longer than {MAX_REASON} characters")
    return reason or None


def new_value(new_password: str | None, generate: bool, length: int | None) -> str | None:
    """A check-in's new password: the one given, or one generated (``length``), checked; else None."""
    if new_password is not None and generate:
        raise InvalidInput("give a new password or --generate, not both")
    if generate:
        new_password = generate_password(length) if length is not None else generate_password()
    if new_password is not None:
        validation.password(new_password)
    return new_password


def https_checkout_keyholder(checkouts: Checkouts, https: HttpsTransport) -> CheckoutKeyholder:
    """A checkout keyholder of this Vault's unlocked engineer over a team server (``https``):
    its keys, key cache and client lookup, requests and client contexts through the server
    (``HttpsCheckoutTransport``). The lookup still reads the local database: the CLI's wiring
    over HTTPS comes later (docs/server.md §8 step 7)."""
    transport = HttpsCheckoutTransport(https)
    return CheckoutKeyholder(
        transport,
        SessionKeys(checkouts.keys, checkouts.core.store),
        _ClientLookup(checkouts),
        checkouts.keys.client_keys,
        checkouts.core.clock,
        transport,
    )


def https_checkin_keyholder(keyholder: CheckoutKeyholder) -> CheckinKeyholder:
    """Check-ins and breaks over the same team server as ``keyholder`` (one made by
    ``https_checkout_keyholder``): its keys, contexts and transport."""
    if not isinstance(keyholder.transport, HttpsCheckoutTransport):
        raise TypeError("not a keyholder over the team server")
    return CheckinKeyholder(keyholder, keyholder.transport)
