"""An admin's checkouts on the team server's host (``vault/server/host.py``), through the server's own
pipeline in-process: authenticated, recorded in format 3, committed, then the layer removed.

On ``team3``'s HTTPS mode (``tests/served.py``: a layered vault, the admin on the host with the key
file, engineers through a real server). Attacks as the host's insider would make them: a key file
the vault did not certify, a master key that does not open the layer, a checkout whose event cannot
be committed; each reveals nothing.
"""

from __future__ import annotations

import json
import os

import pytest
from served import ServedTeam
from sqlalchemy import select

from vault.authority import checkout_events
from vault.crypto.serverkey import ServerSigningKey
from vault.crypto.serverlayer import is_layered
from vault.errors import AuditUnavailable, ConfigurationError, StoreUnavailable
from vault.server.host import on_host
from vault.server.keyfile import ServerKeyFile
from vault.server.layer import MasterKey
from vault.storage import models as m
from vault.wire.eventrequest import LOCAL_AUTHORITY

pytestmark = pytest.mark.parametrize("team3", ["https"], indirect=True)

REF, PW = "acme/fw01", "acme-pw-1"


@pytest.fixture
def acme(team3: ServedTeam) -> ServedTeam:
    team3.admin.clients.add("acme", "Acme Ltd")
    team3.admin.secrets.add(REF, password=PW, kind="equipment", username="fw-admin")
    return team3


def _events(team: ServedTeam) -> list[m.AuditEvent]:
    with team.server_store.read() as s:
        return list(s.scalars(select(m.AuditEvent).order_by(m.AuditEvent.seq)))


def test_the_host_admin_checks_out_a_layered_key_on_record_in_format_3(acme: ServedTeam) -> None:
    with acme.server_store.read() as s:
        stored = list(s.scalars(select(m.SecretVersion.wrapped_dek)))
    assert stored and all(is_layered(bytes(blob)) for blob in stored)  # the host's own add was layered
    before = len(_events(acme))
    assert acme.admin.checkouts.checkout(REF, reason="T-1 host").value == PW
    assert acme.admin.checkouts.reveal(REF, field="username", reason="T-2 host") == "fw-admin"
    assert acme.admin.checkouts.checkin(REF) is None
    added = _events(acme)[before:]
    assert [e.action for e in added] == ["checkout", "reveal", "checkin"]
    assert all(e.request_id is not None and e.server_key_version == acme.server_key.version for e in added)
    paths = ["/v1/checkouts/checkout", "/v1/checkouts/reveal", "/v1/checkouts/checkin"]
    assert [(e.request_sig or "").split("\n")[0] for e in added] == [f"POST {LOCAL_AUTHORITY} {p}" for p in paths]
    result = acme.admin.audit.verify()
    assert result.ok, result


def test_the_host_admin_breaks_an_engineers_exclusive_hold(acme: ServedTeam) -> None:
    acme.admin.policies.set("acme", exclusive=True)
    alice = acme.engineer("alice")
    acme.admin.grants.grant("alice", "acme")
    alice.checkouts.checkout(REF, reason="T-3")
    assert acme.admin.checkouts.break_checkout(REF) == "alice"
    assert _events(acme)[-1].action == "checkout-break"
    assert acme.admin.checkouts.list() == []
    assert acme.admin.audit.verify().ok


def test_a_key_file_the_vault_did_not_certify_reveals_nothing(acme: ServedTeam) -> None:
    admin, before = acme.admin, len(_events(acme))
    on_host(admin, ServerKeyFile(ServerSigningKey.generate(1), admin.core.host_layer.master))
    admin.checkouts._keyholder = admin.checkouts._transport = None  # the next checkout builds its transport anew
    with pytest.raises(ConfigurationError, match="server-key-not-certified") as caught:
        admin.checkouts.checkout(REF, reason="T-4 stolen file")
    assert PW not in str(caught.value)
    assert len(_events(acme)) == before


def test_a_master_key_that_does_not_open_the_layer_reveals_nothing(acme: ServedTeam) -> None:
    admin, before = acme.admin, len(_events(acme))
    on_host(admin, ServerKeyFile(acme.server_key, MasterKey(1, os.urandom(32))))
    admin.checkouts._keyholder = admin.checkouts._transport = None
    with pytest.raises(ConfigurationError, match="master-key-mismatch"):
        admin.checkouts.checkout(REF, reason="T-5 wrong file")
    assert len(_events(acme)) == before


def test_a_host_checkout_whose_event_cannot_be_committed_reveals_nothing(
    acme: ServedTeam, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = len(_events(acme))

    def refused(*args: object, **kwargs: object) -> int:
        raise StoreUnavailable("disk full")

    monkeypatch.setattr(checkout_events, "append", refused)
    with pytest.raises(AuditUnavailable) as caught:
        acme.admin.checkouts.checkout(REF, reason="T-6 full disk")
    assert PW not in str(caught.value)
    assert len(_events(acme)) == before
    assert acme.admin.checkouts.list() == []


def test_without_the_hosts_pipeline_a_checkout_stays_refused(acme: ServedTeam) -> None:
    admin = acme.admin
    server = admin.core.host_server
    admin.core.host_server = None  # the server key alone (an admin change in format 3), not the pipeline
    admin.checkouts._keyholder = admin.checkouts._transport = None
    try:
        with pytest.raises(ConfigurationError, match="team server"):
            admin.checkouts.checkout(REF, reason="T-7")
    finally:
        admin.core.host_server = server


def test_a_root_rotation_recertifies_only_the_server_keys_the_chain_certified(acme: ServedTeam) -> None:
    """An insider who holds the organisation seed (a removed admin) and writes the database plants
    server key 2 with a certificate that verifies under the current organisation key, but no
    ``server-key-certify`` event: the root rotation re-certifies key 1 (its event is in the chain)
    and not key 2, whose old certificate verifies under no key after it."""
    from vault.authority.server_keys import stored_rows
    from vault.crypto import serverkey
    from vault.keyholder.serverkeys import verified_server_keys

    admin = acme.admin
    planted = ServerSigningKey.generate(2)
    with admin.store.transaction() as s:
        org = admin.checkouts.keys.root_bundle(s).org  # the organisation seed, as a removed admin kept it
        certified_at = int(acme.clock().timestamp())
        certificate = serverkey.certify(org, admin.vault_id(), 2, planted.public, certified_at)
        s.add(m.ServerKey(version=2, signing_public=planted.public, certified_at=certified_at,
                          certificate=certificate, state="retired"))  # fmt: skip
    result = admin.keys.rotate_root()
    assert result.refused == ()
    with admin.store.read() as s:
        trusted = verified_server_keys(stored_rows(s), admin.vault_id(), admin.trust.org_public(s))
        rotation = s.scalars(select(m.AuditEvent).where(m.AuditEvent.action == "root-key-rotate")).one()
    assert set(trusted) == {1}  # key 1 re-certified under the new organisation key; the planted one not
    assert json.loads(rotation.details_json)["server_keys"] == 1
    assert admin.audit.verify().ok
    assert admin.checkouts.checkout(REF, reason="T-8 after the rotation").value == PW
