"""An admin's checkout from their own machine, through the team server (no database there).

An admin holds no grant: they name any client by its slug's lookup tag under their root bundle,
whose copy sealed to them the server answers (``engineers.root_seal``) and their keyholder opens
and checks under the pinned organisation key (``remote_lookup.RemoteLookup._by_tag``). The checkout is then the
engineer's: the signed request, the format-3 event committed before the answer, every row verified
here. An engineer without a grant gets no root seal and no client. Both engines.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from server_harness import Keyed, database_state, events, remote_engineer, without_nonces

from vault.errors import AccessDenied, NotFound

ADMIN, ADMIN_PASS = "root-admin", "admin passphrase ✓"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CREDVAULT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.mark.usefixtures("home")
def test_an_admin_checks_out_any_client_through_the_server(keyed: Keyed) -> None:
    admin = remote_engineer(keyed, keyed.served.admin, ADMIN, ADMIN_PASS)
    before = len(events(keyed.served))
    assert admin.checkouts.checkout("acme/fw01", reason="T-801 admin").value == "pw of acme/fw01"
    assert admin.checkouts.reveal("excl/sw01", field="username", reason="T-802 admin") == "netops-4410"
    assert admin.checkouts.checkin("acme/fw01") is None
    added = events(keyed.served)[before:]
    assert [(e.action, e.request_id is not None, e.server_key_version) for e in added] == [
        ("checkout", True, keyed.key.version),
        ("reveal", True, keyed.key.version),
        ("checkin", True, keyed.key.version),
    ]
    assert {e.engineer_id for e in added} == {keyed.served.admin.keyholder.me().engineer_id}
    result = keyed.served.admin.audit.verify()
    assert result.ok, result


@pytest.mark.usefixtures("home")
def test_an_admin_breaks_an_engineers_exclusive_hold_through_the_server(keyed: Keyed) -> None:
    bob = remote_engineer(keyed, keyed.served.bob, "bob", "pass of bob")
    admin = remote_engineer(keyed, keyed.served.admin, ADMIN, ADMIN_PASS)
    bob.checkouts.checkout("excl/sw05", reason="T-803 bob")
    assert admin.checkouts.break_checkout("excl/sw05") == "bob"
    assert events(keyed.served)[-1].action == "checkout-break"
    assert [c.secret for c in admin.checkouts.list()] == []


@pytest.mark.usefixtures("home")
def test_an_engineer_without_a_grant_gets_no_root_seal_and_no_client(keyed: Keyed) -> None:
    """carol (no grant) asks for acme: her grants name nothing, the server refuses her the root seal
    (an admin's only), and nothing is written but her requests' nonces."""
    carol = remote_engineer(keyed, keyed.carol, "carol", "pass of carol")
    state = without_nonces(database_state(keyed.served.db_url))
    with pytest.raises(NotFound) as caught:
        carol.checkouts.checkout("acme/fw01", reason="T-804 carol")
    assert "pw of" not in str(caught.value)
    with pytest.raises(AccessDenied):
        carol.keyholder.recovery_source()  # the raw ask: refused by the server
    assert carol.keyholder.recovery_version() is None
    assert without_nonces(database_state(keyed.served.db_url)) == state


class _Relabelled:
    """A compromised server (or a proxy it fooled): the admin's real root seal, with the answer's
    organisation key and chain replaced by ``change``."""

    def __init__(self, https: object, change: object) -> None:
        self.https, self.change = https, change

    def call(self, name: str, body: object, request_id: bytes | None = None) -> object:
        answer = self.https.call(name, body, request_id)  # type: ignore[attr-defined]
        return self.change(answer)  # type: ignore[operator]


@pytest.mark.usefixtures("home")
def test_a_root_seal_under_an_organisation_key_the_pin_does_not_lead_to_is_refused(keyed: Keyed) -> None:
    """After a root rotation the admin's bundle holds the new organisation key, believed only along
    the chain signed from the pinned one: a made-up key, or a chain link not signed by the key
    before it, is refused before the bundle is opened (test_rotation.py's third mode follows a real
    chain after a real root rotation)."""
    import dataclasses

    from vault.authority.requests import OrgKeyRow
    from vault.crypto import signing
    from vault.errors import UntrustedRecord
    from vault.service.remote_admin import root_seal

    admin = remote_engineer(keyed, keyed.served.admin, ADMIN, ADMIN_PASS)
    stranger = signing.SigningKey.generate().public
    pinned = admin.keyholder.me().org_signing_public
    forged_link = OrgKeyRow(2, stranger, 1_800_000_000, bytes(64))
    changes = {
        "a key with no chain": lambda a: dataclasses.replace(a, org_signing_public=stranger, org_chain=()),
        "a link not signed by the pinned key": lambda a: dataclasses.replace(
            a, org_signing_public=stranger, org_chain=(OrgKeyRow(1, pinned, 1, None), forged_link)
        ),
    }
    for what, change in changes.items():
        fetch = root_seal(_Relabelled(admin.https, change), admin.keyholder)
        with pytest.raises(UntrustedRecord):
            fetch()
        assert admin.keyholder.recovery_version() is None, what
    version, _blob, org = root_seal(admin.https, admin.keyholder)()  # the real one: the pinned key
    assert org == pinned and version >= 1
