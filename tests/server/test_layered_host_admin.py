"""An admin's work on the server's host over a **layered** vault (``credvault serve`` layers every
stored data key before it listens): what works there with the key file (its master key removes
the layer in-process: ``vault/service/hostlayer.py``), and what fails closed without it. Both engines."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from server_harness import Keyed, events

from vault.errors import DecryptionFailed
from vault.server.layer import MasterKey, ServerLayer


@pytest.fixture(scope="module")
def layer(keyed: Keyed) -> ServerLayer:
    """The module's vault layered under one master key (``keyed`` is the module's)."""
    found = ServerLayer(MasterKey(1, os.urandom(32)))
    found.layer_on(keyed.store)
    return found


@pytest.fixture
def layered_host(keyed: Keyed, layer: ServerLayer) -> Iterator[Keyed]:
    """The admin on the host with the key file (its signing key and master key)."""
    layer.layer_on(keyed.store)  # what was written since, as `credvault serve` does at each start
    keyed.served.admin.core.server_key, keyed.served.admin.core.host_layer = keyed.key, layer
    yield keyed
    keyed.served.admin.core.server_key = keyed.served.admin.core.host_layer = None


def test_client_and_grant_work_needs_no_data_key(layered_host: Keyed) -> None:
    admin = layered_host.served.admin
    before = len(events(layered_host.served))
    admin.clients.add("layered-co", "Layered Co")
    admin.grants.grant("bob", "layered-co")
    admin.grants.revoke("bob", "layered-co")
    assert len(events(layered_host.served)) > before
    assert admin.audit.verify().ok


def test_a_purge_on_the_host_removes_the_layer_of_what_it_fingerprints(layered_host: Keyed) -> None:
    admin = layered_host.served.admin
    receipt = admin.purge.secret("acme/fw02", request="DSR-1")
    assert receipt.secret_ids and receipt.fingerprints
    assert admin.purge.verify_receipt(receipt.id).ok
    assert admin.audit.verify().ok


def test_without_the_master_key_a_purge_of_a_layered_vault_fails_closed(layered_host: Keyed) -> None:
    admin = layered_host.served.admin
    admin.core.host_layer = None
    before = len(events(layered_host.served))
    with pytest.raises(DecryptionFailed):
        admin.purge.secret("excl/sw05", request="DSR-2")
    assert len(events(layered_host.served)) == before


def test_a_client_key_rotation_on_the_host_keeps_every_data_key_layered(
    layered_host: Keyed, layer: ServerLayer, test_ca: Any
) -> None:
    """Each page is unlayered for the re-wrap and layered again under the new version; the server
    then releases a key that opens under the new client key (bob checks out through it)."""
    from server_harness import keyholder, server_with
    from sqlalchemy import select

    from vault.storage import models as m

    keyed = layered_host
    admin = keyed.served.admin
    admin.keys.rotate_client("excl")
    with keyed.store.read() as s:
        client = s.scalar(select(m.Client.id).join(m.Secret).where(m.Secret.client_id == m.Client.id).limit(1))
        layered = [v.wrapped_dek[1] for v in s.scalars(select(m.SecretVersion))]
    assert client is not None and set(layered) == {0x09}  # every data key under the layer still
    assert admin.audit.verify().ok
    with server_with(keyed, test_ca, layer) as served:  # a server with the master key releases it
        bob, _ = keyholder(served, served.bob)
        revealed = bob.checkout("excl/sw02", reason="T-7 after rotation", field="password", version=None,
                                hold=False, hold_for=None)  # fmt: skip
    assert revealed.value == "pw of excl/sw02"


def test_removing_an_engineer_on_the_host_revokes_them_and_starts_the_rotations(layered_host: Keyed) -> None:
    """Offboarding on a layered vault: revoked, and the rotations it starts re-wrap under the layer."""
    admin = layered_host.served.admin
    admin.engineers.remove("carol")
    assert "carol" not in [e.name for e in admin.engineers.list() if e.status == "active"]
    assert admin.audit.verify().ok


def test_a_secret_added_on_the_host_is_stored_under_the_layer(layered_host: Keyed) -> None:
    from sqlalchemy import select

    from vault.storage import models as m

    admin = layered_host.served.admin
    admin.secrets.add("acme/host-added", password="pw host added", kind="equipment")
    with layered_host.store.read() as s:
        stored = [v.wrapped_dek[1] for v in s.scalars(select(m.SecretVersion))]
    assert set(stored) == {0x09}
    assert admin.secrets.show("acme/host-added").version == 1  # and the host opens it again


def test_a_secret_updated_on_the_host_of_a_layered_vault_stays_layered(layered_host: Keyed) -> None:
    from sqlalchemy import select

    from vault.storage import models as m

    admin = layered_host.served.admin
    assert admin.secrets.update("acme/fw01", password="pw host updated", note="host").version == 2
    assert admin.secrets.show("acme/fw01").note == "host"
    assert [v.version for v in admin.secrets.history("acme/fw01")] == [1, 2]
    with layered_host.store.read() as s:
        assert {v.wrapped_dek[1] for v in s.scalars(select(m.SecretVersion))} == {0x09}
    assert admin.audit.verify().ok
