"""An admin's work on the server's host over a **layered** vault (``credvault serve`` layers every
stored data key before it listens): what works there with the key file, what fails closed without
it, and what does not work yet (a strict xfail, so that the day it works the mark must go).
Both engines."""

from __future__ import annotations

import os
from collections.abc import Iterator

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


@pytest.mark.xfail(
    strict=True,
    raises=DecryptionFailed,
    reason="a client-key rotation re-wraps every data key, under the layer on a layered vault "
    "(rotation through the server's resume pages: docs/server.md §4, not built)",
)
def test_a_client_key_rotation_on_the_host_of_a_layered_vault(layered_host: Keyed) -> None:
    layered_host.served.admin.keys.rotate_client("excl")
