"""The keyholder's trust checks: nothing the store returns is used unverified."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.authority.certificates import certificate_fields as certificate_fields
from vault.authority.certificates import engineer_key_fields as engineer_key_fields
from vault.authority.certificates import org_key_fields as org_key_fields
from vault.authority.certificates import verify_engineer_key
from vault.authority.grant_signatures import grant_fields as grant_fields
from vault.authority.grant_signatures import grant_label as grant_label
from vault.authority.grant_signatures import head_grant, verify_grant
from vault.authority.record_signatures import client_key_fields as client_key_fields
from vault.crypto import signing
from vault.crypto.labels import (
    LABEL_SIG_CLIENT_KEY,
    LABEL_SIG_ENGINEER,
    LABEL_SIG_ENGINEER_KEY,
    LABEL_SIG_GRANT_REVOCATION,
    LABEL_SIG_ORG_KEY,
)
from vault.errors import (
    AccessDenied,
    IntegrityError,
    Locked,
    UntrustedRecord,
)
from vault.service.core import (
    ACTIVE,
    ROLE_ADMIN,
    epoch,
)
from vault.service.rows import GRANT_ORDER, EngineerRecord, GrantRecord
from vault.service.sessions import UnlockedSession
from vault.storage import models as m
from vault.storage.rows import GrantRow

if TYPE_CHECKING:
    from vault.keyholder.keys import Keys
    from vault.service.core import Core


# What each signature covers (docs/format.md): one definition, used to sign and to verify,
# in a unit of work (``Trust``) and on the rows of an authority's answer (keyholder/checkouts.py);
# a client-key record's is ``authority/record_signatures.py``'s (the server verifies it too).


class Trust:
    """Every verification of what the store returns: the organisation key chain, certificates,
    engineer key records, admins, client-key records, grants and revocations; the acting
    engineer's verified row."""

    def __init__(self, core: Core, keys: Keys) -> None:
        self.core = core
        self.keys = keys

    def my_row(self, s: Session) -> m.Engineer:
        """The acting engineer's row, with its certificate verified and matching the session."""
        me = self.keys.me()
        self.org_head(s, me.org_signing_public)  # the pin leads, by signed links, to the current key
        row = s.get(m.Engineer, me.engineer_id)
        self._check_me(s, me, row)
        assert row is not None
        return row

    def _check_me(self, s: Session, me: UnlockedSession, row: EngineerRecord | None) -> None:
        """The acting engineer's row (ORM or plain): present, certified, active, with the session's keys."""
        if row is None or row.name != me.name:
            raise Locked(f"engineer {me.name!r} no longer exists in this vault")
        self.verify_certificate(s, row)
        if row.status != ACTIVE:
            raise AccessDenied(f"the account of {me.name!r} is {row.status}", hint="ask an admin")
        if row.key_generation != me.key_generation or row.sealing_public != self.keys.session_sealing_public(me):
            raise Locked(
                f"the keys of {me.name!r} have changed since this session was unlocked",
                hint="run `credvault unlock` again",
            )

    def my_admin_row(self, s: Session) -> m.Engineer:
        row = self.my_row(s)
        if row.role != ROLE_ADMIN:
            raise AccessDenied(f"{row.name!r} is not an admin", hint="ask an admin to do this")
        return row

    # -- certificates and signatures ------------------------------------------------

    def org_public(self, s: Session) -> bytes:
        """The organisation key records are verified against: when a session is open, the
        current key reached from the one the acting engineer pinned (in their key record)
        by the signed forward chain (``_org_head``); else the stored one."""
        if self.keys.session is not None:
            return self.org_head(s, self.keys.session.org_signing_public)
        return self.core.info(s).org_signing_public

    def org_head(self, s: Session, pinned: bytes) -> bytes:
        """The current organisation key, trusted from ``pinned``: every key after the pinned
        one must be signed by the key before it, and the last must be the vault's current
        key. Checked once per transaction (held in ``s.info``)."""
        info: m.VaultInfo | None = s.info.get("vault_info")
        current = info.org_signing_public if info is not None else s.info.get("org_current")
        if current is None:
            current = self.core.info(s).org_signing_public
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
                *self.org_key_fields(s, key, head.public),
                what=f"organisation key version {key.version}",
            )
            head = key
        if head.public != current:
            raise UntrustedRecord("the vault's organisation key is not on the chain this engineer trusts")
        s.info["org_head"] = (pinned, current)
        return current

    def org_key_fields(self, s: Session, key: m.OrgKey, previous: bytes) -> tuple[signing.ContextItem, ...]:
        return org_key_fields(self.core.vid(s), key.version, key.public, previous, key.signed_at)

    def certificate_fields(self, s: Session, row: EngineerRecord) -> tuple[signing.ContextItem, ...]:
        return certificate_fields(self.core.vid(s), row)

    def verify_certificate(self, s: Session, row: EngineerRecord) -> None:
        if row.sealing_public is None or row.signing_public is None or row.certified_at is None:
            raise UntrustedRecord(
                f"engineer {row.name!r} has no confirmed keys", hint="an admin must run `credvault engineer confirm`"
            )
        signing.verify(
            self.org_public(s),
            row.certificate,
            LABEL_SIG_ENGINEER,
            *self.certificate_fields(s, row),
            what=f"the public keys of engineer {row.name!r}",
        )

    def sign_certificate(self, s: Session, row: m.Engineer, org: signing.SigningKey) -> None:
        row.certified_at = epoch(self.core.clock())
        row.certificate = org.sign(LABEL_SIG_ENGINEER, *self.certificate_fields(s, row))

    def key_fields(self, s: Session, key: m.EngineerKey, name: str) -> tuple[signing.ContextItem, ...]:
        return engineer_key_fields(self.core.vid(s), key, name)

    def record_engineer_key(self, s: Session, row: m.Engineer, org: signing.SigningKey) -> None:
        """Keep a certified copy of the engineer's current public keys (old events verify with it)."""
        assert row.sealing_public is not None and row.signing_public is not None and row.certified_at is not None
        existing = s.get(m.EngineerKey, (row.id, row.key_generation))
        key = existing or m.EngineerKey(engineer_id=row.id, generation=row.key_generation, state=ACTIVE)
        key.sealing_public, key.signing_public, key.certified_at = (
            row.sealing_public,
            row.signing_public,
            row.certified_at,
        )
        key.certificate = org.sign(LABEL_SIG_ENGINEER_KEY, *self.key_fields(s, key, row.name))
        if existing is None:
            s.add(key)

    def verified_key(self, s: Session, key: m.EngineerKey, name: str) -> bytes:
        return verify_engineer_key(self.core.vid(s), self.org_public(s), key, key.certificate, name)

    def verified_admin(self, s: Session, engineer_id: int) -> EngineerRecord:
        return self.check_admin(s, s.get(m.Engineer, engineer_id))

    def check_admin(self, s: Session, row: EngineerRecord | None) -> EngineerRecord:
        """The signer of a record (ORM or plain row): certified, an admin, active."""
        if row is None:
            raise UntrustedRecord("a record is signed by an unknown engineer")
        self.verify_certificate(s, row)
        if row.role != ROLE_ADMIN or row.status != ACTIVE:
            raise UntrustedRecord(f"a record is signed by {row.name!r}, who is not an active admin")
        return row

    def client_key_fields(self, s: Session, ck: m.ClientKey) -> tuple[signing.ContextItem, ...]:
        return client_key_fields(self.core.vid(s), ck)

    def verify_client_key_record(self, s: Session, ck: m.ClientKey) -> None:
        admin = self.verified_admin(s, ck.signed_by)
        assert admin.signing_public is not None
        signing.verify(
            admin.signing_public,
            ck.signature,
            LABEL_SIG_CLIENT_KEY,
            *self.client_key_fields(s, ck),
            what=f"client key version {ck.version}",
        )

    def newest_signed_key(self, s: Session, client_id: int) -> m.ClientKey | None:
        """The client's newest client-key version whose record an active admin signed.

        Versions only grow, and a rotation makes its new version current at once, so this
        is the version the admins made current; rows that do not verify (planted by a
        writer of the database) are passed over."""
        for ck in s.scalars(
            select(m.ClientKey).where(m.ClientKey.client_id == client_id).order_by(m.ClientKey.version.desc())
        ):
            try:
                self.verify_client_key_record(s, ck)
            except UntrustedRecord:
                continue
            return ck
        return None

    def current_key_version(self, s: Session, client: m.Client) -> int:
        """The client-key version new data is written under: the newest signed version, which
        must also be what ``clients.current_key_version`` says and must not be destroyed."""
        ck = self.newest_signed_key(s, client.id)
        if ck is None or ck.version != client.current_key_version or ck.state == "destroyed":
            raise IntegrityError(
                f"the current key of client #{client.id} is not its newest admin-signed key version",
                hint="the database was changed outside credvault; an admin can run `credvault rotate client SLUG`",
            )
        return ck.version

    def grant_fields(
        self, s: Session, grant: GrantRecord, sealing_public: bytes | None
    ) -> tuple[signing.ContextItem, ...]:
        return grant_fields(self.core.vid(s), grant, sealing_public)

    def verify_grant(
        self, s: Session, grant: GrantRecord, engineer: EngineerRecord, signer: EngineerRecord | None = None
    ) -> None:
        """The grant's signature, by an active admin: ``signer`` (their row, already checked) or looked up."""
        admin = signer if signer is not None else self.verified_admin(s, grant.granted_by)
        verify_grant(self.core.vid(s), grant, engineer, admin)

    def _revocation_fields(self, s: Session, grant: GrantRecord) -> tuple[signing.ContextItem, ...]:
        from vault.keyholder.grants import revocation_fields  # grants.py imports this module: the layout is there

        assert grant.revoked_at is not None
        return revocation_fields(self.core.vid(s), GrantRow(*(getattr(grant, f) for f in GrantRow._fields)))

    def revoke_grant(self, s: Session, grant: m.Grant, admin: m.Engineer) -> None:
        """Revoke one grant row with the acting admin's signature over the revocation."""
        grant.revoked_at = self.core.clock()
        grant.revoked_by = admin.id
        grant.revocation = self.keys.my_signing_key().sign(
            LABEL_SIG_GRANT_REVOCATION, *self._revocation_fields(s, grant)
        )

    # -- the root bundle (admins) -----------------------------------------------------

    def current_root(self, s: Session) -> m.RootKey:
        root = s.scalars(select(m.RootKey).where(m.RootKey.state == ACTIVE).order_by(m.RootKey.version.desc())).first()
        if root is None:
            raise UntrustedRecord("the vault has no active recovery key")
        return root

    def active_grant(self, s: Session, engineer: m.Engineer, client_id: int) -> m.Grant:
        grants = s.scalars(
            select(m.Grant)
            .where(m.Grant.engineer_id == engineer.id, m.Grant.client_id == client_id)
            .order_by(*GRANT_ORDER)
        ).all()
        return grants[self.first_valid_grant(s, grants, engineer, [None] * len(grants))]

    def first_valid_grant(
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
        return head_grant(
            self.core.vid(s),
            grants,
            signers,
            engineer,
            lambda grant, row: self.check_admin(s, row) if row else self.verified_admin(s, grant.granted_by),
            epoch(self.core.clock()),
        )
