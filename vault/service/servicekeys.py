"""A service identity's key file: an RMM script's or a CI job's key, used with no passphrase prompt.

A service identity is an engineer of role ``service`` (``engineer invite NAME --service``): its own
certified key, its own grants, every request signed and every reveal on record like an engineer's;
never an admin (the role is certified by the organisation key, so a database writer cannot change
it). It enrols through a team server like an engineer (``engineer enroll NAME --key-file FILE``),
but instead of a passphrase it is given a random 256-bit token, and the key record (sealed under
that token, with the Argon2 floor: a token of that entropy needs no work factor) and the token are
written together to one key file, created (never replaced) with mode 0600:

    {"type": "credvault-service-key", "v": 1, "server": URL, "vault_id": HEX, "engineer_id": N,
     "name": NAME, "key_generation": G, "record": B64, "token": TEXT}

So the file is the identity, as an SSH private key without a passphrase is: whoever reads it acts as
the service. It is refused when other users may read it (mode & 077), and when it names another
server or vault than the one this machine pinned. ``credvault --key-file FILE ...`` (or
``CREDVAULT_KEY_FILE``) opens it for that one command: no keyring, no agent, nothing kept.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from vault.errors import ConfigurationError, InvalidInput
from vault.service.serverpins import KeyRecordFile

TYPE = "credvault-service-key"
TOKEN_BYTES = 32


def new_token() -> str:
    """A fresh token, the service's passphrase (256 bits from the operating system)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


@dataclass(frozen=True)
class ServiceKeyFile:
    """A service identity's key record, its token and the server it was enrolled at."""

    server: str
    record: KeyRecordFile
    token: str

    def __repr__(self) -> str:
        return f"ServiceKeyFile(server={self.server!r}, engineer={self.record.name!r}, <secret>)"

    @staticmethod
    def refuse_existing(path: Path) -> None:
        """Refused before anything is enrolled: a key file is never replaced."""
        if os.path.lexists(path):
            raise ConfigurationError(
                f"{path} exists: a service key file is never replaced", hint="choose a new path for the key file"
            )

    def save(self, path: Path) -> None:
        """Create ``path`` (mode 0600, never replaced, not through a symbolic link) and write the file."""
        r = self.record
        document = {
            "type": TYPE,
            "v": 1,
            "server": self.server,
            "vault_id": r.vault_id.hex(),
            "engineer_id": r.engineer_id,
            "name": r.name,
            "key_generation": r.key_generation,
            "record": base64.b64encode(r.record).decode("ascii"),
            "token": self.token,
        }
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except FileExistsError:
            self.refuse_existing(path)
            raise
        except OSError as error:
            raise ConfigurationError(f"the key file {path} cannot be written ({error.strerror})") from None
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps(document, indent=2) + "\n")
            out.flush()
            os.fsync(out.fileno())

    @classmethod
    def load(cls, path: Path) -> ServiceKeyFile:
        """The key file at ``path``; refused if others may read it, or if it is not one."""
        try:
            info = os.stat(path)
        except OSError:
            raise ConfigurationError(f"cannot read the key file {path}", hint="check the path") from None
        if not stat.S_ISREG(info.st_mode):
            raise ConfigurationError(f"the key file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise InvalidInput(
                f"the key file {path} can be read by other users (mode {info.st_mode & 0o777:o})",
                hint=f"run `chmod 600 {path}`; if others could read it, have an admin re-key the service "
                "(`credvault rotate engineer NAME`)",
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("type") != TYPE or data.get("v") != 1:
                raise ValueError
            record = KeyRecordFile(
                bytes.fromhex(str(data["vault_id"])),
                int(data["engineer_id"]),
                str(data["name"]),
                int(data["key_generation"]),
                base64.b64decode(str(data["record"]), validate=True),
            )
            token, server = data["token"], data["server"]
            if not isinstance(token, str) or not isinstance(server, str):
                raise ValueError
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise ConfigurationError(
                f"the key file {path} is not a credvault service key file",
                hint="pass the file `credvault engineer enroll NAME --key-file FILE` wrote",
            ) from None
        return cls(server, record, token)


__all__ = ["ServiceKeyFile", "new_token"]
