"""The in-process collaborators of the clients' and the grants' two halves.

Adapters over the Vault object's trust, journal and keys, handed to the clients' authority
(``vault/authority/clients.py``) and keyholder (``vault/keyholder/clients.py``), which are
joined by the in-process transport (``vault/transport/clients.py``):
``client_keyholder(clients)`` builds the three (``https_client_keyholder``: over a team
server); ``grant_keyholder(grants)`` those of grants
(``vault/{authority,keyholder,transport}/grants.py``). The lookup learns a client's context (its
id, an admin's slug tag) through ``Clients.client``, the checked lookup other nouns use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from vault.authority.client_add import ClientAddAuthority
from vault.authority.clients import ClientAuthority
from vault.authority.grant_list import GrantListAuthority
from vault.authority.grant_sweep import GrantSweepAuthority
from vault.authority.grants import GrantAuthority, PrivateDetails
from vault.crypto import signing
from vault.crypto.labels import LABEL_TAG_CLIENT_SLUG
from vault.errors import InvalidInput, UntrustedRecord
from vault.keyholder.client_add import ClientAddKeyholder
from vault.keyholder.clients import ClientContext, ClientKeyholder
from vault.keyholder.grant_list import Confirms, GrantListKeyholder
from vault.keyholder.grant_sweep import GrantSweepKeyholder
from vault.keyholder.grants import GrantKeyholder
from vault.keyholder.sessionkeys import SessionKeys
from vault.service.core import ROLE_ADMIN
from vault.service.rows import EngineerRecord, EngineerRow, GrantRecord
from vault.transport.clients import InProcessClientAddTransport, InProcessClientTransport
from vault.transport.grants import (
    InProcessGrantListTransport,
    InProcessGrantSweepTransport,
    InProcessGrantTransport,
)
from vault.transport.https_clients import HttpsClientTransport
from vault.transport.https_grants import HttpsGrantListTransport

if TYPE_CHECKING:
    from vault.authority.journal import Journal
    from vault.keyholder.trust import Trust
    from vault.service.clients import Clients
    from vault.service.core import Core
    from vault.service.grantledger import GrantLedger
    from vault.service.grants import Grants
    from vault.transport.https import HttpsTransport


class TrustChecks:
    """The authority's checks (signatures and public keys only), made by the Vault's trust."""

    def __init__(self, trust: Trust) -> None:
        self._trust = trust

    def organisation_key(self, s: Session, current: bytes) -> None:
        s.info["org_current"] = current  # the vault's current key as read in this unit: no second read

    def certificate(self, s: Session, row: EngineerRecord) -> None:
        self._trust.verify_certificate(s, row)

    def first_valid_grant(
        self, s: Session, grants: Sequence[GrantRecord], engineer: EngineerRecord, signers: Sequence[EngineerRow | None]
    ) -> int:
        return self._trust.first_valid_grant(s, grants, engineer, signers)


class JournalRecorder:
    """The Journal's append (its signature and sealed details: the keyholder's, in-process)."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    def append(
        self,
        s: Session,
        action: str,
        *,
        client_id: int | None,
        details: dict[str, Any] | None = None,
        public: dict[str, Any] | None = None,
        sealed_with: PrivateDetails | None = None,
    ) -> int:
        if sealed_with is not None:
            if details is None or client_id is None:
                raise InvalidInput("private details are sealed with an event's details, under its client")
            private = sealed_with.private_details(client_id, action)
            if not isinstance(private, dict) or set(private) & set(details):
                raise UntrustedRecord("the keyholder's details would overwrite the authority's facts")
            details = {**details, **private}  # encrypted by the journal, in this append
        return self._journal.append(s, action, client_id=client_id, details=details, public=public).seq


class _Lookup:
    """A client's context, learned through the checked client lookup in a read unit."""

    def __init__(self, clients: Clients) -> None:
        self._clients = clients

    def context(self, slug: str) -> ClientContext:
        c = self._clients
        with c.core.store.read() as s:  # reads only: no write lock
            client = c.client(s, slug)
            slug_tag = None
            if c.trust.my_row(s).role == ROLE_ADMIN:  # by its slug tag, under the current recovery key
                slug_tag = signing.lookup_tag(c.keys.root_bundle(s).lookup_key, LABEL_TAG_CLIENT_SLUG, slug)
            return ClientContext(client.id, slug, slug_tag, client.slug_blob)

    def slug_tag(self, slug: str) -> bytes | None:
        c = self._clients
        with c.core.store.read() as s:
            if c.trust.my_row(s).role != ROLE_ADMIN:
                return None
            return signing.lookup_tag(c.keys.root_bundle(s).lookup_key, LABEL_TAG_CLIENT_SLUG, slug)


class SigningSessionKeys(SessionKeys):
    """``SessionKeys`` that also sign as the acting engineer (a grant's and a revocation's
    signatures); the signing key itself never leaves ``Keys``."""

    def sign(self, label: bytes, *fields: signing.ContextItem) -> bytes:
        return self._keys.my_signing_key().sign(label, *fields)


class AdminSessionKeys(SigningSessionKeys):
    """``SigningSessionKeys`` of an admin that also name the recovery key their root bundle
    opens to (read from the bundle itself, never from the vault's public row)."""

    def recovery_public(self, slug: str) -> tuple[int, bytes, bytes]:
        with self._store.read() as s:
            bundle = self._keys.root_bundle(s)
        tag = signing.lookup_tag(bundle.lookup_key, LABEL_TAG_CLIENT_SLUG, slug)
        return bundle.version, bundle.recovery.public, tag


def grant_keyholder(grants: Grants) -> GrantKeyholder:
    """The grants' keyholder of this Vault object, over an in-process transport to its authority."""
    core, keys = grants.core, grants.keys
    authority = GrantAuthority(core.store, TrustChecks(grants.trust), JournalRecorder(grants.journal), core.clock)
    return GrantKeyholder(
        InProcessGrantTransport(authority),
        SigningSessionKeys(keys, core.store),
        _Lookup(grants.clients),
        grants.clients._client_keyholder(),
        core.clock,
    )


def client_keyholder(clients: Clients) -> ClientKeyholder:
    """The clients' keyholder of this Vault object, over an in-process transport to its authority."""
    core, keys = clients.core, clients.keys
    authority = ClientAuthority(core.store, TrustChecks(clients.trust), JournalRecorder(clients.journal), core.clock)
    return ClientKeyholder(
        InProcessClientTransport(authority),
        SessionKeys(keys, core.store),
        _Lookup(clients),
        keys.client_keys,
        core.clock,
        lambda: keys.slugs,
    )


def https_client_keyholder(clients: Clients, https: HttpsTransport) -> ClientKeyholder:
    """The clients' keyholder of this Vault object over a team server (``https``): its keys, key
    cache and slug hints, ``show``/``list`` answered once their format-3 event committed
    (``transport/https_clients.py``). The lookup still reads the local database; a store-less
    caller gives its own (``vault/service/remote_reads.py``)."""
    keys = clients.keys
    return ClientKeyholder(
        HttpsClientTransport(https),
        SessionKeys(keys, clients.core.store),
        _Lookup(clients),
        keys.client_keys,
        clients.core.clock,
        lambda: keys.slugs,
    )


def client_add_keyholder(clients: Clients) -> ClientAddKeyholder:
    """The keyholder of ``clients.add`` of this Vault object, over an in-process transport."""
    core, keys = clients.core, clients.keys
    authority = ClientAddAuthority(core.store, TrustChecks(clients.trust), JournalRecorder(clients.journal), core.clock)
    return ClientAddKeyholder(
        InProcessClientAddTransport(authority),
        AdminSessionKeys(keys, core.store),
        _Lookup(clients),
        keys.client_keys,
        core.clock,
    )


def grant_sweep_keyholder(core: Core, trust: Trust, journal: Journal) -> GrantSweepKeyholder:
    """The keyholder of the expired-grant sweep, over an in-process transport to its authority."""
    authority = GrantSweepAuthority(core.store, TrustChecks(trust), JournalRecorder(journal), core.clock)
    return GrantSweepKeyholder(
        InProcessGrantSweepTransport(authority), SigningSessionKeys(trust.keys, core.store), core.clock
    )


class LedgerHistory:
    """What the verified audit log says about grants (``GrantLedger.grant_history``), read
    for the admin's keyholder in a unit of its own: the in-process adapter the listing's
    ``unconfirmed`` state still needs (the events are verified and opened with the admin's keys)."""

    def __init__(self, ledger: GrantLedger, store: Any) -> None:
        self._ledger, self._store = ledger, store

    def confirmations(self, client_ids: set[int]) -> Confirms:
        with self._store.transaction() as s:
            return self._ledger.grant_history(s, client_ids).confirms


def grant_list_keyholder(grants: Grants) -> GrantListKeyholder:
    """The keyholder of ``grants.list`` of this Vault object, over an in-process transport."""
    core = grants.core
    authority = GrantListAuthority(core.store, TrustChecks(grants.trust), core.clock)
    return GrantListKeyholder(
        InProcessGrantListTransport(authority),
        SessionKeys(grants.keys, core.store),
        _Lookup(grants.clients),
        grants.clients._client_keyholder(),
        LedgerHistory(grants.ledger, core.store),
        core.clock,
    )


def https_grant_list_keyholder(grants: Grants, https: HttpsTransport) -> GrantListKeyholder:
    """The keyholder of ``grants.list`` over a team server (``https``). The lookup and an admin's
    grant history (``unconfirmed``, from the verified audit log) still read the local database:
    the CLI's wiring over HTTPS comes later (docs/server.md §8 step 7)."""
    core = grants.core
    return GrantListKeyholder(
        HttpsGrantListTransport(https),
        SessionKeys(grants.keys, core.store),
        _Lookup(grants.clients),
        grants.clients._client_keyholder(),
        LedgerHistory(grants.ledger, core.store),
        core.clock,
    )
