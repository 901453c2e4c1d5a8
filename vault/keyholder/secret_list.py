"""``secret list``, where the engineer's keys are: ask for the pages, verify each, open the names.

``SecretListKeyholder.list`` learns what to ask for (``ListLookup.scope``: the client named,
its grant and slug checked; an engineer's granted clients, each grant verified; or, for an
admin, every client), sends a ``ListSecretsRequest`` through the transport and reads the
answer page by page (one page of ciphertext in memory at a time), checking before it
opens anything:

* every page: from this vault, under the organisation key pinned (or one its signed chain
  leads to), with the caller's own row certified, active and of this session's keys — the
  same on every page;
* every client row: one asked for (an engineer's listing names its clients; an admin's
  "every client" takes any), sent once, its slug opened under a client key whose signed
  record and sealed copy verify (``SecretKeyholder.client_key``) — the slug blob is bound
  to the client's id, so another client's row does not open; the slug named, if one was;
* every secret: of a client sent before it, in strictly growing id order (a page repeated
  or reordered is refused), its version the secret's current one, its data key bound to
  (client, secret, version) and its metadata holding a name (``versions.open_metadata``):
  a name blob swapped in from another secret does not open. A secret whose current version
  row is missing is reported as damaged (``IntegrityError``), never passed over.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from vault.authority.requests import Caller, SealedClientKey
from vault.authority.secret_requests import ListedSecretRow, ListSecretsRequest, SecretPage
from vault.crypto import blobs
from vault.errors import IntegrityError, LookupMismatch, UntrustedRecord
from vault.keyholder import versions
from vault.keyholder.responses import ResponseChecks
from vault.keyholder.secrets import SecretKeyholder
from vault.storage.rows import ROLE_ADMIN, EngineerRow

T = TypeVar("T")


@dataclass(frozen=True)
class ListScope:
    """What a listing asks for: ``client_ids`` (None: every client, an admin's), how many
    clients that is (the event's count), and the slug named (None: no client named)."""

    client_ids: tuple[int, ...] | None
    clients: int
    slug: str | None


class ListLookup(Protocol):
    """Learns what the caller may list: the client named (its context), or all of theirs."""

    def scope(self, slug: str | None) -> ListScope: ...


class ListTransport(Protocol):
    def list_secrets(self, request: ListSecretsRequest) -> Iterator[SecretPage]: ...


@dataclass(frozen=True, repr=False)
class ListedName:
    """One secret of the listing, verified: its client's slug, its row, its metadata opened."""

    slug: str
    row: ListedSecretRow
    metadata: dict[str, Any]

    def __repr__(self) -> str:
        return f"ListedName(secret={self.row.secret_id}, <redacted>)"


class _Reader:
    """The checks of one listing's pages, in the order they come; each secret verified and
    opened is handed to ``into`` (slug, row, metadata) as it comes."""

    def __init__(self, secrets: SecretKeyholder, scope: ListScope, into: Callable[..., Any]) -> None:
        self.k, self.scope, self.into = secrets, scope, into
        self.me = secrets.keys.session()
        self.first: tuple[Any, ...] | None = None
        self.checks: ResponseChecks | None = None
        self.row: EngineerRow | None = None
        self.slugs: dict[int, str] = {}
        self.last_id = 0

    def page(self, page: SecretPage) -> Iterator[Any]:
        head = (page.vault_id, page.org_signing_public, page.org_chain, page.me)
        if self.first is None:
            self.checks, self.row = self.k.me_checked(self.me, page)
            self.first = head
            if self.scope.client_ids is None and self.row.role != ROLE_ADMIN:
                raise UntrustedRecord("the authority answered a listing of every client to an engineer")
        elif head != self.first:
            raise UntrustedRecord("the pages of the listing disagree on who asks, or under which key")
        sealed: dict[tuple[int, int], SealedClientKey] = {}
        for item in page.sealed_keys:
            sealed.setdefault((item.record.client_id, item.record.version), item)
        openers: dict[tuple[int, int], blobs.SecretOpener] = {}  # this page's: its sealed keys checked once
        for client in page.clients:
            asked = self.scope.client_ids
            if (asked is not None and client.id not in asked) or client.id in self.slugs:
                raise UntrustedRecord("the authority listed a client this listing did not ask for")
            version = blobs.blob_key_version(client.slug_blob)
            key = self._key(client.id, version, sealed)
            slug = blobs.decrypt_client_field(key, version, client.slug_blob, client.id, "slug").decode("utf-8")
            if self.scope.slug is not None and slug != self.scope.slug:
                raise LookupMismatch(f"the client found for {self.scope.slug!r} holds another slug")
            self.slugs[client.id] = slug
        for r in page.secrets:
            yield self._secret(r, sealed, openers)

    def _secret(
        self,
        r: ListedSecretRow,
        sealed: dict[tuple[int, int], SealedClientKey],
        openers: dict[tuple[int, int], blobs.SecretOpener],
    ) -> Any:
        slug = self.slugs.get(r.client_id)
        if slug is None:
            raise UntrustedRecord("the authority listed a secret of a client this listing did not ask for")
        if r.secret_id <= self.last_id:
            raise UntrustedRecord("the listing's secrets are repeated or out of order")
        self.last_id = r.secret_id
        v = r.version
        if v is None:
            raise IntegrityError(
                f"secret #{r.secret_id} of client {slug!r} is damaged: "
                f"its current version {r.current_version} is missing",
                hint="the database was changed outside credvault; restore it from a backup",
            )
        if v.version != r.current_version:
            raise UntrustedRecord("the authority listed another version than the secret's current one")
        slot = (r.client_id, v.key_version)
        opener = openers.get(slot)
        if opener is None:
            key = self._key(r.client_id, v.key_version, sealed)
            opener = openers[slot] = blobs.SecretOpener(key, v.key_version, r.client_id)
        return self.into(slug, r, versions.open_listed(opener, r.secret_id, v))

    def _key(self, client_id: int, version: int, sealed: dict[tuple[int, int], SealedClientKey]) -> bytes:
        if self.checks is None or self.row is None:  # set by the first page, before any key is asked for
            raise UntrustedRecord("the listing's first page was not verified")
        admin = self.row.role == ROLE_ADMIN
        return self.k.client_key(self.me, admin, self.checks, client_id, version, sealed.get((client_id, version)))


class SecretListKeyholder:
    """``secret list`` for the engineer whose keys the secrets' keyholder holds."""

    def __init__(self, secrets: SecretKeyholder, lookup: ListLookup, transport: ListTransport) -> None:
        self.secrets, self.lookup, self.transport = secrets, lookup, transport

    def __repr__(self) -> str:
        return "SecretListKeyholder()"

    def list(self, slug: str | None) -> tuple[ListScope, list[ListedName]]:
        """The scope listed and its secrets (in id order), every page verified before it is opened."""
        return self.listed(slug, ListedName)

    def listed(
        self, slug: str | None, into: Callable[[str, ListedSecretRow, dict[str, Any]], T | None]
    ) -> tuple[ListScope, builtins.list[T]]:
        """``list``, each secret handed to ``into`` (its client's slug, its row, its metadata)
        as soon as it is verified and opened: what the caller keeps of it is all that stays
        (a listing of 10,000 secrets keeps no second object per secret for the collector; a
        search's ``into`` answers None for a secret it does not keep, and nothing is kept)."""
        scope = self.lookup.scope(slug)
        me = self.secrets.keys.session()
        request = ListSecretsRequest(
            caller=Caller(me.engineer_id, me.key_generation),
            client_ids=scope.client_ids,
            known_key_versions=tuple(sorted(self.secrets.cache)),
            org_pin=me.org_signing_public,
            named=scope.slug is not None,
        )
        reader = _Reader(self.secrets, scope, into)
        out: builtins.list[T] = []
        pages = self.transport.list_secrets(request)
        try:
            for page in pages:
                out.extend(kept for kept in reader.page(page) if kept is not None)
        finally:  # a refused page ends the authority's read unit now, not when the pages are collected
            close = getattr(pages, "close", None)
            if close is not None:
                close()
        if reader.first is None:
            raise UntrustedRecord("the authority answered the listing with no page")
        return scope, out
