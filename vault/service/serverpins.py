"""What an engineer's machine keeps for a team server: its pinned identity and the key record.

``credvault server trust URL`` (or ``engineer enroll --server URL``) pins a server
(``server-pins.json`` in the config folder, 0600), under its URL as typed without a trailing
slash:

* ``vault_id``: the vault the server serves. Every answer's rows are checked against it
  (the keyholder compares each answer's vault id with its session's);
* ``org_key``: the organisation key (hex) the person compared with their admin; an unlock
  refuses a key record that pins another (``RemoteEngineers.unlock``);
* ``server_key``: the server signing key's version and public key (hex), as ``/v1/identity``
  named it when it was pinned;
* ``ca_file``: a copy of the CA certificate (or the server's own certificate) that TLS is
  checked against, kept in the config folder: the system's trust store is never used.

A change of any of them is refused: re-pinning is a person's decision (``server trust``
again, after comparing fingerprints with an admin).

The key record (``keys/<vault id>/<engineer>.json``, 0600) is the engineer's private keys
locked under their passphrase (Argon2id, ``vault.crypto.keyrecord``), with the ids its
associated data binds. Unlocking opens it here: no server is asked to hand out a record (so
nobody can fetch one to guess its passphrase offline), and the server never sees the
passphrase.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path

from vault.errors import ConfigurationError, InvalidInput, Locked
from vault.service.config import _dirs, _private_dir, _write_private, write_private

PINS_FILE = "server-pins.json"


def server_key(url: str) -> str:
    """The key a server is pinned under: its URL without a trailing slash, scheme and host lowercased."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.path not in ("", "/"):
        raise InvalidInput("the server URL is https://HOST[:PORT]", hint="for example https://vault.example.net:8443")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise InvalidInput("the server URL is https://HOST[:PORT], without user, query or fragment")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), "", "", ""))


@dataclass(frozen=True)
class ServerPin:
    """A team server's identity as this machine pinned it."""

    url: str
    vault_id: bytes
    org_key: bytes
    server_key: tuple[int, bytes] | None
    ca_file: str | None  # None: plain http to loopback (tests, a server on this machine)

    def to_json(self) -> dict[str, object]:
        return {
            "vault_id": self.vault_id.hex(),
            "org_key": self.org_key.hex(),
            "server_key": [self.server_key[0], self.server_key[1].hex()] if self.server_key else None,
            "ca_file": self.ca_file,
        }

    @classmethod
    def from_json(cls, url: str, data: object) -> ServerPin:
        if not isinstance(data, dict):
            raise ValueError
        key = data.get("server_key")
        ca = data.get("ca_file")
        return cls(
            url,
            bytes.fromhex(str(data["vault_id"])),
            bytes.fromhex(str(data["org_key"])),
            (int(key[0]), bytes.fromhex(str(key[1]))) if isinstance(key, list) else None,
            str(ca) if ca is not None else None,
        )


class ServerPins:
    """Every server pinned on this machine (``server-pins.json``)."""

    def __init__(self, pins: dict[str, ServerPin] | None = None) -> None:
        self.pins = dict(pins or {})

    @staticmethod
    def path() -> Path:
        return _dirs()[1] / PINS_FILE

    @classmethod
    def load(cls) -> ServerPins:
        path = cls.path()
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls({str(url): ServerPin.from_json(str(url), pin) for url, pin in data["servers"].items()})
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
            raise ConfigurationError(
                f"the server pins file {path} is unreadable",
                hint="fix it, or delete it and pin each server again with `credvault server trust URL`",
            ) from None

    def save(self) -> None:
        data = {"servers": {url: pin.to_json() for url, pin in sorted(self.pins.items())}}
        _write_private(self.path(), json.dumps(data, indent=2))

    def get(self, url: str) -> ServerPin:
        """The pin of ``url``, or ``ConfigurationError`` saying how to make one."""
        pin = self.pins.get(server_key(url))
        if pin is None:
            raise ConfigurationError(
                f"this machine has not pinned the server {server_key(url)}",
                hint="compare its fingerprints with your admin and run `credvault server trust URL --ca-file FILE`, "
                "or enrol with `credvault engineer enroll NAME --server URL --ca-file FILE`",
            )
        return pin

    def pin(self, pin: ServerPin, *, replace: bool = False) -> None:
        """Keep ``pin``; a different pin for the same URL only with ``replace`` (a person's decision)."""
        known = self.pins.get(pin.url)
        if known is not None and known != pin and not replace:
            raise ConfigurationError(
                f"the server {pin.url} is pinned with another identity",
                hint="compare the fingerprints with your admin; if the change is expected, run "
                "`credvault server trust URL --replace`",
            )
        self.pins[pin.url] = pin
        self.save()


def keep_ca_file(url: str, source: str) -> str:
    """A private copy of the CA (or server) certificate ``source`` for ``url``, in the config folder."""
    folder = _dirs()[1] / "server-ca"
    _private_dir(folder)
    target = folder / (server_key(url).split("://", 1)[1].replace(":", "_").replace("/", "_") + ".pem")
    try:
        data = Path(source).read_bytes()
    except OSError:
        raise InvalidInput(f"cannot read the CA file {source}", hint="check the path and its permissions") from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise InvalidInput(f"{source} holds no PEM certificate", hint="pass the CA certificate (PEM) of the server")
    write_private(str(target), data)
    return str(target)


# -- the key record, kept on this machine ----------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class KeyRecordFile:
    """An engineer's passphrase-locked key record and the ids its associated data binds."""

    vault_id: bytes
    engineer_id: int
    name: str
    key_generation: int
    record: bytes

    def __repr__(self) -> str:
        return f"KeyRecordFile(engineer={self.engineer_id}, generation={self.key_generation}, <locked>)"

    @staticmethod
    def path(vault_id: bytes, name: str) -> Path:
        from vault.service.validation import engineer_name

        return _dirs()[1] / "keys" / vault_id.hex() / f"{engineer_name(name)}.json"

    def save(self) -> Path:
        path = self.path(self.vault_id, self.name)
        data = {
            "v": 1,
            "vault_id": self.vault_id.hex(),
            "engineer_id": self.engineer_id,
            "name": self.name,
            "key_generation": self.key_generation,
            "record": base64.b64encode(self.record).decode("ascii"),
        }
        _write_private(path, json.dumps(data, indent=2))
        return path

    @classmethod
    def load(cls, vault_id: bytes, name: str) -> KeyRecordFile:
        path = cls.path(vault_id, name)
        if not path.exists():
            raise Locked(
                f"this machine holds no key record of {name!r} for this server",
                hint="enrol here with `credvault engineer enroll NAME --server URL`, or copy your record once from "
                "a machine with database access: `credvault server join URL --db DB_URL`",
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("v") != 1:
                raise ValueError
            found = cls(
                bytes.fromhex(str(data["vault_id"])),
                int(data["engineer_id"]),
                str(data["name"]),
                int(data["key_generation"]),
                base64.b64decode(str(data["record"]), validate=True),
            )
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigurationError(
                f"the key record {path} is unreadable", hint="fix it, or enrol this machine again"
            ) from None
        if found.vault_id != vault_id or found.name != name:
            raise ConfigurationError(f"the key record {path} is for another vault or engineer")
        return found

    @classmethod
    def forget(cls, vault_id: bytes, name: str) -> None:
        path = cls.path(vault_id, name)
        if path.exists():
            os.unlink(path)


__all__ = ["KeyRecordFile", "ServerPin", "ServerPins", "keep_ca_file", "server_key"]
