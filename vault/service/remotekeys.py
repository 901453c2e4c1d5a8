"""The acting engineer's keys on a machine that reaches the vault only through a team server.

``RemoteKeys`` is ``Keys`` without a database: the unlocked session comes from the session
store (the OS keyring, or memory), keyed by the vault id this machine pinned for the server
and the engineer's name, and expires as every session does. It gives the HTTPS transport
its signing key (``me``, ``my_signing_key``) and the keyholders of one operation the small
``EngineerKeys`` protocol (``vault/keyholder/checkouts.py``): the session, its sealing key's
public half, and opening a copy sealed to this engineer. An admin's copy of the root bundle
is opened here only when their work through the server needs it (``open_recovery``: a grant
or revoke names the client by its slug tag and hands out client keys from their recovery
copies); it is fetched from the server (``recovery_source``: ``engineers.root_seal``, sealed
to this engineer's key) and believed only if the organisation key inside it is the pinned one.

The slug hints (an engineer's client slug -> id, learned by ``RemoteLookup``) are kept per
session in memory, as ``Keys.slugs`` keeps them: only where to look, verified on every use.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from vault.crypto import sealing, signing
from vault.crypto.labels import LABEL_ROOT_BUNDLE, LABEL_TAG_CLIENT_SLUG
from vault.errors import AccessDenied, DecryptionFailed, Locked, UntrustedRecord
from vault.service.sessions import SessionStore, UnlockedSession, load_session
from vault.storage.rows import KeyCache

__all__ = ["RemoteKeys"]

HINT_SLUGS = 20_000
# (root version, the copy of its bundle sealed to this engineer, the organisation key it must hold)
RecoverySource = Callable[[], tuple[int, bytes, bytes]]


class _Root:
    """An admin's opened root bundle: the recovery key pair and the organisation lookup key."""

    __slots__ = ("lookup_key", "recovery", "version")

    def __init__(self, raw: bytes, version: int, org_public: bytes) -> None:
        if len(raw) != 64:
            raise DecryptionFailed()
        if signing.SigningKey(raw[32:]).public != org_public:
            raise UntrustedRecord("the recovery key the server sealed to you is not under the organisation key trusted")
        self.recovery = sealing.KeyPair(signing.recovery_private_from_root(raw[:32]))
        self.lookup_key = signing.lookup_key_from_root(raw[:32])
        self.version = version

    def __repr__(self) -> str:
        return f"_Root(version={self.version}, <redacted>)"


class RemoteKeys:
    """An engineer's unlocked session for one pinned vault, read from ``sessions``."""

    def __init__(
        self, sessions: SessionStore, vault_id: bytes, name: str | None, clock: Callable[[], dt.datetime]
    ) -> None:
        self.sessions, self.vault_id, self.name, self.clock = sessions, vault_id, name, clock
        self.client_keys = KeyCache()
        self._session: UnlockedSession | None = None
        self._sealing: tuple[bytes, bytes] | None = None
        self._slugs: dict[str, int] = {}
        self._root: _Root | None = None
        self.recovery_source: RecoverySource | None = None  # set by RemoteVault: its server's root seal

    def __repr__(self) -> str:
        return f"RemoteKeys(engineer={self.name!r})"

    # -- the session ---------------------------------------------------------------------------------

    def me(self) -> UnlockedSession:
        session = self._session
        if session is not None and session.expires_at > self.clock():
            return session
        if not self.name:
            raise Locked(
                "no engineer is selected on this machine",
                hint="pass --as NAME, set CREDVAULT_ENGINEER, or run `credvault unlock NAME`",
            )
        session = load_session(self.sessions, self.vault_id, self.name, self.clock())
        if self._session is not None and session.signing_seed != self._session.signing_seed:
            self.forget()  # another unlock since: nothing learned under the old one is kept
        self._session = session
        return session

    def trying(self, name: str, session: UnlockedSession) -> str | None:
        """Sign with ``session`` of ``name`` in this process only (an unlock's proof to the server),
        nothing kept; the name it replaces (``drop`` puts it back if the server refuses)."""
        previous = self.name
        self.forget()
        self.name, self._session = name, session
        return previous

    def drop(self, previous: str | None) -> None:
        """Forget the session tried, and select ``previous`` again."""
        self.forget()
        self.name, self._session = previous, None

    def keep(self, session: UnlockedSession) -> None:
        """Hold ``session`` (just unlocked) and put it in the session store."""
        self.forget()
        self.sessions.put(session)
        self._session = session

    def lock(self) -> bool:
        """End the session here and in the store; whether the store held one."""
        self.forget()
        self._session = None
        return bool(self.name) and self.sessions.delete(self.vault_id, str(self.name))

    def forget(self) -> None:
        """Forget every key and hint learned under the session."""
        self.client_keys.clear()  # its fields, tags and grants too
        self._slugs.clear()
        self._sealing = None
        self._root = None

    @property
    def slugs(self) -> dict[str, int]:
        if len(self._slugs) > HINT_SLUGS:
            self._slugs.clear()
        return self._slugs

    # -- what the HTTPS transport signs with ------------------------------------------------------

    def my_signing_key(self) -> signing.SigningKey:
        return signing.SigningKey(self.me().signing_seed)

    def sign(self, label: bytes, *fields: signing.ContextItem) -> bytes:
        """The acting engineer's signature over ``fields`` (an admin's grant and revocations)."""
        return self.my_signing_key().sign(label, *fields)

    def my_keypair(self) -> sealing.KeyPair:
        return sealing.KeyPair(self.me().sealing_private)

    # -- EngineerKeys (the keyholders of one operation) --------------------------------------------

    def session(self) -> UnlockedSession:
        return self.me()

    def sealing_public(self) -> bytes:
        me = self.me()
        cached = self._sealing
        if cached is None or cached[0] is not me.sealing_private:
            cached = self._sealing = (me.sealing_private, sealing.KeyPair(me.sealing_private).public)
        return cached[1]

    def open_sealed(self, kind: str, recipient_id: int, version: int, blob: bytes, context: tuple[Any, ...]) -> bytes:
        if kind == "recovery":
            root = self._root  # an admin's, opened by open_recovery
            if root is None or root.version != recipient_id:
                raise DecryptionFailed()
            return sealing.open_sealed(root.recovery, version, blob, context)
        if kind != "engineer" or recipient_id != self.me().engineer_id:
            raise DecryptionFailed()
        return sealing.open_sealed(self.my_keypair(), version, blob, context)

    def slug_tag(self, slug: str) -> bytes | None:
        """An admin's lookup tag of ``slug`` under the root bundle held open (None: none open; an
        engineer names clients by the ids their grants give)."""
        root = self._root
        return None if root is None else signing.lookup_tag(root.lookup_key, LABEL_TAG_CLIENT_SLUG, slug)

    def recovery(self) -> tuple[int, bytes] | None:
        """An admin's recovery key as a client-key rotation seals to it: the version and public half
        of the root bundle opened (None: none open)."""
        root = self._root
        return None if root is None else (root.version, root.recovery.public)

    def recovery_version(self) -> int | None:
        return None if self._root is None else self._root.version

    def recovery_public(self, slug: str) -> tuple[int, bytes, bytes]:
        """An admin's (a new client's key is sealed to it): the version and public half of the
        recovery key their root bundle opens to, and ``slug``'s lookup tag under that bundle."""
        self.open_recovery()
        root = self._root
        if root is None:
            raise AccessDenied(f"{self.me().name!r} is not an admin", hint="ask an admin to do this")
        return root.version, root.recovery.public, signing.lookup_tag(root.lookup_key, LABEL_TAG_CLIENT_SLUG, slug)

    def open_recovery(self) -> None:
        """An admin's: the copy of the current root bundle sealed to them, from the server, opened
        here (if not open yet); without a source (or for an engineer: the server refuses) none."""
        if self._root is not None or self.recovery_source is None:
            return
        me = self.me()
        version, blob, org = self.recovery_source()  # org: the pinned key, or the current one its chain reaches
        context = (LABEL_ROOT_BUNDLE, me.vault_id, version, me.engineer_id)
        self._root = _Root(sealing.open_sealed(self.my_keypair(), version, blob, context), version, org)
