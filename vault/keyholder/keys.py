"""The keyholder's keys: the acting engineer's unlocked session and everything secret."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import TYPE_CHECKING

from sqlalchemy import update
from sqlalchemy.orm import Session

from vault.crypto import blobs, sealing, signing
from vault.crypto.labels import (
    LABEL_CLIENT_KEY_SEAL,
    LABEL_ROOT_BUNDLE,
)
from vault.errors import (
    AccessDenied,
    DecryptionFailed,
    IntegrityError,
    Locked,
    NotFound,
    UntrustedRecord,
)
from vault.service.core import (
    ENCRYPTION_LIMIT,
    ROLE_ADMIN,
)
from vault.service.rows import HasId, KeyCache
from vault.service.sessions import UnlockedSession, load_session
from vault.storage import models as m

if TYPE_CHECKING:
    from vault.keyholder.trust import Trust
    from vault.service.core import Core


HintKey = tuple[bytes, int, bytes, dt.datetime]
_HINTS: dict[HintKey, dict[str, int]] = {}  # Keys.slugs of each unlocked session in this process
HINT_SESSIONS = 64
HINT_SLUGS = 20_000


class RootBundle:
    """The unsealed root bundle: root secret and organisation signing seed."""

    __slots__ = ("lookup_key", "org", "recovery", "root_secret", "version")

    def __init__(self, raw: bytes, version: int) -> None:
        if len(raw) != 64:
            raise DecryptionFailed()
        self.root_secret = raw[:32]
        self.org = signing.SigningKey(raw[32:])
        self.recovery = sealing.KeyPair(signing.recovery_private_from_root(self.root_secret))
        self.lookup_key = signing.lookup_key_from_root(self.root_secret)
        self.version = version

    def to_bytes(self) -> bytes:
        return self.root_secret + self.org.seed

    def __repr__(self) -> str:
        return f"RootBundle(version={self.version}, <redacted>)"


class Keys:
    """The acting engineer's unlocked session and everything secret: the signing key and key pair,
    the root bundle, the client keys (sealed, unsealed and cached) and client fields."""

    # Trust asks Keys for the session, Keys asks Trust to verify what it unseals: the Vault
    # builds Keys first and gives it its Trust (``keys.trust = trust``) once that exists.
    trust: Trust

    def __init__(self, core: Core) -> None:
        self.core = core
        self.session: UnlockedSession | None = None
        self.client_keys = KeyCache()
        self._sealing_public: tuple[bytes, bytes] | None = None  # (private, public) of the session
        self._hint_key: HintKey | None = None  # the session the slug hints were last kept for
        self.root: RootBundle | None = None

    @property
    def slugs(self) -> dict[str, int]:
        """An engineer's slug -> client id, learned from their grants: hints kept for the
        unlocked session, shared by every ``Keys`` of this process that holds the same
        session (so a fresh ``Vault`` object, as a command served in-process makes, finds
        the client it names without opening the slug of every client it holds a grant for).

        A hint is only where to look: ``Clients.client`` verifies that client's grant and
        opens its slug on every use, and looks again through the grants when either fails.
        The hints hold ids and slugs, never a key; they are kept per (vault, engineer,
        signing key, session expiry to the second, as the session store keeps it), so a new
        unlock starts afresh, and ``lock`` (which clears them) forgets those of the session
        it ends. Bounded: ``HINT_SESSIONS`` sessions, ``HINT_SLUGS`` slugs each."""
        session = self.session
        if session is not None:
            digest = hashlib.sha256(b"credvault slug hints\0" + session.signing_seed).digest()
            self._hint_key = (session.vault_id, session.engineer_id, digest, session.expires_at.replace(microsecond=0))
        key = self._hint_key
        if key is None:
            return {}
        found = _HINTS.get(key)
        if found is None:
            if len(_HINTS) >= HINT_SESSIONS:
                _HINTS.clear()
            found = _HINTS[key] = {}
        elif len(found) > HINT_SLUGS:
            found.clear()
        return found

    # -- the acting engineer --------------------------------------------------------

    def me(self) -> UnlockedSession:
        if self.session is not None and self.session.expires_at > self.core.clock():
            return self.session
        if not self.core.engineer_name:
            raise Locked(
                "no engineer is selected on this machine",
                hint="pass --as NAME, set CREDVAULT_ENGINEER, or run `credvault unlock NAME`",
            )
        self.session = load_session(
            self.core.sessions, self.core.vault_id(), self.core.engineer_name, self.core.clock()
        )
        return self.session

    def session_sealing_public(self, me: UnlockedSession) -> bytes:
        """The X25519 public key of the session's private key (derived once per session object)."""
        cached = self._sealing_public
        if cached is None or cached[0] is not me.sealing_private:
            cached = (me.sealing_private, sealing.KeyPair(me.sealing_private).public)
            self._sealing_public = cached
        return cached[1]

    def my_signing_key(self) -> signing.SigningKey:
        return signing.SigningKey(self.me().signing_seed)

    def my_keypair(self) -> sealing.KeyPair:
        return sealing.KeyPair(self.me().sealing_private)

    def root_bundle(self, s: Session) -> RootBundle:
        admin = self.trust.my_admin_row(s)
        root = self.trust.current_root(s)
        if self.root is not None and self.root.version == root.version:
            return self.root
        seal = s.get(m.RootSeal, (root.version, admin.id))
        if seal is None:
            raise AccessDenied(
                f"no copy of the recovery key is sealed to {admin.name!r}", hint="another admin can re-confirm you"
            )
        raw = sealing.open_sealed(
            self.my_keypair(),
            root.version,
            seal.blob,
            (LABEL_ROOT_BUNDLE, self.core.vid(s), root.version, admin.id),
        )
        bundle = RootBundle(raw, root.version)
        if bundle.recovery.public != root.recovery_public or bundle.org.public != self.trust.org_public(s):
            raise UntrustedRecord("the sealed recovery key does not match the vault's public recovery key")
        self.root = bundle
        return bundle

    def seal_root_to(self, s: Session, bundle: RootBundle, row: m.Engineer) -> None:
        assert row.sealing_public is not None
        context = (LABEL_ROOT_BUNDLE, self.core.vid(s), bundle.version, row.id)
        blob = sealing.seal(row.sealing_public, bundle.version, bundle.to_bytes(), context)
        existing = s.get(m.RootSeal, (bundle.version, row.id))
        if existing is None:
            s.add(m.RootSeal(root_version=bundle.version, engineer_id=row.id, blob=blob))
        else:
            existing.blob = blob

    # -- client keys ------------------------------------------------------------------

    def seal_context(
        self, s: Session, client_id: int, version: int, kind: str, recipient_id: int
    ) -> tuple[signing.ContextItem, ...]:
        return (LABEL_CLIENT_KEY_SEAL, self.core.vid(s), client_id, version, kind, recipient_id)

    def seal_client_key(
        self, s: Session, client_id: int, version: int, key: bytes, kind: str, recipient_id: int, public: bytes
    ) -> None:
        blob = sealing.seal(public, version, key, self.seal_context(s, client_id, version, kind, recipient_id))
        existing = s.get(m.ClientKeySeal, (client_id, version, kind, recipient_id))
        if existing is None:
            s.add(
                m.ClientKeySeal(
                    client_id=client_id, version=version, recipient_kind=kind, recipient_id=recipient_id, blob=blob
                )
            )
        else:
            existing.blob = blob

    def client_key(self, s: Session, client_id: int, version: int) -> bytes:
        """Client key ``version`` for the acting engineer: via a grant, or the recovery key."""
        cached = self.client_keys.get((client_id, version))
        if cached is not None:
            return cached
        me = self.trust.my_row(s)
        ck = s.get(m.ClientKey, (client_id, version))
        if ck is None or ck.state == "destroyed":
            raise DecryptionFailed()
        self.trust.verify_client_key_record(s, ck)
        if me.role == ROLE_ADMIN:
            bundle = self.root_bundle(s)
            seal = s.get(m.ClientKeySeal, (client_id, version, "recovery", bundle.version))
            keypair, context = bundle.recovery, self.seal_context(s, client_id, version, "recovery", bundle.version)
        else:
            self.trust.active_grant(s, me, client_id)
            seal = s.get(m.ClientKeySeal, (client_id, version, "engineer", me.id))
            keypair, context = self.my_keypair(), self.seal_context(s, client_id, version, "engineer", me.id)
        if seal is None:
            raise NotFound("no such client, or you hold no grant for it")
        key = sealing.open_sealed(keypair, version, seal.blob, context)
        if signing.client_key_fingerprint(key) != ck.fingerprint:
            raise UntrustedRecord(f"the sealed client key does not match its signed version {version}")
        self.client_keys[(client_id, version)] = key
        return key

    def count_encryptions(self, s: Session, client_id: int, version: int, n: int = 1) -> None:
        """Count AES-GCM encryptions under a client key; refuse past the safe bound."""
        s.flush()
        count = s.execute(  # one atomic UPDATE: concurrent writers never lose a count
            update(m.ClientKey)
            .where(m.ClientKey.client_id == client_id, m.ClientKey.version == version)
            .values(encryptions=m.ClientKey.encryptions + n)
            .returning(m.ClientKey.encryptions)
            .execution_options(synchronize_session=False)
        ).scalar_one()
        if count > ENCRYPTION_LIMIT:
            raise IntegrityError(
                f"client key version {version} has reached its encryption limit",
                hint="rotate the client key: `credvault rotate client SLUG`",
            )

    def client_field(self, s: Session, client: HasId, blob: bytes, purpose: str) -> bytes:
        """A client field, decrypted once per exact (key, blob): the result is a pure function of both."""
        version = blobs.blob_key_version(blob)
        key = self.client_key(s, client.id, version)
        slot = (client.id, version)
        if self.client_keys.get(slot) is not key:
            return blobs.decrypt_client_field(key, version, blob, client.id, purpose)
        opened = self.client_keys.fields.setdefault(slot, {})
        value = opened.get((blob, purpose))
        if value is None:
            value = blobs.decrypt_client_field(key, version, blob, client.id, purpose)
            if len(opened) >= 16:  # a few purposes per key; a bound against churn
                opened.clear()
            opened[(blob, purpose)] = value
        return value
