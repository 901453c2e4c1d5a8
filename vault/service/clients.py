"""Clients and grants.

A client's slug, display name and lookup key are encrypted under its client key.
Admins find a client by its slug tag (HMAC under the organisation lookup key, which
only admins can derive); an engineer finds it by opening the slugs of the clients they
hold grants for, so without a grant they cannot even confirm that a slug exists.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vault.crypto import blobs, sealing, signing
from vault.crypto.labels import LABEL_SIG_CLIENT_KEY, LABEL_SIG_GRANT, LABEL_TAG_CLIENT_SLUG
from vault.errors import (
    AccessDenied,
    AlreadyExists,
    GrantExpired,
    InvalidInput,
    LookupMismatch,
    NotFound,
    VaultError,
)
from vault.service import policies, validation
from vault.service.base import ACTIVE, ROLE_ADMIN, epoch, is_revoked
from vault.service.grantledger import GrantHistory, GrantLedgerOps
from vault.service.records import ClientInfo, GrantInfo
from vault.service.rows import GRANT_ORDER, HasId
from vault.storage import models as m


class ClientOps(GrantLedgerOps):
    # -- finding clients ----------------------------------------------------------------

    def _client(self, s: Session, slug: str) -> m.Client:
        """The client ``slug`` if the acting engineer may see it, else NotFound."""
        validation.client_slug(slug)
        me = self._my_row(s)
        if me.role == ROLE_ADMIN:
            tag = signing.lookup_tag(self._root_bundle(s).lookup_key, LABEL_TAG_CLIENT_SLUG, slug)
            client = s.scalars(select(m.Client).where(m.Client.slug_tag == tag)).first()
            if client is not None:
                self._check_slug(s, client, client.slug_blob, slug)  # the tag is only a hint: a moved tag is refused
                return client
        else:
            known = self._slugs.get(slug)
            client = s.get(m.Client, known) if known is not None else None
            if client is not None:
                self._active_grant(s, me, client.id)  # the grant is checked on every call
                if self._slug(s, client) == slug:
                    return client
                del self._slugs[slug]  # a stale hint (the row now holds another slug): look again
            for client in self._granted_clients(s, me):
                found = self._client_field(s, client, client.slug_blob, "slug").decode("utf-8")
                self._slugs[found] = client.id
                if found == slug:
                    return client
            self._raise_if_expired(s, me, slug)
        raise NotFound(f"no client {slug!r} that you may see")

    def _check_slug(self, s: Session, client: HasId, slug_blob: bytes, slug: str) -> None:
        """The client found for ``slug`` by its lookup tag holds that slug in its encrypted
        slug (bound to the row by its associated data), else ``LookupMismatch``. The slug is
        opened once per blob and key (``_client_field``), so a repeated lookup costs nothing."""
        if self._client_field(s, client, slug_blob, "slug") != slug.encode("utf-8"):
            raise LookupMismatch(f"the client found for {slug!r} holds another slug: its lookup tag was moved")

    def _raise_if_expired(self, s: Session, me: m.Engineer, slug: str) -> None:
        """Say GrantExpired, not NotFound, while the expired grant's sealed copy still exists.

        The copy is opened only to match the slug for this error; nothing else is read.
        """
        now = epoch(self.clock())
        expired = s.scalars(
            select(m.Grant).where(
                m.Grant.engineer_id == me.id,
                m.Grant.revoked_at.is_(None),
                m.Grant.until.is_not(None),
                m.Grant.until <= now,
            )
        ).all()
        for grant in expired:
            client = s.get(m.Client, grant.client_id)
            seal = (
                s.get(m.ClientKeySeal, (grant.client_id, client.current_key_version, "engineer", me.id))
                if client
                else None
            )
            if client is None or seal is None:
                continue
            try:
                self._verify_grant(s, grant, me)
                version = client.current_key_version
                key = sealing.open_sealed(
                    self._my_keypair(), version, seal.blob, self._seal_context(s, client.id, version, "engineer", me.id)
                )
                found = blobs.decrypt_client_field(key, version, client.slug_blob, client.id, "slug").decode("utf-8")
            except VaultError:
                continue
            if found == slug:
                assert grant.until is not None
                until = dt.datetime.fromtimestamp(grant.until, dt.UTC).isoformat(timespec="minutes")
                raise GrantExpired(f"your grant for {slug!r} expired at {until}", hint="ask an admin to renew it")

    def _granted_clients(self, s: Session, me: m.Engineer) -> list[m.Client]:
        ids = s.scalars(
            select(m.Grant.client_id).where(m.Grant.engineer_id == me.id, m.Grant.revoked_at.is_(None)).distinct()
        ).all()
        out = []
        for client_id in ids:
            client = s.get(m.Client, client_id)
            if client is not None:
                try:
                    self._active_grant(s, me, client_id)
                except (AccessDenied, NotFound):
                    continue  # expired or revoked grants hide the client
                out.append(client)
        return out

    def _slug(self, s: Session, client: m.Client) -> str:
        return self._client_field(s, client, client.slug_blob, "slug").decode("utf-8")

    def _client_info(self, s: Session, client: m.Client) -> ClientInfo:
        count = s.scalar(select(func.count()).select_from(m.Secret).where(m.Secret.client_id == client.id)) or 0
        return ClientInfo(
            slug=self._slug(s, client),
            name=self._client_field(s, client, client.name_blob, "name").decode("utf-8"),
            key_version=client.current_key_version,
            secrets=int(count),
            created_at=client.created_at,
        )

    # -- clients ---------------------------------------------------------------------------

    def add_client(self, slug: str, name: str) -> ClientInfo:
        validation.client_slug(slug)
        name = validation.display_name(name)
        self._sweep()  # its own transaction: committed even if this operation fails
        with self.store.transaction() as s:
            admin = self._my_admin_row(s)
            bundle = self._root_bundle(s)
            tag = signing.lookup_tag(bundle.lookup_key, LABEL_TAG_CLIENT_SLUG, slug)
            if s.scalars(select(m.Client.id).where(m.Client.slug_tag == tag)).first() is not None:
                raise AlreadyExists(f"client {slug!r} already exists")
            now = self.clock()
            client = m.Client(
                slug_tag=tag, current_key_version=1, slug_blob=b"", name_blob=b"", lookup_key_blob=b"", created_at=now
            )
            s.add(client)
            s.flush()
            key = self._new_client_key_version(s, client.id, 1, admin)
            self._seal_client_key(s, client.id, 1, key, "recovery", bundle.version, bundle.recovery.public)
            client.slug_blob = blobs.encrypt_client_field(key, 1, slug.encode("utf-8"), client.id, "slug")
            client.name_blob = blobs.encrypt_client_field(key, 1, name.encode("utf-8"), client.id, "name")
            client.lookup_key_blob = blobs.encrypt_client_field(key, 1, blobs.new_key(), client.id, "lookup-key")
            self._count_encryptions(s, client.id, 1, 3)
            self._client_keys[(client.id, 1)] = key
            policy = m.ClientPolicy(
                client_id=client.id,
                reason_required=True,
                exclusive=False,
                rotate_after_checkout=False,
                checkout_minutes=policies.DEFAULT_CHECKOUT_MINUTES,
                updated_at=now,
            )
            policies.sign_policy(self._my_signing_key(), self._vid(s), policy, admin.id, epoch(now))
            s.add(policy)
            self._append(s, "client-create", client_id=client.id, details={"slug": slug})
            return ClientInfo(slug=slug, name=name, key_version=1, secrets=0, created_at=now)

    def _new_client_key_version(self, s: Session, client_id: int, version: int, admin: m.Engineer) -> bytes:
        """A fresh client key as ``version``: its record signed by the acting admin, cached."""
        key = blobs.new_key()
        now = self.clock()
        ck = m.ClientKey(
            client_id=client_id,
            version=version,
            state=ACTIVE,
            fingerprint=signing.client_key_fingerprint(key),
            signed_by=admin.id,
            signed_at=epoch(now),
            encryptions=0,
            created_at=now,
        )
        ck.signature = self._my_signing_key().sign(LABEL_SIG_CLIENT_KEY, *self._client_key_fields(s, ck))
        s.add(ck)
        s.flush()
        self._client_keys[(client_id, version)] = key
        return key

    def list_clients(self) -> list[ClientInfo]:
        """The clients the acting engineer may see (all of them for an admin)."""
        with self.store.transaction() as s:
            me = self._my_row(s)
            clients = s.scalars(select(m.Client)).all() if me.role == ROLE_ADMIN else self._granted_clients(s, me)
            self._append(s, "client-list", public={"count": len(clients)})
            return sorted((self._client_info(s, c) for c in clients), key=lambda c: c.slug)

    def show_client(self, slug: str) -> ClientInfo:
        with self.store.transaction() as s:
            client = self._client(s, slug)
            self._append(s, "client-view", client_id=client.id)
            return self._client_info(s, client)

    # -- grants --------------------------------------------------------------------------------

    def grant(
        self, engineer: str, client: str, *, until: dt.datetime | None = None, reason: str | None = None
    ) -> GrantInfo:
        """Seal the client's keys to the engineer's certified public key, and sign the grant."""
        now = self.clock()
        validation.field_value("reason", reason)
        if until is not None and until.tzinfo is None:
            until = until.replace(tzinfo=dt.UTC)  # a time without a zone is UTC
        if until is not None and until <= now:
            raise InvalidInput("the grant's --until time is in the past")
        self._sweep()  # its own transaction: committed even if this operation fails
        with self.store.transaction() as s:
            admin = self._my_admin_row(s)
            target = self._engineer_row(s, engineer)
            _lock_grants_of(s, target)
            self._verify_certificate(s, target)  # a swapped public key is refused here
            if target.status != ACTIVE:
                raise InvalidInput(f"engineer {engineer!r} is {target.status}, not active")
            if target.role == ROLE_ADMIN:
                raise InvalidInput(f"{engineer!r} is an admin and can already read every client")
            row = self._client(s, client)
            ledger = s.scalars(
                select(m.Grant).where(m.Grant.engineer_id == target.id, m.Grant.client_id == row.id)
            ).all()
            for old in ledger:
                if not is_revoked(old):
                    self._revoke_grant(s, old, admin)  # a new grant replaces the old one, signed
            grant = m.Grant(
                engineer_id=target.id,
                client_id=row.id,
                granted_by=admin.id,
                signed_at=epoch(now),
                until=epoch(until) if until else None,
                created_at=now,
                seq=max((g.seq or 0 for g in ledger), default=0) + 1,
            )
            s.add(grant)
            s.flush()
            event = self._append(
                s,
                "grant",
                client_id=row.id,
                details={
                    "engineer": engineer,
                    "until": grant.until,
                    "reason": reason,
                    "grant": grant.id,
                    "seq": grant.seq,
                },
            )
            grant.event_seq = event.seq
            grant.signature = self._my_signing_key().sign(
                LABEL_SIG_GRANT, *self._grant_fields(s, grant, target.sealing_public)
            )
            assert target.sealing_public is not None
            for ck in s.scalars(
                select(m.ClientKey).where(m.ClientKey.client_id == row.id, m.ClientKey.state != "destroyed")
            ):
                key = self._client_key(s, row.id, ck.version)
                self._seal_client_key(s, row.id, ck.version, key, "engineer", target.id, target.sealing_public)
            return self._grant_info(s, grant, "active")

    def revoke(self, engineer: str, client: str) -> int:
        """Revoke the engineer's grants for the client (each revocation signed) and delete
        their sealed key copies."""
        self._sweep()  # its own transaction: committed even if this operation fails
        with self.store.transaction() as s:
            admin = self._my_admin_row(s)
            target = self._engineer_row(s, engineer)
            _lock_grants_of(s, target)
            row = self._client(s, client)
            grants = [
                g
                for g in s.scalars(
                    select(m.Grant).where(m.Grant.engineer_id == target.id, m.Grant.client_id == row.id)
                )
                if not is_revoked(g)
            ]
            if not grants:
                raise NotFound(f"{engineer!r} holds no grant for {client!r}")
            for grant in grants:
                self._revoke_grant(s, grant, admin)
            self._delete_seals(s, row.id, target.id)
            self._append(
                s,
                "revoke",
                client_id=row.id,
                details={"engineer": engineer, "grants": len(grants), "grant_ids": [g.id for g in grants]},
            )
            return len(grants)

    def list_grants(self, *, engineer: str | None = None, client: str | None = None) -> list[GrantInfo]:
        """Grant rows with their state: ``active`` only for the newest signed entry of its
        (engineer, client) that is unrevoked and unexpired (and, for an admin, that the
        audit log confirms); else ``revoked``, ``expired``, ``superseded`` or ``unverified``."""
        with self.store.transaction() as s:
            me = self._my_row(s)
            query = select(m.Grant).order_by(*GRANT_ORDER)
            if engineer is not None:
                query = query.where(m.Grant.engineer_id == self._engineer_row(s, engineer).id)
            if me.role != ROLE_ADMIN:
                query = query.where(m.Grant.engineer_id == me.id)
            if client is not None:
                query = query.where(m.Grant.client_id == self._client(s, client).id)
            ledgers: dict[tuple[int, int], list[m.Grant]] = {}
            for grant in s.scalars(query):
                ledgers.setdefault((grant.engineer_id, grant.client_id), []).append(grant)
            history = self._grant_history(s, {c for _, c in ledgers}) if me.role == ROLE_ADMIN else None
            out = []
            for (engineer_id, client_id), grants in ledgers.items():
                states = self._ledger_states(s, engineer_id, client_id, grants, history)
                for grant in grants:
                    try:
                        out.append((grant.id, self._grant_info(s, grant, states[grant.id])))
                    except (NotFound, AccessDenied):
                        continue  # the viewer can no longer open that client's slug
            return [info for _, info in sorted(out, key=lambda pair: pair[0])]

    def _ledger_states(
        self, s: Session, engineer_id: int, client_id: int, grants: list[m.Grant], history: GrantHistory | None
    ) -> dict[int, str]:
        target = s.get(m.Engineer, engineer_id)
        assert target is not None
        head, bad = self._ledger_head(s, grants, target)
        states = {g.id: "unverified" for g, _ in bad}
        for grant in grants:
            if grant.id in states:
                continue
            if is_revoked(grant):
                states[grant.id] = "revoked"
            elif grant is not head:
                states[grant.id] = "superseded"
            elif not self._is_live(grant):
                states[grant.id] = "expired"
            elif history is not None and history.confirms(target.name, client_id, grant) is not None:
                states[grant.id] = "unconfirmed"  # the audit log does not back it: it counts for nothing
            else:
                states[grant.id] = "active"
        return states

    # -- expiry -----------------------------------------------------------------------------------------

    def _sweep_expired_grants(self, s: Session) -> int:
        """Revoke (signed) the grants past their until, and delete the sealed key copies of
        every (engineer, client) whose ledger has no live verified entry left; returns how
        many copies were deleted. A row that does not verify never stops the sweep."""
        now = epoch(self.clock())
        expired = [
            g
            for g in s.scalars(select(m.Grant).where(m.Grant.until.is_not(None), m.Grant.until <= now))
            if not is_revoked(g)
        ]
        if not expired:
            return 0
        admin = self._my_admin_row(s)
        removed = 0
        for engineer_id, client_id in sorted({(g.engineer_id, g.client_id) for g in expired}):
            target = s.get(m.Engineer, engineer_id)
            ledger = s.scalars(
                select(m.Grant)
                .where(m.Grant.engineer_id == engineer_id, m.Grant.client_id == client_id)
                .order_by(*GRANT_ORDER)
            ).all()
            head = self._ledger_head(s, ledger, target)[0] if target is not None else None
            if self._is_live(head):
                continue
            removed += len(
                s.scalars(
                    select(m.ClientKeySeal.version).where(
                        m.ClientKeySeal.client_id == client_id,
                        m.ClientKeySeal.recipient_kind == "engineer",
                        m.ClientKeySeal.recipient_id == engineer_id,
                    )
                ).all()
            )
            self._delete_seals(s, client_id, engineer_id)
        for grant in expired:
            self._revoke_grant(s, grant, admin)
        self._append(s, "grants-expired", public={"grants": len(expired), "sealed_copies_deleted": removed})
        return removed

    def _sweep(self) -> int:
        """Sweep expired grants as the acting admin, in a transaction of its own."""
        with self.store.transaction() as s:
            self._my_admin_row(s)
            return self._sweep_expired_grants(s)

    def maintain(self) -> int:
        """Admin housekeeping: delete key copies of expired grants. Returns copies deleted."""
        with self.store.transaction() as s:
            self._my_admin_row(s)
            return self._sweep_expired_grants(s)

    def _engineer_row(self, s: Session, name: str) -> m.Engineer:
        row = s.scalars(select(m.Engineer).where(m.Engineer.name == validation.engineer_name(name))).first()
        if row is None:
            raise NotFound(f"no engineer named {name!r}", hint="`credvault engineer list` shows them")
        return row

    def _grant_info(self, s: Session, grant: m.Grant, state: str) -> GrantInfo:
        engineer = s.get(m.Engineer, grant.engineer_id)
        admin = s.get(m.Engineer, grant.granted_by)
        client = s.get(m.Client, grant.client_id)
        if engineer is None or client is None:
            raise NotFound("the grant names an engineer or client that is gone")
        until = dt.datetime.fromtimestamp(grant.until, dt.UTC) if grant.until else None
        signer = admin.name if admin is not None else f"#{grant.granted_by}"
        return GrantInfo(engineer.name, self._slug(s, client), signer, grant.created_at, until, state)


def _lock_grants_of(s: Session, engineer: m.Engineer) -> None:
    """Serialise grant changes for one engineer: on PostgreSQL (READ COMMITTED) a grant and a
    revoke that overlap would otherwise each act on the grant rows they read before the other
    committed (a revoke could delete the key copy of a grant it never saw). The row lock makes
    the second wait, and its next statements see what the first committed. SQLite's writer
    lock (BEGIN IMMEDIATE) already serialises them; FOR UPDATE is a no-op there."""
    s.execute(select(m.Engineer.id).where(m.Engineer.id == engineer.id).with_for_update())
