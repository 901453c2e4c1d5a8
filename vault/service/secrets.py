"""Secrets and their versions.

Every new value (and every metadata change) is a new version with a fresh data key,
wrapped by the client's current key. A version holds two blobs: the password, and the
metadata (name, username, URL, host, note, custom fields) as sorted JSON, so that
showing or listing a secret never decrypts its password.

A custom field is either metadata, shown by ``show_secret`` and ``list_secrets``, or
**sensitive** (an MFA seed, an enable secret, a recovery code), revealed only by a
checkout, which is logged and counted in the access and at-risk reports. A field is
sensitive if its name looks like a secret's (``SENSITIVE_NAME``) unless it was stored
as public, or if it was stored as sensitive; the marks live in the metadata blob
(``sensitive_fields`` / ``public_fields``, docs/format.md §4.1), so fields written before
the marks existed are classified by their name when read.
"""

from __future__ import annotations

import builtins
import datetime as dt
import operator
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.authority.secrets import VIEW_KEPT as VIEW_KEPT
from vault.authority.secrets import VIEW_PUBLIC_ONLY as VIEW_PUBLIC_ONLY
from vault.crypto import signing
from vault.crypto.labels import LABEL_TAG_SECRET_NAME
from vault.errors import (
    InvalidInput,
    LookupMismatch,
    NotFound,
)
from vault.keyholder import versions
from vault.keyholder.secret_list import ListScope, SecretListKeyholder
from vault.keyholder.secrets import OpenedSecret, SecretKeyholder
from vault.keyholder.versions import OpenedVersion
from vault.service import listing, secret_search, secretparts, validation
from vault.service.records import SearchMatch, SecretInfo, VersionInfo
from vault.service.rows import HasId, SecretRecord, VersionRecord
from vault.storage import models as m
from vault.storage.rows import VersionRow

if TYPE_CHECKING:
    from vault.authority.journal import Journal
    from vault.keyholder.keys import Keys
    from vault.keyholder.trust import Trust
    from vault.service.clients import Clients
    from vault.service.core import Core
    from vault.service.holds import Holds
    from vault.service.policies import PolicyCheck


UNSET: Any = object()
METADATA_FIELDS = ("username", "url", "host", "note")
# Names that look like a secret's: such a custom field is sensitive unless stored as public.
SENSITIVE_NAME = re.compile(r"pass|secret|key|token|seed|otp|mfa|2fa|pin|code|recovery|enable|cred|psk")
SENSITIVE_MARKS, PUBLIC_MARKS = "sensitive_fields", "public_fields"
# What a search shows in place of a sensitive field's value (``checkout --field`` reveals it).
SENSITIVE_NOT_SHOWN = "(sensitive: revealed by checkout)"


def field_is_sensitive(name: str, metadata: Mapping[str, Any]) -> bool:
    """Whether custom field ``name`` of a version's metadata is revealed only by checkout."""
    if name in (metadata.get(PUBLIC_MARKS) or ()):
        return False
    if name in (metadata.get(SENSITIVE_MARKS) or ()):
        return True
    return SENSITIVE_NAME.search(name.lower()) is not None


def sensitive_field_names(metadata: Mapping[str, Any]) -> list[str]:
    return sorted(name for name in (metadata.get("fields") or {}) if field_is_sensitive(name, metadata))


_BY_REF = operator.attrgetter("client", "name")


class _Shown(NamedTuple):
    kind: str
    current_version: int
    created_at: dt.datetime
    updated_at: dt.datetime


class ShownSecret(Protocol):
    """The columns of a secret its metadata view shows (an ORM row or a listing's row)."""

    @property
    def kind(self) -> str: ...
    @property
    def current_version(self) -> int: ...
    @property
    def created_at(self) -> dt.datetime: ...
    @property
    def updated_at(self) -> dt.datetime: ...


def _custom_fields(
    current: Mapping[str, Any],
    fields: dict[str, str] | None,
    sensitive: dict[str, str] | None,
    public: dict[str, str] | None,
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The custom fields of a new version, and their explicit marks, from the current
    metadata (its fields and marks) and the fields given now."""
    fields, sensitive, public = fields or {}, sensitive or {}, public or {}
    given = [*fields, *sensitive, *public]
    if len(given) != len(set(given)):
        twice = sorted({name for name in given if given.count(name) > 1})
        raise InvalidInput(
            f"field {validation.shown(twice[0])} is given twice", hint="give each field once, with one of the options"
        )
    merged = {**(current.get("fields") or {}), **fields, **sensitive, **public}
    marked_sensitive = (set(current.get(SENSITIVE_MARKS) or ()) - set(public)) | set(sensitive)
    marked_public = (set(current.get(PUBLIC_MARKS) or ()) - set(sensitive)) | set(public)
    marks = {SENSITIVE_MARKS: sorted(marked_sensitive & set(merged)), PUBLIC_MARKS: sorted(marked_public & set(merged))}
    return merged, marks


def _metadata(
    name: str,
    *,
    username: str | None,
    url: str | None,
    host: str | None,
    note: str | None,
    fields: dict[str, str],
    marks: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    if url and host:
        raise InvalidInput("give either --url or --host, not both")
    metadata: dict[str, Any] = {
        "name": name,
        "username": validation.field_value("username", username),
        "url": validation.field_value("URL", url),
        "host": validation.field_value("host", host),
        "note": validation.field_value("note", note, allow_newlines=True),
        "fields": validation.custom_fields(fields),
    }
    for key, names in (marks or {}).items():
        if names:  # absent when empty: a version without marks reads as before they existed
            metadata[key] = names
    return metadata


class Secrets:
    """Secrets: ``vault.secrets.add/update/list/search/show/history``."""

    def __init__(
        self,
        core: Core,
        keys: Keys,
        trust: Trust,
        journal: Journal,
        policy_check: PolicyCheck,
        holds: Holds,
        clients: Clients,
    ) -> None:
        self.core = core
        self.keys = keys
        self.trust = trust
        self.journal = journal
        self.policy_check = policy_check
        self.holds = holds
        self.clients = clients
        self._keyholder: tuple[SecretKeyholder, SecretListKeyholder] | None = None
        self.listed_on_server = False  # through a team server, which appends the listing's event

    def lookup_key(self, s: Session, client: m.Client) -> bytes:
        return self.keys.client_field(s, client, client.lookup_key_blob, "lookup-key")

    def secret(self, s: Session, ref: str) -> tuple[m.Client, m.Secret, str]:
        """The client and secret of ``ref``, the secret's current metadata opened and its name checked."""
        client, secret, slug = self.find(s, ref)
        row = self.version(s, secret, None)
        self.check_name(self.open(s, client, secret, row), validation.secret_ref(ref)[1])
        return client, secret, slug

    def find(self, s: Session, ref: str) -> tuple[m.Client, m.Secret, str]:
        """The client and the secret row under the name tag of ``ref``, nothing decrypted but the
        client's lookup key (its name is checked by whoever opens it), else NotFound."""
        slug, name = validation.secret_ref(ref)
        client = self.clients.client(s, slug)
        tag = signing.lookup_tag(self.lookup_key(s, client), LABEL_TAG_SECRET_NAME, name)
        secret = s.scalars(select(m.Secret).where(m.Secret.client_id == client.id, m.Secret.name_tag == tag)).first()
        if secret is None:
            raise NotFound(f"no secret {ref!r}", hint=f"`credvault secret list {slug}` shows its secrets")
        return client, secret, slug

    @staticmethod
    def check_name(opened: OpenedVersion, name: str) -> None:
        """The secret found for ``name`` by its lookup tag holds that name in its metadata
        (bound to the secret's row by its associated data), else ``LookupMismatch``."""
        if opened.metadata.get("name") != name:
            raise LookupMismatch(f"the secret found for {name!r} holds another name: its lookup tag was moved")

    def version(self, s: Session, secret: SecretRecord, version: int | None) -> m.SecretVersion:
        row = s.get(m.SecretVersion, (secret.id, version or secret.current_version))
        if row is None:
            raise NotFound(f"no version {version} of this secret")
        return row

    def open(self, s: Session, client: HasId, secret: HasId, row: VersionRecord) -> OpenedVersion:
        """A version's metadata and data key, under the client key held (keyholder/versions.py)."""
        client_key = self.keys.client_key(s, client.id, row.key_version)
        layer = self.core.host_layer  # on the team server's host, with its key file: the layer comes off here
        if layer is not None:
            row = layer.unlayered(s, self.core.vid(s), client.id, secret.id, VersionRow(*_version_fields(row)))
        return versions.open_metadata(client_key, client.id, secret.id, row)

    @staticmethod
    def password(client: HasId, secret: HasId, row: VersionRecord, opened: OpenedVersion) -> str:
        return versions.open_password(opened.data_key, client.id, secret.id, row)

    @staticmethod
    def info(slug: str, secret: ShownSecret, metadata: dict[str, Any]) -> SecretInfo:
        """A secret's metadata: its public custom fields with their values, its sensitive
        ones by name only (their values are revealed by checkout)."""
        custom = metadata.get("fields") or {}
        sensitive = sensitive_field_names(metadata) if custom else []
        return SecretInfo(
            client=slug,
            name=metadata["name"],
            kind=secret.kind,
            version=secret.current_version,
            username=metadata.get("username"),
            url=metadata.get("url"),
            host=metadata.get("host"),
            note=metadata.get("note"),
            fields={name: value for name, value in custom.items() if name not in sensitive},
            created_at=secret.created_at,
            updated_at=secret.updated_at,
            sensitive_fields=tuple(sensitive),
        )

    # -- public API ---------------------------------------------------------------------

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
        """Add a secret. ``fields`` are custom fields classified by their name (sensitive
        if it looks like a secret's); ``sensitive_fields`` are always revealed only by
        checkout, ``public_fields`` always shown with the metadata."""
        metadata = new_metadata(
            ref, password, kind, username=username, url=url, host=host, note=note, fields=fields,
            sensitive_fields=sensitive_fields, public_fields=public_fields,
        )  # fmt: skip
        opened = self._secret_keyholder().add(ref, kind=kind, password=password, metadata=metadata)
        self._layered(opened)
        return opened_info(opened)

    def _layered(self, opened: OpenedSecret) -> None:
        """On the team server's host (``core.host_layer``): the layer on the version just written."""
        layer = self.core.host_layer
        if layer is not None:
            layer.layer_rows(self.core.store, [(opened.rows.secret.id, opened.rows.secret.current_version)])

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
        """Store a new version; fields left UNSET keep their value, None clears them.
        A custom field given in ``fields`` keeps its sensitive/public mark; one given in
        ``sensitive_fields`` or ``public_fields`` takes that mark."""
        changes = update_changes(password, kind, username, url, host, note, sensitive_fields, public_fields)
        return self._write_version(ref, password, changes, fields, kind)

    def _write_version(
        self,
        ref: str,
        password: str | None,
        changes: dict[str, Any],
        fields: dict[str, str] | None,
        kind: str | None,
    ) -> SecretInfo:
        """The next version: one request to the authority, which reads the current version in its
        own unit of work, lets the keyholder verify and open it and encrypt the new one
        (``compose``: the changes applied), and writes it."""
        compose = composer(password, changes, fields, kind)
        changed = password is not None
        opened = self._secret_keyholder().update(ref, kind=kind, password_changed=changed, compose=compose)
        self._layered(opened)
        return opened_info(opened)

    def list(self, client: str | None = None) -> builtins.list[SecretInfo]:
        """Names and kinds of the secrets the acting engineer may see (never values).

        The authority reads without the write lock, one keyset page of ciphertext per
        statement; the keyholder verifies each page and opens the names (keyholder/
        secret_list.py). The ``secret-list`` event is appended after, and the list returned
        once it is committed."""
        scope, out = self._list_keyholder().listed(client, self.info)  # each row shown as it is opened
        out.sort(key=_BY_REF)
        self._listed(scope)
        return out

    def search(self, query: str, client: str | None = None) -> builtins.list[SearchMatch]:
        """The secrets whose name or non-sensitive metadata holds ``query`` (case-insensitive),
        among those ``list(client)`` shows; never a password or a sensitive field.

        The search runs here, over the listing's pages as they are opened (service/
        secret_search.py): the query is sent nowhere, and what goes on record is the listing
        read (``secret-list``), never the query."""
        match = secret_search.Matcher(secret_search.needle(query), sensitive_field_names)
        scope, listed = self._list_keyholder().listed(client, match)
        out = secret_search.found(listed)
        self._listed(scope)
        return out

    def _listed(self, scope: ListScope) -> None:
        """The ``secret-list`` event of a listing read (the client named, or how many clients)."""
        if self.listed_on_server:  # its event committed on the server before the pages came
            return
        if scope.client_ids is not None and scope.slug is not None:
            listing.append_after_read(self, "secret-list", client_id=scope.client_ids[0])
        else:
            listing.append_after_read(self, "secret-list", public={"clients": scope.clients})

    def show(self, ref: str) -> SecretInfo:
        """A secret's metadata; its password and sensitive fields are not shown. The
        ``secret-view`` event's details say "public-only": this view showed no sensitive
        field (views logged before it existed showed every field: reports.py counts those)."""
        return opened_info(self._secret_keyholder().show(ref))

    def history(self, ref: str) -> builtins.list[VersionInfo]:
        return opened_history(self._secret_keyholder().history(ref))

    def _secret_keyholder(self) -> SecretKeyholder:
        """This Vault object's secrets keyholder, over the in-process transport to its authority."""
        return self._keyholders()[0]

    def _list_keyholder(self) -> SecretListKeyholder:
        """This Vault object's keyholder of ``secret list``, beside the secrets keyholder."""
        return self._keyholders()[1]

    def _keyholders(self) -> tuple[SecretKeyholder, SecretListKeyholder]:
        if self._keyholder is None:
            self._keyholder = secretparts.keyholders(self)
        return self._keyholder


# -- what an add or update writes (shared with ``RemoteVault``'s secrets) ------------------------------


def new_metadata(
    ref: str,
    password: str,
    kind: str,
    *,
    username: str | None,
    url: str | None,
    host: str | None,
    note: str | None,
    fields: dict[str, str] | None,
    sensitive_fields: dict[str, str] | None,
    public_fields: dict[str, str] | None,
) -> dict[str, Any]:
    """A new secret's metadata, every value checked (the password and kind too)."""
    _slug, name = validation.secret_ref(ref)
    custom, marks = _custom_fields({}, fields, sensitive_fields, public_fields)
    metadata = _metadata(name, username=username, url=url, host=host, note=note, fields=custom, marks=marks)
    validation.kind(kind)
    validation.password(password)
    return metadata


def update_changes(
    password: str | None,
    kind: str | None,
    username: Any,
    url: Any,
    host: Any,
    note: Any,
    sensitive_fields: dict[str, str] | None,
    public_fields: dict[str, str] | None,
) -> dict[str, Any]:
    """An update's changes to the metadata (UNSET: kept), the password and kind checked."""
    changes = {"username": username, "url": url, "host": host, "note": note}
    if sensitive_fields or public_fields:
        changes[SENSITIVE_MARKS] = sensitive_fields or {}
        changes[PUBLIC_MARKS] = public_fields or {}
    if password is not None:
        validation.password(password)
    if kind is not None:
        validation.kind(kind)
    return changes


def composer(
    password: str | None, changes: dict[str, Any], fields: dict[str, str] | None, kind: str | None
) -> Callable[[dict[str, Any], str, str], tuple[str, dict[str, Any]]]:
    """The keyholder's ``compose`` of an update: the opened version's metadata with ``changes`` applied."""
    changes = dict(changes)
    sensitive, public = changes.pop(SENSITIVE_MARKS, None), changes.pop(PUBLIC_MARKS, None)

    def compose(opened: dict[str, Any], old_password: str, current_kind: str) -> tuple[str, dict[str, Any]]:
        current = dict(opened)
        for key, value in changes.items():
            if value is not UNSET:
                current[key] = value
        merged_fields, marks = _custom_fields(current, fields, sensitive, public)
        metadata = _metadata(
            current["name"],
            username=current.get("username"),
            url=current.get("url"),
            host=current.get("host"),
            note=current.get("note"),
            fields=merged_fields,
            marks=marks,
        )
        if password is None and kind in (None, current_kind) and metadata == opened:
            raise InvalidInput("nothing to change", hint="pass a new value, e.g. --username or --generate")
        return (old_password if password is None else password), metadata  # old: opened when kept

    return compose


def opened_info(opened: OpenedSecret) -> SecretInfo:
    """The ``SecretInfo`` of a secret the keyholder opened."""
    r = opened.rows
    shown = _Shown(r.kind, r.secret.current_version, r.created_at, r.updated_at)
    return Secrets.info(opened.slug, shown, opened.metadata)


def opened_history(opened: OpenedSecret) -> builtins.list[VersionInfo]:
    """The ``VersionInfo`` of each version of a history the keyholder verified."""
    current = opened.rows.secret.current_version
    return [
        VersionInfo(r.version, r.created_at, r.created_by, r.key_version, r.version == current)
        for r in opened.rows.history
    ]


def _version_fields(row: VersionRecord) -> tuple[int, int, bytes, bytes, bytes]:
    return row.version, row.key_version, row.wrapped_dek, row.password_blob, row.metadata_blob
