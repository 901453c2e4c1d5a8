"""The in-process collaborators of the secrets' two halves, and the secret listing.

Adapters over the Vault object's trust, policies, journal and keys, handed to the
secrets' authority (``vault/authority/secrets.py``) and keyholder
(``vault/keyholder/secrets.py``), which are joined by the in-process transport
(``vault/transport/secrets.py``): ``secret_keyholder(secrets)`` builds the three.

``secret_infos`` is ``secret list``'s read: in ``Store.read()`` (no write lock), the
secrets of the clients listed with their current version one keyset page per statement,
each metadata blob opened (never a password). A secret whose current-version row is
missing is reported as damaged (``IntegrityError``), never passed over in silence: a
writer of the database could otherwise hide a secret from every listing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from vault.authority.secrets import SecretAuthority
from vault.crypto import signing
from vault.crypto.labels import LABEL_TAG_CLIENT_SLUG
from vault.errors import IntegrityError
from vault.keyholder.secrets import SecretContext, SecretKeyholder
from vault.keyholder.sessionkeys import SessionKeys
from vault.service import listing, rows
from vault.service.core import ROLE_ADMIN
from vault.service.records import SecretInfo
from vault.service.rows import EngineerRecord, EngineerRow, GrantRecord
from vault.storage import models as m
from vault.storage.repositories import secrets as secret_rows
from vault.transport.secrets import InProcessSecretTransport

if TYPE_CHECKING:
    from vault.service.secrets import Secrets


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
    slug, the lookup key), in a unit of work of its own or the caller's (``unit``)."""

    def __init__(self, secrets: Secrets) -> None:
        self._secrets = secrets

    def context(self, slug: str, unit: Session | None = None) -> SecretContext:
        if unit is None:
            with self._secrets.core.store.read() as s:  # reads only: no write lock
                return self.context(slug, s)
        c, s = self._secrets, unit
        client = c.clients.client(s, slug)
        slug_tag = None
        if c.trust.my_row(s).role == ROLE_ADMIN:  # by its slug tag, under the current recovery key
            slug_tag = signing.lookup_tag(c.keys.root_bundle(s).lookup_key, LABEL_TAG_CLIENT_SLUG, slug)
        return SecretContext(client.id, slug, slug_tag, client.slug_blob, c.lookup_key(s, client))


def secret_keyholder(secrets: Secrets) -> SecretKeyholder:
    """The secrets' keyholder of this Vault object, over an in-process transport to its authority."""
    authority = SecretAuthority(secrets.core.store, _Checks(secrets), _Recorder(secrets), secrets.core.clock)
    return SecretKeyholder(
        InProcessSecretTransport(authority),
        SessionKeys(secrets.keys, secrets.core.store),
        _Lookup(secrets),
        secrets.keys.client_keys,
        secrets.core.clock,
    )


def secret_infos(secrets: Secrets, s: Session, clients: Sequence[m.Client], every: bool) -> list[SecretInfo]:
    """The metadata of every secret of ``clients`` (``every``: of all clients, read without a
    filter), sorted by client and name: a keyset page of secrets with their current version
    per statement, each metadata blob opened here. A secret without its current version is
    damaged: ``IntegrityError``, naming it by client and id."""
    by_id = {c.id: c for c in clients}
    listing.unseal_client_keys(secrets, s, secrets.trust.my_row(s), clients)  # an engineer's: with their grants
    slugs = {c.id: secrets.clients.slug(s, c) for c in clients}
    out = []
    for secret in secret_rows.current(rows.connection(s), None if every else list(by_id), missing=True):
        client = by_id.get(secret.client_id)
        if client is None:
            continue  # a client added since the clients were read (PostgreSQL): not listed
        if secret.version is None:
            raise IntegrityError(
                f"secret #{secret.id} of client {slugs[client.id]!r} is damaged: "
                f"its current version {secret.current_version} is missing",
                hint="the database was changed outside credvault; restore it from a backup",
            )
        opened = secrets.open(s, client, secret, secret)
        out.append(secrets.info(slugs[client.id], secret, opened.metadata))
    return sorted(out, key=lambda info: (info.client, info.name))
