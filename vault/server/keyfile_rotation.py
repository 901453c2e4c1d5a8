"""Rotating the server key file: ``credvault serve rotate-key`` (docs/server.md §5).

Two steps, each an atomic replacement of the file (a temporary file beside it, 0600, written
and fsync'd, renamed over it, the folder fsync'd: a crash leaves the old file or the new one):

1. ``rotate(path)`` adds signing key ``v+1`` and, if the file has a master key, master key
   ``M+1``, keeping ``v`` (``previous_signing_keys``) and ``M`` (``previous_master_keys``). A
   server started on the new file signs with ``v`` until an admin certifies ``v+1``
   (``credvault server certify FILE``), then with ``v+1`` (``serverjournal.active_key``); it
   moves every server client key to ``M+1`` at start (``ServerLayer.rewrap``). ``/readyz``
   says ``server-key-not-certified`` until ``v+1`` is certified. One rotation at a time: a file
   that still holds an older signing key is refused.
2. ``drop_old(path, store)`` removes the older keys, only once the newest signing key is the
   vault's active certified version and every server client key is under the current master
   key (it runs ``rewrap`` first, which is resumable and idempotent). Every server on the file
   must be running on the rotated copy before (docs/deployment.md: one copy per host).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy import func, select

from vault.authority.serverjournal import active_key
from vault.crypto import serverlayer
from vault.crypto.serverkey import ServerSigningKey
from vault.errors import ConfigurationError
from vault.server.keyfile import ServerKeyFile, document_of, read_server_keys
from vault.server.layer import MasterKey, ServerLayer
from vault.server.layer_rotation import Relayered, relayer
from vault.server.readiness import key_problems
from vault.storage import models as m
from vault.storage.engine import Store

CERTIFY_HINT = "an admin certifies it on this host: credvault --db URL --server-key FILE server certify FILE"


@dataclass(frozen=True)
class Dropped:
    """What ``drop_old`` removed from the file: signing and master key versions, and the server
    client keys it moved to the current master key first."""

    signing: tuple[int, ...]
    master: tuple[int, ...]
    moved: int


def rotate(path: str | os.PathLike[str]) -> ServerKeyFile:
    """Add the next signing key (and master key) to the file at ``path``; what it now holds."""
    keys = read_server_keys(path)
    if keys.previous_signing:
        raise ConfigurationError(
            f"the server key file {path} holds a rotation under way (signing key version {keys.signing.version})",
            hint="certify the new version, then run `credvault serve rotate-key --drop-old`, before rotating again",
        )
    rotated = replace(
        keys,
        signing=ServerSigningKey.generate(keys.signing.version + 1),
        previous_signing=(keys.signing,),
    )
    if keys.master is not None:
        rotated = replace(
            rotated, master=MasterKey(keys.master.version + 1, os.urandom(32)), previous=(*keys.previous, keys.master)
        )
    replace_key_file(path, rotated)
    return rotated


def drop_old(path: str | os.PathLike[str], store: Store) -> tuple[ServerKeyFile, Dropped]:
    """Remove the older keys from the file at ``path`` once the vault on ``store`` no longer
    needs them (module docstring); ``ConfigurationError`` with a hint otherwise, the file unchanged."""
    keys = read_server_keys(path)
    with store.read() as s:
        active = active_key(s, keys.signing_keys)
    if active is not keys.signing:
        raise ConfigurationError(
            f"server key version {keys.signing.version} is not the vault's active certified key yet: "
            "the older keys stay in the file",
            hint=CERTIFY_HINT,
        )
    moved = 0
    if keys.master is not None and keys.previous:
        moved = ServerLayer(keys.master, keys.previous).rewrap(store).rows
        with store.read() as s:
            blobs = s.scalars(select(m.ServerClientKey.blob))
            behind = sorted({v for v in (serverlayer.smk_version(bytes(b)) for b in blobs) if v != keys.master.version})
        if behind:
            raise ConfigurationError(
                f"server client keys are still under master key {', '.join(map(str, behind))}: the older keys stay",
                hint="run `credvault serve rotate-key --drop-old` again once no server writes with the old file",
            )
    dropped = Dropped(tuple(k.version for k in keys.previous_signing), tuple(k.version for k in keys.previous), moved)
    kept = replace(keys, previous=(), previous_signing=())
    if kept != keys:
        replace_key_file(path, kept)
    return kept, dropped


def replace_key_file(path: str | os.PathLike[str], keys: ServerKeyFile) -> None:
    """Replace the key file at ``path`` with ``keys``, atomically (module docstring), mode 0600."""
    file = Path(path)
    temporary = file.with_name(f".{file.name}.{secrets.token_hex(8)}.tmp")
    data = (json.dumps(document_of(keys), indent=2) + "\n").encode("utf-8")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, file)
        folder = os.open(file.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise ConfigurationError(f"the server key file {file} cannot be written ({error.strerror})") from None


def drop_old_at(path: str | os.PathLike[str], db_url: str) -> tuple[ServerKeyFile, Dropped]:
    """``drop_old`` on the vault at ``db_url`` (a store opened and closed here)."""
    store = Store(db_url)
    try:
        return drop_old(path, store)
    finally:
        store.close()


def relayer_at(path: str | os.PathLike[str], db_url: str) -> Relayered:
    """``rotate-key --full``: every client's server client key rotated and every data key of the
    vault at ``db_url`` re-layered under the file's master key (``layer_rotation``)."""
    keys = read_server_keys(path)
    if keys.master is None:
        raise ConfigurationError(
            f"the server key file {path} holds no master key: the vault has no server layer to rotate",
        )
    store = Store(db_url)
    try:
        return relayer(ServerLayer(keys.master, keys.previous), store)
    finally:
        store.close()


def write_recovered(
    path: str | os.PathLike[str], master_keys: tuple[tuple[int, bytes], ...], db_url: str
) -> ServerKeyFile:
    """After every copy of the key file is lost: a new one at ``path`` with the master keys opened
    from a key export made on the host (``Backups.server_master_keys``) and a new signing key of
    the version after the vault's newest, which an admin certifies with ``server certify
    --recover`` (docs/deployment.md §8). Refused, nothing written, if ``path`` exists, the export
    carries no master key, the vault has no server key, or the master keys do not open the vault's
    server client keys (an export older than a master-key rotation)."""
    file = Path(path)
    if file.exists() or file.is_symlink():
        raise ConfigurationError(f"{file} exists: a recovered key file is written to a new path")
    if not master_keys:
        raise ConfigurationError(
            "the key export carries no server master key", hint="use a key export made on the server's host"
        )
    masters = sorted((MasterKey(version, key) for version, key in master_keys), key=lambda k: k.version)
    store = Store(db_url)
    try:
        with store.read() as s:
            newest = s.scalar(select(func.max(m.ServerKey.version))) or 0
        if not newest:
            raise ConfigurationError(
                "this vault has no server key to recover", hint="make one: credvault server keygen FILE"
            )
        layer = ServerLayer(masters[-1], tuple(masters[:-1]))
        if key_problems(store, None, layer):
            raise ConfigurationError(
                "the key export's master keys do not open this vault's server client keys",
                hint="use the newest key export made on the server's host",
            )
    finally:
        store.close()
    keys = ServerKeyFile(ServerSigningKey.generate(newest + 1), masters[-1], tuple(masters[:-1]))
    replace_key_file(file, keys)
    return keys
