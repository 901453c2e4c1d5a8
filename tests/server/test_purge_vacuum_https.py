"""``--vacuum`` on a purge through the team server (``purge.vacuum``: authority/purge_vacuum.py), both engines.

Once a purge through the server has committed, the admin's machine asks the server's host to vacuum
its database, naming the purge's receipt; the receipt the admin is shown says what the host ran. The
attacks are raw signed requests: an engineer's (403 before anything is read, nothing run), a receipt
that does not exist (404), and a replay of the admin's own request (refused: its nonce was used).
"""

from __future__ import annotations

import dataclasses
import os

import pytest
from remote_admin_harness import caller, post
from server_harness import Keyed, events, keyid_of, signed_headers, signing_key

from vault.authority.purge_vacuum import VacuumRequest
from vault.errors import NotFound
from vault.records import ReceiptInfo
from vault.service.remote import RemoteVault
from vault.wire import codec

pytestmark = pytest.mark.usefixtures("cli_home")


def _purged(world: Keyed, admin: RemoteVault, slug: str, vacuum: bool) -> ReceiptInfo:
    admin.clients.add(slug, f"{slug} Ltd")
    admin.secrets.add(f"{slug}/db01", password=f"pw of {slug}")
    return admin.purge.client(slug, request=f"DSR-{slug}", vacuum=vacuum)


def test_a_purge_with_vacuum_through_the_server_says_the_host_vacuumed(world: Keyed, admin: RemoteVault) -> None:
    before = len(events(world.served))
    receipt = _purged(world, admin, "vac1", vacuum=True)
    said = str(receipt.scrubbed)
    assert said.startswith("on the server's host: ")
    assert "file vacuumed" in said or "VACUUM FULL run on the purged tables" in said
    assert [e.action for e in events(world.served)[before:]][-1] == "purge-client"  # no event of its own
    plain = _purged(world, admin, "vac2", vacuum=False)
    assert plain.scrubbed is None
    with pytest.raises(NotFound, match="no purge receipt"):
        admin.purge.vacuumed(dataclasses.replace(plain, id=10**6))


def test_an_engineer_asking_for_a_vacuum_is_refused(world: Keyed, admin: RemoteVault) -> None:
    receipt = _purged(world, admin, "vac3", vacuum=False)
    alice = world.served.alice
    answer = post(world, "purge.vacuum", VacuumRequest(caller(alice), receipt.id), alice)
    assert answer.status_code == 403 and answer.json()["error"] == "AccessDenied"
    as_admin = VacuumRequest(caller(world.served.admin), receipt.id)
    assert post(world, "purge.vacuum", as_admin, alice).status_code == 403  # another caller than the signer


def test_a_replayed_vacuum_request_is_refused(world: Keyed, admin: RemoteVault) -> None:
    receipt = _purged(world, admin, "vac4", vacuum=False)
    me = world.served.admin
    data = codec.envelope("purge.vacuum", VacuumRequest(caller(me), receipt.id), os.urandom(16))
    headers = signed_headers(world.served, "/v1/purge/vacuum", data, key=signing_key(me), keyid=keyid_of(me))
    with world.served.client() as client:
        first = client.post("/v1/purge/vacuum", content=data, headers=headers)
        again = client.post("/v1/purge/vacuum", content=data, headers=headers)
    assert first.status_code == 200
    assert again.status_code == 401 and again.json()["error"] == "Unauthenticated"
