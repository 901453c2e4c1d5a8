"""The secrets' reads on the team server: ``secrets.show``, ``secrets.history``, ``secrets.list``.

In-process each read appends its event (``secret-view``, ``secret-history``, ``secret-list``)
signed by the keyholder, with a view's details sealed. Through the server (docs/server.md §4
rule 1) the engineer signs the request and the server signs a format-3 event that keeps it,
appended and **committed before the answer leaves**; the keyholder verifies the answer after.

* ``show`` / ``history`` run the in-process ``SecretAuthority.read`` (who calls, before any
  row of the client or the secret is read; the client by id or an admin's slug tag; the
  secret by its name tag; the current version; a history's versions) with ``_ServedRead`` in
  place of the keyholder's seal and the journal: its ``admit`` keeps the draft (the keyholder
  admits the answer after the commit), its ``append`` remembers the request's nonce in the
  read's unit and appends the event with the server's facts public: the version shown
  (``version``), a view's ``fields: public-only`` (the server withholds the password blob, so
  it is the server that vouches the view showed no sensitive value) and, on a layered vault,
  ``released: [[client, secret, version]]``. Only after the commit is the layer removed, from
  that one version (a failed or unknown commit releases nothing).
* ``list`` reads the pages as in-process (``SecretListAuthority``: an engineer's scope is the
  ids asked that the server finds a live, verified grant for; a client named without one is
  404), then appends ``secret-list`` in a unit of its own (the nonce in it): the client named
  (``client_id``) or ``clients``, the number of clients listed (as in-process: the ids the
  server checked, or every client for an admin), and on a layered vault ``released``, every
  version whose data key it answers. After the commit the
  layer comes off those versions only. The pages travel in one answer (``SecretListing``).
* ``list_page`` (``secrets.list_page``, what the engineer's client sends now) is ``list`` for one
  bounded page: the secrets after the request's cursor (``after``, a secret id: keyset order), at
  most its ``limit`` and never more than ``MAX_LIST_PAGE``, its scope checked again on every page
  (a cursor is only a position: whoever sends it is answered their own scope after it, nothing
  else). Each page appends its own ``secret-list`` event, the first one's facts those of a whole
  listing and a later one's with ``after`` too: a page releases data keys (``released``) that
  must be on record before they leave, and no server keeps a listing between requests. A page
  whose answer would pass ``PAGE_BYTES`` keeps only its first secrets that fit (at least one),
  before its event names them: the client decodes a page up to ``https.RESPONSE_LIMITS``. The
  answer (``SecretListPage``) names the next cursor (the last id read, or the last kept of a
  trimmed page), or None after a short page.

Every answer withholds the versions' password blobs (``WITHHELD``): with the data key the
keyholder holds, a password blob would be a reveal without its ``reveal`` event. No request of
these routes carries details the keyholder seals: in-process the view's only detail is the
``public-only`` mark, which here is the server's fact. The body's caller must be the signer
(403, nothing read); a route's request must name the route's action (400). Without a server
signing key the routes answer 503 (``NO_SERVER_KEY``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from vault.authority.checkout_events import UnitCore
from vault.authority.checkout_reads import CallerRead
from vault.authority.requests import NewVersion
from vault.authority.secret_draft_requests import WITHHELD
from vault.authority.secret_list import SecretListAuthority
from vault.authority.secret_requests import (
    HISTORY,
    LIST,
    VIEW,
    ListedSecretRow,
    ListSecretsRequest,
    ReadRequest,
    SecretListing,
    SecretListPage,
    SecretPage,
    SecretPageRequest,
    SecretRows,
)
from vault.authority.secrets import SecretAuthority, SecretChecks
from vault.authority.serverjournal import ServerJournal, ServerSeal
from vault.errors import ConfigurationError, InvalidInput
from vault.server.handlers import Call, Operations, signer_only
from vault.server.layer import ServerLayer, is_layered
from vault.server.problems import NO_SERVER_KEY
from vault.storage import models as m
from vault.storage.engine import Store
from vault.storage.rows import VersionRow
from vault.wire import codec

MAX_LIST_PAGE = 250  # secrets in one page of ``secrets.list_page``, at most
PAGE_BYTES = 256 * 1024  # a page's encoded size, at most (unless its one secret is larger)


def withheld(version: VersionRow | None) -> VersionRow | None:
    """``version`` without its password blob (module docstring)."""
    return None if version is None else version._replace(password_blob=WITHHELD)


class _ServedRead:
    """``SecretSeal`` and ``Recorder`` of one served read (module docstring): the draft kept, the
    event appended in format 3 with the server's facts."""

    def __init__(self, journal: ServerJournal, call: Call) -> None:
        self.journal, self.call = journal, call
        self.draft: SecretRows | None = None

    def __repr__(self) -> str:
        return "ServedRead()"

    def admit(self, draft: SecretRows) -> None:
        self.draft = draft  # the keyholder verifies the answer after the event committed

    def encrypt(self, draft: SecretRows, version: int) -> NewVersion:
        raise InvalidInput("a read writes no version")

    def append(
        self, s: Session, action: str, *, client_id: int | None, secret_id: int | None, details: dict[str, Any] | None
    ) -> int:
        if self.draft is None or self.draft.version is None or client_id is None or secret_id is None:
            raise InvalidInput("a read's event names the version it shows")
        if self.call.nonce is not None:
            self.call.nonce(s)  # a second in-flight copy waits here, then fails as replayed
        number = self.draft.version.version
        facts: dict[str, Any] = {**(details or {}), "version": number}
        if is_layered(self.draft.version.wrapped_dek):
            facts["released"] = [[client_id, secret_id, number]]
        me = self.call.caller.me
        assert self.call.recorded is not None
        event = self.journal.append(
            s, action, self.call.recorded, engineer_id=me.id, key_generation=me.key_generation,
            client_id=client_id, secret_id=secret_id, public=facts,
        )  # fmt: skip
        return event.seq


class SecretReadRoutes:
    """``secrets.show``/``history``/``list`` over the server's secrets authorities (module docstring)."""

    def __init__(
        self,
        store: Store,
        checks: SecretChecks,
        seal: ServerSeal | None,
        clock: Callable[[], dt.datetime],
        layer: ServerLayer | None = None,
    ) -> None:
        self.store, self.checks, self.seal, self.clock, self.layer = store, checks, seal, clock, layer

    def __repr__(self) -> str:
        return f"SecretReadRoutes({self.seal!r})"

    def show(self, call: Call) -> SecretRows:
        return self._read(call, VIEW)

    def history(self, call: Call) -> SecretRows:
        return self._read(call, HISTORY)

    def _read(self, call: Call, action: str) -> SecretRows:
        request = call.body
        if not isinstance(request, ReadRequest):
            raise InvalidInput("the body is not this route's request")
        signer_only(call, request.caller)
        if request.action != action:
            raise InvalidInput(f"this route is {action!r}, the request names {request.action!r}")
        served = _ServedRead(self._journal(), call)
        authority = SecretAuthority(self.store, self.checks, served, self.clock)
        rows = authority.read(request, served)  # returns once its event committed
        version = withheld(rows.version)
        if self.layer is not None and version is not None and is_layered(version.wrapped_dek):
            with self.store.read() as s:  # committed: the layer comes off the one version the event names
                version = self.layer.unlayered(s, rows.vault_id, rows.client.id, rows.secret.id, version)
        return dataclasses.replace(rows, version=version)

    def list_secrets(self, call: Call) -> SecretListing:
        request = call.body
        if not isinstance(request, ListSecretsRequest):
            raise InvalidInput("the body is not this route's request")
        signer_only(call, request.caller)
        if request.action != LIST:
            raise InvalidInput(f"this route is {LIST!r}, the request names {request.action!r}")
        journal = self._journal()
        listing = _ScopedListing(self.store, self.checks)
        pages = _bounded(listing.pages(request))  # the read unit ends with the last page
        client_id, public = _event_of(request, listing.clients, pages)
        me = call.caller.me
        assert call.recorded is not None
        with self.store.transaction() as s:
            if call.nonce is not None:
                call.nonce(s)
            event = journal.append(
                s, LIST, call.recorded, engineer_id=me.id, key_generation=me.key_generation,
                client_id=client_id, public=public or None,
            )  # fmt: skip
            seq = event.seq
        released = {tuple(row) for row in public.get("released", ())}
        if released and self.layer is not None:
            with self.store.read() as s:  # committed: the layer comes off the versions the event names
                pages = tuple(_unlayered(self.layer, s, p, released) for p in pages)
        return SecretListing(seq, tuple(dataclasses.replace(p, secrets=_withheld(p.secrets)) for p in pages))

    def list_page(self, call: Call) -> SecretListPage:
        request = call.body
        if not isinstance(request, SecretPageRequest):
            raise InvalidInput("the body is not this route's request")
        signer_only(call, request.caller)
        if request.action != LIST:
            raise InvalidInput(f"this route is {LIST!r}, the request names {request.action!r}")
        if type(request.after) is not int or request.after < 0 or type(request.limit) is not int or request.limit < 1:
            raise InvalidInput("a page's cursor is a secret id (0: the first page) and its limit at least 1")
        journal, size = self._journal(), min(request.limit, MAX_LIST_PAGE)
        listing = _ScopedListing(self.store, self.checks, page=size)
        pages = listing.pages(request.listing(), after=request.after)
        try:
            page = next(pages)  # at least one, perhaps empty
        finally:
            pages.close()  # the read unit ends here: the next page is another request
        page, trimmed = _within(page, PAGE_BYTES)
        client_id, public = _event_of(request.listing(), listing.clients, (page,))
        if request.after:
            public["after"] = request.after
        me = call.caller.me
        assert call.recorded is not None
        with self.store.transaction() as s:
            if call.nonce is not None:
                call.nonce(s)
            event = journal.append(
                s, LIST, call.recorded, engineer_id=me.id, key_generation=me.key_generation,
                client_id=client_id, public=public or None,
            )  # fmt: skip
            seq = event.seq
        released = {tuple(row) for row in public.get("released", ())}
        if released and self.layer is not None:
            with self.store.read() as s:  # committed: the layer comes off the versions the event names
                page = _unlayered(self.layer, s, page, released)
        last = listing.last_read if listing.read == size else None
        if trimmed:
            last = page.secrets[-1].secret_id
        return SecretListPage(seq, dataclasses.replace(page, secrets=_withheld(page.secrets)), last)

    def _journal(self) -> ServerJournal:
        if self.seal is None:
            raise ConfigurationError(NO_SERVER_KEY, hint="start the server with --server-key FILE")
        return ServerJournal(UnitCore(self.clock), self.seal)

    def add_to(self, operations: Operations) -> None:
        operations.add("secrets.show", self.show, writes=True)
        operations.add("secrets.history", self.history, writes=True)
        operations.add("secrets.list", self.list_secrets, writes=True)
        operations.add("secrets.list_page", self.list_page, writes=True)


def _event_of(
    request: ListSecretsRequest, clients: int, pages: tuple[SecretPage, ...]
) -> tuple[int | None, dict[str, Any]]:
    """The listing event's client (one named) or number of clients listed, and the versions it
    releases (module docstring)."""
    public: dict[str, Any] = {}
    named = request.client_ids if request.named else None
    client_id = named[0] if named is not None and len(named) == 1 else None
    if client_id is None:
        public["clients"] = clients
    released = sorted(
        (r.client_id, r.secret_id, r.version.version)
        for p in pages
        for r in p.secrets
        if r.version is not None and is_layered(r.version.wrapped_dek)
    )
    if released:
        public["released"] = [list(row) for row in released]
    return client_id, public


class _ScopedListing(SecretListAuthority):
    """``SecretListAuthority`` for one request, which remembers how many clients it lists: the
    ids it checked (an engineer's, each grant verified here), or every client (an admin's), as
    the in-process event counts the scope."""

    clients = 0
    read = last_read = 0  # the rows of the last page read, and its last secret id (a page's cursor)

    def _clients(self, s: Session, caller: CallerRead, asked: tuple[int, ...] | None, named: bool) -> list[int] | None:
        ids = super()._clients(s, caller, asked, named)
        self.clients = len(ids) if ids is not None else int(s.scalar(select(func.count()).select_from(m.Client)) or 0)
        return ids

    def _page(self, conn: Connection, caller: CallerRead, chain: Any, found: Any, known: Any, sent: Any) -> SecretPage:
        self.read = len(found)  # before any row is set aside (a client removed meanwhile)
        self.last_read = found[-1].id if found else 0
        return super()._page(conn, caller, chain, found, known, sent)


def _within(page: SecretPage, budget: int) -> tuple[SecretPage, bool]:
    """``page`` with as many of its first secrets as keep its encoding within ``budget`` bytes (at
    least one), and whether any were left for the next page (its client rows and keys all kept)."""
    rows, keep = page.secrets, len(page.secrets)
    while keep > 1:
        size = len(codec.encode(dataclasses.replace(page, secrets=_withheld(rows[:keep]))))
        if size <= budget:
            break
        keep = max(1, keep * budget // size)  # smaller each time: size > budget
    return dataclasses.replace(page, secrets=rows[:keep]), keep < len(rows)


def _withheld(rows: tuple[ListedSecretRow, ...]) -> tuple[ListedSecretRow, ...]:
    return tuple(dataclasses.replace(r, version=withheld(r.version)) for r in rows)


def _unlayered(layer: ServerLayer, s: Session, page: SecretPage, released: set[tuple[int, ...]]) -> SecretPage:
    out = []
    for r in page.secrets:
        v = r.version
        if v is not None and (r.client_id, r.secret_id, v.version) in released:
            v = layer.unlayered(s, page.vault_id, r.client_id, r.secret_id, v)
        out.append(dataclasses.replace(r, version=v))
    return dataclasses.replace(page, secrets=tuple(out))


def _bounded(pages: Iterator[SecretPage]) -> tuple[SecretPage, ...]:
    """The whole listing of the unpaged ``secrets.list``, at most ``MAX_LIST_PAGE`` secrets: a larger
    one is refused before its event (400, nothing written; the server never holds an unbounded answer):
    credvault's client reads by pages (``secrets.list_page``)."""
    kept: list[SecretPage] = []
    count = 0
    try:
        for page in pages:
            count += len(page.secrets)
            if count > MAX_LIST_PAGE:
                raise InvalidInput(
                    f"a listing of more than {MAX_LIST_PAGE} secrets is read by pages",
                    hint="send secrets.list_page (credvault does since this release)",
                )
            kept.append(page)
    finally:
        close = getattr(pages, "close", None)
        if close is not None:
            close()  # the read unit ends here, refused or not
    return tuple(kept)
