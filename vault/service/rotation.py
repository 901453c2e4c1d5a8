"""Key rotation without downtime: client keys, the root key, secret values.

A client-key rotation has three steps, each its own transaction, so a crash or Ctrl-C
at any point leaves a vault that reads correctly and a rotation that ``resume`` ends:

1. **start**: a new client-key version is made, signed and sealed to the recovery key
   and to every current grantee; the client's own fields and audit-key ring move to it
   and it becomes current at once (new writes use it). The old version is *retiring*.
2. **re-wrap**: data keys still wrapped by a retiring version are re-wrapped in batches.
   Reads keep working throughout: each row names the version that wraps it.
3. **finish**: once nothing refers to a retiring version, its sealed copies are deleted
   and it is marked *destroyed* (its fingerprint stays, for purge receipts).

The root key (and with it the organisation key) rotates in rootrotation.py.
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, cast

from sqlalchemy import Connection, Table, bindparam, delete, func, select, tuple_, update
from sqlalchemy.orm import Session

from vault.crypto import blobs
from vault.errors import (
    InvalidInput,
    VaultError,
)
from vault.service import policies
from vault.service.core import ACTIVE, check_share_policy, epoch
from vault.service.passwords import generate_password
from vault.service.records import RootRotation, RotationInfo, SecretInfo
from vault.service.retrying import again_on_conflict
from vault.service.rows import GRANT_ORDER
from vault.storage import models as m

if TYPE_CHECKING:
    from vault.authority.journal import Journal
    from vault.keyholder.keys import Keys
    from vault.keyholder.trust import Trust
    from vault.service.clients import Clients
    from vault.service.core import Core
    from vault.service.grantledger import GrantLedger
    from vault.service.policies import PolicyCheck
    from vault.service.rootrotation import RootRotator
    from vault.service.secrets import Secrets


Progress = Callable[[int, int], None]
RETIRING, DESTROYED, RUNNING, DONE, SUPERSEDED = "retiring", "destroyed", "running", "done", "superseded"
DEFAULT_BATCH = 2000


# -- the re-wrap walk -------------------------------------------------------------------------

_SECRETS, _VERSIONS = cast(Table, m.Secret.__table__), cast(Table, m.SecretVersion.__table__)

# The walk's statements, built once. A window is at most ``batch_size`` of the client's
# secrets from the ``(client_id, id)`` index: its last id, then its versions still to do.
_WINDOW_END = (
    select(_SECRETS.c.id)
    .where(_SECRETS.c.client_id == bindparam("client"), _SECRETS.c.id >= bindparam("from_id"))
    .order_by(_SECRETS.c.id)
    .offset(bindparam("skip"))
    .limit(1)
)
_TO_DO = (
    select(_VERSIONS.c.secret_id, _VERSIONS.c.version, _VERSIONS.c.key_version, _VERSIONS.c.wrapped_dek)
    .join(_SECRETS, _SECRETS.c.id == _VERSIONS.c.secret_id)
    .where(
        _SECRETS.c.client_id == bindparam("client"),
        _SECRETS.c.id >= bindparam("from_id"),
        _VERSIONS.c.key_version != bindparam("new_version"),
        tuple_(_VERSIONS.c.secret_id, _VERSIONS.c.version) > tuple_(bindparam("from_id"), bindparam("after")),
    )
    .order_by(_VERSIONS.c.secret_id, _VERSIONS.c.version)
    .limit(bindparam("rows"))
)
_TO_DO_IN_WINDOW = _TO_DO.where(_SECRETS.c.id <= bindparam("to_id"))
# One UPDATE by primary key, run as an executemany over the batch (Core: no ORM objects).
_REWRAP = (
    update(_VERSIONS)
    .where(_VERSIONS.c.secret_id == bindparam("sid"), _VERSIONS.c.version == bindparam("ver"))
    .values(key_version=bindparam("kv"), wrapped_dek=bindparam("dek"))
)
_REWRAP_SQL: dict[tuple[str, str], str] = {}  # (dialect, paramstyle) -> _REWRAP compiled, positional

Rows = Sequence[tuple[int, int, int, bytes]]  # (secret id, version, key version, wrapped data key)


def _next_rows(
    s: Session, client_id: int, new_version: int, cursor: tuple[int, int], batch_size: int
) -> tuple[Rows, tuple[int, int]]:
    """The next (up to ``batch_size``) versions of the client's secrets after ``cursor`` whose
    data key is not yet under ``new_version``, in key order, and the cursor past them.

    Each query is bounded by a window of at most ``batch_size`` secrets, so a batch costs the
    same at the start and at the end of a walk over N secrets (no rescan, no sort of the rest)."""
    conn = s.connection()
    params = {"client": client_id, "new_version": new_version, "skip": batch_size - 1, "rows": batch_size}
    while True:
        params |= {"from_id": cursor[0], "after": cursor[1]}
        upper = conn.execute(_WINDOW_END, params).scalar()
        if upper is None:  # the last window: nothing after it
            rows = conn.execute(_TO_DO, params).all()
            return rows, (rows[-1][0], rows[-1][1]) if rows else cursor
        rows = conn.execute(_TO_DO_IN_WINDOW, params | {"to_id": upper}).all()
        if len(rows) == batch_size:
            return rows, (rows[-1][0], rows[-1][1])
        cursor = (int(upper) + 1, 0)  # this window is done: the next one starts after it
        if rows:
            return rows, cursor


def _old_versions_in_use(s: Session, client_id: int, new_version: int) -> dict[int, int]:
    """How many of the client's data keys each version other than ``new_version`` wraps."""
    counts = s.execute(
        select(_VERSIONS.c.key_version, func.count())
        .join(_SECRETS, _SECRETS.c.id == _VERSIONS.c.secret_id)
        .where(_SECRETS.c.client_id == client_id, _VERSIONS.c.key_version != new_version)
        .group_by(_VERSIONS.c.key_version)
    )
    return {int(version): int(n) for version, n in counts}


def _write_rewrapped(conn: Connection, new_version: int, rows: Rows, rewrapped: list[bytes]) -> None:
    """``_REWRAP`` for every row, as one executemany. Where the driver takes positional
    parameters (SQLite) the compiled statement goes to it with plain tuples: SQLAlchemy's
    per-row parameter processing would cost about as much as the cryptography."""
    dialect = conn.dialect
    if dialect.positional:
        sql = _REWRAP_SQL.get((dialect.name, dialect.paramstyle))
        if sql is None:
            compiled = _REWRAP.compile(dialect=dialect)
            assert compiled.positiontup == ["kv", "dek", "sid", "ver"], compiled.positiontup
            sql = _REWRAP_SQL[(dialect.name, dialect.paramstyle)] = compiled.string
        conn.exec_driver_sql(
            sql, [(new_version, dek, row[0], row[1]) for row, dek in zip(rows, rewrapped, strict=True)]
        )
    else:
        conn.execute(
            _REWRAP,
            [
                {"sid": row[0], "ver": row[1], "kv": new_version, "dek": dek}
                for row, dek in zip(rows, rewrapped, strict=True)
            ],
        )


class KeyRotation:
    """Keys: ``vault.keys.rotate_client/resume/list/rotate_secret/rotate_root/versions``,
    ``set_retention`` and ``set_cryptoperiod``."""

    def __init__(
        self,
        core: Core,
        keys: Keys,
        trust: Trust,
        journal: Journal,
        ledger: GrantLedger,
        policy_check: PolicyCheck,
        clients: Clients,
        secrets: Secrets,
        root_rotator: RootRotator,
    ) -> None:
        self.core = core
        self.keys = keys
        self.trust = trust
        self.journal = journal
        self.ledger = ledger
        self.policy_check = policy_check
        self.clients = clients
        self.secrets = secrets
        self.root_rotator = root_rotator
        self._cursors: dict[int, tuple[int, int]] = {}  # rotation id -> last re-wrapped (secret id, version)

    def rotate_client(
        self, client: str, *, batch_size: int = DEFAULT_BATCH, progress: Progress | None = None
    ) -> RotationInfo:
        """Rotate a client's key: a new version now, data keys re-wrapped in batches."""
        with self.core.store.transaction() as s:
            self.trust.my_admin_row(s)
            row = self.clients.client(s, client)
            running = s.scalars(
                select(m.Rotation).where(m.Rotation.client_id == row.id, m.Rotation.state == RUNNING)
            ).first()
            if running is not None:
                raise InvalidInput(
                    f"a rotation of {client!r} is already under way", hint="run `credvault rotate resume`"
                )
            rotation_id = self.start_client_rotation(s, row)
        return self.run_rotation(rotation_id, batch_size, progress)

    def resume(
        self, *, batch_size: int = DEFAULT_BATCH, progress: Progress | None = None
    ) -> builtins.list[RotationInfo]:
        """Finish every rotation a crash or an interrupt left under way."""
        with self.core.store.transaction() as s:
            self.trust.my_admin_row(s)
            ids = list(s.scalars(select(m.Rotation.id).where(m.Rotation.state == RUNNING).order_by(m.Rotation.id)))
        return [self.run_rotation(rotation_id, batch_size, progress) for rotation_id in ids]

    def list(self, *, running_only: bool = False) -> builtins.list[RotationInfo]:
        with self.core.store.transaction() as s:
            self.trust.my_admin_row(s)
            query = select(m.Rotation).order_by(m.Rotation.id)
            if running_only:
                query = query.where(m.Rotation.state == RUNNING)
            return [self._rotation_info(s, r) for r in s.scalars(query)]

    def start_client_rotation(self, s: Session, client: m.Client) -> int:
        """Start a rotation of ``client``; a rotation already running is superseded by it
        (its data keys are re-wrapped again, to the new version)."""
        admin = self.trust.my_admin_row(s)
        for running in s.scalars(
            select(m.Rotation).where(m.Rotation.client_id == client.id, m.Rotation.state == RUNNING)
        ):
            running.state, running.finished_at = SUPERSEDED, self.core.clock()
        bundle = self.keys.root_bundle(s)
        old_version = self.trust.current_key_version(s, client)
        old_key = self.keys.client_key(s, client.id, old_version)
        ring = self.journal.audit_keys.audit_ring(s, client)
        slug = self.keys.client_field(s, client, client.slug_blob, "slug")
        name = self.keys.client_field(s, client, client.name_blob, "name")
        lookup = self.keys.client_field(s, client, client.lookup_key_blob, "lookup-key")
        backup_key = None
        if client.backup_key_blob is not None:
            backup_key = self.keys.client_field(s, client, client.backup_key_blob, "backup-key")
        del old_key
        new_version = (
            s.scalar(select(func.max(m.ClientKey.version)).where(m.ClientKey.client_id == client.id)) or 0
        ) + 1
        key = self.clients.new_client_key_version(s, client.id, new_version, admin)
        now = self.core.clock()
        self.keys.seal_client_key(s, client.id, new_version, key, "recovery", bundle.version, bundle.recovery.public)
        for grantee in self._current_grantees(s, client.id):
            assert grantee.sealing_public is not None
            self.keys.seal_client_key(s, client.id, new_version, key, "engineer", grantee.id, grantee.sealing_public)
        for old in s.scalars(
            select(m.ClientKey).where(
                m.ClientKey.client_id == client.id, m.ClientKey.state == ACTIVE, m.ClientKey.version != new_version
            )
        ):
            old.state, old.retired_at = RETIRING, now
        client.current_key_version = new_version
        client.slug_blob = blobs.encrypt_client_field(key, new_version, slug, client.id, "slug")
        client.name_blob = blobs.encrypt_client_field(key, new_version, name, client.id, "name")
        client.lookup_key_blob = blobs.encrypt_client_field(key, new_version, lookup, client.id, "lookup-key")
        self.journal.audit_keys.store_audit_ring(
            s, client, ring + blobs.new_key()
        )  # a fresh audit key for later events
        if backup_key is not None:  # the per-client backup key lives on (old backups need it)
            client.backup_key_blob = blobs.encrypt_client_field(key, new_version, backup_key, client.id, "backup-key")
        self.keys.count_encryptions(s, client.id, new_version, 4)
        # Every version of the client's secrets is still to re-wrap (none can name the version
        # just made), so they are counted from the primary-key index alone, without reading rows.
        total = (
            s.scalar(
                select(func.count()).select_from(m.SecretVersion).join(m.Secret).where(m.Secret.client_id == client.id)
            )
            or 0
        )
        rotation = m.Rotation(
            client_id=client.id,
            from_version=old_version,
            to_version=new_version,
            state=RUNNING,
            total=int(total),
            done=0,
            started_by=admin.id,
            started_at=now,
        )
        s.add(rotation)
        s.flush()
        self.journal.append(
            s,
            "client-key-rotate",
            client_id=client.id,
            details={"from_version": old_version, "to_version": new_version, "data_keys": int(total)},
        )
        return rotation.id

    def _current_grantees(self, s: Session, client_id: int) -> builtins.list[m.Engineer]:
        """The engineers a new client-key version is sealed to: for each (engineer, client)
        ledger, its newest verified entry, unrevoked and unexpired, of an active certified
        engineer, *and* the last word of the verified audit log about them and the client
        (so a revocation cleared, or a newer grant deleted, in the database gives nothing).
        Anything else is reported (a ``grant-refused`` event), its key copies for the client
        are deleted, and the rotation goes on."""
        ledgers: dict[int, list[m.Grant]] = {}
        for grant in s.scalars(select(m.Grant).where(m.Grant.client_id == client_id).order_by(*GRANT_ORDER)):
            ledgers.setdefault(grant.engineer_id, []).append(grant)
        history = self.ledger.grant_history(s, [client_id]) if ledgers else None
        out = []
        for engineer_id, grants in sorted(ledgers.items()):
            engineer = s.get(m.Engineer, engineer_id)
            if engineer is None:
                continue
            try:
                self.trust.verify_certificate(s, engineer)
            except VaultError as exc:
                self.ledger.refuse_grants(s, client_id, engineer, [(grants[0], str(exc))])
                continue
            head, bad = self.ledger.ledger_head(s, grants, engineer)
            refused: builtins.list[tuple[m.Grant | None, str]] = list(bad)
            live = engineer.status == ACTIVE and self.ledger.is_live(head)
            if live and head is not None and history is not None:
                problem = history.confirms(engineer.name, client_id, head)
                if problem is not None:
                    refused.append((head, problem))
                    live = False
            if live:
                out.append(engineer)
                for grant, problem in bad:  # reported; the verified entry still counts
                    self.journal.append(
                        s,
                        "grant-refused",
                        client_id=client_id,
                        details={"engineer": engineer.name, "grant": grant.id, "problem": problem[:200]},
                    )
            elif refused:
                self.ledger.refuse_grants(s, client_id, engineer, refused)
            else:
                self.ledger.delete_seals(s, client_id, engineer.id)
        return out

    def run_rotation(self, rotation_id: int, batch_size: int, progress: Progress | None) -> RotationInfo:
        # Batches walk the versions in key order from a cursor (linear, not quadratic, in N).
        # The finishing transaction counts what still refers to an old version; if the walk
        # missed anything (a version written behind the cursor under an old key: normally
        # nothing), a second walk from the start re-wraps it before the rotation finishes.
        # Each transaction that loses to a concurrent one is run again on its own: running
        # rotate_client again would find this rotation under way (retrying.py).
        def batch() -> int:
            return self._rewrap_batch(rotation_id, batch_size, progress)

        for walk in (1, 2):
            self._cursors.pop(rotation_id, None)
            while again_on_conflict(self.core, "a re-wrap batch", batch):
                pass  # the cursor only moves after a batch commits
            end = functools.partial(self._end_rotation, rotation_id, walk)
            info = again_on_conflict(self.core, "the end of a rotation", end)
            if info is not None:
                return info
        raise AssertionError("unreachable")  # pragma: no cover

    def _end_rotation(self, rotation_id: int, walk: int) -> RotationInfo | None:
        """Finish the rotation if nothing refers to an old version any more (or this is the
        second walk); None to walk again."""
        with self.core.store.transaction() as s:
            rotation = s.get(m.Rotation, rotation_id)
            assert rotation is not None
            if rotation.state == RUNNING:
                in_use = _old_versions_in_use(s, rotation.client_id, rotation.to_version)
                if in_use and walk == 1:
                    return None
                self._finish_client_rotation(s, rotation, in_use)
            return self._rotation_info(s, rotation)

    def _rewrap_batch(self, rotation_id: int, batch_size: int, progress: Progress | None) -> int:
        """Re-wrap up to ``batch_size`` data keys in one transaction; returns how many."""
        with self.core.store.transaction() as s:
            self.trust.my_admin_row(s)
            rotation = s.get(m.Rotation, rotation_id)
            if rotation is None or rotation.state != RUNNING:
                return 0
            client_id, new_version = rotation.client_id, rotation.to_version
            rows, cursor = _next_rows(s, client_id, new_version, self._cursors.get(rotation_id, (0, 0)), batch_size)
            if not rows:
                return 0
            # Each client-key version in the batch is looked up once, not once per row (the
            # first lookup in this Vault opens its seal and checks its signature).
            keys = {v: self.keys.client_key(s, client_id, v) for v in {row[2] for row in rows}}
            new_key = self.keys.client_key(s, client_id, new_version)
            rewrapped = blobs.rewrap_data_keys(keys, new_key, new_version, client_id, rows)
            _write_rewrapped(s.connection(), new_version, rows, rewrapped)
            self.keys.count_encryptions(s, client_id, new_version, len(rows))
            rotation.done = rotation.done + len(rows)
            done, total = rotation.done, rotation.total
        self._cursors[rotation_id] = cursor  # only after the batch committed
        if progress is not None:
            progress(done, max(total, done))
        return len(rows)

    def _finish_client_rotation(self, s: Session, rotation: m.Rotation, in_use: dict[int, int]) -> None:
        """Destroy retiring versions nothing refers to any more (``in_use``: the data keys each
        old version still wraps, counted in this transaction); mark the rotation done."""
        now = self.core.clock()
        for ck in s.scalars(
            select(m.ClientKey).where(m.ClientKey.client_id == rotation.client_id, m.ClientKey.state == RETIRING)
        ):
            if in_use.get(ck.version):
                continue
            s.execute(
                delete(m.ClientKeySeal).where(
                    m.ClientKeySeal.client_id == ck.client_id, m.ClientKeySeal.version == ck.version
                )
            )
            ck.state, ck.destroyed_at = DESTROYED, now
            self.keys.client_keys.pop((ck.client_id, ck.version), None)
        rotation.state, rotation.finished_at = DONE, now
        self.journal.append(
            s,
            "client-key-rotated",
            client_id=rotation.client_id,
            details={"to_version": rotation.to_version, "data_keys": rotation.done},
        )

    def _rotation_info(self, s: Session, rotation: m.Rotation) -> RotationInfo:
        client = s.get(m.Client, rotation.client_id)
        slug = self.clients.slug(s, client) if client is not None else f"#{rotation.client_id}"
        return RotationInfo(
            slug,
            rotation.from_version,
            rotation.to_version,
            rotation.state,
            rotation.done,
            rotation.total,
            rotation.started_at,
            rotation.finished_at,
        )

    # -- secret values ----------------------------------------------------------------------------

    def rotate_secret(self, ref: str, *, password: str | None = None, length: int | None = None) -> SecretInfo:
        """Store a new value (generated unless given) as a new version; older ones beyond
        the retention setting are destroyed with their data keys."""
        if password is None:
            password = generate_password(length) if length else generate_password()
        return self.secrets.update(ref, password=password)

    def set_retention(self, versions: int) -> None:
        """Versions kept per secret (admin); signs both settings as they now apply."""
        if not policies.MIN_RETENTION <= versions <= policies.MAX_RETENTION:
            raise InvalidInput("bad retention", hint="keep between 1 and 1000 versions")
        with self.core.store.transaction() as s:
            admin = self.trust.my_admin_row(s)
            info = self.core.info(s)
            info.cryptoperiod_days = self.policy_check.cryptoperiod(s)  # an unverified value is not signed as it stands
            info.retention_versions = versions
            policies.sign_settings(self.keys.my_signing_key(), info, admin.id, epoch(self.core.clock()))
            self.journal.append(s, "settings", public={"retention_versions": versions})

    def versions(self, client: str) -> builtins.list[tuple[int, str]]:
        with self.core.store.transaction() as s:
            row = self.clients.client(s, client)
            versions = s.scalars(
                select(m.ClientKey).where(m.ClientKey.client_id == row.id).order_by(m.ClientKey.version)
            )
            return [(ck.version, ck.state) for ck in versions]

    def rotate_root(self, *, shares: tuple[int, int] | None = None) -> RootRotation:
        """A new root bundle: a new recovery key (every live client-key version re-sealed to
        it, slugs re-tagged) and a new organisation signing key (signed by the old one;
        every verified certificate re-issued under it), sealed to every admin on the signed
        roster; the old root destroyed. New recovery shares are returned when the vault uses
        them (``shares`` = (k, n) sets or changes that)."""
        if shares is not None:
            check_share_policy(*shares)
        with self.core.store.transaction() as s:
            return self.root_rotator.rotate_root(s, shares=shares)

    def set_cryptoperiod(self, days: int) -> None:
        """Days before keys are reported old (admin); signs both settings as they now apply."""
        if not policies.MIN_CRYPTOPERIOD <= days <= policies.MAX_CRYPTOPERIOD:
            raise InvalidInput("bad cryptoperiod", hint="use between 1 and 3650 days")
        with self.core.store.transaction() as s:
            admin = self.trust.my_admin_row(s)
            info = self.core.info(s)
            info.retention_versions = self.policy_check.retention(s)  # an unverified value is not signed as it stands
            info.cryptoperiod_days = days
            policies.sign_settings(self.keys.my_signing_key(), info, admin.id, epoch(self.core.clock()))
            self.journal.append(s, "settings", public={"cryptoperiod_days": days})
