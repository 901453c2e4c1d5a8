"""Every request and response body of an engineer's whole working life through the team server,
scanned (issue 14's done-when): enrolment over HTTPS, then with ``RemoteVault`` (no database):
unlock, the client and grant listings, a secret added with its metadata, shown, listed, its
history, checked out, checked in with a new value, updated. The admin's part (invitation,
confirmation, grant) runs on the server's host and sends no body. None of the bodies holds a
passphrase, the enrolment code, a password, a secret or client name or slug, a username, host,
URL, note or reason, nor a private, client or data key, raw or as hex or base64.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
from server_harness import KEYED_METADATA, Keyed, ticking
from test_body_scan import forms, word

from vault.crypto import keyrecord
from vault.service import serverjoin
from vault.service.remote import RemoteVault
from vault.service.serverjoin import pin, trust
from vault.service.serverpins import KeyRecordFile
from vault.service.sessions import MemorySessionStore
from vault.transport.https_enrolment import enroll_over_https

PASSPHRASE = "dora's long passphrase 4711"
ADMIN_PASSPHRASE = "admin passphrase ✓"  # the suite's first admin's (tests/conftest.py)
REASON = "T-5150 core switch replacement"
ADDED = {"username": "sw-core-admin-9931", "url": "https://core-sw.acme-internal.example", "note": "cab 7 slot 3"}


class Recording(httpx.BaseTransport):
    """An httpx transport that keeps every request and response body it carries."""

    def __init__(self, inner: httpx.BaseTransport, seen: list[bytes]) -> None:
        self.inner, self.seen = inner, seen

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request.read())
        response = self.inner.handle_request(request)
        self.seen.append(response.read())
        return response

    def close(self) -> None:
        self.inner.close()


def recording(keyed: Keyed, seen: list[bytes]) -> Recording:
    verify = ssl.create_default_context(cafile=str(keyed.served.ca.ca_file))
    return Recording(httpx.HTTPTransport(verify=verify), seen)


def test_no_body_of_an_engineers_whole_workflow_holds_a_plaintext_or_a_key(
    keyed: Keyed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDVAULT_HOME", str(tmp_path / "home"))
    served, admin, seen = keyed.served, keyed.served.admin, []
    admin.core.server_key = keyed.key  # the admin's part, on the server's host
    try:
        code = admin.engineers.invite("dora")
        pinned = pin(served.url, trust(served.url, str(served.ca.ca_file)), str(served.ca.ca_file))
        enrolled = enroll_over_https(
            served.url, ca_file=pinned.ca_file, name="dora", code=code, passphrase=PASSPHRASE,
            kdf_params=keyrecord.FLOOR, transport=recording(keyed, seen),
        )  # fmt: skip
        KeyRecordFile(
            enrolled.vault_id, enrolled.engineer_id, "dora", enrolled.key_generation, enrolled.key_record
        ).save()
        admin.engineers.confirm("dora", enrolled.fingerprint)
        admin.grants.grant("dora", "acme")
    finally:
        admin.core.server_key = None
    dora = RemoteVault(
        pinned, engineer="dora", sessions=MemorySessionStore(), clock=ticking(served.alice.clock),
        transport=recording(keyed, seen),
    )  # fmt: skip
    dora.engineers.unlock("dora", PASSPHRASE)
    assert [c.slug for c in dora.clients.list()] == ["acme"]
    assert [g.client for g in dora.grants.list()] == ["acme"]
    dora.secrets.add("acme/core-sw", password="pw of acme/core-sw", kind="equipment", **ADDED)
    assert dora.secrets.show("acme/core-sw").note == ADDED["note"]
    assert "core-sw" in [s.name for s in dora.secrets.list("acme")]
    assert [v.version for v in dora.secrets.history("acme/core-sw")] == [1]
    assert dora.checkouts.checkout("acme/core-sw", reason=REASON).value == "pw of acme/core-sw"
    dora.checkouts.checkin("acme/core-sw", new_password="pw of acme/core-sw, 2")
    dora.secrets.update("acme/core-sw", password="pw of acme/core-sw, 3")
    assert dora.checkouts.reveal("acme/fw01", reason=REASON) == "pw of acme/fw01"
    assert len(seen) >= 2 * 14  # every request and its answer were kept

    words = ["acme", "Acme Ltd", "core-sw", "acme/core-sw", "fw01", "acme/fw01", REASON, PASSPHRASE, code]
    words += ["pw of acme/core-sw", "pw of acme/core-sw, 2", "pw of acme/core-sw, 3", "pw of acme/fw01"]
    words += [*ADDED.values(), *KEYED_METADATA["acme/fw01"].values()]
    session = dora.keyholder.me()
    keys = [session.signing_seed, session.sealing_private, *dora.keyholder.client_keys.values()]
    assert len(keys) >= 3
    control = b'{"slug":"acme","key":"' + forms(keys[-1])[3] + b'"}'  # the scan finds what it looks for
    assert word("acme").search(control) and any(form in control for form in forms(keys[-1]))
    found = []
    for body in seen:
        found += [w for w in words if word(w).search(body)]
        found += [key[:4].hex() for key in keys for form in forms(key) if form in body]
    assert found == []
    assert admin.audit.verify().ok


def test_no_body_of_an_admins_workflow_holds_a_plaintext_or_a_key(
    keyed: Keyed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The admin's part from their own machine too (``RemoteVault``, no database): an invitation and
    its confirmation, a new client, a grant, a re-key and the confirmation carrying the grant over
    (session 16), a client-key rotation, a root rotation (its recovery
    shares and both bundles' keys scanned for), an admin's removal (session 17: her grant adopted, the
    root rotated again, its new shares and the old bundle's keys scanned for) and the client's purge;
    the engineer enrols, adds a secret and checks it out between."""
    if keyed.served.db_url.startswith("postgresql"):
        pytest.skip("the bodies a server sends and receives do not depend on its database (SQLite runs it)")
    monkeypatch.setenv("CREDVAULT_HOME", str(tmp_path / "home"))
    served, host, seen = keyed.served, keyed.served.admin, []
    name = host.engineer_name
    assert name is not None
    pinned = pin(served.url, trust(served.url, str(served.ca.ca_file)), str(served.ca.ca_file))
    serverjoin.join(pinned, host, name, ADMIN_PASSPHRASE)
    admin = RemoteVault(
        pinned, engineer=name, sessions=MemorySessionStore(), clock=ticking(served.alice.clock),
        transport=recording(keyed, seen),
    )  # fmt: skip
    admin.engineers.unlock(name, ADMIN_PASSPHRASE)
    code = admin.engineers.invite("frank")
    enrolled = enroll_over_https(
        served.url, ca_file=pinned.ca_file, name="frank", code=code, passphrase=PASSPHRASE,
        kdf_params=keyrecord.FLOOR, transport=recording(keyed, seen),
    )  # fmt: skip
    KeyRecordFile(enrolled.vault_id, enrolled.engineer_id, "frank", enrolled.key_generation, enrolled.key_record).save()
    shown = admin.engineers.pending_confirmation("frank")
    assert shown.fingerprint == enrolled.fingerprint  # what frank read to the admin
    admin.engineers.confirm("frank", enrolled.fingerprint, shown=shown)
    admin.clients.add("zeta-holdings", "Zeta Holdings plc")
    admin.grants.grant("frank", "zeta-holdings")
    frank = RemoteVault(
        pinned, engineer="frank", sessions=MemorySessionStore(), clock=ticking(served.alice.clock),
        transport=recording(keyed, seen),
    )  # fmt: skip
    frank.engineers.unlock("frank", PASSPHRASE)
    frank.secrets.add("zeta-holdings/vpn-gw", password="pw of zeta vpn", kind="equipment", **ADDED)
    assert frank.checkouts.checkout("zeta-holdings/vpn-gw", reason=REASON).value == "pw of zeta vpn"
    frank.checkouts.checkin("zeta-holdings/vpn-gw")
    lost = frank.keyholder.me()  # frank's laptop is lost: re-keyed, enrolled again, confirmed with his grant
    second = admin.engineers.rotate("frank")
    again = enroll_over_https(
        served.url, ca_file=pinned.ca_file, name="frank", code=second, passphrase=PASSPHRASE + " two",
        kdf_params=keyrecord.FLOOR, transport=recording(keyed, seen),
    )  # fmt: skip
    KeyRecordFile(again.vault_id, again.engineer_id, "frank", again.key_generation, again.key_record).save()
    assert [g.client for g in admin.engineers.pending_confirmation("frank").carried] == ["zeta-holdings"]
    admin.engineers.confirm("frank", again.fingerprint)  # the carry-over made on the admin's machine
    frank.close()
    frank = RemoteVault(
        pinned, engineer="frank", sessions=MemorySessionStore(), clock=ticking(served.alice.clock),
        transport=recording(keyed, seen),
    )  # fmt: skip
    frank.engineers.unlock("frank", PASSPHRASE + " two")
    assert frank.checkouts.checkout("zeta-holdings/vpn-gw", reason=REASON).value == "pw of zeta vpn"
    frank.checkouts.checkin("zeta-holdings/vpn-gw")
    keys = [*admin.keyholder.client_keys.values()]  # the version the rotation retires
    keys += [lost.signing_seed, lost.sealing_private]  # the keys of the lost laptop
    info = admin.keys.rotate_client("zeta-holdings")
    assert (info.to_version, info.state, info.done) == (2, "done", 1)
    assert frank.checkouts.checkout("zeta-holdings/vpn-gw", reason=REASON).value == "pw of zeta vpn"
    frank.checkouts.checkin("zeta-holdings/vpn-gw")
    keys += [*admin.keyholder.client_keys.values(), *frank.keyholder.client_keys.values()]
    # an admin's removal (session 17): gina grants frank, then is removed; her grant adopted, the root rotated
    third = admin.engineers.invite("gina", role="admin")
    gina_keys = enroll_over_https(
        served.url, ca_file=pinned.ca_file, name="gina", code=third, passphrase=PASSPHRASE + " gina",
        kdf_params=keyrecord.FLOOR, transport=recording(keyed, seen),
    )  # fmt: skip
    KeyRecordFile(gina_keys.vault_id, gina_keys.engineer_id, "gina", gina_keys.key_generation,
                  gina_keys.key_record).save()  # fmt: skip
    admin.engineers.confirm("gina", gina_keys.fingerprint)
    gina = RemoteVault(
        pinned, engineer="gina", sessions=MemorySessionStore(), clock=ticking(served.alice.clock),
        transport=recording(keyed, seen),
    )  # fmt: skip
    gina.engineers.unlock("gina", PASSPHRASE + " gina")
    gina.grants.revoke("frank", "zeta-holdings")
    gina.grants.grant("frank", "zeta-holdings")  # signed by gina: adopted by the admin on her removal
    gina_root = gina.keyholder._root
    keys += [gina.keyholder.me().signing_seed, gina.keyholder.me().sealing_private]
    keys += [] if gina_root is None else [gina_root.recovery.private, gina_root.lookup_key]
    admin.keyholder.open_recovery()
    roots = admin.keyholder._root  # the bundle the removal's root rotation destroys
    assert roots is not None
    keys += [roots.recovery.private, roots.lookup_key]
    admin.engineers.remove("gina")
    removal = admin.last_root_rotation  # made on the admin's machine: the new shares never sent
    assert removal is not None and "gina" not in removal.admins
    keys += [*admin.keyholder.client_keys.values()]
    assert frank.checkouts.checkout("zeta-holdings/vpn-gw", reason=REASON).value == "pw of zeta vpn"
    frank.checkouts.checkin("zeta-holdings/vpn-gw")
    keys += [*frank.keyholder.client_keys.values()]
    old_root = admin.keyholder._root  # the bundle the root rotation destroys
    assert old_root is not None
    keys += [old_root.recovery.private, old_root.lookup_key]
    rotated = admin.keys.rotate_root(shares=(2, 3))  # made on the admin's machine; the shares never sent
    assert len(rotated.shares) == 3
    receipt = admin.purge.client("zeta-holdings", request="DSR-4242")
    assert receipt.request == "DSR-4242"

    words = ["zeta-holdings", "Zeta Holdings plc", "vpn-gw", "zeta-holdings/vpn-gw", "pw of zeta vpn", REASON]
    words += [PASSPHRASE, PASSPHRASE + " two", ADMIN_PASSPHRASE, code, second, *ADDED.values(), *rotated.shares]
    words += [PASSPHRASE + " gina", third, *removal.shares]
    for vault in (admin, frank):
        session = vault.keyholder.me()
        keys += [session.signing_seed, session.sealing_private]
    recovery = admin.keyholder._root  # the admin's opened root bundle (the new one): its recovery and lookup keys
    assert recovery is not None
    keys += [recovery.recovery.private, recovery.lookup_key]
    assert len(keys) >= 7 and len(seen) >= 2 * 20
    control = b'{"slug":"zeta-holdings","key":"' + forms(keys[0])[3] + b'"}'  # the scan finds what it looks for
    assert word("zeta-holdings").search(control) and any(form in control for form in forms(keys[0]))
    found = []
    for body in seen:
        found += [w for w in words if word(w).search(body)]
        found += [key[:4].hex() for key in keys for form in forms(key) if form in body]
    assert found == []
    assert host.audit.verify().ok
