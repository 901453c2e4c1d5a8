"""The engineer's everyday reads through a team server with no database here: what a store-less
caller (``RemoteVault``) gives the keyholders of ``secret show/history/list`` and ``client
show/list``, and the builders that join them to the HTTPS transports.

The keyholders are the in-process ones, unchanged; only their lookups read the local database
in a ``Vault`` (``secretparts._Lookup``/``_ListLookup``, ``clientparts._Lookup``). A store-less
caller provides instead:

* ``keys``: the unlocked session's keys (``EngineerKeys``: ``RemoteKeys``), and ``cache``, its
  key cache (``RemoteKeys.client_keys``), where the client keys opened are kept;
* ``contexts``: a client's verified key context by its slug (``RemoteLookup.context``, the
  checkout keyholder's: the client's id among the engineer's grants, its slug blob opened to the
  slug, its lookup key; an admin's slug tag), from which the secrets' and the clients' contexts
  are taken (``ContextSecretLookup``, ``ContextClientLookup``);
* ``granted``: the ids of the clients of the engineer's grants, for a listing of all their
  secrets (``GrantScope``; ``grant_client_ids`` reads them from ``grants.list``). They are only
  what is asked for: the server answers only those it finds a live grant for that it verifies
  itself (``SecretListAuthority``), and the keyholder refuses a client it did not ask for;
* ``hints``: the session's slug hints (``RemoteKeys.slugs``), which a client listing fills.

An admin's listing of every client asks for ``None`` (``GrantScope``'s ``admin()``: the server
answers their root bundle's sealed copy to admins only).
What the keyholders answer becomes the records ``Vault`` returns by ``secrets.opened_info``
(show), ``secrets.opened_history`` (history) and ``Secrets.info`` (each listed secret:
``listing.listed(slug, Secrets.info)``), none of which reads a database.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Protocol

from vault.authority.grant_requests import GrantListRequest
from vault.authority.requests import Caller
from vault.keyholder import clients as client_keyholder
from vault.keyholder.checkouts import EngineerKeys
from vault.keyholder.clients import ClientKeyholder
from vault.keyholder.secret_list import ListScope, SecretListKeyholder
from vault.keyholder.secrets import SecretContext, SecretKeyholder
from vault.storage.rows import KeyCache
from vault.transport.https_calls import Calls
from vault.transport.https_clients import HttpsClientTransport
from vault.transport.https_grants import HttpsGrantListTransport
from vault.transport.https_secrets import HttpsSecretTransport


class LearnedContext(Protocol):
    """A client's verified context (``keyholder.checkouts.ClientContext``), as these lookups read it."""

    @property
    def client_id(self) -> int: ...
    @property
    def slug(self) -> str: ...
    @property
    def slug_tag(self) -> bytes | None: ...
    @property
    def slug_blob(self) -> bytes: ...
    @property
    def lookup_key(self) -> bytes: ...


Contexts = Callable[[str], LearnedContext]


class ContextSecretLookup:
    """``SecretLookup`` over a learned client context (module docstring)."""

    def __init__(self, contexts: Contexts) -> None:
        self.contexts = contexts

    def __repr__(self) -> str:
        return "ContextSecretLookup()"

    def context(self, slug: str) -> SecretContext:
        c = self.contexts(slug)
        return SecretContext(c.client_id, c.slug, c.slug_tag, c.slug_blob, c.lookup_key)


class ContextClientLookup:
    """``ClientLookup`` of the clients' keyholder over a learned client context."""

    def __init__(self, contexts: Contexts) -> None:
        self.contexts = contexts

    def __repr__(self) -> str:
        return "ContextClientLookup()"

    def context(self, slug: str) -> client_keyholder.ClientContext:
        c = self.contexts(slug)
        return client_keyholder.ClientContext(c.client_id, c.slug, c.slug_tag, c.slug_blob)

    def slug_tag(self, slug: str) -> bytes | None:
        return self.contexts(slug).slug_tag


class GrantScope:
    """``ListLookup``: the client named (its context), else the clients of the engineer's grants
    (an admin's: every client)."""

    def __init__(
        self, contexts: Contexts, granted: Callable[[], tuple[int, ...]], admin: Callable[[], bool] = lambda: False
    ) -> None:
        self.contexts, self.granted, self.admin = contexts, granted, admin

    def __repr__(self) -> str:
        return "GrantScope()"

    def scope(self, slug: str | None) -> ListScope:
        if slug is not None:
            return ListScope((self.contexts(slug).client_id,), 1, slug)
        if self.admin():  # asked when listed: whether the session's engineer is an admin is the server's word
            return ListScope(None, 0, None)
        ids = self.granted()
        return ListScope(ids, len(ids), None)


def grant_client_ids(keys: EngineerKeys, cache: KeyCache, https: Calls) -> Callable[[], tuple[int, ...]]:
    """The ids of the clients the session's engineer holds a grant row for, read from
    ``grants.list`` (where to look only: the server verifies each grant again)."""
    grants = HttpsGrantListTransport(https)

    def granted() -> tuple[int, ...]:
        me = keys.session()
        caller = Caller(me.engineer_id, me.key_generation)
        rows = grants.list(GrantListRequest(caller, None, None, tuple(sorted(cache)), me.org_signing_public))
        return tuple(sorted({g.row.client_id for g in rows.grants if g.row.engineer_id == me.engineer_id}))

    return granted


def remote_secret_keyholders(
    keys: EngineerKeys,
    cache: KeyCache,
    https: Calls,
    contexts: Contexts,
    granted: Callable[[], tuple[int, ...]],
    clock: Callable[[], dt.datetime],
    admin: Callable[[], bool] = lambda: False,
) -> tuple[SecretKeyholder, SecretListKeyholder]:
    """The secrets' keyholder and the listing's, store-less, through the server ``https``."""
    transport = HttpsSecretTransport(https)
    keyholder = SecretKeyholder(transport, keys, ContextSecretLookup(contexts), cache, clock)
    return keyholder, SecretListKeyholder(keyholder, GrantScope(contexts, granted, admin), transport)


def remote_client_keyholder(
    keys: EngineerKeys,
    cache: KeyCache,
    https: Calls,
    contexts: Contexts,
    hints: Callable[[], dict[str, int]],
    clock: Callable[[], dt.datetime],
) -> ClientKeyholder:
    """The clients' keyholder, store-less, through the server ``https``."""
    return ClientKeyholder(HttpsClientTransport(https), keys, ContextClientLookup(contexts), cache, clock, hints)
