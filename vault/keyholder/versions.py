"""A secret's version, where the engineer's keys are: opened, and a new one written.

One place for what every keyholder does with a version (docs/format.md §4):

* ``open_metadata`` — the data key unwrapped under the client key (bound to client, secret
  and version: a blob moved to another row does not open), the metadata blob decrypted
  under it and parsed; ``name`` given: it must be the name asked for (``LookupMismatch``
  otherwise: the lookup tag was moved), else the metadata must at least hold a name.
  Every failure to open is the one opaque ``DecryptionFailed``.
* ``open_listed`` — ``open_metadata`` without a name, under a ``blobs.SecretOpener`` made once
  per (client, client-key version) of a listing rather than per secret.
* ``open_password`` — the password blob of a version opened by ``open_metadata``.
* ``new_version`` — a fresh data key wrapped under the client key, the password and the
  metadata (sorted JSON) under it, for the (client, secret, version) the authority named:
  the ``NewVersion`` value the authority stores as given.
* ``check_write_key`` — the client-key version the authority names for a new value is not
  older than one this keyholder verified already: versions only grow and a rotation makes
  its new one current at once, so an older one is a database writer's (or a compromised
  authority's) choice, refused before anything is encrypted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from vault.authority.requests import NewVersion
from vault.crypto import blobs
from vault.errors import DecryptionFailed, LookupMismatch, UntrustedRecord
from vault.storage.rows import VersionRecord


@dataclass(frozen=True, repr=False)
class OpenedVersion:
    """A version's metadata, opened, and the data key that opens its password."""

    metadata: dict[str, Any]
    data_key: bytes

    def __repr__(self) -> str:
        return "OpenedVersion(<redacted>)"


def open_metadata(
    client_key: bytes, client_id: int, secret_id: int, version: VersionRecord, name: str | None = None
) -> OpenedVersion:
    """The metadata of ``version`` of (client, secret), opened under ``client_key`` (see the
    module's docstring for ``name``)."""
    dek = blobs.unwrap_data_key(
        client_key, version.key_version, version.wrapped_dek, client_id, secret_id, version.version
    )
    field = blobs.blob_key_version(version.metadata_blob)
    raw = blobs.decrypt_secret_field(
        dek, field, version.metadata_blob, client_id, secret_id, version.version, "metadata"
    )
    return OpenedVersion(_parsed(raw, name), dek)


def open_listed(opener: blobs.SecretOpener, secret_id: int, version: VersionRecord) -> dict[str, Any]:
    """The metadata of ``version`` of a secret, as ``open_metadata`` opens it without a name,
    under ``opener`` (its client and client-key version: ``version.key_version``, the caller's
    choice of opener): a listing opens thousands under the same few client keys."""
    dek = opener.data_key(version.wrapped_dek, secret_id, version.version)
    return _parsed(opener.field(dek, version.metadata_blob, secret_id, version.version, "metadata"), None)


def _parsed(raw: bytes, name: str | None) -> dict[str, Any]:
    try:
        metadata = json.loads(raw)
    except ValueError:
        raise DecryptionFailed() from None
    if name is None:
        if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
            raise DecryptionFailed()
    elif not isinstance(metadata, dict) or metadata.get("name") != name:
        raise LookupMismatch(f"the secret found for {name!r} holds another name: its lookup tag was moved")
    return metadata


def open_password(data_key: bytes, client_id: int, secret_id: int, version: VersionRecord) -> str:
    """The password of ``version``, under the data key ``open_metadata`` unwrapped."""
    field = blobs.blob_key_version(version.password_blob)
    raw = blobs.decrypt_secret_field(
        data_key, field, version.password_blob, client_id, secret_id, version.version, "password"
    )
    return raw.decode("utf-8")


def new_version(
    client_key: bytes,
    key_version: int,
    client_id: int,
    secret_id: int,
    number: int,
    password: str,
    metadata: dict[str, Any],
) -> NewVersion:
    """Version ``number`` of (client, secret) under client key ``key_version``, with a fresh data key."""
    dek = blobs.new_key()
    raw = json.dumps(metadata, sort_keys=True).encode("utf-8")
    return NewVersion(
        version=number,
        key_version=key_version,
        wrapped_dek=blobs.wrap_data_key(client_key, key_version, dek, client_id, secret_id, number),
        password_blob=blobs.encrypt_secret_field(
            dek, key_version, password.encode("utf-8"), client_id, secret_id, number, "password"
        ),
        metadata_blob=blobs.encrypt_secret_field(dek, key_version, raw, client_id, secret_id, number, "metadata"),
    )


def check_write_key(key_version: int, seen: Iterable[int]) -> None:
    """``key_version`` (named for a new value) is not older than any client-key version in
    ``seen`` (those verified already: held in the cache, or a version's), else UntrustedRecord."""
    newest = max(seen, default=0)
    if key_version < newest:
        raise UntrustedRecord(
            f"the authority asked for a new version under client key version {key_version}, older than version {newest}"
        )
