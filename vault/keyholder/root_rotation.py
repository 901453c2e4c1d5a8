"""Root rotation, where the admin's keys are: verify what the authority shows, make the new
root bundle, sign, seal and re-seal.

``RootRotationKeyholder.rotate`` sends a ``RootRotateRequest`` (caller, pin, shares) and lends
the authority a seal for that one request. Inside the authority's unit of work:

* ``plan``: its own row (certified under the organisation key trusted from its pin, active,
  an admin, this session's keys); the head of the organisation key chain is that key; the
  root bundle opened from the copy sealed to this admin, which must hold the recovery key
  the authority names *and* the current organisation key (a stale or forged root-key record
  opens nothing current), never older than a bundle this session already held. Then each
  roster certificate verified under the current key (one that does not is left out and
  named); the new bundle made (``blobs.new_key`` and a fresh organisation key); the chain
  link signed by the old organisation key; the verified certificates re-issued under the
  new one; the bundle sealed only to verified, active admins (a row a DBA raised to admin
  does not verify); the vault backup key re-sealed; the share policy as asked, or as signed
  for the current bundle (one that does not verify issues no shares, with a warning).
* ``reseal``: each client-key version of a page: its record signed by an active admin, the
  key the copy held by this session or the recovery copy opened with the *old* recovery key
  (bound to client, version and recovery version: a copy moved from another row opens
  nothing) and matching the signed fingerprint, re-sealed to the new recovery key; anything
  else refused (named, never re-sealed). Each slug opened under its client key and re-tagged
  with the new lookup key.

The answer must name the versions made here; only then is the new bundle kept and are the
recovery shares made (``RootResult``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from vault import validation
from vault.authority.requests import Caller, SealedClientKey
from vault.authority.root_rotation_requests import (
    ClientPage,
    Resealed,
    RootDraft,
    RootPlan,
    RootRotated,
    RootRotateRequest,
)
from vault.crypto import blobs, sealing, serverkey, shamir, signing
from vault.crypto.labels import (
    LABEL_BACKUP_VAULT_KEY,
    LABEL_CLIENT_KEY_SEAL,
    LABEL_ROOT_BUNDLE,
    LABEL_SIG_ENGINEER,
    LABEL_SIG_ENGINEER_KEY,
    LABEL_SIG_ORG_KEY,
    LABEL_SIG_SHARE_POLICY,
    LABEL_TAG_CLIENT_SLUG,
)
from vault.errors import DecryptionFailed, InvalidInput, Locked, NotFound, UntrustedRecord, VaultError
from vault.keyholder.keys import Keys, RootBundle
from vault.keyholder.responses import ResponseChecks, trusted_org_key
from vault.keyholder.trust import certificate_fields, engineer_key_fields, org_key_fields
from vault.storage.rows import ACTIVE, ROLE_ADMIN, EngineerRow

SHARES_WARNING = (
    "the vault's record of its recovery shares does not verify: no shares were issued; "
    "run `credvault rotate root --shares K-of-N`"
)


@dataclass(frozen=True, repr=False)
class RootResult:
    """A verified, committed root rotation as this keyholder made it (``shares`` are secret)."""

    answer: RootRotated
    shares: tuple[str, ...]
    threshold: int | None
    warnings: tuple[str, ...]


class RootTransport(Protocol):
    def rotate_root(self, request: RootRotateRequest, seal: Any, unit: Any = None) -> RootRotated: ...


def share_policy_ok(k: object, n: object) -> bool:
    """The bounds of a k-of-n (docs/format.md §6)."""
    return isinstance(k, int) and isinstance(n, int) and 2 <= k <= n <= 16 and k <= 9


class RootHands:
    """One rotation's keyholder state: the bundles, and what it verified and made."""

    def __init__(self, keys: Keys, clock: Callable[[], dt.datetime], shares: tuple[int, int] | None) -> None:
        self.keys, self.clock, self.shares = keys, clock, shares
        self.vault_id = b""
        self.old: RootBundle | None = None
        self.new: RootBundle | None = None
        self.old_org = b""
        self.plan_made: RootPlan | None = None
        self.policy: tuple[int, int] | None = None
        self.warnings: list[str] = []
        self.pages = 0

    def __repr__(self) -> str:
        return "RootRotationSeal(<redacted>)"

    # -- the plan ------------------------------------------------------------------------------

    def plan(self, draft: RootDraft) -> RootPlan:
        if self.plan_made is not None or not isinstance(draft, RootDraft):
            raise UntrustedRecord("the authority asked for a second root bundle in one rotation")
        org = self._check_me(draft)
        vault_id, me = draft.identity.vault_id, draft.identity.me
        if draft.head.public != org:
            raise UntrustedRecord("the organisation key chain does not end with the current organisation key")
        old = self._open_bundle(draft, org)
        self.vault_id, self.old, self.old_org = vault_id, old, org
        self.policy = self.shares if self.shares is not None else self._share_policy(draft, org)
        checks = ResponseChecks(vault_id, org, self.clock())
        refused = list(draft.refused)
        certified: list[EngineerRow] = []
        for row in draft.engineers:
            try:
                checks.certificate(row)
            except VaultError:
                refused.append(f"the certificate of engineer {validation.shown(row.name)}")
                continue
            certified.append(row)
        if me.id not in {row.id for row in certified}:
            raise UntrustedRecord("the authority's roster leaves out the admin rotating the root key")
        names = dict(draft.names)
        keys = []
        for key in draft.keys:
            name = names.get(key.engineer_id, "")
            try:
                signing.verify(
                    org,
                    key.certificate,
                    LABEL_SIG_ENGINEER_KEY,
                    *engineer_key_fields(vault_id, key, name),
                    what="an engineer key generation",
                )
            except VaultError:
                refused.append(f"key generation {key.generation} of engineer {validation.shown(name)}")
                continue
            keys.append((key, name))
        servers = []
        for server in draft.server_keys:  # the team server's keys: re-issued as the engineers' are
            try:
                serverkey.verify_certificate(
                    org, server.certificate, vault_id, server.version, server.signing_public, server.certified_at
                )
            except VaultError:
                refused.append(f"the certificate of server key {server.version}")
                continue
            servers.append(server)
        new_org = signing.SigningKey.generate()
        new = RootBundle(blobs.new_key() + new_org.seed, draft.root.version + 1)
        self.new = new
        org_version, signed_at = draft.head.version + 1, int(self.clock().timestamp())
        link = org_key_fields(vault_id, org_version, new_org.public, org, signed_at)
        admins = [row for row in certified if row.role == ROLE_ADMIN and row.status == ACTIVE]
        backup = None
        if draft.backup_key_seal is not None:  # the vault backup key follows the recovery key
            context = (LABEL_BACKUP_VAULT_KEY, vault_id)
            opened = sealing.open_sealed(old.recovery, old.version, draft.backup_key_seal, context)
            backup = sealing.seal(new.recovery.public, new.version, opened, context)
        policy = None
        if self.policy is not None:
            k, n = self.policy
            policy = (k, n, new_org.sign(LABEL_SIG_SHARE_POLICY, vault_id, org_version, new_org.public, k, n))
        self.plan_made = RootPlan(
            root_version=new.version,
            recovery_public=new.recovery.public,
            org_version=org_version,
            org_public=new_org.public,
            org_signed_at=signed_at,
            org_signature=old.org.sign(LABEL_SIG_ORG_KEY, *link),
            certificates=tuple(
                (row.id, new_org.sign(LABEL_SIG_ENGINEER, *certificate_fields(vault_id, row))) for row in certified
            ),
            key_certificates=tuple(
                (
                    key.engineer_id,
                    key.generation,
                    new_org.sign(LABEL_SIG_ENGINEER_KEY, *engineer_key_fields(vault_id, key, name)),
                )
                for key, name in keys
            ),
            root_seals=tuple((row.id, self._seal_root(new, row)) for row in admins),
            backup_key_seal=backup,
            share_policy=policy,
            refused=tuple(refused),
            server_certificates=tuple(
                (k.version, serverkey.certify(new_org, vault_id, k.version, k.signing_public, k.certified_at))
                for k in servers
            ),
        )
        return self.plan_made

    def _check_me(self, draft: RootDraft) -> bytes:
        """The organisation key trusted from this session's pin, after checking its own row."""
        me, identity = self.keys.me(), draft.identity
        if identity.vault_id != me.vault_id:
            raise UntrustedRecord("the authority answered for another vault")
        org = trusted_org_key(identity.vault_id, me.org_signing_public, identity.org_signing_public, identity.org_chain)
        row = identity.me
        if row.id != me.engineer_id or row.name != me.name:
            raise Locked(f"engineer {me.name!r} no longer exists in this vault")
        ResponseChecks(identity.vault_id, org, self.clock()).certificate(row)
        if row.status != ACTIVE or row.role != ROLE_ADMIN:
            raise UntrustedRecord(f"{me.name!r} is not an active admin")
        if row.key_generation != me.key_generation or row.sealing_public != self.keys.session_sealing_public(me):
            raise Locked(f"the keys of {me.name!r} have changed since this session was unlocked")
        return org

    def _open_bundle(self, draft: RootDraft, org: bytes) -> RootBundle:
        """The bundle sealed to this admin for the recovery key the authority names: it must hold
        that recovery key and the current organisation key, and be no older than one held."""
        root, held = draft.root, self.keys.root
        if held is not None and root.version < held.version:
            raise UntrustedRecord("the authority names an older root key than this session holds")
        if held is not None and held.version == root.version:
            bundle = held
        else:
            if root.sealed is None:
                raise DecryptionFailed()
            context = (LABEL_ROOT_BUNDLE, draft.identity.vault_id, root.version, draft.identity.me.id)
            bundle = RootBundle(
                sealing.open_sealed(self.keys.my_keypair(), root.version, root.sealed, context), root.version
            )
        if bundle.recovery.public != root.recovery_public or bundle.org.public != org:
            raise UntrustedRecord("the sealed recovery key does not match the vault's public recovery key")
        return bundle

    def _share_policy(self, draft: RootDraft, org: bytes) -> tuple[int, int] | None:
        """The signed k-of-n of the current bundle, if the vault uses shares and it verifies."""
        head = draft.head
        if head.threshold is None and head.count is None and head.signature is None:
            return None
        k, n = head.threshold, head.count
        try:
            if k is None or n is None or not share_policy_ok(k, n):
                raise UntrustedRecord("the recovery-share policy is incomplete")
            fields = (draft.identity.vault_id, head.version, head.public, k, n)
            signing.verify(org, head.signature, LABEL_SIG_SHARE_POLICY, *fields, what="the recovery-share policy")
        except UntrustedRecord:
            self.warnings.append(SHARES_WARNING)
            return None
        return k, n

    def _seal_root(self, bundle: RootBundle, row: EngineerRow) -> bytes:
        assert row.sealing_public is not None  # certified: checked
        context = (LABEL_ROOT_BUNDLE, self.vault_id, bundle.version, row.id)
        return sealing.seal(row.sealing_public, bundle.version, bundle.to_bytes(), context)

    # -- the pages -----------------------------------------------------------------------------

    def reseal(self, page: ClientPage) -> Resealed:
        old, new = self.old, self.new
        if old is None or new is None or not isinstance(page, ClientPage):
            raise UntrustedRecord("the authority asked for a re-seal before the root bundle was made")
        if (page.root_version, page.new_root_version) != (old.version, new.version):
            raise UntrustedRecord("the authority handed a page of another root key")
        checks = ResponseChecks(self.vault_id, self.old_org, self.clock())
        clients = dict(page.clients)
        if len(clients) != len(page.clients):
            raise UntrustedRecord("the authority handed a client twice")
        opened: dict[tuple[int, int], bytes] = {}
        seals, refused = [], []
        for sealed in page.keys:
            client_id, version = sealed.record.client_id, sealed.record.version
            if client_id not in clients or (client_id, version) in opened or (client_id, version) in refused:
                raise UntrustedRecord("the authority handed a key of a client not in the page, or twice")
            try:
                key = self._client_key(checks, sealed, old)
            except (UntrustedRecord, DecryptionFailed, NotFound):
                refused.append((client_id, version))  # no admin signed it, or its copy is not its key
                continue
            opened[(client_id, version)] = key
            context = (LABEL_CLIENT_KEY_SEAL, self.vault_id, client_id, version, "recovery", new.version)
            seals.append((client_id, version, sealing.seal(new.recovery.public, version, key, context)))
        tags = []
        for client_id, slug_blob in page.clients:
            version = blobs.blob_key_version(slug_blob)
            slug_key = opened.get((client_id, version))
            if slug_key is None:
                raise UntrustedRecord(f"the slug of client #{client_id} is not under a key version that verifies")
            slug = blobs.decrypt_client_field(slug_key, version, slug_blob, client_id, "slug").decode("utf-8")
            tags.append((client_id, signing.lookup_tag(new.lookup_key, LABEL_TAG_CLIENT_SLUG, slug)))
        self.pages += 1
        return Resealed(tuple(seals), tuple(refused), tuple(tags))

    def _client_key(self, checks: ResponseChecks, sealed: SealedClientKey, old: RootBundle) -> bytes:
        """The key of ``sealed``: its record verified, then the copy this session holds or the
        copy sealed to the old recovery key, matching the signed fingerprint."""
        client_id, version = sealed.record.client_id, sealed.record.version
        checks.client_key(sealed, client_id, version)
        key = self.keys.client_keys.get((client_id, version))
        if key is None:
            if sealed.blob is None or (sealed.kind, sealed.recipient_id) != ("recovery", old.version):
                raise DecryptionFailed()
            context = (LABEL_CLIENT_KEY_SEAL, self.vault_id, client_id, version, "recovery", old.version)
            key = sealing.open_sealed(old.recovery, version, sealed.blob, context)
        if signing.client_key_fingerprint(key) != sealed.record.fingerprint:
            self.keys.client_keys.pop((client_id, version), None)
            raise UntrustedRecord(f"the sealed client key does not match its signed version {version}")
        return key

    def close(self) -> None:
        self.old = self.new = None


class _Seal:
    """The keyholder's hands lent to the authority for one rotation, and for nothing after it."""

    def __init__(self, rotation: RootHands) -> None:
        self._rotation: RootHands | None = rotation

    def __repr__(self) -> str:
        return "RootRotationSeal(<redacted>)"

    def plan(self, draft: RootDraft) -> RootPlan:
        if self._rotation is None:
            raise UntrustedRecord("this seal is closed")
        return self._rotation.plan(draft)

    def reseal(self, page: ClientPage) -> Resealed:
        if self._rotation is None:
            raise UntrustedRecord("this seal is closed")
        return self._rotation.reseal(page)

    def close(self) -> None:
        self._rotation = None


class RootRotationKeyholder:
    """Rotates the root bundle for the admin whose keys ``keys`` holds, through its transport."""

    def __init__(self, transport: RootTransport, keys: Keys, clock: Callable[[], dt.datetime]) -> None:
        self.transport, self.keys, self.clock = transport, keys, clock

    def __repr__(self) -> str:
        return "RootRotationKeyholder(<redacted>)"

    def rotate(self, *, shares: tuple[int, int] | None = None, unit: Any = None) -> RootResult:
        """A new root bundle (``unit``: inside the caller's unit of work, an admin's removal)."""
        if shares is not None and not share_policy_ok(*shares):
            raise InvalidInput(
                "bad recovery shares", hint="use --shares K-of-N with 2 <= K <= N <= 16 and K <= 9 (e.g. 3-of-5)"
            )
        me = self.keys.me()
        request = RootRotateRequest(Caller(me.engineer_id, me.key_generation), me.org_signing_public, shares)
        rotation = RootHands(self.keys, self.clock, shares)
        seal = _Seal(rotation)
        try:
            answer = self.transport.rotate_root(request, seal, unit)
            plan, new = rotation.plan_made, rotation.new
            if (
                plan is None
                or new is None
                or not isinstance(answer, RootRotated)
                or (answer.root_version, answer.org_version) != (plan.root_version, plan.org_version)
                or not set(answer.refused) >= set(plan.refused)
            ):
                raise UntrustedRecord("the authority's answer is not the root rotation this keyholder made")
            if rotation.pages == 0 and answer.clients:
                raise UntrustedRecord("the authority says it re-sealed clients it never handed over")
        finally:
            seal.close()
        self.keys.root = new
        texts: tuple[str, ...] = ()
        if rotation.policy is not None:
            k, n = rotation.policy
            texts = tuple(
                shamir.encode_share(rotation.vault_id, k, x, y) for x, y in shamir.split(new.to_bytes(), k, n)
            )
        rotation.close()
        return RootResult(answer, texts, rotation.policy[0] if rotation.policy else None, tuple(rotation.warnings))
