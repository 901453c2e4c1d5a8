"""``RemoteVault``'s reading and writing nouns: grants, secrets and clients through a team server.

Each is the in-process API's keyholder over the HTTPS transports, its lookups store-less
(``remote_reads.py``): a client is named by the context the checkout keyholder learned for its
slug (``RemoteCheckouts.context``: the id among the engineer's grants, verified, its slug opened
here). What the keyholders answer becomes the same records ``Vault`` returns. A method not served
through a server raises ``ConfigurationError`` saying where it runs (``_Noun``).

A read whose rows the keyholder refuses (an ``IntegrityError``: a row that does not verify or
does not open) is put on record first (``reported``: ``HttpsTransport.report_refused`` names
the answer the transport took last, which is the one being checked), then the refusal is raised
as it came. An answer the transport itself refused was reported there and is not reported again.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

from vault.errors import ConfigurationError, DecryptionFailed, IntegrityError, InvalidInput
from vault.keyholder.client_add import ClientAddKeyholder
from vault.keyholder.grant_list import GrantListKeyholder
from vault.keyholder.grant_sweep import GrantSweepKeyholder
from vault.keyholder.grants import GrantKeyholder
from vault.records import ClientInfo, GrantInfo, SearchMatch, SecretInfo, VersionInfo
from vault.service import secret_search, validation
from vault.service.core import epoch
from vault.service.remote_admin import AdminLookup, LearnedContext
from vault.service.remote_grant_history import RemoteGrantHistory
from vault.service.remote_reads import (
    ContextClientLookup,
    Contexts,
    grant_client_ids,
    remote_client_keyholder,
    remote_secret_keyholders,
)
from vault.service.remotekeys import RemoteKeys
from vault.service.secrets import (
    _BY_REF,
    UNSET,
    Secrets,
    composer,
    new_metadata,
    opened_history,
    opened_info,
    sensitive_field_names,
    update_changes,
)
from vault.transport.https import HttpsTransport
from vault.transport.https_client_add import HttpsClientAddTransport
from vault.transport.https_grant_writes import HttpsGrantTransport
from vault.transport.https_grants import HttpsGrantListTransport
from vault.transport.https_sweep import HttpsSweepTransport

NOT_SERVED_HINT = "run it where the vault's database is (credvault --db URL ...), or ask an admin"


def not_served(what: str) -> ConfigurationError:
    return ConfigurationError(f"`{what}` is not served through a team server yet", hint=NOT_SERVED_HINT)


class _Noun:
    """A noun of ``RemoteVault``: a method it does not serve says so (``ConfigurationError``)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise not_served(f"{type(self).__name__.removeprefix('Remote').lower()}.{name}")


@contextlib.contextmanager
def reported(https: HttpsTransport) -> Iterator[None]:
    """Runs a read; rows its keyholder refuses are reported to the server, then raised (module docstring)."""
    https.answered = None  # an answer taken before this read is not this read's
    try:
        yield
    except IntegrityError as refused:
        https.report_refused("undecryptable" if isinstance(refused, DecryptionFailed) else "untrusted")
        raise


class RemoteGrants(_Noun):
    """``grants.list`` through the server: the caller's own grants (an engineer's), or every grant (an
    admin's, each confirmed against the whole audit chain verified here: ``remote_grant_history.py``),
    verified here; an admin's ``grant`` and ``revoke`` by a draft and a signed commit (``remote_admin.py``)."""

    def __init__(
        self,
        keys: RemoteKeys,
        https: HttpsTransport,
        contexts: Contexts,
        clock: Callable[[], dt.datetime],
        learned: Callable[[str], LearnedContext] | None = None,
    ) -> None:
        clients = remote_client_keyholder(keys, keys.client_keys, https, contexts, lambda: keys.slugs, clock)
        self.keys, self.https, self.clock = keys, https, clock
        self.history = RemoteGrantHistory()  # an admin's: the whole chain verified here (its audit set by RemoteVault)
        self.keyholder = GrantListKeyholder(
            HttpsGrantListTransport(https), keys, ContextClientLookup(contexts), clients, self.history, clock
        )
        lookup = AdminLookup(keys, learned if learned is not None else _no_context)
        self.writes = GrantKeyholder(HttpsGrantTransport(https), keys, lookup, clients, clock, lookup.ring)

    def __repr__(self) -> str:
        return "RemoteGrants()"

    def list(self, *, engineer: str | None = None, client: str | None = None) -> builtins.list[GrantInfo]:
        self.keys.me()
        with reported(self.https):
            return self.keyholder.list(engineer=engineer, client=client)

    def grant(
        self, engineer: str, client: str, *, until: dt.datetime | None = None, reason: str | None = None
    ) -> GrantInfo:
        """As ``Vault.grants.grant``, through the server: the sweep of expired grants first, as in-process."""
        validation.field_value("reason", reason)
        if until is not None and until.tzinfo is None:
            until = until.replace(tzinfo=dt.UTC)  # a time without a zone is UTC
        if until is not None and until <= self.clock():
            raise InvalidInput("the grant's --until time is in the past")
        validation.engineer_name(engineer)
        validation.client_slug(client)
        self.keys.me()
        swept(self.keys, self.https, self.clock)  # committed on its own, even if the grant fails (as in-process)
        return self.writes.grant(engineer, client, until=epoch(until) if until else None, reason=reason)

    def revoke(self, engineer: str, client: str) -> int:
        """As ``Vault.grants.revoke``, through the server: the sweep of expired grants first, as in-process."""
        validation.engineer_name(engineer)
        validation.client_slug(client)
        self.keys.me()
        swept(self.keys, self.https, self.clock)
        return self.writes.revoke(engineer, client)

    def maintain(self) -> int:
        """As ``Vault.grants.maintain``, through the server (an admin's): the grants past their end
        revoked under this admin's signature and the key copies no live grant backs deleted; the
        copies deleted (``transport/https_sweep.py``)."""
        self.keys.me()
        return swept(self.keys, self.https, self.clock)


def swept(keys: RemoteKeys, https: HttpsTransport, clock: Callable[[], dt.datetime]) -> int:
    """The sweep of expired grants as the acting admin, through the server (``grants.sweep_draft``, and
    ``grants.sweep`` when a grant is past its end), in units of its own: what in-process ``maintain`` and
    the start of an admin's ``clients.add``, ``grant`` and ``revoke`` run (``GrantLedger.sweep``). With
    nothing past its end it is one read, nothing written. The key copies deleted."""
    return GrantSweepKeyholder(HttpsSweepTransport(https), keys, clock).sweep()


def _no_context(slug: str) -> LearnedContext:
    raise not_served("grants.grant (no client context)")


class RemoteClients(_Noun):
    """``clients.list`` and ``clients.show`` through the server (format-3 events appended there);
    an admin's ``clients.add`` by a draft (the id reserved) and a signed commit."""

    def __init__(
        self, keys: RemoteKeys, https: HttpsTransport, contexts: Contexts, clock: Callable[[], dt.datetime]
    ) -> None:
        self.keys, self.https, self.clock = keys, https, clock
        self.keyholder = remote_client_keyholder(keys, keys.client_keys, https, contexts, lambda: keys.slugs, clock)
        lookup = AdminLookup(keys, _no_context)
        self.adding = ClientAddKeyholder(HttpsClientAddTransport(https), keys, lookup, keys.client_keys, clock)

    def add(self, slug: str, name: str) -> ClientInfo:
        """As ``Vault.clients.add``, through the server: the sweep of expired grants first, as in-process."""
        validation.client_slug(slug)
        name = validation.display_name(name)
        self.keys.me()
        swept(self.keys, self.https, self.clock)  # committed on its own, even if the add fails (as in-process)
        return self.adding.add(slug, name)

    def __repr__(self) -> str:
        return "RemoteClients()"

    def list(self) -> builtins.list[ClientInfo]:
        self.keys.me()
        with reported(self.https):
            return self.keyholder.list()

    def show(self, slug: str) -> ClientInfo:
        validation.client_slug(slug)
        self.keys.me()
        with reported(self.https):
            return self.keyholder.show(slug)


class RemoteSecrets(_Noun):
    """``secrets.*`` through the server: show, history, list; add and update (with a new password) by drafts."""

    def __init__(
        self,
        keys: RemoteKeys,
        https: HttpsTransport,
        contexts: Contexts,
        clock: Callable[[], dt.datetime],
        admin: Callable[[], bool],
    ) -> None:
        granted = grant_client_ids(keys, keys.client_keys, https)
        self.keys, self.https = keys, https
        self.keyholder, self.listing = remote_secret_keyholders(
            keys, keys.client_keys, https, contexts, granted, clock, admin
        )  # an admin lists every client's secrets, as in-process

    def __repr__(self) -> str:
        return "RemoteSecrets()"

    def show(self, ref: str) -> SecretInfo:
        self.keys.me()
        with reported(self.https):
            return opened_info(self.keyholder.show(ref))

    def history(self, ref: str) -> builtins.list[VersionInfo]:
        self.keys.me()
        with reported(self.https):
            return opened_history(self.keyholder.history(ref))

    def list(self, client: str | None = None) -> builtins.list[SecretInfo]:
        self.keys.me()
        with reported(self.https):
            _scope, out = self.listing.listed(client, Secrets.info)  # each page's event committed first
        out.sort(key=_BY_REF)
        return out

    def search(self, query: str, client: str | None = None) -> builtins.list[SearchMatch]:
        """As ``Vault.secrets.search``: the listing's pages (``secrets.list_page``, each page's
        ``secret-list`` committed on the server first) searched here; the query is never sent."""
        match = secret_search.Matcher(secret_search.needle(query), sensitive_field_names)
        self.keys.me()
        with reported(self.https):
            _scope, listed = self.listing.listed(client, match)
        return secret_search.found(listed)

    def add(
        self,
        ref: str,
        *,
        password: str,
        kind: str = "other",
        username: str | None = None,
        url: str | None = None,
        host: str | None = None,
        note: str | None = None,
        fields: dict[str, str] | None = None,
        sensitive_fields: dict[str, str] | None = None,
        public_fields: dict[str, str] | None = None,
    ) -> SecretInfo:
        metadata = new_metadata(
            ref, password, kind, username=username, url=url, host=host, note=note, fields=fields,
            sensitive_fields=sensitive_fields, public_fields=public_fields,
        )  # fmt: skip
        self.keys.me()
        return opened_info(self.keyholder.add(ref, kind=kind, password=password, metadata=metadata))

    def update(
        self,
        ref: str,
        *,
        password: str | None = None,
        username: Any = UNSET,
        url: Any = UNSET,
        host: Any = UNSET,
        note: Any = UNSET,
        fields: dict[str, str] | None = None,
        kind: str | None = None,
        sensitive_fields: dict[str, str] | None = None,
        public_fields: dict[str, str] | None = None,
    ) -> SecretInfo:
        changes = update_changes(password, kind, username, url, host, note, sensitive_fields, public_fields)
        compose = composer(password, changes, fields, kind)
        self.keys.me()
        changed = password is not None  # kept: the draft's view of the password on record (https_secrets.py)
        return opened_info(self.keyholder.update(ref, kind=kind, password_changed=changed, compose=compose))
