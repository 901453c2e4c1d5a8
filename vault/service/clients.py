"""Clients and grants.

A client's slug, display name and lookup key are encrypted under its client key.
Admins find a client by its slug tag (HMAC under the organisation lookup key, which
only admins can derive); an engineer finds it by opening the slugs of the clients they
hold grants for, so without a grant they cannot even confirm that a slug exists.
"""

from __future__ import annotations

import builtins
import datetime as dt
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.crypto import blobs, sealing, signing
from vault.crypto.labels import LABEL_TAG_CLIENT_SLUG
from vault.errors import GrantExpired, LookupMismatch, NotFound, VaultError
from vault.service import clientparts, listing, validation
from vault.service.core import ROLE_ADMIN, epoch
from vault.service.records import ClientInfo
from vault.service.rows import HasId
from vault.storage import models as m

if TYPE_CHECKING:
    from vault.authority.journal import Journal
    from vault.keyholder.client_add import ClientAddKeyholder
    from vault.keyholder.clients import ClientKeyholder
    from vault.keyholder.keys import Keys
    from vault.keyholder.trust import Trust
    from vault.service.core import Core
    from vault.service.grantledger import GrantLedger


class Clients:
    """Clients: ``vault.clients.add/list/show``."""

    def __init__(self, core: Core, keys: Keys, trust: Trust, journal: Journal, ledger: GrantLedger) -> None:
        self.core = core
        self.keys = keys
        self.trust = trust
        self.journal = journal
        self.ledger = ledger
        self._keyholder: ClientKeyholder | None = None
        self._add_keyholder: ClientAddKeyholder | None = None

    def client(self, s: Session, slug: str) -> m.Client:
        """The client ``slug`` if the acting engineer may see it, else NotFound."""
        validation.client_slug(slug)
        me = self.trust.my_row(s)
        if me.role == ROLE_ADMIN:
            tag = signing.lookup_tag(self.keys.root_bundle(s).lookup_key, LABEL_TAG_CLIENT_SLUG, slug)
            client = s.scalars(select(m.Client).where(m.Client.slug_tag == tag)).first()
            if client is not None:
                self._check_slug(s, client, client.slug_blob, slug)  # the tag is only a hint: a moved tag is refused
                return client
        else:
            known = self.keys.slugs.get(slug)
            client = s.get(m.Client, known) if known is not None else None
            if client is not None:
                self.trust.active_grant(s, me, client.id)  # the grant is checked on every call
                if self.slug(s, client) == slug:
                    return client
                del self.keys.slugs[slug]  # a stale hint (the row now holds another slug): look again
            for client in self.granted_clients(s, me):
                found = self.keys.client_field(s, client, client.slug_blob, "slug").decode("utf-8")
                self.keys.slugs[found] = client.id
                if found == slug:
                    return client
            self._raise_if_expired(s, me, slug)
        raise NotFound(f"no client {slug!r} that you may see")

    def _check_slug(self, s: Session, client: HasId, slug_blob: bytes, slug: str) -> None:
        """The client found for ``slug`` by its lookup tag holds that slug in its encrypted
        slug (bound to the row by its associated data), else ``LookupMismatch``. The slug is
        opened once per blob and key (``_client_field``), so a repeated lookup costs nothing."""
        if self.keys.client_field(s, client, slug_blob, "slug") != slug.encode("utf-8"):
            raise LookupMismatch(f"the client found for {slug!r} holds another slug: its lookup tag was moved")

    def _raise_if_expired(self, s: Session, me: m.Engineer, slug: str) -> None:
        """Say GrantExpired, not NotFound, while the expired grant's sealed copy still exists.

        The copy is opened only to match the slug for this error; nothing else is read.
        """
        now = epoch(self.core.clock())
        expired = s.scalars(
            select(m.Grant).where(
                m.Grant.engineer_id == me.id,
                m.Grant.revoked_at.is_(None),
                m.Grant.until.is_not(None),
                m.Grant.until <= now,
            )
        ).all()
        for grant in expired:
            client = s.get(m.Client, grant.client_id)
            seal = (
                s.get(m.ClientKeySeal, (grant.client_id, client.current_key_version, "engineer", me.id))
                if client
                else None
            )
            if client is None or seal is None:
                continue
            try:
                self.trust.verify_grant(s, grant, me)
                version = client.current_key_version
                key = sealing.open_sealed(
                    self.keys.my_keypair(),
                    version,
                    seal.blob,
                    self.keys.seal_context(s, client.id, version, "engineer", me.id),
                )
                found = blobs.decrypt_client_field(key, version, client.slug_blob, client.id, "slug").decode("utf-8")
            except VaultError:
                continue
            if found == slug:
                assert grant.until is not None
                until = dt.datetime.fromtimestamp(grant.until, dt.UTC).isoformat(timespec="minutes")
                raise GrantExpired(f"your grant for {slug!r} expired at {until}", hint="ask an admin to renew it")

    def granted_clients(self, s: Session, me: m.Engineer) -> builtins.list[m.Client]:
        """The clients ``me`` holds a live, verified grant for: the whole grant ledger in one
        statement, each verified grant remembered while its rows stay the same (listing.py)."""
        return listing.granted_clients(self, s, me)

    def slug(self, s: Session, client: m.Client) -> str:
        return self.keys.client_field(s, client, client.slug_blob, "slug").decode("utf-8")

    # -- clients ---------------------------------------------------------------------------

    def add(self, slug: str, name: str) -> ClientInfo:
        """A new client: its key made, sealed and signed by the acting admin's keyholder, its
        rows and ``client-create`` event written by the authority (keyholder/client_add.py)."""
        validation.client_slug(slug)
        name = validation.display_name(name)
        self.ledger.sweep()  # its own transaction: committed even if this operation fails
        if self._add_keyholder is None:
            self._add_keyholder = clientparts.client_add_keyholder(self)
        return self._add_keyholder.add(slug, name)

    def list(self) -> builtins.list[ClientInfo]:
        """The clients the acting engineer may see (all of them for an admin): read by the
        authority without the write lock, verified and opened by the keyholder; the
        ``client-list`` event is appended after, and the list returned once it is committed."""
        return self._client_keyholder().list()

    def show(self, slug: str) -> ClientInfo:
        validation.client_slug(slug)
        return self._client_keyholder().show(slug)

    def _client_keyholder(self) -> ClientKeyholder:
        """This Vault object's clients keyholder, over the in-process transport to its authority."""
        if self._keyholder is None:
            self._keyholder = clientparts.client_keyholder(self)
        return self._keyholder
