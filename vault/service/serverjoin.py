"""Pinning a team server, and moving an engineer of a shared database onto it.

``trust(url, ca_file)`` reads the server's identity (``https_identity.read_identity``: the
server key's certificate verified under the organisation key it names) for the person to
compare with their admin; ``pin(identity, ...)`` keeps it (``serverpins.ServerPins``).

``join(pin, vault, name, passphrase)`` is the one-time move of an engineer who enrolled when
every engineer opened the shared database (today's set-up): their key record is copied from
that database to this machine (``KeyRecordFile``), after it opened here with their passphrase
and only if the database holds the vault the server serves. From then on this machine needs
no database credential: ``RemoteVault`` unlocks from the copy. New engineers enrol through the
server instead and never see the database.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from vault.crypto import keyrecord
from vault.errors import ConfigurationError, NotFound
from vault.service.serverpins import KeyRecordFile, ServerPin, ServerPins, keep_ca_file, server_key
from vault.service.validation import engineer_name
from vault.service.vault import Vault
from vault.storage import models as m
from vault.storage.rows import ACTIVE
from vault.transport.https_identity import ServerIdentity, read_identity

__all__ = ["join", "pin", "trust"]


def trust(url: str, ca_file: str | None) -> ServerIdentity:
    """The identity ``url`` answers over TLS pinned to ``ca_file`` (nothing is kept yet)."""
    return read_identity(server_key(url), ca_file=ca_file)


def pin(url: str, identity: ServerIdentity, ca_file: str | None, *, replace: bool = False) -> ServerPin:
    """Keep ``identity`` as this machine's pin of ``url`` (a copy of ``ca_file`` with it)."""
    if identity.server_key is None:
        raise ConfigurationError(
            "the server has no certified signing key, so its answers cannot be checked",
            hint="an admin certifies the server key (docs/deployment.md) before engineers use the server",
        )
    key = server_key(url)
    pins = ServerPins.load()
    known = pins.pins.get(key)
    same = known is not None and (known.vault_id, known.org_key, known.server_key) == (
        identity.vault_id, identity.org_key[1], identity.server_key,
    )  # fmt: skip
    if known is not None and not replace and not (same and _same_ca(known.ca_file, ca_file)):
        raise ConfigurationError(
            f"the server {key} is pinned with another identity",
            hint="compare the fingerprints with your admin; if the change is expected, run "
            "`credvault server trust URL --replace`",
        )  # checked before anything is written: the pinned CA copy stays as it was
    kept = keep_ca_file(key, ca_file) if ca_file is not None else None
    found = ServerPin(key, identity.vault_id, identity.org_key[1], identity.server_key, kept)
    pins.pin(found, replace=True)
    return found


def _same_ca(kept: str | None, given: str | None) -> bool:
    """Whether the CA file given now holds the bytes of the copy this machine kept."""
    if kept is None or given is None:
        return kept is None and given is None
    try:
        return Path(kept).read_bytes() == Path(given).read_bytes()
    except OSError:
        return False


def join(server: ServerPin, vault: Vault, name: str, passphrase: str) -> Path:
    """Copy ``name``'s key record from ``vault``'s database to this machine (see the module)."""
    engineer_name(name)
    if vault.vault_id() != server.vault_id:
        raise ConfigurationError(
            "this database holds another vault than the server serves",
            hint="pass the --db of the vault behind that server",
        )
    with vault.store.read() as s:
        row = s.scalar(select(m.Engineer).where(m.Engineer.name == name))
        if row is None or row.key_record is None or row.status != ACTIVE:
            raise NotFound(f"no active engineer named {name!r} in this vault")
        found = KeyRecordFile(server.vault_id, row.id, row.name, row.key_generation, row.key_record)
    keyrecord.open_record(found.record, passphrase, found.vault_id, found.engineer_id, found.key_generation)
    return found.save()
