"""The in-process collaborators of the secrets' two halves, and the secret listing.

Adapters over the Vault object's trust, policies, journal and keys, handed to the
secrets' authorities (``vault/authority/secrets.py``, ``secret_list.py``) and keyholders
(``vault/keyholder/secrets.py``, ``secret_list.py``), which are joined by the in-process
transport (``vault/transport/secrets.py``): ``keyholders(secrets)`` builds them;
``over_https(secrets, https)`` the same noun through a team server (writes and reads).

``secret list`` reads in ``Store.read()`` (no write lock): the authority's keyset pages of
ciphertext, each verified and opened by the listing's keyholder (never a password). A
secret whose current-version row is missing is reported as damaged (``IntegrityError``),
never passed over in silence: a writer of the database could otherwise hide a secret from
every listing. An engineer's scope comes from their grant index (``listing.py``, the keyholder's
memory of the grants it verified); the authority reads the grant ledgers again itself and
verifies each head with ``first_valid_grant``, never trusting that memory.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vault.authority.secret_list import SecretListAuthority
from vault.authority.secrets import SecretAuthority
from vault.crypto import signing
from vault.crypto.labels import LABEL_TAG_CLIENT_SLUG
from vault.keyholder.secret_list import ListScope, SecretListKeyholder
from vault.keyholder.secrets import SecretContext, SecretKeyholder
from vault.keyholder.sessionkeys import SessionKeys
from vault.service import rows
from vault.service.core import ROLE_ADMIN
from vault.service.rows import EngineerRecord, EngineerRow, GrantRecord
from vault.storage import models as m
from vault.transport.https_secrets import HttpsSecretTransport
from vault.transport.secrets import InProcessSecretTransport

if TYPE_CHECKING:
    from vault.service.secrets import Secrets
    from vault.transport.https import HttpsTransport


class _Checks:
    """The authority's checks (signatures and public keys only), made by the Vault's trust."""

    def __init__(self, secrets: Secrets) -> None:
        self._trust, self._policies, self._holds = secrets.trust, secrets.policy_check, secrets.holds

    def organisation_key(self, s: Session, current: bytes) -> None:
        s.info["org_current"] = current  # the vault's current key as read in this unit: no second read

    def certificate(self, s: Session, row: EngineerRecord) -> None:
        self._trust.verify_certificate(s, row)

    def first_valid_grant(
        self, s: Session, grants: Sequence[GrantRecord], engineer: EngineerRecord, signers: Sequence[EngineerRow | None]
    ) -> int:
        return self._trust.first_valid_grant(s, grants, engineer, signers)

    def current_key_version(self, s: Session, client: m.Client) -> int:
        return self._trust.current_key_version(s, client)

    def retention(self, s: Session) -> int:
        return self._policies.retention(s)

    def exclusive_holds(self, s: Session, client: m.Client, secret: m.Secret, me: int) -> list[rows.HoldRow]:
        holds = self._holds.lock_and_find_holds(s, secret)
        # A hold whose row says "not exclusive" may have been edited: under an exclusive
        # policy every hold is checked against its event, which says what it was.
        exclusive_policy = bool(holds) and self._policies.policy(s, client.id).exclusive
        claimed = [c for c in holds if c.exclusive or exclusive_policy]
        genuine = self._holds.genuine_holds(s, client, client.audit_keys_blob, secret.id, claimed, me)
        return [c for c in genuine if c.exclusive]


class _Recorder:
    """The Journal's append (its signature and sealed details: the keyholder's, in-process)."""

    def __init__(self, secrets: Secrets) -> None:
        self._journal = secrets.journal

    def append(
        self, s: Session, action: str, *, client_id: int | None, secret_id: int | None, details: dict[str, Any] | None
    ) -> int:
        return self._journal.append(s, action, client_id=client_id, secret_id=secret_id, details=details).seq


class _Lookup:
    """A client's context, learned through the Vault's checked client lookup (the grant, the
    slug, the lookup key), in a read of its own."""

    def __init__(self, secrets: Secrets) -> None:
        self._secrets = secrets

    def context(self, slug: str) -> SecretContext:
        c = self._secrets
        with c.core.store.read() as s:  # reads only: no write lock
            client = c.clients.client(s, slug)
            slug_tag = None
            if c.trust.my_row(s).role == ROLE_ADMIN:  # by its slug tag, under the current recovery key
                slug_tag = signing.lookup_tag(c.keys.root_bundle(s).lookup_key, LABEL_TAG_CLIENT_SLUG, slug)
            return SecretContext(client.id, slug, slug_tag, client.slug_blob, c.lookup_key(s, client))


class _ListLookup:
    """What a listing may ask for, learned through the Vault's checked lookups: the client
    named (its context), an engineer's granted clients (each grant verified, their client
    keys unsealed), or every client (an admin's, the recovery key opened)."""

    def __init__(self, secrets: Secrets, lookup: _Lookup) -> None:
        self._secrets, self._lookup = secrets, lookup

    def scope(self, slug: str | None) -> ListScope:
        if slug is not None:
            return ListScope((self._lookup.context(slug).client_id,), 1, slug)
        c = self._secrets
        with c.core.store.read() as s:
            me = c.trust.my_row(s)
            if me.role == ROLE_ADMIN:
                c.keys.root_bundle(s)  # the recovery key the client keys are sealed to
                return ListScope(None, s.scalar(select(func.count()).select_from(m.Client)) or 0, None)
            ids = tuple(client.id for client in c.clients.granted_clients(s, me))
        return ListScope(ids, len(ids), None)


def keyholders(secrets: Secrets) -> tuple[SecretKeyholder, SecretListKeyholder]:
    """The secrets' keyholder and the listing's, over one in-process transport to their authorities."""
    checks = _Checks(secrets)
    authority = SecretAuthority(secrets.core.store, checks, _Recorder(secrets), secrets.core.clock)
    transport = InProcessSecretTransport(authority, SecretListAuthority(secrets.core.store, checks))
    lookup = _Lookup(secrets)
    keyholder = SecretKeyholder(
        transport,
        SessionKeys(secrets.keys, secrets.core.store),
        lookup,
        secrets.keys.client_keys,
        secrets.core.clock,
    )
    return keyholder, SecretListKeyholder(keyholder, _ListLookup(secrets, lookup), transport)


def over_https(secrets: Secrets, https: HttpsTransport) -> Secrets:
    """``secrets`` (a Vault's noun) through a team server (``https``): the same keys, key cache
    and client lookup; adds and updates drafted and committed over HTTPS, ``show``/``history``
    and ``list`` answered once their format-3 event committed (``transport/https_secrets.py``).
    The lookups (a client's context, a listing's scope) still read the local database; a
    store-less caller gives its own (``vault/service/remote_reads.py``)."""
    transport = HttpsSecretTransport(https)
    lookup = _Lookup(secrets)
    keyholder = SecretKeyholder(
        transport,
        SessionKeys(secrets.keys, secrets.core.store),
        lookup,
        secrets.keys.client_keys,
        secrets.core.clock,
    )
    served = copy.copy(secrets)
    served._keyholder = (keyholder, SecretListKeyholder(keyholder, _ListLookup(secrets, lookup), transport))
    served.listed_on_server = True
    return served
