"""The server layer in use (issue 14 step 5, "no log, no key"), against the insider.

The ``keyed`` team (conftest.py) is layered by a server that holds a master key
(``ServerLayer.layer_on``, what ``credvault serve`` runs before it listens), and that server
answers checkouts with the layer removed from the one data key, after the event committed.
The insider is alice: a grantee with every client key she was ever given and a copy of the
database. With the layer on, a stored data key does not open under her client key; it opens
only through a checkout, which is on record. A server without the master key releases nothing
that opens; two layered keys swapped between rows open nowhere (one opaque error).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator

import pytest
from server_harness import CertificateFiles, Keyed, Served, database_state, keyholder, server_with, without_nonces
from sqlalchemy import func, select, update

from vault.crypto import blobs
from vault.crypto.labels import BLOB_DATA_KEY, BLOB_SERVER_LAYER
from vault.errors import ConfigurationError, DecryptionFailed, StoreUnavailable
from vault.server.layer import Layered, MasterKey, ServerLayer
from vault.storage import models as m
from vault.storage.rows import VersionRow

REASON = "T-3003 rotate the router password"


@dataclasses.dataclass
class Layer:
    served: Served  # the layered server
    layer: ServerLayer
    first_run: Layered


@pytest.fixture(scope="module")
def layered(keyed: Keyed, test_ca: CertificateFiles) -> Iterator[Layer]:
    layer = ServerLayer(MasterKey(1, os.urandom(32)))
    first = layer.layer_on(keyed.store, page=3)  # small pages: several units
    with server_with(keyed, test_ca, layer) as served:
        yield Layer(served, layer, first)


def versions(keyed: Keyed) -> list[tuple[int, int, int, int, bytes]]:
    """(client id, secret id, version, client-key version, stored wrapped key) of every row."""
    v = m.SecretVersion
    with keyed.store.read() as s:
        rows = s.execute(
            select(m.Secret.client_id, v.secret_id, v.version, v.key_version, v.wrapped_dek)
            .join(m.Secret, m.Secret.id == v.secret_id)
            .order_by(v.secret_id, v.version)
        ).all()
    return [(int(c), int(i), int(n), int(k), bytes(w)) for c, i, n, k, w in rows]


def checkout(served: Served, vault: object, ref: str) -> str:
    holder, _ = keyholder(served, vault)
    return holder.checkout(ref, reason=REASON, field="password", version=None, hold=False, hold_for=None).value


def test_layer_on_layers_every_data_key_once_and_a_second_run_layers_none(keyed: Keyed, layered: Layer) -> None:
    rows = versions(keyed)
    assert rows and all(w[1] == BLOB_SERVER_LAYER for *_, w in rows)
    assert layered.first_run.rows == len(rows) and layered.first_run.pages >= len(rows) // 3
    with keyed.store.read() as s:
        clients = s.scalar(select(func.count(func.distinct(m.Secret.client_id))))
        assert s.scalar(select(func.count()).select_from(m.ServerClientKey)) == clients
    again = layered.layer.layer_on(keyed.store)
    assert again.rows == 0 and versions(keyed) == rows  # nothing layered twice


def test_the_stored_key_does_not_open_under_the_client_key_the_insider_holds(keyed: Keyed, layered: Layer) -> None:
    served = keyed.served
    assert checkout(layered.served, served.alice, "acme/fw01") == "pw of acme/fw01"  # her keys are cached now
    cache = served.alice.checkouts.keys.client_keys
    tried = 0
    for client_id, secret_id, version, key_version, wrapped in versions(keyed):
        client_key = cache.get((client_id, key_version))
        if client_key is None:
            continue
        tried += 1
        with pytest.raises(DecryptionFailed):  # the database copy: nothing opens without the server
            blobs.unwrap_data_key(client_key, key_version, wrapped, client_id, secret_id, version)
        with keyed.store.read() as s:  # the control: the same key opens what the server releases
            vault_id = s.get(m.VaultInfo, 1).vault_id
            row = VersionRow(version, key_version, wrapped, b"", b"")
            inner = layered.layer.unlayered(s, vault_id, client_id, secret_id, row)
        assert inner.wrapped_dek[1] == BLOB_DATA_KEY
        opened = blobs.unwrap_data_key(client_key, key_version, inner.wrapped_dek, client_id, secret_id, version)
        assert len(opened) == 32
    assert tried >= 2  # acme's two secrets at least


def test_a_checkout_through_the_layered_server_is_on_record_before_the_key(keyed: Keyed, layered: Layer) -> None:
    served = keyed.served
    before = _event_count(keyed)
    assert checkout(layered.served, served.bob, "excl/sw03") == "pw of excl/sw03"
    with keyed.store.read() as s:
        last = s.scalars(select(m.AuditEvent).order_by(m.AuditEvent.seq.desc()).limit(1)).one()
    assert _event_count(keyed) == before + 1 and (last.action, last.server_key_version) == ("reveal", 1)
    assert json.loads(last.details_json) == {"version": 1}


def test_a_server_without_the_master_key_releases_nothing_that_opens(keyed: Keyed, layered: Layer) -> None:
    served = keyed.served  # the module's first server: the same database and signing key, no master key
    with pytest.raises(DecryptionFailed):
        checkout(served, served.alice, "acme/fw02")
    with keyed.store.read() as s:  # on record all the same, and its refusal after it
        actions = [a for (a,) in s.execute(select(m.AuditEvent.action).order_by(m.AuditEvent.seq.desc()).limit(2))]
    assert actions == ["answer-refused", "reveal"]


def test_a_server_on_another_master_key_records_nothing_and_holds_nothing(
    keyed: Keyed, layered: Layer, test_ca: CertificateFiles
) -> None:
    """An old or wrong key file behind the proxy despite its 503 on /readyz: the checkout is refused
    before anything is written (it would record a hold, then fail to remove the layer)."""
    served = keyed.served
    before, state = _event_count(keyed), database_state(served.db_url)
    with server_with(keyed, test_ca, ServerLayer(MasterKey(1, os.urandom(32)))) as wrong:
        assert wrong_ready(wrong) == ["master-key-mismatch"]
        holder, _ = keyholder(wrong, served.bob)
        with pytest.raises(StoreUnavailable, match="master-key-mismatch"):
            holder.checkout("excl/sw04", reason=REASON, field="password", version=None, hold=True, hold_for=None)
    assert _event_count(keyed) == before
    assert without_nonces(database_state(served.db_url)) == without_nonces(state)
    assert checkout(layered.served, served.bob, "excl/sw04") == "pw of excl/sw04"  # the right file: as before


def wrong_ready(served: Served) -> list[str]:
    with served.client() as client:
        answer = client.get("/readyz")
    assert answer.status_code == 503
    return list(answer.json()["reasons"])


def test_two_layered_keys_swapped_between_rows_open_nowhere(keyed: Keyed, layered: Layer) -> None:
    served = keyed.served
    rows = {(c, i, n): w for c, i, n, _, w in versions(keyed)}
    excl = [key for key in rows if key[0] == _client_id(keyed, "excl")][:2]
    (a, b) = excl
    try:
        _set(keyed, a, rows[b])
        _set(keyed, b, rows[a])
        with pytest.raises(DecryptionFailed):
            checkout(layered.served, served.bob, "excl/sw01")
    finally:
        _set(keyed, a, rows[a])
        _set(keyed, b, rows[b])
    assert checkout(layered.served, served.bob, "excl/sw01") == "pw of excl/sw01"


def _set(keyed: Keyed, row: tuple[int, int, int], wrapped: bytes) -> None:
    v = m.SecretVersion
    with keyed.store.transaction() as s:
        s.execute(update(v).where(v.secret_id == row[1], v.version == row[2]).values(wrapped_dek=wrapped))


def _client_id(keyed: Keyed, slug: str) -> int:
    ids = {int(c) for c, *_ in versions(keyed)}
    assert len(ids) == 2
    return min(ids) if slug == "acme" else max(ids)  # acme was added first


def _event_count(keyed: Keyed) -> int:
    with keyed.store.read() as s:
        return int(s.scalar(select(func.count()).select_from(m.AuditEvent)) or 0)


def test_a_master_key_rotation_moves_every_client_key_and_needs_no_client(
    keyed: Keyed, layered: Layer, test_ca: CertificateFiles
) -> None:
    """SMK 1 -> 2 (``ServerLayer.rewrap``, what ``credvault serve`` runs at start with the older
    key still in the file): every server client key moves, resumably (a second run moves none);
    then a server holding only SMK 2 answers checkouts, and SMK 1 alone opens nothing. Last in
    the module: the module's layered server keeps the client keys it opened (they do not change)."""
    served = keyed.served
    newer = ServerLayer(MasterKey(2, os.urandom(32)), previous=(layered.layer.master,))
    with keyed.store.read() as s:
        stored = s.scalar(select(func.count()).select_from(m.ServerClientKey))
    assert newer.rewrap(keyed.store, page=1).rows == stored >= 2
    assert newer.rewrap(keyed.store).rows == 0
    with keyed.store.read() as s:
        blobs_now = [bytes(b) for b in s.scalars(select(m.ServerClientKey.blob))]
    assert {int.from_bytes(b[2:6], "big") for b in blobs_now} == {2}  # the header's SMK version
    with server_with(keyed, test_ca, ServerLayer(MasterKey(2, newer.master.key))) as rotated:
        assert checkout(rotated, served.alice, "acme/fw02") == "pw of acme/fw02"
    old_only = ServerLayer(layered.layer.master)  # named, not opened: the error says which key is missing
    with keyed.store.read() as s, pytest.raises(ConfigurationError, match="under master key 2"):
        old_only.client_key(s, s.get(m.VaultInfo, 1).vault_id, _client_id(keyed, "acme"))
