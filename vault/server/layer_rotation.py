"""The full rotation of the server's layer: ``credvault serve rotate-key --full`` (docs/server.md §5).

After a suspected theft of the server key file, a master-key rotation alone is not enough: the
thief's old master key opens every server client key of a database copy taken before the
rotation, and those keys are unchanged afterwards. ``relayer`` gives every client a new server
client key and moves every layered data key under it, with no client taking part (the layer is
removed and put on again; the §4.2 blob inside, which only a client key opens, never changes):

1. **new keys** (``_new_keys``): a client whose keys are all ``active`` gets version ``w+1``
   (wrapped under the current master key) and its older rows become ``retiring``, in one unit
   per page of clients. A writer holds the client's newest active row (``FOR SHARE``) while it
   layers, so that the unit waits for it; after it commits every write uses ``w+1``. A client
   that already has a ``retiring`` row is past this step (a resumed run skips it);
2. **re-layering** (``_relayer_rows``): every data key whose layer names an older version is
   opened under it and layered under the newest, page by page, each row changed only if it
   still holds the bytes read (resumable, and safe beside running servers);
3. **retiring** (``_retire``): per client, the ``retiring`` rows are deleted, then the client's
   stored layers are read again in the same unit: if one still names a deleted version (a row
   written by a server that had not seen step 1), the unit is rolled back and the key kept
   (``Relayered.left``; run again: that client is finished, while a client whose rotation was
   complete is rotated once more, a new run being a new rotation for it).

After it, a copy of the database made before is opened only with the old keys, and one made
after only with the new; run it after ``rotate-key`` and ``--drop-old`` so that the new server
client keys are under a master key the thief never held.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, delete, exists, select, tuple_, update
from sqlalchemy.orm import Session, aliased

from vault.crypto import serverlayer
from vault.storage import models as m
from vault.storage.engine import Store

from .layer import ACTIVE, PAGE, ServerLayer

RETIRING = "retiring"


@dataclass(frozen=True)
class Relayered:
    """What one ``relayer`` run did: clients given a new server client key, data keys moved under
    one, older keys deleted, and older keys kept because a stored layer still names them."""

    clients: int
    rows: int
    retired: int
    left: int


def relayer(layer: ServerLayer, store: Store, *, page: int = PAGE) -> Relayered:
    """Rotate every client's server client key and re-layer every data key (module docstring)."""
    clients = _new_keys(layer, store, page)
    rows = _relayer_rows(layer, store, page)
    retired, left = _retire(store)
    return Relayered(clients, rows, retired, left)


def _vault_id(s: Session) -> bytes | None:
    info = s.get(m.VaultInfo, 1)
    return None if info is None else bytes(info.vault_id)


def _new_keys(layer: ServerLayer, store: Store, page: int) -> int:
    k, older = m.ServerClientKey, aliased(m.ServerClientKey)
    made, after = 0, 0
    while True:
        with store.transaction() as s:
            vault_id = _vault_id(s)
            retiring = exists().where(older.client_id == k.client_id, older.state == RETIRING)
            found = s.scalars(
                select(k.client_id)
                .where(k.client_id > after, k.state == ACTIVE, ~retiring)
                .group_by(k.client_id)
                .order_by(k.client_id)
                .limit(page)
            ).all()
            if vault_id is None or not found:
                return made
            for client_id in found:
                rows = s.execute(
                    select(k.version, k.state).where(k.client_id == client_id).with_for_update()
                ).all()  # every row of the client held: a writer holding its newest one is waited for
                newest = max(int(version) for version, _state in rows)
                s.execute(
                    update(k)
                    .where(k.client_id == client_id)
                    .values(state=RETIRING)
                    .execution_options(synchronize_session=False)
                )
                layer.new_client_key(s, vault_id, client_id, newest + 1)
                made += 1
            after = found[-1]


def _relayer_rows(layer: ServerLayer, store: Store, page: int) -> int:
    v = m.SecretVersion
    moved, after = 0, (0, 0)
    while True:
        with store.transaction() as s:
            vault_id = _vault_id(s)
            found = s.execute(
                select(v.secret_id, v.version, v.key_version, v.wrapped_dek, m.Secret.client_id)
                .join(m.Secret, m.Secret.id == v.secret_id)
                .where(tuple_(v.secret_id, v.version) > tuple_(*after))
                .order_by(v.secret_id, v.version)
                .limit(page)
            ).all()
            if vault_id is None or not found:
                return moved
            newest: dict[int, tuple[int, bytes]] = {}
            for secret_id, version, key_version, wrapped, client_id in found:
                old = bytes(wrapped)
                if not serverlayer.is_layered(old):
                    continue  # layer_on's, at the next start
                if client_id not in newest:
                    newest[client_id] = layer.client_key(s, vault_id, client_id)
                to, key = newest[client_id]
                was = serverlayer.sck_version(old)
                if was == to:
                    continue
                opened = layer.version_key(s, vault_id, client_id, was)
                inner = serverlayer.unlayer(
                    opened, was, old,
                    vault_id=vault_id, client_id=client_id, secret_id=secret_id, version=version,
                    key_version=key_version,
                )  # fmt: skip
                new = serverlayer.layer(
                    key, to, inner,
                    vault_id=vault_id, client_id=client_id, secret_id=secret_id, version=version,
                    key_version=key_version,
                )  # fmt: skip
                result = s.execute(
                    update(v)
                    .where(and_(v.secret_id == secret_id, v.version == version, v.wrapped_dek == old))
                    .values(wrapped_dek=new)
                    .execution_options(synchronize_session=False)
                )
                moved += result.rowcount or 0  # type: ignore[attr-defined]
            after = (found[-1][0], found[-1][1])


class _StillNamed(Exception):
    """A stored layer names a version this unit deleted: the unit is rolled back."""


def _retire(store: Store) -> tuple[int, int]:
    k, v = m.ServerClientKey, m.SecretVersion
    with store.read() as s:
        clients = s.scalars(select(k.client_id).where(k.state == RETIRING).distinct().order_by(k.client_id)).all()
    retired = left = 0
    for client_id in clients:
        versions: set[int] = set()
        try:
            with store.transaction() as s:
                versions = set(s.scalars(select(k.version).where(k.client_id == client_id, k.state == RETIRING)))
                s.execute(delete(k).where(k.client_id == client_id, k.state == RETIRING))
                secrets = select(m.Secret.id).where(m.Secret.client_id == client_id)
                stored = s.scalars(
                    select(v.wrapped_dek).where(v.secret_id.in_(secrets))
                )  # read after the delete: a write that held a deleted row has committed by now
                if {serverlayer.sck_version(bytes(b)) for b in stored if serverlayer.is_layered(bytes(b))} & versions:
                    raise _StillNamed()
        except _StillNamed:
            left += len(versions)
            continue
        retired += len(versions)
    return retired, left
