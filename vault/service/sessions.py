"""Unlocked sessions: an engineer's private keys held for a limited time.

``unlock`` opens the key record once (Argon2id) and puts the private keys, with an
expiry, into a session store: the OS keyring (Secret Service, macOS Keychain, Windows
Credential Locker) through the ``keyring`` package. Expiry is enforced when a session
is read: an expired entry is deleted and ``SessionExpired`` raised. Anyone who can read
the unlocked keyring before then holds the keys; docs/threat-model.md says so.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass
from typing import Protocol

from vault.errors import ConfigurationError, Locked, SessionExpired, StoreUnavailable

KEYRING_SERVICE = "credvault"
DEFAULT_TTL = dt.timedelta(minutes=15)


@dataclass(frozen=True, repr=False)
class UnlockedSession:
    """An engineer's private keys and trust anchor, unlocked until ``expires_at``."""

    vault_id: bytes
    engineer_id: int
    name: str
    key_generation: int
    sealing_private: bytes
    signing_seed: bytes
    org_signing_public: bytes
    expires_at: dt.datetime

    def __repr__(self) -> str:
        return f"UnlockedSession(name={self.name!r}, expires_at={self.expires_at.isoformat()}, keys=<redacted>)"

    def to_text(self) -> str:
        def b64(raw: bytes) -> str:
            return base64.b64encode(raw).decode("ascii")

        return json.dumps(
            {
                "v": 1,
                "vault_id": b64(self.vault_id),
                "engineer_id": self.engineer_id,
                "name": self.name,
                "key_generation": self.key_generation,
                "sealing_private": b64(self.sealing_private),
                "signing_seed": b64(self.signing_seed),
                "org_signing_public": b64(self.org_signing_public),
                "expires_at": int(self.expires_at.timestamp()),
            }
        )

    @classmethod
    def from_text(cls, text: str) -> UnlockedSession:
        try:
            data = json.loads(text)
            if data.get("v") != 1:
                raise ValueError

            def raw(key: str) -> bytes:
                return base64.b64decode(data[key], validate=True)

            return cls(
                vault_id=raw("vault_id"),
                engineer_id=int(data["engineer_id"]),
                name=str(data["name"]),
                key_generation=int(data["key_generation"]),
                sealing_private=raw("sealing_private"),
                signing_seed=raw("signing_seed"),
                org_signing_public=raw("org_signing_public"),
                expires_at=dt.datetime.fromtimestamp(int(data["expires_at"]), dt.UTC),
            )
        except (ValueError, KeyError, TypeError):
            raise Locked("the stored session is unreadable; it will be replaced at the next unlock") from None


def _entry(vault_id: bytes, name: str) -> str:
    return f"{vault_id.hex()}/{name}"


class SessionStore(Protocol):
    def put(self, session: UnlockedSession) -> None: ...
    def get(self, vault_id: bytes, name: str) -> str | None: ...
    def delete(self, vault_id: bytes, name: str) -> bool: ...


class MemorySessionStore:
    """Sessions kept in this process only (tests, the demo, one-shot commands)."""

    def __init__(self) -> None:
        self._items: dict[str, str] = {}

    def put(self, session: UnlockedSession) -> None:
        self._items[_entry(session.vault_id, session.name)] = session.to_text()

    def get(self, vault_id: bytes, name: str) -> str | None:
        return self._items.get(_entry(vault_id, name))

    def delete(self, vault_id: bytes, name: str) -> bool:
        return self._items.pop(_entry(vault_id, name), None) is not None


class KeyringSessionStore:
    """Sessions in the OS keyring, one entry per vault and engineer."""

    def __init__(self, service: str = KEYRING_SERVICE) -> None:
        self.service = service

    def _call(self, fn_name: str, *args: str) -> str | None:
        import keyring
        import keyring.errors

        try:
            result: str | None = getattr(keyring, fn_name)(self.service, *args)
            return result
        except keyring.errors.NoKeyringError:
            raise ConfigurationError(
                "no OS keyring is available to hold an unlocked session",
                hint="start a Secret Service (e.g. gnome-keyring) or pass --passphrase-file PATH to each command",
            ) from None
        except keyring.errors.PasswordDeleteError:
            return None
        except keyring.errors.KeyringError:
            raise StoreUnavailable(
                "the OS keyring refused the request (is it locked?)", hint="unlock your desktop keyring and try again"
            ) from None

    def put(self, session: UnlockedSession) -> None:
        self._call("set_password", _entry(session.vault_id, session.name), session.to_text())

    def get(self, vault_id: bytes, name: str) -> str | None:
        return self._call("get_password", _entry(vault_id, name))

    def delete(self, vault_id: bytes, name: str) -> bool:
        if self.get(vault_id, name) is None:
            return False
        self._call("delete_password", _entry(vault_id, name))
        return True


def load_session(store: SessionStore, vault_id: bytes, name: str, now: dt.datetime) -> UnlockedSession:
    text = store.get(vault_id, name)
    if text is None:
        raise Locked(f"engineer {name!r} is locked")
    session = UnlockedSession.from_text(text)
    if session.vault_id != vault_id or session.name != name:
        raise Locked(f"engineer {name!r} is locked")
    if session.expires_at <= now:
        store.delete(vault_id, name)
        raise SessionExpired(f"the session of {name!r} expired at {session.expires_at.isoformat(timespec='seconds')}")
    return session
