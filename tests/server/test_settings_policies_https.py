"""An admin's change of the vault settings, and their list of unsigned policies, through the team
server (both engines).

The admin works from a machine with no database (``RemoteVault.keys.set_retention`` /
``set_cryptoperiod``): their keyholder reads the row as stored (``settings.get``), signs the change
over it and sends it (``settings.set``); the server checks the caller, that the stored row is still
the one read, the bounds, the time and the signature under the caller's certified key before it
stores the row with its format-3 ``settings`` event. The attacks are raw signed requests by insiders
with valid keys, each refused with nothing written. ``policies.unsigned``: the slugs of the clients
whose stored policy does not verify are opened on the admin's machine (their contexts read by id).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from remote_admin_harness import caller, post, remote
from server_harness import Keyed, database_state, events, without_nonces
from sqlalchemy import update

from vault import Vault
from vault.authority.settings_requests import SET, SettingsRequest, SettingsRow, settings_fields
from vault.crypto import signing
from vault.crypto.labels import LABEL_SIG_SETTINGS
from vault.errors import AccessDenied, InvalidInput
from vault.service.remote import RemoteVault
from vault.storage import models as m

pytestmark = pytest.mark.usefixtures("cli_home")

ADMIN = "root-admin"


@pytest.fixture(scope="module")
def world(module_team: Any, request: pytest.FixtureRequest) -> Keyed:
    keyed: Keyed = request.getfixturevalue("keyed")
    return keyed


@pytest.fixture
def admin(world: Keyed, module_team: Any) -> Iterator[RemoteVault]:
    mine = remote(world, world.served.admin, ADMIN, module_team.passphrases[ADMIN])
    yield mine
    mine.close()


def stored(world: Keyed) -> SettingsRow:
    with world.store.read() as s:
        info = s.get(m.VaultInfo, 1)
        assert info is not None
        return SettingsRow(info.retention_versions, info.cryptoperiod_days, info.settings_signed_by,
                           info.settings_signed_at, info.settings_signature)  # fmt: skip


def signed_by(world: Keyed, vault: Vault, row: SettingsRow) -> SettingsRow:
    """``row`` signed by ``vault``'s engineer's key (``signed_by`` as it says)."""
    key = vault.keyholder.my_signing_key()
    return row._replace(signature=key.sign(LABEL_SIG_SETTINGS, *settings_fields(world.served.admin.vault_id(), row)))


def test_an_admin_changes_the_settings_with_no_database(world: Keyed, admin: RemoteVault) -> None:
    before = len(events(world.served))
    admin.keys.set_retention(5)
    admin.keys.set_cryptoperiod(200)
    row = stored(world)
    me = world.served.admin.keyholder.me()
    assert (row.retention_versions, row.cryptoperiod_days, row.signed_by) == (5, 200, me.engineer_id)
    assert row.signature is not None
    public = world.served.admin.keyholder.my_signing_key().public
    fields = settings_fields(world.served.admin.vault_id(), row)
    signing.verify(public, row.signature, LABEL_SIG_SETTINGS, *fields, what="the settings")
    assert admin.keys.keyholder.get().signed  # read back through the server, verified on this machine
    added = [(e.action, e.engineer_id, e.request_id is not None) for e in events(world.served)[before:]]
    assert added == [("settings", me.engineer_id, True)] * 2
    with pytest.raises(InvalidInput):
        admin.keys.set_retention(0)  # refused on the admin's machine: out of bounds
    with pytest.raises(Exception, match="not served"):
        admin.keys.rotate_client("acme")
    assert world.served.admin.audit.verify().ok


def test_insiders_changes_are_refused_with_nothing_written(world: Keyed, admin: RemoteVault) -> None:
    served = world.served
    alice = served.alice
    current = stored(world)
    me = caller(served.admin)
    now = int(served.alice.clock().timestamp())
    wanted = SettingsRow(7, current.cryptoperiod_days, me.engineer_id, now, None)
    good = SettingsRequest(SET, me, served.admin.keyholder.me().org_signing_public, signed_by(world, served.admin,
                           wanted), current, "retention_versions")  # fmt: skip
    before = without_nonces(database_state(served.db_url))
    # an engineer: their own change, and the admin's request signed by them
    own = signed_by(world, alice, wanted._replace(signed_by=caller(alice).engineer_id))
    theirs = dataclasses.replace(good, caller=caller(alice), signed=own)
    answer = post(world, "settings.set", theirs, alice)
    assert answer.status_code == 403 and answer.json()["error"] == "AccessDenied"
    assert post(world, "settings.set", good, alice).status_code == 403
    # the admin's request with a row signed by another key (an engineer's) in the admin's name
    forged = dataclasses.replace(good, signed=signed_by(world, alice, wanted))
    answer = post(world, "settings.set", forged, served.admin)
    assert answer.status_code == 403 and answer.json()["error"] == "AccessDenied"
    # a row the admin signed, then changed
    changed = dataclasses.replace(good, signed=good.signed._replace(retention_versions=1))  # type: ignore[union-attr]
    assert post(world, "settings.set", changed, served.admin).status_code == 403
    # over another row than the one stored: stale
    stale = dataclasses.replace(good, replaces=current._replace(retention_versions=current.retention_versions + 1))
    answer = post(world, "settings.set", stale, served.admin)
    assert answer.status_code == 409 and answer.json()["code"] == "stale-draft"
    # signed by the admin, but out of bounds or dated away from now
    for row in (wanted._replace(retention_versions=0), wanted._replace(signed_at=now - 3600)):
        odd = dataclasses.replace(good, signed=signed_by(world, served.admin, row))
        assert post(world, "settings.set", odd, served.admin).status_code == 400
    assert without_nonces(database_state(served.db_url)) == before
    assert post(world, "settings.set", good, served.admin).status_code == 200
    assert stored(world).retention_versions == 7


def test_an_engineer_through_the_server_cannot_change_the_settings(world: Keyed, module_team: Any) -> None:
    alice = remote(world, world.served.alice, "alice", "pass of alice")
    before = without_nonces(database_state(world.served.db_url))
    with pytest.raises(AccessDenied):
        alice.keys.set_retention(3)
    alice.close()
    assert without_nonces(database_state(world.served.db_url)) == before


def test_an_admin_lists_the_unsigned_policies_with_no_database(world: Keyed, admin: RemoteVault) -> None:
    """A DBA loosens excl's policy: the admin's machine lists it as stored, named by its slug."""
    before = {p.client for p in admin.policies.unsigned()}  # acme's default row was never signed
    assert "excl" not in before
    excl = m.ClientPolicy.client_id == admin.checkouts.context("excl").client_id
    with world.store.transaction() as s:
        s.execute(update(m.ClientPolicy).where(excl).values(exclusive=False))
    try:
        shown = {p.client: p for p in admin.policies.unsigned()}
        assert set(shown) == before | {"excl"}
        assert (shown["excl"].exclusive, shown["excl"].signed) == (False, False)
        alice = remote(world, world.served.alice, "alice", "pass of alice")
        with pytest.raises(AccessDenied):
            alice.policies.unsigned()
        alice.close()
        with pytest.raises(Exception, match="not served"):
            admin.policies.adopt([shown["excl"]])
    finally:
        with world.store.transaction() as s:
            s.execute(update(m.ClientPolicy).where(excl).values(exclusive=True))
    assert {p.client for p in admin.policies.unsigned()} == before
