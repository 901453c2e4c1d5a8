"""Tables of the vault (docs/format.md §7). Only ids, enums, times, key versions,
public keys, signatures, lookup tags and ciphertext blobs are stored here.

The schema is made by Alembic migrations only (migrations/); a test checks that these
models and the migrations agree on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql import false, text

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# Ids name clients, secrets and engineers in audit events and purge receipts: SQLite must
# never reuse the id of a deleted row (AUTOINCREMENT; PostgreSQL sequences never do).
AUTOINCREMENT = {"sqlite_autoincrement": True}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on both engines (SQLite keeps no zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class VaultInfo(Base):
    __tablename__ = "vault_info"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    vault_id: Mapped[bytes] = mapped_column(LargeBinary(16))
    format_version: Mapped[int] = mapped_column(Integer)
    org_signing_public: Mapped[bytes] = mapped_column(LargeBinary(32))
    backup_key_seal: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    retention_versions: Mapped[int] = mapped_column(Integer, default=10, server_default="10")
    cryptoperiod_days: Mapped[int] = mapped_column(Integer, default=365, server_default="365")
    # The two settings above, signed by an admin (docs/format.md, "Signed settings").
    settings_signed_by: Mapped[int | None] = mapped_column(Integer, nullable=True)
    settings_signed_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    settings_signature: Mapped[bytes | None] = mapped_column(LargeBinary(64), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class OrgKey(Base):
    """The organisation signing keys, oldest first: each later one signed by the one before.

    Engineers pin one of them in their key record and follow the signed chain forward to
    the current one (``vault_info.org_signing_public``)."""

    __tablename__ = "org_keys"
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    public: Mapped[bytes] = mapped_column(LargeBinary(32))
    signed_at: Mapped[int] = mapped_column(BigInteger)
    signature: Mapped[bytes | None] = mapped_column(LargeBinary(64), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # k-of-n of the recovery shares of the root bundle holding this key, signed by this key
    # (None: the vault issues no shares)
    share_threshold: Mapped[int | None] = mapped_column(Integer, nullable=True)
    share_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    share_signature: Mapped[bytes | None] = mapped_column(LargeBinary(64), nullable=True)


class RootKey(Base):
    __tablename__ = "root_keys"
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    recovery_public: Mapped[bytes] = mapped_column(LargeBinary(32))
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    retired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    destroyed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Engineer(Base):
    __tablename__ = "engineers"
    __table_args__ = (AUTOINCREMENT,)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    key_generation: Mapped[int] = mapped_column(Integer, default=0)
    sealing_public: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)
    signing_public: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)
    key_record: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    invite_seal: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    invite_root_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    invite_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    enroll_mac: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)
    certificate: Mapped[bytes | None] = mapped_column(LargeBinary(64), nullable=True)
    certified_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The invitation, signed by the inviting admin (docs/format.md §5): NULL once confirmed,
    # and on invitations made before revision 0010 (refused at enrolment and confirmation).
    # Deferred: loaded only by the invitation's own paths, so that every other operation
    # still works on a schema older than 0010 until `credvault db upgrade`.
    invite_signature: Mapped[bytes | None] = mapped_column(
        LargeBinary(64), nullable=True, deferred=True, deferred_group="invite"
    )
    invite_signed_by: Mapped[int | None] = mapped_column(Integer, nullable=True, deferred=True, deferred_group="invite")
    invite_prev_generation: Mapped[int | None] = mapped_column(
        Integer, nullable=True, deferred=True, deferred_group="invite"
    )
    # The public half of the key the enrolment code's secret derives (``signing.invite_auth_key``,
    # revision 0018): how the team server checks an enrolling person's code. Not signed by the
    # admin: a writer who replaces it gets past the server's check only, never the confirming
    # admin's check of the enrolment MAC (made with the secret itself).
    invite_auth_public: Mapped[bytes | None] = mapped_column(
        LargeBinary(32), nullable=True, deferred=True, deferred_group="invite"
    )


class EngineerKey(Base):
    """Every certified key generation of an engineer, kept so old audit events verify."""

    __tablename__ = "engineer_keys"
    engineer_id: Mapped[int] = mapped_column(ForeignKey("engineers.id", ondelete="CASCADE"), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    sealing_public: Mapped[bytes] = mapped_column(LargeBinary(32))
    signing_public: Mapped[bytes] = mapped_column(LargeBinary(32))
    certified_at: Mapped[int] = mapped_column(BigInteger)
    certificate: Mapped[bytes] = mapped_column(LargeBinary(64))
    state: Mapped[str] = mapped_column(String(16))
    destroyed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Rotation(Base):
    """A client-key rotation in progress or done; batches resume from here."""

    __tablename__ = "rotations"
    __table_args__ = (AUTOINCREMENT,)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), index=True)
    from_version: Mapped[int] = mapped_column(Integer)
    to_version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    total: Mapped[int] = mapped_column(BigInteger)
    done: Mapped[int] = mapped_column(BigInteger)
    started_by: Mapped[int] = mapped_column(ForeignKey("engineers.id"))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class RootSeal(Base):
    __tablename__ = "root_seals"
    root_version: Mapped[int] = mapped_column(ForeignKey("root_keys.version", ondelete="CASCADE"), primary_key=True)
    engineer_id: Mapped[int] = mapped_column(ForeignKey("engineers.id", ondelete="CASCADE"), primary_key=True)
    blob: Mapped[bytes] = mapped_column(LargeBinary)


class Client(Base):
    __tablename__ = "clients"
    __table_args__ = (AUTOINCREMENT,)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug_tag: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    current_key_version: Mapped[int] = mapped_column(Integer)
    slug_blob: Mapped[bytes] = mapped_column(LargeBinary)
    name_blob: Mapped[bytes] = mapped_column(LargeBinary)
    lookup_key_blob: Mapped[bytes] = mapped_column(LargeBinary)
    audit_keys_blob: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    backup_key_blob: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class ClientKey(Base):
    __tablename__ = "client_keys"
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    state: Mapped[str] = mapped_column(String(16))
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary(16))
    signed_by: Mapped[int] = mapped_column(ForeignKey("engineers.id"))
    signature: Mapped[bytes | None] = mapped_column(LargeBinary(64), nullable=True)
    signed_at: Mapped[int] = mapped_column(BigInteger)
    encryptions: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    retired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    destroyed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ClientKeySeal(Base):
    __tablename__ = "client_key_seals"
    __table_args__ = (
        ForeignKeyConstraint(
            ["client_id", "version"], ["client_keys.client_id", "client_keys.version"], ondelete="CASCADE"
        ),
    )
    client_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    recipient_kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    recipient_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    blob: Mapped[bytes] = mapped_column(LargeBinary)


class Grant(Base):
    __tablename__ = "grants"
    # A checkout reads an engineer's grants for one client: one index seek, however many
    # clients the engineer holds (its prefix serves the queries by engineer alone).
    __table_args__ = (Index("ix_grants_engineer_client", "engineer_id", "client_id"), AUTOINCREMENT)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    engineer_id: Mapped[int] = mapped_column(ForeignKey("engineers.id"))
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), index=True)
    granted_by: Mapped[int] = mapped_column(ForeignKey("engineers.id"))
    signed_at: Mapped[int] = mapped_column(BigInteger)
    until: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    signature: Mapped[bytes | None] = mapped_column(LargeBinary(64), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The grant ledger (docs/format.md §5): the signed position of this grant among the
    # grants of its (engineer, client), NULL on rows signed before revision 0007; the
    # audit event that recorded it; and the admin's signature over its revocation.
    seq: Mapped[int | None] = mapped_column(Integer, nullable=True)
    event_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    revoked_by: Mapped[int | None] = mapped_column(Integer, nullable=True)
    revocation: Mapped[bytes | None] = mapped_column(LargeBinary(64), nullable=True)
    # A grant made through the team server (revision 0019): the request id its signature
    # binds in place of ``event_seq`` (format 3 of the grant, docs/format.md §5); else NULL.
    request_id: Mapped[bytes | None] = mapped_column(LargeBinary(16), nullable=True)


class Secret(Base):
    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("client_id", "name_tag"), AUTOINCREMENT)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), index=True)
    name_tag: Mapped[bytes] = mapped_column(LargeBinary(32))
    kind: Mapped[str] = mapped_column(String(16))
    current_version: Mapped[int] = mapped_column(Integer)
    must_change: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class SecretVersion(Base):
    __tablename__ = "secret_versions"
    secret_id: Mapped[int] = mapped_column(ForeignKey("secrets.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    key_version: Mapped[int] = mapped_column(Integer)
    wrapped_dek: Mapped[bytes] = mapped_column(LargeBinary)
    password_blob: Mapped[bytes] = mapped_column(LargeBinary)
    metadata_blob: Mapped[bytes] = mapped_column(LargeBinary)
    created_by: Mapped[int] = mapped_column(ForeignKey("engineers.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class ClientPolicy(Base):
    """Per-client access policy, set by an admin (defaults: reason required)."""

    __tablename__ = "client_policies"
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True)
    reason_required: Mapped[bool] = mapped_column(Boolean, default=True)
    exclusive: Mapped[bool] = mapped_column(Boolean, default=False)
    rotate_after_checkout: Mapped[bool] = mapped_column(Boolean, default=False)
    checkout_minutes: Mapped[int] = mapped_column(Integer, default=120)
    stale_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # Every field above but ``updated_at``, signed by an admin (docs/format.md, "Signed policies").
    signed_by: Mapped[int | None] = mapped_column(Integer, nullable=True)
    signed_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    signature: Mapped[bytes | None] = mapped_column(LargeBinary(64), nullable=True)


OPEN = text("released_at IS NULL")


class Checkout(Base):
    __tablename__ = "checkouts"
    # The open checkouts of a secret are found by a seek on this partial index: the cost of
    # a checkout does not grow with the secret's past checkouts, released or expired.
    __table_args__ = (
        Index("ix_checkouts_open", "secret_id", "expires_at", sqlite_where=OPEN, postgresql_where=OPEN),
        AUTOINCREMENT,
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    secret_id: Mapped[int] = mapped_column(ForeignKey("secrets.id", ondelete="CASCADE"), index=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), index=True)
    engineer_id: Mapped[int] = mapped_column(ForeignKey("engineers.id"), index=True)
    exclusive: Mapped[bool] = mapped_column(Boolean)
    event_seq: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    released_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    released_by: Mapped[int | None] = mapped_column(ForeignKey("engineers.id"), nullable=True)


class AuditHead(Base):
    """The single row every append locks: it serialises writers of the chain."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


# The events that certify and retire engineer keys (and the invitations enrolments follow):
# verification reads them first, in order, to know when each key may sign (docs/format.md
# §8.1). A partial index, so that finding them does not read the whole log and appending
# any other event costs nothing more. The verifier's query uses this exact text.
KEY_EVENT_ACTIONS = (
    "vault-init",
    "engineer-invite",
    "enroll",
    "engineer-confirm",
    "engineer-key-rotate",
    "engineer-remove",
    "server-key-recover",  # an admin's, in format 2 (revision 0023): the verifier checks the signer was one
)
KEY_EVENTS = text("action IN (" + ", ".join(f"'{a}'" for a in KEY_EVENT_ACTIONS) + ")")
WITH_REQUEST = text("request_id IS NOT NULL")  # format-3 events: they name the request they record


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_key", "seq", sqlite_where=KEY_EVENTS, postgresql_where=KEY_EVENTS),
        # One event per action of an engineer's request (revision 0016): a retry is answered from it.
        Index(
            "ux_audit_events_request",
            "engineer_id",
            "request_id",
            "action",
            unique=True,
            sqlite_where=WITH_REQUEST,
            postgresql_where=WITH_REQUEST,
        ),
    )
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at_us: Mapped[int] = mapped_column(BigInteger)
    engineer_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    key_generation: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(32))
    client_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    secret_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    key_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    details_blob: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    details_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    prev_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    signature: Mapped[bytes | None] = mapped_column(LargeBinary(64), nullable=True)
    # Format 3 (docs/format.md §8.2, revision 0014): the engineer's signed request and the server
    # key that signed the event (``signature``); NULL on format-1/2 rows.
    request_id: Mapped[bytes | None] = mapped_column(LargeBinary(16), nullable=True)
    request_digest: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)
    request_sig: Mapped[str | None] = mapped_column(Text, nullable=True)
    request_body: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    server_key_version: Mapped[int | None] = mapped_column(Integer, nullable=True)


class PurgeReceipt(Base):
    """A signed, keyless record that a purge happened (readable without any client key)."""

    __tablename__ = "purge_receipts"
    __table_args__ = (AUTOINCREMENT,)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    request_ref: Mapped[str] = mapped_column(String(64))
    client_id: Mapped[int] = mapped_column(Integer)
    secret_ids: Mapped[str] = mapped_column(Text)  # unbounded: a client may have thousands of secrets
    counts: Mapped[str] = mapped_column(Text)
    fingerprints: Mapped[str] = mapped_column(Text)
    admin_id: Mapped[int] = mapped_column(ForeignKey("engineers.id"))
    admin_generation: Mapped[int] = mapped_column(Integer)
    purged_at: Mapped[int] = mapped_column(BigInteger)
    event_seq: Mapped[int] = mapped_column(BigInteger)
    signature: Mapped[bytes] = mapped_column(LargeBinary(64))
    # A client purge through the team server (revision 0021): the request id its signature binds
    # in place of ``event_seq`` (``LABEL_SIG_RECEIPT_V3``, docs/format.md §10); else NULL.
    request_id: Mapped[bytes | None] = mapped_column(LargeBinary(16), nullable=True)


class RequestNonce(Base):
    """A nonce a signed server request used (docs/server.md §3): refused if seen again."""

    __tablename__ = "request_nonces"
    keyid: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[int] = mapped_column(BigInteger, index=True)  # the request's `created`, seconds


class AuthFailure(Base):
    """Failed authentications of one engineer in one fixed window (docs/server.md §3)."""

    __tablename__ = "auth_failures"
    engineer_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    count: Mapped[int] = mapped_column(Integer)


class ServerClientKey(Base):
    """A client's server client key under the server master key (docs/format.md §4.8): the key
    of the server's layer over that client's wrapped data keys; a purge deletes it."""

    __tablename__ = "server_client_keys"
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    blob: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(16))


class ServerKey(Base):
    """A version of the team server's signing key, certified by the organisation key
    (docs/format.md §5, "Server signing keys"); ``state`` is the server's choice of key, signed
    by nobody."""

    __tablename__ = "server_keys"
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    signing_public: Mapped[bytes] = mapped_column(LargeBinary(32))
    certified_at: Mapped[int] = mapped_column(BigInteger)  # seconds, signed in the certificate
    certificate: Mapped[bytes] = mapped_column(LargeBinary(64))
    state: Mapped[str] = mapped_column(String(16))


class IdReservation(Base):
    """A new row's id handed out by a draft (docs/server.md §4 rule 2): the keyholder binds it in
    associated data before the commit inserts the row. ``kind`` names the table ("secret"); taken
    from that table's sequence, so an unused id is a gap, never reused; a row is deleted by the
    commit that uses it, or once expired (5 minutes) by the next reservation."""

    __tablename__ = "id_reservations"
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    engineer_id: Mapped[int] = mapped_column(ForeignKey("engineers.id", ondelete="CASCADE"))
    reserved_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
