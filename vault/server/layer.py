"""The server's layer over wrapped data keys, in use: "no log, no key" (docs/server.md §5).

``MasterKey`` is the server master key ``SMK[v]`` from the server key file: it never enters
the database. ``ServerLayer(master)`` holds it and does these things:

* **a client's server client key** ``SCK[c, w]`` (``client_key``): the newest row of
  ``server_client_keys`` for the client, opened under the SMK (kept per process; a row that does
  not open is the one opaque ``DecryptionFailed``); a client's first one is made by layering,
  stored wrapped under the SMK in the page's unit, and kept only once that unit committed;
* **layering** (``layer_on``): every data key not yet layered gets the layer, page by page,
  each page its own unit, each row changed only if it still holds the bytes read (two server
  processes starting together layer each row once); run by ``credvault serve`` before it
  listens, so that a server-keyed vault keeps no data key a database copy opens;
* **a master-key rotation** (``rewrap``): every server client key still under an older SMK
  (kept in the key file as ``previous_master_keys`` until this is done) moved to the current
  one, page by page, resumable, with no client taking part; ``credvault serve`` runs it at
  start, after ``layer_on``;
* **layering a write** (``layered``): a new version a keyholder wrapped, layered in the unit
  that stores it (``secrets.add``/``update`` through the server);
* **removal** (``unlayered``): the §4.2 blob inside one row's layer, for an answer whose event
  has **committed**: the checkout route calls it after ``CheckoutAuthority.checkout`` returns,
  for the one version the event names, never before and never for another.

A row without the layer is answered as it is (a vault layered while a write through an older
server stored one: ``layer_on`` at the next start layers it). The recipes are
``vault/crypto/serverlayer.py``, which only ``vault/server/`` imports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, select, tuple_, update
from sqlalchemy.orm import Session

from vault.crypto import serverlayer
from vault.errors import ConcurrentChange, ConfigurationError, DecryptionFailed, StoreBusy, StoreUnavailable
from vault.storage import models as m
from vault.storage.engine import Store
from vault.storage.rows import VersionRow

ACTIVE = "active"
PAGE = 500
RETRIES = 3


@dataclass(frozen=True, repr=False)
class MasterKey:
    """The server master key ``SMK[version]`` (32 bytes); ``repr`` shows the version only."""

    version: int
    key: bytes

    def __post_init__(self) -> None:
        if isinstance(self.version, bool) or not 1 <= self.version < 2**31 or len(self.key) != 32:
            raise ValueError("a server master key is 32 bytes of a positive version")

    def __repr__(self) -> str:
        return f"MasterKey(version={self.version})"


@dataclass(frozen=True)
class Layered:
    """What one ``layer_on`` run did: rows layered, pages (units) committed."""

    rows: int
    pages: int


def is_layered(blob: bytes) -> bool:
    """Whether a stored wrapped data key has the server's layer on (§4.9)."""
    return serverlayer.is_layered(blob)


class ServerLayer:
    """The server layer under one master key (module docstring)."""

    def __init__(self, master: MasterKey, previous: tuple[MasterKey, ...] = ()) -> None:
        """``master``: the current SMK, which wraps every new server client key; ``previous``:
        older SMKs still in the key file, which open rows not yet moved (``rewrap``)."""
        if any(old.version >= master.version for old in previous):
            raise ValueError("a previous master key has a version below the current one's")
        self.master = master
        self._masters = {key.version: key for key in (*previous, master)}
        self._keys: dict[tuple[bytes, int, int], bytes] = {}  # (vault id, client, w) -> SCK[client, w]

    def __repr__(self) -> str:
        return f"ServerLayer({self.master!r})"

    def master_keys(self) -> tuple[tuple[int, bytes], ...]:
        """Every master key this layer holds (the current one and those of a rotation under way), as
        (version, key), oldest first: what a key export made on the host carries (``backups``)."""
        return tuple((v, self._masters[v].key) for v in sorted(self._masters))

    def client_key(self, s: Session, vault_id: bytes, client_id: int, *, lock: bool = False) -> tuple[int, bytes]:
        """``(w, SCK[client_id, w])``: the client's newest active server client key, its row read in
        ``s`` (a ``--full`` rotation in another process makes a newer one), opened once per process;
        DecryptionFailed if it has none or it does not open. ``lock``: the row held (``FOR SHARE``
        on PostgreSQL) until ``s`` ends, so that a rotation cannot retire it under a write."""
        held = self._stored(s, vault_id, client_id, lock=lock)
        if held is None:
            raise DecryptionFailed()
        return held

    def version_key(self, s: Session, vault_id: bytes, client_id: int, version: int) -> bytes:
        """``SCK[client_id, version]``, active or retiring (what a stored blob names), opened once
        per process; DecryptionFailed if the vault has no such key or it does not open."""
        key = self._keys.get((vault_id, client_id, version))
        if key is None:
            k = m.ServerClientKey
            blob = s.scalar(select(k.blob).where(k.client_id == client_id, k.version == version))
            if blob is None:
                raise DecryptionFailed()
            key = self._opened(vault_id, client_id, version, bytes(blob))
        return key

    def _stored(self, s: Session, vault_id: bytes, client_id: int, *, lock: bool = False) -> tuple[int, bytes] | None:
        query = (
            select(m.ServerClientKey.version, m.ServerClientKey.blob)
            .where(m.ServerClientKey.client_id == client_id, m.ServerClientKey.state == ACTIVE)
            .order_by(m.ServerClientKey.version.desc())
            .limit(1)
        )
        row = s.execute(query.with_for_update(read=True) if lock else query).first()
        if row is None:
            return None
        version = int(row[0])
        return version, self._opened(vault_id, client_id, version, bytes(row[1]))

    def _opened(self, vault_id: bytes, client_id: int, version: int, blob: bytes) -> bytes:
        """A committed §4.8 row's key, opened under the master key it names, kept for the process."""
        key = self._keys.get((vault_id, client_id, version))
        if key is None:
            master = self._master(serverlayer.smk_version(blob))
            key = serverlayer.unwrap_client_key(
                master.key, master.version, blob, vault_id=vault_id, client_id=client_id, sck_version=version
            )
            self._keys[(vault_id, client_id, version)] = key
        return key

    def _master(self, version: int) -> MasterKey:
        """Master key ``version``, or a ConfigurationError naming it (a version is not a secret)."""
        master = self._masters.get(version)
        if master is None:
            raise ConfigurationError(
                f"a server client key is under master key {version}, which the server key file does not hold",
                hint="add it to the file's previous_master_keys until the server has moved every key",
            )
        return master

    def rewrap(self, store: Store, *, page: int = PAGE) -> Layered:
        """Move every server client key under an older master key to the current one, ``page``
        rows per unit, each row changed only if it still holds the bytes read: resumable, and
        after it the older master keys can leave the key file (docs/server.md §5, "Rotating the
        server key"; no client takes part). A row under a master key this server does not hold
        is a ConfigurationError naming its version, nothing of its page written."""
        done, after = Layered(0, 0), (0, 0)
        k = m.ServerClientKey
        while True:
            with store.transaction() as s:
                info = s.get(m.VaultInfo, 1)
                found = s.execute(
                    select(k.client_id, k.version, k.blob)
                    .where(tuple_(k.client_id, k.version) > tuple_(*after))
                    .order_by(k.client_id, k.version)
                    .limit(page)
                ).all()
                if info is None or not found:
                    return done
                changed = 0
                for client_id, version, stored in found:
                    old_blob = bytes(stored)
                    old = self._master(serverlayer.smk_version(old_blob))
                    if old.version == self.master.version:
                        continue
                    new_blob = serverlayer.rewrap_client_key(
                        (old.key, old.version),
                        (self.master.key, self.master.version),
                        old_blob,
                        vault_id=bytes(info.vault_id),
                        client_id=client_id,
                        sck_version=version,
                    )
                    result = s.execute(
                        update(k)
                        .where(and_(k.client_id == client_id, k.version == version, k.blob == old_blob))
                        .values(blob=new_blob)
                        .execution_options(synchronize_session=False)
                    )
                    changed += result.rowcount or 0  # type: ignore[attr-defined]
                after = (found[-1][0], found[-1][1])
            done = Layered(done.rows + changed, done.pages + 1)

    def new_client_key(self, s: Session, vault_id: bytes, client_id: int, version: int = 1) -> tuple[int, bytes]:
        """A new server client key ``version`` for the client (its first, or a ``--full`` rotation's),
        stored active (wrapped under the SMK) in ``s``; never kept by this object, so that a unit
        rolled back leaves no key in the process (``client_key`` opens it once committed)."""
        key = serverlayer.new_server_key()
        blob = serverlayer.wrap_client_key(
            self.master.key, self.master.version, key, vault_id=vault_id, client_id=client_id, sck_version=version
        )
        s.add(m.ServerClientKey(client_id=client_id, version=version, blob=blob, state=ACTIVE))
        s.flush()
        return version, key

    def unlayered(self, s: Session, vault_id: bytes, client_id: int, secret_id: int, row: VersionRow) -> VersionRow:
        """``row`` with its data key's layer removed (a row without one as it is). Only for an
        answer whose audit event has committed (module docstring)."""
        if not serverlayer.is_layered(row.wrapped_dek):
            return row
        version = serverlayer.sck_version(row.wrapped_dek)
        key = self.version_key(s, vault_id, client_id, version)
        inner = serverlayer.unlayer(
            key,
            version,
            row.wrapped_dek,
            vault_id=vault_id,
            client_id=client_id,
            secret_id=secret_id,
            version=row.version,
            key_version=row.key_version,
        )
        return row._replace(wrapped_dek=inner)

    def layered(
        self, s: Session, vault_id: bytes, client_id: int, secret_id: int, version: int, key_version: int, inner: bytes
    ) -> bytes:
        """A new version's §4.2 wrapped data key (a keyholder's, sent through the server) with the
        layer on, for storing in ``s``: under the client's server client key, a first one made and
        stored in ``s`` if it has none (kept for the process only when read again after the commit).
        A blob that is not a wrapped data key of ``key_version`` is refused (``DecryptionFailed``)."""
        held = self._stored(s, vault_id, client_id, lock=True)  # a rotation retires no key under a write
        if held is None:
            held = self.new_client_key(s, vault_id, client_id)
        return serverlayer.layer(
            held[1],
            held[0],
            inner,
            vault_id=vault_id,
            client_id=client_id,
            secret_id=secret_id,
            version=version,
            key_version=key_version,
        )

    def layer_on(self, store: Store, *, page: int = PAGE, progress: Callable[[Layered], None] | None = None) -> Layered:
        """Layer every data key that has no layer yet, ``page`` rows per unit (module docstring).
        A page that loses a race with another server (the same client's first key stored by
        both) is read again, at most ``RETRIES`` times."""
        done, after, failures = Layered(0, 0), (0, 0), 0
        while True:
            try:
                changed, last = self._layer_page(store, after, page)
            except (ConcurrentChange, StoreBusy, StoreUnavailable):
                failures += 1
                if failures > RETRIES:
                    raise
                continue
            if last is None:
                return done
            after = last
            done = Layered(done.rows + changed, done.pages + 1)
            if progress is not None:
                progress(done)

    def layer_rows(self, store: Store, rows: Sequence[tuple[int, int]]) -> int:
        """Layer the data keys of these (secret id, version) rows that have no layer, in one unit:
        what an admin's client-key rotation on the server's host just re-wrapped and committed."""
        if not rows:
            return 0
        v = m.SecretVersion
        changed, _last = self._layer_page(store, (0, 0), len(rows), tuple_(v.secret_id, v.version).in_(rows))
        return changed

    def _layer_page(
        self, store: Store, after: tuple[int, int], page: int, only: Any = None
    ) -> tuple[int, tuple[int, int] | None]:
        """One page in one unit: (rows layered, the last row's key or None at the end); ``only``: a
        condition on the rows (``layer_rows``)."""
        fresh: dict[int, tuple[int, bytes]] = {}  # client -> its key in this unit (one made here too)
        with store.transaction() as s:
            info = s.get(m.VaultInfo, 1)
            if info is None:
                return 0, None
            vault_id = bytes(info.vault_id)
            v = m.SecretVersion
            query = (
                select(v.secret_id, v.version, v.key_version, v.wrapped_dek, m.Secret.client_id)
                .join(m.Secret, m.Secret.id == v.secret_id)
                .where(tuple_(v.secret_id, v.version) > tuple_(*after))
            )
            if only is not None:
                query = query.where(only)
            found = s.execute(query.order_by(v.secret_id, v.version).limit(page)).all()
            if not found:
                return 0, None
            changed = 0
            for secret_id, version, key_version, wrapped, client_id in found:
                old = bytes(wrapped)
                if serverlayer.is_layered(old):
                    continue
                held = fresh.get(client_id) or self._stored(s, vault_id, client_id, lock=True)
                if held is None:
                    held = self.new_client_key(s, vault_id, client_id)
                fresh[client_id] = held
                new = serverlayer.layer(
                    held[1],
                    held[0],
                    old,
                    vault_id=vault_id,
                    client_id=client_id,
                    secret_id=secret_id,
                    version=version,
                    key_version=key_version,
                )
                result = s.execute(
                    update(v)
                    .where(and_(v.secret_id == secret_id, v.version == version, v.wrapped_dek == old))
                    .values(wrapped_dek=new)
                    .execution_options(synchronize_session=False)
                )
                changed += result.rowcount or 0  # type: ignore[attr-defined]
            return changed, (found[-1][0], found[-1][1])
