"""Root rotation: a new root bundle (recovery key and organisation signing key) at once.

One transaction re-seals every live client-key version to a new recovery key and re-tags
client slugs with the new lookup key (its cost grows with the number of clients, not of
secrets), makes a new organisation key signed by the previous one (``org_keys``, so that
engineers' key records follow the chain), re-issues every certificate that verifies
under the new key, seals the new bundle only to admins certified under it, and issues
new recovery shares when the vault uses them (the old ones open nothing current).
``engineer remove`` runs it for an admin (issue 12, items 8 and 9).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from vault.crypto import _primitives as prim
from vault.crypto import sealing, shamir, signing
from vault.crypto.labels import (
    LABEL_BACKUP_VAULT_KEY,
    LABEL_SIG_ENGINEER,
    LABEL_SIG_ENGINEER_KEY,
    LABEL_SIG_ORG_KEY,
    LABEL_SIG_SHARE_POLICY,
    LABEL_TAG_CLIENT_SLUG,
)
from vault.errors import DecryptionFailed, InvalidInput, NotFound, UntrustedRecord
from vault.keyholder.keys import RootBundle
from vault.service import auditverify, validation
from vault.service.audit import _details
from vault.service.core import ACTIVE, ROLE_ADMIN, check_share_policy, epoch, share_policy_fields
from vault.service.records import RootRotation
from vault.service.rotation import DESTROYED
from vault.storage import models as m

if TYPE_CHECKING:
    from vault.authority.journal import Journal
    from vault.keyholder.keys import Keys
    from vault.keyholder.signers import Signers
    from vault.keyholder.trust import Trust
    from vault.service.clients import Clients
    from vault.service.core import Core


_CERTIFYING = ("vault-init", "engineer-confirm")


def _fingerprint(sealing_public: bytes | None, signing_public: bytes | None) -> str | None:
    if sealing_public is None or signing_public is None:
        return None
    return signing.engineer_fingerprint(sealing_public, signing_public)


class RootRotator:
    """Rotating the root bundle and the organisation key (``vault.keys.rotate_root``)."""

    def __init__(
        self, core: Core, keys: Keys, trust: Trust, signers: Signers, journal: Journal, clients: Clients
    ) -> None:
        self.core = core
        self.keys = keys
        self.trust = trust
        self.signers = signers
        self.journal = journal
        self.clients = clients

    def rotate_root(self, s: Session, *, shares: tuple[int, int] | None = None) -> RootRotation:
        """The root rotation inside the caller's transaction (also used by admin removal)."""
        me = self.trust.my_admin_row(s)
        old = self.keys.root_bundle(s)
        old_root = self.trust.current_root(s)
        info = self.core.info(s)
        warnings: list[str] = []
        policy = shares if shares is not None else self._share_policy(s, old.org.public, warnings)
        # The roster and every certificate are checked under the current organisation key
        # before it is replaced: only what verifies is re-issued under the new one.
        certified, keys, refused = self._verified_certificates(s)
        new_org = signing.SigningKey.generate()
        new = RootBundle(prim.random_bytes(32) + new_org.seed, old.version + 1)
        now = self.core.clock()
        s.add(m.RootKey(version=new.version, recovery_public=new.recovery.public, state="pending", created_at=now))
        s.flush()
        clients = 0
        for client in s.scalars(select(m.Client)):
            for ck in s.scalars(
                select(m.ClientKey).where(m.ClientKey.client_id == client.id, m.ClientKey.state != DESTROYED)
            ).all():
                try:
                    key = self.keys.client_key(s, client.id, ck.version)
                except (UntrustedRecord, DecryptionFailed, NotFound):
                    # a version no admin signed (or whose copy does not match): never re-sealed
                    refused.append(f"client #{client.id} key version {ck.version}")
                    s.execute(
                        delete(m.ClientKeySeal).where(
                            m.ClientKeySeal.client_id == client.id, m.ClientKeySeal.version == ck.version
                        )
                    )
                    continue
                self.keys.seal_client_key(s, client.id, ck.version, key, "recovery", new.version, new.recovery.public)
            slug = self.clients.slug(s, client)
            client.slug_tag = signing.lookup_tag(new.lookup_key, LABEL_TAG_CLIENT_SLUG, slug)
            clients += 1
        org_version = self._rotate_org_key(s, old.org, new_org, certified, keys)
        admins = []
        for admin in certified:
            if admin.role == ROLE_ADMIN and admin.status == ACTIVE:
                self.trust.verify_certificate(s, admin)  # under the new key, through the signed chain
                self.keys.seal_root_to(s, new, admin)
                admins.append(admin.name)
        if info.backup_key_seal is not None:  # the vault backup key follows the recovery key
            context = (LABEL_BACKUP_VAULT_KEY, info.vault_id)
            vault_backup_key = sealing.open_sealed(old.recovery, old.version, info.backup_key_seal, context)
            info.backup_key_seal = sealing.seal(new.recovery.public, new.version, vault_backup_key, context)
        s.execute(
            delete(m.ClientKeySeal).where(
                m.ClientKeySeal.recipient_kind == "recovery", m.ClientKeySeal.recipient_id == old.version
            )
        )
        s.execute(delete(m.RootSeal).where(m.RootSeal.root_version == old.version))
        old_root.state, old_root.retired_at, old_root.destroyed_at = DESTROYED, now, now
        new_root = s.get(m.RootKey, new.version)
        assert new_root is not None
        new_root.state = ACTIVE
        self.keys.root = new
        share_texts: tuple[str, ...] = ()
        if policy is not None:
            k, n = policy
            link = s.get(m.OrgKey, org_version)
            assert link is not None
            link.share_threshold, link.share_count = k, n
            link.share_signature = new_org.sign(LABEL_SIG_SHARE_POLICY, *share_policy_fields(s, self.core, link, k, n))
            share_texts = tuple(
                shamir.encode_share(info.vault_id, k, x, y) for x, y in shamir.split(new.to_bytes(), k, n)
            )
        self.journal.append(
            s,
            "root-key-rotate",
            public={"from_version": old.version, "to_version": new.version, "clients": clients, "by": me.name}
            | {
                "org_version": org_version,
                "admins": len(admins),
                "shares": f"{policy[0]}-of-{policy[1]}" if policy else None,
            }
            | ({"refused": len(refused)} if refused else {}),
        )
        self.core.adoption_skipped += [entry for entry in refused if entry not in self.core.adoption_skipped]
        result = RootRotation(
            root_version=new.version,
            org_version=org_version,
            clients=clients,
            admins=tuple(sorted(admins)),
            shares=share_texts,
            threshold=policy[0] if policy else None,
            refused=tuple(refused),
            warnings=tuple(warnings),
        )
        self.core.last_root_rotation = result
        return result

    def _verified_certificates(self, s: Session) -> tuple[list[m.Engineer], list[tuple[m.EngineerKey, str]], list[str]]:
        """Every engineer certificate and key-generation certificate that verifies under the
        current organisation key *and* that the signed audit chain vouches for; the names of
        the others (never re-issued).

        A holder of the organisation seed (a removed admin) can write a certificate no admin
        made; the chain says which key generations an admin certified (and which it retired)
        and whom it made admins (``Signers.key_lifetimes``), and the event that vouches is
        checked here (its hash, signature and link; and, when it names them, the keys it
        certified: a seed holder who swaps an admin's public keys gets no root seal). An
        active engineer's key generation must be certified and not retired, and an active
        admin must be one the chain made."""
        lifetimes, problems, chain_admins = self.signers.key_lifetimes(s, self.signers.signing_keys(s))
        vault_id = self.core.vid(s)
        checked: dict[int, bool] = {}

        def vouched(engineer_id: int, generation: int, fingerprint: str | None) -> bool:
            start = lifetimes.get((engineer_id, generation), (b"", auditverify.NEVER, 0))[1]
            if start == auditverify.NEVER:
                return False
            seq = max(start - 1, 1)  # the confirmation that certified it (vault-init: event 1)
            if seq not in checked:
                bad = seq in problems or self.signers.anchor_problem(s, vault_id, lifetimes, problems, seq) is not None
                checked[seq] = not bad
            event = s.get(m.AuditEvent, seq)
            signed = _details(event.details_json) if event is not None else {}
            # the keys the event certified (events written before it named them carry no fingerprint)
            named = signed.get("fingerprint") if event is not None and event.action in _CERTIFYING else None
            return checked[seq] and named in (None, fingerprint)

        certified: list[m.Engineer] = []
        names: dict[int, str] = {}
        refused: list[str] = []
        for row in s.scalars(select(m.Engineer).where(m.Engineer.certificate.is_not(None)).order_by(m.Engineer.id)):
            names[row.id] = row.name
            try:
                self.trust.verify_certificate(s, row)
                if not vouched(row.id, row.key_generation, _fingerprint(row.sealing_public, row.signing_public)):
                    raise UntrustedRecord("no admin certified these keys")
                if row.status == ACTIVE:
                    end = lifetimes[(row.id, row.key_generation)][2]
                    if end != auditverify.NEVER or (row.role == ROLE_ADMIN and row.id not in chain_admins):
                        raise UntrustedRecord("the audit log does not make this engineer what the certificate says")
            except UntrustedRecord:
                refused.append(f"the certificate of engineer {validation.shown(row.name)}")
                continue
            certified.append(row)
        keys: list[tuple[m.EngineerKey, str]] = []
        for key in s.scalars(select(m.EngineerKey).order_by(m.EngineerKey.engineer_id, m.EngineerKey.generation)):
            name = names.get(key.engineer_id)
            if name is None:
                owner = s.get(m.Engineer, key.engineer_id)
                name = owner.name if owner is not None else ""
            try:
                self.trust.verified_key(s, key, name)
                if not vouched(key.engineer_id, key.generation, _fingerprint(key.sealing_public, key.signing_public)):
                    raise UntrustedRecord("no admin certified this key generation")
            except UntrustedRecord:
                refused.append(f"key generation {key.generation} of engineer {validation.shown(name)}")
                continue
            keys.append((key, name))
        return certified, keys, refused

    def _rotate_org_key(
        self,
        s: Session,
        old: signing.SigningKey,
        new: signing.SigningKey,
        certified: list[m.Engineer],
        keys: list[tuple[m.EngineerKey, str]],
    ) -> int:
        """Make ``new`` the organisation key: a chain link signed by ``old``, and the verified
        certificates re-issued under it. Returns the new key's version."""
        info = self.core.info(s)
        last = s.scalars(select(m.OrgKey).order_by(m.OrgKey.version.desc())).first()
        if last is None or last.public != old.public:
            raise UntrustedRecord("the organisation key chain does not end with the current organisation key")
        now = self.core.clock()
        link = m.OrgKey(version=last.version + 1, public=new.public, signed_at=epoch(now), created_at=now)
        link.signature = old.sign(LABEL_SIG_ORG_KEY, *self.trust.org_key_fields(s, link, old.public))
        s.add(link)
        info.org_signing_public = new.public
        s.flush()
        for row in certified:
            row.certificate = new.sign(LABEL_SIG_ENGINEER, *self.trust.certificate_fields(s, row))
        for key, name in keys:
            key.certificate = new.sign(LABEL_SIG_ENGINEER_KEY, *self.trust.key_fields(s, key, name))
        return link.version

    def _share_policy(self, s: Session, org_public: bytes, warnings: list[str]) -> tuple[int, int] | None:
        """The k-of-n recovery shares of the current root bundle, if the vault uses them and
        the record (on the current organisation key's row, signed by that key) verifies."""
        head = s.scalars(select(m.OrgKey).order_by(m.OrgKey.version.desc())).first()
        if head is None or (head.share_threshold is None and head.share_count is None and head.share_signature is None):
            return None
        k, n = head.share_threshold, head.share_count
        try:
            if k is None or n is None or head.public != org_public:
                raise UntrustedRecord("the recovery-share policy is incomplete")
            signing.verify(
                org_public,
                head.share_signature,
                LABEL_SIG_SHARE_POLICY,
                *share_policy_fields(s, self.core, head, k, n),
                what="the recovery-share policy",
            )
            check_share_policy(k, n)
        except (UntrustedRecord, InvalidInput):
            warnings.append(
                "the vault's record of its recovery shares does not verify: no shares were issued; "
                "run `credvault rotate root --shares K-of-N`"
            )
            return None
        return k, n
