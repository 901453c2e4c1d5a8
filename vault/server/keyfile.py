"""The server key file: ``credvault serve --server-key FILE`` (docs/server.md §5, §6).

A JSON document ``{"version": N, "signing_seed": "<32 bytes, base64url without padding>"}``:
the server signing key that signs format-3 events, of the version an admin certified
(``server_keys``). It may also hold the server master key of the server layer (step 5:
``"master_version": M, "master_key": "<32 bytes, base64url>"``, both or neither;
``vault/server/layer.py``), and during a master-key rotation the older ones
(``"previous_master_keys": {"<version>": "<base64url>"}``, versions below M) until
``credvault serve`` has moved every server client key to the current one, and during a
signing-key rotation (``credvault serve rotate-key``, ``keyfile_rotation.py``) the signing keys
before ``version`` (``"previous_signing_keys": {"<version>": "<base64url seed>"}``) until the
newest is certified and the older ones are dropped. It is a secret of
the server machine, never of the database, so the file is refused (``ConfigurationError``
with a hint) unless only its owner may read or write it (mode 0600), and whatever is wrong
with it is named without its contents.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from vault.crypto.serverkey import ServerKeyring, ServerSigningKey
from vault.crypto.signing import SigningKey
from vault.errors import ConfigurationError
from vault.server.layer import MasterKey

FIELDS = {"version", "signing_seed"}
MASTER_FIELDS = {"master_version", "master_key"}
PREVIOUS = "previous_master_keys"
PREVIOUS_SIGNING = "previous_signing_keys"
MAX_FILE = 4096
HINT = 'write {"version": N, "signing_seed": "<base64url>"} to the file and `chmod 600` it'


def read_server_key(path: str | os.PathLike[str]) -> ServerSigningKey:
    """The signing key in the server key file at ``path`` (module docstring)."""
    return read_server_keys(path).signing


@dataclass(frozen=True)
class ServerKeyFile:
    """What the server key file holds: the (newest) signing key, the current master key (None if
    none), older master keys and older signing keys kept for a rotation in progress."""

    signing: ServerSigningKey
    master: MasterKey | None = None
    previous: tuple[MasterKey, ...] = ()
    previous_signing: tuple[ServerSigningKey, ...] = ()

    @property
    def signing_keys(self) -> ServerKeyring:
        """Every signing key of the file (the server signs with the version the vault holds active)."""
        return ServerKeyring((*self.previous_signing, self.signing))


def read_server_keys(path: str | os.PathLike[str]) -> ServerKeyFile:
    """Everything the server key file at ``path`` holds (module docstring)."""
    file = Path(path)
    try:
        mode = file.stat().st_mode
        if not stat.S_ISREG(mode):
            raise ConfigurationError(f"the server key file {file} is not a file", hint=HINT)
        if stat.S_IMODE(mode) & 0o077:
            raise ConfigurationError(
                f"the server key file {file} may be read by others (mode {stat.S_IMODE(mode):04o})",
                hint=f"chmod 600 {file}",
            )
        raw = file.read_bytes()[: MAX_FILE + 1]
    except OSError as error:
        raise ConfigurationError(f"the server key file {file} cannot be read ({error.strerror})", hint=HINT) from None
    return _parsed(raw, file)


def _parsed(raw: bytes, file: Path) -> ServerKeyFile:
    bad = ConfigurationError(f"the server key file {file} is not a server key", hint=HINT)
    if len(raw) > MAX_FILE:
        raise bad
    try:
        document = json.loads(raw)
    except ValueError:
        raise bad from None
    if not isinstance(document, dict) or set(document) - {PREVIOUS_SIGNING} not in (
        FIELDS,
        FIELDS | MASTER_FIELDS,
        FIELDS | MASTER_FIELDS | {PREVIOUS},
    ):
        raise bad
    signing = ServerSigningKey(_version(document["version"], bad), SigningKey(_key(document["signing_seed"], bad)))
    older_signing = tuple(
        ServerSigningKey(version, SigningKey(key))
        for version, key in _older(document.get(PREVIOUS_SIGNING, {}), signing.version, bad)
    )
    if "master_key" not in document:
        return ServerKeyFile(signing, previous_signing=older_signing)
    master = MasterKey(_version(document["master_version"], bad), _key(document["master_key"], bad))
    older = _older(document.get(PREVIOUS, {}), master.version, bad)
    previous = tuple(MasterKey(version, key) for version, key in older)
    return ServerKeyFile(signing, master, previous, older_signing)


def _older(older: object, below: int, bad: ConfigurationError) -> list[tuple[int, bytes]]:
    """``{"<version>": "<base64url>"}`` of versions below ``below``, as (version, key), oldest first."""
    if not isinstance(older, dict):
        raise bad
    found = []
    for text, key in older.items():
        if not text.isdigit() or str(int(text)) != text or int(text) >= below:
            raise bad
        found.append((_version(int(text), bad), _key(key, bad)))
    return sorted(found)


def _version(value: object, bad: ConfigurationError) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**31:
        raise bad
    return value


def _key(text: object, bad: ConfigurationError) -> bytes:
    """32 bytes in canonical base64url without padding."""
    if not isinstance(text, str):
        raise bad
    try:
        key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise bad from None
    if len(key) != 32 or base64.urlsafe_b64encode(key).rstrip(b"=").decode("ascii") != text:
        raise bad
    return key


def document_of(keys: ServerKeyFile) -> dict[str, object]:
    """The JSON document of ``keys`` (what ``read_server_keys`` reads back)."""
    document: dict[str, object] = {"version": keys.signing.version, "signing_seed": _b64(keys.signing.key.seed)}
    if keys.previous_signing:
        document[PREVIOUS_SIGNING] = {str(k.version): _b64(k.key.seed) for k in keys.previous_signing}
    if keys.master is not None:
        document |= {"master_version": keys.master.version, "master_key": _b64(keys.master.key)}
        if keys.previous:
            document[PREVIOUS] = {str(k.version): _b64(k.key) for k in keys.previous}
    return document


def new_key_file(path: str | os.PathLike[str]) -> ServerKeyFile:
    """Write a new server key file at ``path`` (created, never replaced; mode 0600): signing key
    version 1 and master key version 1, fresh from the operating system's generator."""
    signing = ServerSigningKey.generate(1)
    master = MasterKey(1, os.urandom(32))
    document = document_of(ServerKeyFile(signing, master))
    file = Path(path)
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        raise ConfigurationError(
            f"{file} exists: a server key file is never replaced", hint="choose another path, or keep the one you have"
        ) from None
    except OSError as error:
        raise ConfigurationError(f"the server key file {file} cannot be written ({error.strerror})") from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(json.dumps(document, indent=2) + "\n")
        out.flush()
        os.fsync(out.fileno())
    return ServerKeyFile(signing, master)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
