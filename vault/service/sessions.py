"""Unlocked sessions: an engineer's private keys held for a limited time.

``unlock`` opens the key record once (Argon2id) and puts the private keys, with an
expiry, into a session store: the OS keyring (Secret Service, macOS Keychain, Windows
Credential Locker) through the ``keyring`` package.

The keyring entry never holds the keys in the clear. ``KeyringSessionStore.put``
draws a random per-session secret, writes it to a 0600 file in the user's private
runtime directory (``$XDG_RUNTIME_DIR/credvault``, a tmpfs emptied at logout, or
``$CREDVAULT_HOME/run``), and stores in the keyring only the keys sealed under it
(``vault.crypto.sessionbox``), with the vault, the engineer, the session id and the
expiry as associated data. So:

* an edited ``expires_at`` fails to open (``Locked``), and the entry is removed;
* ``lock`` deletes the secret file: a copy of the keyring entry taken before opens
  nothing, and neither does a keyring synced to another machine or read after reboot;
* expiry is enforced when a session is read: an expired entry and its file are deleted
  and ``SessionExpired`` raised.

What it cannot stop: a process running as the same user *while the session is
unlocked* can read both the entry and the file (or the memory of a command) and so
the long-term keys; docs/threat-model.md says so.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass
from typing import NoReturn, Protocol

from vault.errors import ConfigurationError, DecryptionFailed, Locked, SessionExpired, StoreUnavailable
from vault.service.config import write_private

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
    """Sessions in the OS keyring, one entry per vault and engineer, sealed under a secret
    kept in a 0600 file of ``key_dir`` (default: the private runtime directory)."""

    def __init__(self, service: str = KEYRING_SERVICE, key_dir: str | None = None) -> None:
        self.service, self._key_dir = service, key_dir

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

    def _key_prefix(self, vault_id: bytes, name: str) -> str:
        """Where the session secrets of this vault and engineer live, in a private (0700,
        ours) directory: ``session-H-SID.key``, one per unlock (see ``put``)."""
        if self._key_dir is None:
            from vault.service.agentclient import runtime_dir

            self._key_dir = runtime_dir()
        # surrogatepass: as agentclient.socket_path, a name from undecodable argv still has a path
        digest = hashlib.sha256(f"{self.service}\0{vault_id.hex()}\0{name}".encode("utf-8", "surrogatepass"))
        return os.path.join(self._key_dir, f"session-{digest.hexdigest()[:32]}")

    def _key_path(self, vault_id: bytes, name: str, sid: bytes) -> str:
        """The file of one session's wrapping secret. Named after the session id, so that two
        unlocks racing (or two runtime directories) never pair one's entry with the other's
        secret: whichever entry the keyring keeps finds its own file, or none."""
        return f"{self._key_prefix(vault_id, name)}-{sid.hex()}.key"

    def put(self, session: UnlockedSession) -> None:
        from vault.crypto import sessionbox

        secret, sid = sessionbox.new_secret(), sessionbox.new_session_id()
        expires = int(session.expires_at.timestamp())
        box = sessionbox.seal_session(
            secret, sid, session.to_text().encode("utf-8"), _context(session.vault_id, session.name, sid, expires)
        )
        write_private(self._key_path(session.vault_id, session.name, sid), secret)
        previous = self._sid(self._call("get_password", _entry(session.vault_id, session.name)))
        envelope = {"v": 2, "sid": _b64(sid), "expires_at": expires, "box": _b64(box)}
        self._call("set_password", _entry(session.vault_id, session.name), json.dumps(envelope))
        if previous is not None and previous != sid:  # the replaced session's secret: it opens nothing now
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._key_path(session.vault_id, session.name, previous))

    @staticmethod
    def _sid(text: str | None) -> bytes | None:
        """The session id of a stored entry, or None (none, or not one we can read)."""
        from vault.crypto.sessionbox import SESSION_ID_SIZE

        try:
            sid = base64.b64decode(json.loads(text or "null")["sid"], validate=True)
        except (ValueError, KeyError, TypeError):
            return None
        return sid if len(sid) == SESSION_ID_SIZE else None

    def get(self, vault_id: bytes, name: str) -> str | None:
        """The session's text, opened with its secret file; None when there is none (or it
        was locked: the secret file is gone); ``Locked`` for an entry that does not open."""
        from vault.crypto import sessionbox

        text = self._call("get_password", _entry(vault_id, name))
        if text is None:
            return None
        try:
            envelope = json.loads(text)
            if not isinstance(envelope, dict) or envelope.get("v") != 2:
                raise ValueError("not a sealed session")  # e.g. keys in the clear, written before v2
            sid = base64.b64decode(envelope["sid"], validate=True)
            box = base64.b64decode(envelope["box"], validate=True)
            expires = int(envelope["expires_at"])
            if len(sid) != sessionbox.SESSION_ID_SIZE:
                raise ValueError("not a session id")
        except (ValueError, KeyError, TypeError):
            self._refuse(vault_id, name)
        path = self._key_path(vault_id, name, sid)
        try:
            with open(path, "rb") as file:
                secret = file.read(sessionbox.SECRET_SIZE + 1)
        except FileNotFoundError:  # locked, the runtime directory was emptied, or unlocked from another
            return None  # runtime directory: the entry opens nothing here (left for the next unlock to replace)
        except OSError:
            raise Locked(f"the session key file {path} cannot be read") from None
        try:
            return sessionbox.open_session(secret, sid, box, _context(vault_id, name, sid, expires)).decode("utf-8")
        except (DecryptionFailed, UnicodeDecodeError):
            self._refuse(vault_id, name)

    def _refuse(self, vault_id: bytes, name: str) -> NoReturn:
        self.delete(vault_id, name)
        raise Locked(
            f"the stored session of {name!r} does not open (altered, or from before this version); it was removed"
        )

    def delete(self, vault_id: bytes, name: str) -> bool:
        """Remove the secret files first (that alone makes every copy of the entry useless),
        then the keyring entry; True if any existed."""
        import glob

        removed = False
        for path in glob.glob(glob.escape(self._key_prefix(vault_id, name)) + "-*.key"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                removed = True
        if self._call("get_password", _entry(vault_id, name)) is not None:
            self._call("delete_password", _entry(vault_id, name))
            removed = True
        return removed


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _context(vault_id: bytes, name: str, sid: bytes, expires: int) -> tuple[bytes | str | int, ...]:
    return (vault_id, name, sid, expires)


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
