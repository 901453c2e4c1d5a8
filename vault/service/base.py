"""The service core: the acting engineer, and every trust decision.

Every key-distribution record is verified here before it is used:
engineer certificates against the organisation signing key (the trust anchor pinned
in each engineer's key record), client-key versions and grants against the signing
key of an admin whose own certificate verifies. Unsealed keys are cached for the life
of this object only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from vault.crypto import blobs, keyrecord, sealing, signing
from vault.crypto.labels import (
    LABEL_CLIENT_KEY_SEAL,
    LABEL_ROOT_BUNDLE,
    LABEL_SIG_CLIENT_KEY,
    LABEL_SIG_ENGINEER,
    LABEL_SIG_ENGINEER_KEY,
    LABEL_SIG_GRANT,
    LABEL_SIG_GRANT_REVOCATION,
    LABEL_SIG_ORG_KEY,
)
from vault.errors import (
    AccessDenied,
    DecryptionFailed,
    GrantExpired,
    IntegrityError,
    InvalidInput,
    Locked,
    NotFound,
    StoreUnavailable,
    UntrustedRecord,
)
from vault.service.records import RootRotation
from vault.service.rows import GRANT_ORDER, EngineerRecord, GrantRecord, HasId, KeyCache
from vault.service.sessions import SessionStore, UnlockedSession, load_session
from vault.storage import models as m
from vault.storage.engine import Store

Clock = Callable[[], dt.datetime]
ROLE_ADMIN = "admin"
# NIST SP 800-38D bounds random 96-bit nonces to 2^32 encryptions per key; stop well short.
ENCRYPTION_LIMIT = 2**32 - 2**24
ENCRYPTION_WARNING = 2**31
ROLE_ENGINEER = "engineer"
ACTIVE = "active"


def check_share_policy(k: int, n: int) -> None:
    """Recovery shares: any k of n rebuild the root bundle (docs/format.md §6)."""
    if not 2 <= k <= n <= 16 or k > 9:
        raise InvalidInput(
            "bad recovery shares", hint="use --shares K-of-N with 2 <= K <= N <= 16 and K <= 9 (e.g. 3-of-5)"
        )


def share_policy_fields(s: Session, vault: VaultBase, key: m.OrgKey, k: int, n: int) -> tuple[signing.ContextItem, ...]:
    """What the k-of-n of the recovery shares is signed over (by the organisation key ``key``)."""
    return (vault._vid(s), key.version, key.public, k, n)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def epoch(value: dt.datetime) -> int:
    return int(value.timestamp())


def is_revoked(grant: GrantRecord) -> bool:
    """Whether a grant row carries any mark of revocation. A revocation is never undone, so
    any mark counts, signed or not (a row revoked before revision 0007 has no signature);
    clearing every mark is what the ledger's ``seq`` and the audit log catch."""
    return grant.revoked_at is not None or grant.revocation is not None or grant.revoked_by is not None


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


class VaultBase:
    """State shared by every part of the service: store, clock, session, key caches."""

    retries = 0  # transactions run again after a ConcurrentChange (retrying.py), over this object's life
    _retry_depth = 0

    def __init__(
        self,
        store: Store,
        *,
        sessions: SessionStore,
        engineer: str | None = None,
        clock: Clock = utcnow,
        kdf_params: keyrecord.Argon2Params | None = None,
    ) -> None:
        self.store = store
        self.sessions = sessions
        self.engineer_name = engineer
        self.clock = clock
        self._kdf_params = kdf_params
        self._session: UnlockedSession | None = None
        self._vault_id: bytes | None = None
        self._client_keys = KeyCache()
        self._sealing_public: tuple[bytes, bytes] | None = None  # (private, public) of the session
        self._slugs: dict[str, int] = {}  # an engineer's slug -> client id, learned from their grants
        self._cursors: dict[int, tuple[int, int]] = {}  # rotation id -> last re-wrapped (secret id, version)
        self._root: RootBundle | None = None
        self.adoption_skipped: list[str] = []  # forged records the last admin removal or rotation did not adopt
        self.last_root_rotation: RootRotation | None = None  # its shares are printed once by the CLI

    @property
    def kdf_params(self) -> keyrecord.Argon2Params:
        """Argon2 parameters for new key records (the module default unless given)."""
        return self._kdf_params or keyrecord.DEFAULT_PARAMS

    def __repr__(self) -> str:
        url = self.store.engine.url.render_as_string(hide_password=True)
        return f"{type(self).__name__}(url={url!r}, engineer={self.engineer_name!r})"

    # -- vault identity -----------------------------------------------------------

    def _info(self, s: Session) -> m.VaultInfo:
        """The vault_info row, read once per transaction (held in ``s.info``: the identity map is weak)."""
        info: m.VaultInfo | None = s.info.get("vault_info")
        if info is None:
            info = s.get(m.VaultInfo, 1)
            if info is None:
                raise StoreUnavailable(
                    "this database holds no vault",
                    hint="run `credvault init --admin NAME` first, or check --db / CREDVAULT_DB",
                )
            s.info["vault_info"] = info
        self._vault_id = info.vault_id
        return info

    def _vid(self, s: Session) -> bytes:
        """The vault id, read once per Vault object (it never changes)."""
        return self._vault_id if self._vault_id is not None else self._info(s).vault_id

    def vault_id(self) -> bytes:
        if self._vault_id is None:
            with self.store.transaction() as s:
                self._info(s)
        assert self._vault_id is not None
        return self._vault_id

    # -- the acting engineer --------------------------------------------------------

    def _me(self) -> UnlockedSession:
        if self._session is not None and self._session.expires_at > self.clock():
            return self._session
        if not self.engineer_name:
            raise Locked(
                "no engineer is selected on this machine",
                hint="pass --as NAME, set CREDVAULT_ENGINEER, or run `credvault unlock NAME`",
            )
        self._session = load_session(self.sessions, self.vault_id(), self.engineer_name, self.clock())
        return self._session

    def _my_row(self, s: Session) -> m.Engineer:
        """The acting engineer's row, with its certificate verified and matching the session."""
        me = self._me()
        self._org_head(s, me.org_signing_public)  # the pin leads, by signed links, to the current key
        row = s.get(m.Engineer, me.engineer_id)
        self._check_me(s, me, row)
        assert row is not None
        return row

    @staticmethod
    def _check_pin(me: UnlockedSession, org_signing_public: bytes, s: Session | None = None) -> None:
        """The fast check: the vault's current organisation key (``org_signing_public``, read in
        transaction ``s``) is the one the session pins. Otherwise ``_org_head`` follows the chain."""
        if org_signing_public != me.org_signing_public:
            raise UntrustedRecord("the vault's organisation key is not the one this engineer enrolled with")
        if s is not None:
            s.info["org_current"] = org_signing_public

    def _check_me(self, s: Session, me: UnlockedSession, row: EngineerRecord | None) -> None:
        """The acting engineer's row (ORM or plain): present, certified, active, with the session's keys."""
        if row is None or row.name != me.name:
            raise Locked(f"engineer {me.name!r} no longer exists in this vault")
        self._verify_certificate(s, row)
        if row.status != ACTIVE:
            raise AccessDenied(f"the account of {me.name!r} is {row.status}", hint="ask an admin")
        if row.key_generation != me.key_generation or row.sealing_public != self._session_sealing_public(me):
            raise Locked(
                f"the keys of {me.name!r} have changed since this session was unlocked",
                hint="run `credvault unlock` again",
            )

    def _session_sealing_public(self, me: UnlockedSession) -> bytes:
        """The X25519 public key of the session's private key (derived once per session object)."""
        cached = self._sealing_public
        if cached is None or cached[0] is not me.sealing_private:
            cached = (me.sealing_private, sealing.KeyPair(me.sealing_private).public)
            self._sealing_public = cached
        return cached[1]

    def _my_admin_row(self, s: Session) -> m.Engineer:
        row = self._my_row(s)
        if row.role != ROLE_ADMIN:
            raise AccessDenied(f"{row.name!r} is not an admin", hint="ask an admin to do this")
        return row

    def _my_signing_key(self) -> signing.SigningKey:
        return signing.SigningKey(self._me().signing_seed)

    def _my_keypair(self) -> sealing.KeyPair:
        return sealing.KeyPair(self._me().sealing_private)

    # -- certificates and signatures ------------------------------------------------

    def _org_public(self, s: Session) -> bytes:
        """The organisation key records are verified against: when a session is open, the
        current key reached from the one the acting engineer pinned (in their key record)
        by the signed forward chain (``_org_head``); else the stored one."""
        if self._session is not None:
            return self._org_head(s, self._session.org_signing_public)
        return self._info(s).org_signing_public

    def _org_head(self, s: Session, pinned: bytes) -> bytes:
        """The current organisation key, trusted from ``pinned``: every key after the pinned
        one must be signed by the key before it, and the last must be the vault's current
        key. Checked once per transaction (held in ``s.info``)."""
        info: m.VaultInfo | None = s.info.get("vault_info")
        current = info.org_signing_public if info is not None else s.info.get("org_current")
        if current is None:
            current = self._info(s).org_signing_public
        if pinned == current:
            return current  # the common case: nothing rotated since the pin
        cached = s.info.get("org_head")
        if cached is not None and cached[0] == pinned and cached[1] == current:
            return current
        keys = s.scalars(select(m.OrgKey).order_by(m.OrgKey.version)).all()
        start = next((i for i, key in enumerate(keys) if key.public == pinned), None)
        if start is None:
            raise UntrustedRecord("the vault's organisation key is not the one this engineer enrolled with")
        head = keys[start]
        for key in keys[start + 1 :]:
            if key.version != head.version + 1:
                raise UntrustedRecord(f"the organisation key chain is broken before version {key.version}")
            signing.verify(
                head.public,
                key.signature,
                LABEL_SIG_ORG_KEY,
                *self._org_key_fields(s, key, head.public),
                what=f"organisation key version {key.version}",
            )
            head = key
        if head.public != current:
            raise UntrustedRecord("the vault's organisation key is not on the chain this engineer trusts")
        s.info["org_head"] = (pinned, current)
        return current

    def _org_key_fields(self, s: Session, key: m.OrgKey, previous: bytes) -> tuple[signing.ContextItem, ...]:
        return (self._vid(s), key.version, key.public, previous, key.signed_at)

    def _certificate_fields(self, s: Session, row: EngineerRecord) -> tuple[signing.ContextItem, ...]:
        return (
            self._vid(s),
            row.id,
            row.name,
            row.role,
            row.status,
            row.key_generation,
            row.sealing_public,
            row.signing_public,
            row.certified_at,
        )

    def _verify_certificate(self, s: Session, row: EngineerRecord) -> None:
        if row.sealing_public is None or row.signing_public is None or row.certified_at is None:
            raise UntrustedRecord(
                f"engineer {row.name!r} has no confirmed keys", hint="an admin must run `credvault engineer confirm`"
            )
        signing.verify(
            self._org_public(s),
            row.certificate,
            LABEL_SIG_ENGINEER,
            *self._certificate_fields(s, row),
            what=f"the public keys of engineer {row.name!r}",
        )

    def _sign_certificate(self, s: Session, row: m.Engineer, org: signing.SigningKey) -> None:
        row.certified_at = epoch(self.clock())
        row.certificate = org.sign(LABEL_SIG_ENGINEER, *self._certificate_fields(s, row))

    def _key_fields(self, s: Session, key: m.EngineerKey, name: str) -> tuple[signing.ContextItem, ...]:
        return (
            self._vid(s),
            key.engineer_id,
            name,
            key.generation,
            key.sealing_public,
            key.signing_public,
            key.certified_at,
        )

    def _record_engineer_key(self, s: Session, row: m.Engineer, org: signing.SigningKey) -> None:
        """Keep a certified copy of the engineer's current public keys (old events verify with it)."""
        assert row.sealing_public is not None and row.signing_public is not None and row.certified_at is not None
        existing = s.get(m.EngineerKey, (row.id, row.key_generation))
        key = existing or m.EngineerKey(engineer_id=row.id, generation=row.key_generation, state=ACTIVE)
        key.sealing_public, key.signing_public, key.certified_at = (
            row.sealing_public,
            row.signing_public,
            row.certified_at,
        )
        key.certificate = org.sign(LABEL_SIG_ENGINEER_KEY, *self._key_fields(s, key, row.name))
        if existing is None:
            s.add(key)

    def _verified_key(self, s: Session, key: m.EngineerKey, name: str) -> bytes:
        signing.verify(
            self._org_public(s),
            key.certificate,
            LABEL_SIG_ENGINEER_KEY,
            *self._key_fields(s, key, name),
            what=f"key generation {key.generation} of engineer {name!r}",
        )
        return key.signing_public

    def _verified_admin(self, s: Session, engineer_id: int) -> EngineerRecord:
        return self._check_admin(s, s.get(m.Engineer, engineer_id))

    def _check_admin(self, s: Session, row: EngineerRecord | None) -> EngineerRecord:
        """The signer of a record (ORM or plain row): certified, an admin, active."""
        if row is None:
            raise UntrustedRecord("a record is signed by an unknown engineer")
        self._verify_certificate(s, row)
        if row.role != ROLE_ADMIN or row.status != ACTIVE:
            raise UntrustedRecord(f"a record is signed by {row.name!r}, who is not an active admin")
        return row

    def _client_key_fields(self, s: Session, ck: m.ClientKey) -> tuple[signing.ContextItem, ...]:
        return (self._vid(s), ck.client_id, ck.version, ck.fingerprint, ck.signed_at)

    def _verify_client_key_record(self, s: Session, ck: m.ClientKey) -> None:
        admin = self._verified_admin(s, ck.signed_by)
        assert admin.signing_public is not None
        signing.verify(
            admin.signing_public,
            ck.signature,
            LABEL_SIG_CLIENT_KEY,
            *self._client_key_fields(s, ck),
            what=f"client key version {ck.version}",
        )

    def _newest_signed_key(self, s: Session, client_id: int) -> m.ClientKey | None:
        """The client's newest client-key version whose record an active admin signed.

        Versions only grow, and a rotation makes its new version current at once, so this
        is the version the admins made current; rows that do not verify (planted by a
        writer of the database) are passed over."""
        for ck in s.scalars(
            select(m.ClientKey).where(m.ClientKey.client_id == client_id).order_by(m.ClientKey.version.desc())
        ):
            try:
                self._verify_client_key_record(s, ck)
            except UntrustedRecord:
                continue
            return ck
        return None

    def _current_key_version(self, s: Session, client: m.Client) -> int:
        """The client-key version new data is written under: the newest signed version, which
        must also be what ``clients.current_key_version`` says and must not be destroyed."""
        ck = self._newest_signed_key(s, client.id)
        if ck is None or ck.version != client.current_key_version or ck.state == "destroyed":
            raise IntegrityError(
                f"the current key of client #{client.id} is not its newest admin-signed key version",
                hint="the database was changed outside credvault; an admin can run `credvault rotate client SLUG`",
            )
        return ck.version

    def _grant_fields(
        self, s: Session, grant: GrantRecord, sealing_public: bytes | None
    ) -> tuple[signing.ContextItem, ...]:
        """What a grant's signature covers. A grant of the ledger (``seq`` set, revision 0007
        on) also covers its position among the grants of its (engineer, client) and the
        audit event that recorded it; a row from before has the older, shorter layout (and
        a ledger row whose ``seq`` is cleared no longer verifies: the layouts differ)."""
        fields: tuple[signing.ContextItem, ...] = (
            self._vid(s),
            grant.id,
            grant.engineer_id,
            sealing_public,
            grant.client_id,
            grant.signed_at,
            grant.until or 0,
        )
        if grant.seq is not None:
            fields += (grant.seq, grant.event_seq or 0)
        return fields

    def _verify_grant(
        self, s: Session, grant: GrantRecord, engineer: EngineerRecord, signer: EngineerRecord | None = None
    ) -> None:
        """The grant's signature, by an active admin: ``signer`` (their row, already checked) or looked up."""
        admin = signer if signer is not None else self._verified_admin(s, grant.granted_by)
        assert admin.signing_public is not None
        signing.verify(
            admin.signing_public,
            grant.signature,
            LABEL_SIG_GRANT,
            *self._grant_fields(s, grant, engineer.sealing_public),
            what="the grant",
        )

    def _revocation_fields(self, s: Session, grant: GrantRecord) -> tuple[signing.ContextItem, ...]:
        assert grant.revoked_at is not None
        return (
            self._vid(s),
            grant.id,
            grant.engineer_id,
            grant.client_id,
            grant.seq or 0,
            epoch(grant.revoked_at),
            grant.revoked_by,
        )

    def _revoke_grant(self, s: Session, grant: m.Grant, admin: m.Engineer) -> None:
        """Revoke one grant row with the acting admin's signature over the revocation."""
        grant.revoked_at = self.clock()
        grant.revoked_by = admin.id
        grant.revocation = self._my_signing_key().sign(LABEL_SIG_GRANT_REVOCATION, *self._revocation_fields(s, grant))

    # -- the root bundle (admins) -----------------------------------------------------

    def _current_root(self, s: Session) -> m.RootKey:
        root = s.scalars(select(m.RootKey).where(m.RootKey.state == ACTIVE).order_by(m.RootKey.version.desc())).first()
        if root is None:
            raise UntrustedRecord("the vault has no active recovery key")
        return root

    def _root_bundle(self, s: Session) -> RootBundle:
        admin = self._my_admin_row(s)
        root = self._current_root(s)
        if self._root is not None and self._root.version == root.version:
            return self._root
        seal = s.get(m.RootSeal, (root.version, admin.id))
        if seal is None:
            raise AccessDenied(
                f"no copy of the recovery key is sealed to {admin.name!r}", hint="another admin can re-confirm you"
            )
        raw = sealing.open_sealed(
            self._my_keypair(),
            root.version,
            seal.blob,
            (LABEL_ROOT_BUNDLE, self._vid(s), root.version, admin.id),
        )
        bundle = RootBundle(raw, root.version)
        if bundle.recovery.public != root.recovery_public or bundle.org.public != self._org_public(s):
            raise UntrustedRecord("the sealed recovery key does not match the vault's public recovery key")
        self._root = bundle
        return bundle

    def _seal_root_to(self, s: Session, bundle: RootBundle, row: m.Engineer) -> None:
        assert row.sealing_public is not None
        context = (LABEL_ROOT_BUNDLE, self._vid(s), bundle.version, row.id)
        blob = sealing.seal(row.sealing_public, bundle.version, bundle.to_bytes(), context)
        existing = s.get(m.RootSeal, (bundle.version, row.id))
        if existing is None:
            s.add(m.RootSeal(root_version=bundle.version, engineer_id=row.id, blob=blob))
        else:
            existing.blob = blob

    # -- client keys ------------------------------------------------------------------

    def _seal_context(
        self, s: Session, client_id: int, version: int, kind: str, recipient_id: int
    ) -> tuple[signing.ContextItem, ...]:
        return (LABEL_CLIENT_KEY_SEAL, self._vid(s), client_id, version, kind, recipient_id)

    def _seal_client_key(
        self, s: Session, client_id: int, version: int, key: bytes, kind: str, recipient_id: int, public: bytes
    ) -> None:
        blob = sealing.seal(public, version, key, self._seal_context(s, client_id, version, kind, recipient_id))
        existing = s.get(m.ClientKeySeal, (client_id, version, kind, recipient_id))
        if existing is None:
            s.add(
                m.ClientKeySeal(
                    client_id=client_id, version=version, recipient_kind=kind, recipient_id=recipient_id, blob=blob
                )
            )
        else:
            existing.blob = blob

    def _active_grant(self, s: Session, engineer: m.Engineer, client_id: int) -> m.Grant:
        grants = s.scalars(
            select(m.Grant)
            .where(m.Grant.engineer_id == engineer.id, m.Grant.client_id == client_id)
            .order_by(*GRANT_ORDER)
        ).all()
        return grants[self._first_valid_grant(s, grants, engineer, [None] * len(grants))]

    def _first_valid_grant(
        self,
        s: Session,
        grants: Sequence[GrantRecord],
        engineer: EngineerRecord,
        signers: Sequence[EngineerRecord | None],
    ) -> int:
        """The index of the grant that counts: the head of the engineer's ledger for the
        client (``grants`` come newest first, by signed ``seq``, then id). It must verify,
        be unrevoked and unexpired; an older row never stands in for it (a superseded or
        revoked grant is not revived by clearing columns of the newer one).

        ``signers`` are the signers' rows when the caller fetched them with the grants
        (each is checked here), or None to look each one up.
        """
        if not grants:
            raise NotFound("no such client, or you hold no grant for it")
        head, signer = grants[0], signers[0]
        if is_revoked(head):  # a mark of revocation only ever takes access away: no signature needed
            raise NotFound("no such client, or you hold no grant for it")
        self._verify_grant(s, head, engineer, self._check_admin(s, signer) if signer is not None else None)
        if head.until is not None and head.until <= epoch(self.clock()):
            until = dt.datetime.fromtimestamp(head.until, dt.UTC).isoformat(timespec="minutes")
            raise GrantExpired(f"your grant for this client expired at {until}", hint="ask an admin to renew it")
        return 0

    def _client_key(self, s: Session, client_id: int, version: int) -> bytes:
        """Client key ``version`` for the acting engineer: via a grant, or the recovery key."""
        cached = self._client_keys.get((client_id, version))
        if cached is not None:
            return cached
        me = self._my_row(s)
        ck = s.get(m.ClientKey, (client_id, version))
        if ck is None or ck.state == "destroyed":
            raise DecryptionFailed()
        self._verify_client_key_record(s, ck)
        if me.role == ROLE_ADMIN:
            bundle = self._root_bundle(s)
            seal = s.get(m.ClientKeySeal, (client_id, version, "recovery", bundle.version))
            keypair, context = bundle.recovery, self._seal_context(s, client_id, version, "recovery", bundle.version)
        else:
            self._active_grant(s, me, client_id)
            seal = s.get(m.ClientKeySeal, (client_id, version, "engineer", me.id))
            keypair, context = self._my_keypair(), self._seal_context(s, client_id, version, "engineer", me.id)
        if seal is None:
            raise NotFound("no such client, or you hold no grant for it")
        key = sealing.open_sealed(keypair, version, seal.blob, context)
        if signing.client_key_fingerprint(key) != ck.fingerprint:
            raise UntrustedRecord(f"the sealed client key does not match its signed version {version}")
        self._client_keys[(client_id, version)] = key
        return key

    def _count_encryptions(self, s: Session, client_id: int, version: int, n: int = 1) -> None:
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

    def _client_field(self, s: Session, client: HasId, blob: bytes, purpose: str) -> bytes:
        """A client field, decrypted once per exact (key, blob): the result is a pure function of both."""
        version = blobs.blob_key_version(blob)
        key = self._client_key(s, client.id, version)
        slot = (client.id, version)
        if self._client_keys.get(slot) is not key:
            return blobs.decrypt_client_field(key, version, blob, client.id, purpose)
        opened = self._client_keys.fields.setdefault(slot, {})
        value = opened.get((blob, purpose))
        if value is None:
            value = blobs.decrypt_client_field(key, version, blob, client.id, purpose)
            if len(opened) >= 16:  # a few purposes per key; a bound against churn
                opened.clear()
            opened[(blob, purpose)] = value
        return value
