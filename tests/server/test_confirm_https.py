"""Confirming an enrolment made over HTTPS (issue 14), and the whole path to a first checkout.

On the ``keyed`` server: the admin confirms through the server (``engineers.pending_confirmation``
then ``engineers.confirm`` with the digest of the rows certified: a format-3 ``engineer-confirm``),
and the engineer then signs requests with the record ``enroll_over_https`` returned; or the admin
confirms and grants on the server's host (its key file: format 3 in-process), and the engineer,
with no database, unlocks that record (``RemoteVault``) and checks out through the server.
A commit whose rows changed since they were read is 409 and writes nothing; an engineer may not
read a pending confirmation (403). ``audit verify`` passes after each.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from enrolment_harness import (
    Enrolment,
    enrol,
)
from server_harness import (
    Keyed,
    database_state,
    events,
    without_nonces,
)

from vault.crypto import keyrecord
from vault.crypto.signing import SigningKey
from vault.errors import (
    AccessDenied,
    ConcurrentChange,
)
from vault.service import serverjoin
from vault.service.engineerparts import https_engineer_keyholder
from vault.service.remote import RemoteVault
from vault.service.serverpins import KeyRecordFile
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m
from vault.transport.https import HttpsTransport

NAMES = ("dave2", "erin", "hank2")


@pytest.fixture(scope="module")
def codes(module_team) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Invitations made in-process before the vault goes to the team server (``keyed``)."""
    return {name: module_team.admin.engineers.invite(name) for name in NAMES}


@pytest.fixture(scope="module")
def enrolment(codes: dict[str, str], keyed: Keyed) -> Enrolment:
    return Enrolment(keyed, codes)


def test_confirmed_on_the_host_and_granted_the_engineer_checks_out_with_their_record_alone(
    enrolment: Enrolment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole path: the HTTPS enrolment's record kept on the engineer's machine (``KeyRecordFile``),
    the admin on the server's host (its key file) confirms and grants in-process (format 3), and
    the engineer, with no database, unlocks that record and checks out through the server."""
    served, admin = enrolment.keyed.served, enrolment.keyed.served.admin
    monkeypatch.setenv("CREDVAULT_HOME", str(tmp_path / "home"))
    record = enrol(enrolment, "dave2", "dave2's passphrase")
    admin.core.server_key = enrolment.keyed.key
    try:
        assert admin.engineers.pending_fingerprint("dave2") == record.fingerprint
        admin.engineers.confirm("dave2", record.fingerprint)
        admin.grants.grant("dave2", "acme")
    finally:
        admin.core.server_key = None
    r = record
    KeyRecordFile(r.vault_id, r.engineer_id, r.name, r.key_generation, r.key_record).save()
    pin = serverjoin.pin(served.url, serverjoin.trust(served.url, str(served.ca.ca_file)), str(served.ca.ca_file))
    assert (pin.vault_id, pin.org_key) == (record.vault_id, record.org_signing_public)
    dave = RemoteVault(pin, engineer="dave2", sessions=MemorySessionStore())
    try:
        dave.engineers.unlock("dave2", "dave2's passphrase")
        assert dave.checkouts.checkout("acme/fw01", reason="T-88 first job").value == "pw of acme/fw01"
    finally:
        dave.close()
    assert [e.action for e in events(served)][-1] == "checkout"
    result = admin.audit.verify()
    assert result.ok, result


@dataclasses.dataclass
class RecordKeys:
    """The signing key of an enrolled record, opened here (what the lead's local key file will hold)."""

    engineer_id: int
    key_generation: int
    seed: bytes

    def me(self) -> RecordKeys:
        return self

    def my_signing_key(self) -> SigningKey:
        return SigningKey(self.seed)


def admin_over_https(enrolment: Enrolment) -> tuple[Any, HttpsTransport]:
    served = enrolment.keyed.served
    https = HttpsTransport(served.url, served.admin.keyholder, ca_file=str(served.ca.ca_file))
    served.admin.keyholder.me()
    return https_engineer_keyholder(served.admin.engineers, https), https


def test_the_admin_confirms_over_https_and_the_engineer_signs_in_with_their_record(enrolment: Enrolment) -> None:
    served = enrolment.keyed.served
    record = enrol(enrolment, "erin", "erin's passphrase")
    admin, https = admin_over_https(enrolment)
    try:
        pending = admin.pending("erin")
        assert (pending.fingerprint, pending.role, pending.carried) == (record.fingerprint, "engineer", [])
        before = len(events(served))
        info = admin.confirm("erin", record.fingerprint, pending)
        assert (info.name, info.status, info.key_generation) == ("erin", "active", 1)
    finally:
        https.close()
    appended = events(served)[before:]
    assert [(e.action, e.server_key_version is not None) for e in appended] == [("engineer-confirm", True)]
    bundle = keyrecord.open_record(record.key_record, "erin's passphrase", record.vault_id, record.engineer_id, 1)
    erin = HttpsTransport(
        served.url, RecordKeys(record.engineer_id, 1, bundle.signing_seed), ca_file=str(served.ca.ca_file)
    )
    try:
        me = erin.whoami()  # authenticated by the certified key of the record alone
    finally:
        erin.close()
    assert (me.name, me.role, me.key_generation, me.vault_id) == ("erin", "engineer", 1, record.vault_id)
    assert served.admin.audit.verify().ok


def test_a_confirmation_of_rows_that_changed_since_read_is_409_and_writes_nothing(
    enrolment: Enrolment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit's digest is not that of the rows the server recomputes in its unit (as when the
    engineer re-enrolled between the read and the commit): 409 ``stale-draft``, nothing stored."""
    served = enrolment.keyed.served
    record = enrol(enrolment, "hank2", "hank2's passphrase")
    monkeypatch.setattr("vault.transport.https_engineers.pending_digest", lambda rows: bytes(32))
    admin, https = admin_over_https(enrolment)
    state = database_state(served.db_url)
    try:
        with pytest.raises(ConcurrentChange, match="stale"):
            admin.confirm("hank2", record.fingerprint, None)
    finally:
        https.close()
    assert without_nonces(database_state(served.db_url)) == without_nonces(state)
    with enrolment.keyed.store.read() as s:
        assert s.get(m.Engineer, record.engineer_id).status == "enrolled"  # type: ignore[union-attr]


def test_a_confirmation_by_an_engineer_is_refused(enrolment: Enrolment) -> None:
    served = enrolment.keyed.served
    https = HttpsTransport(served.url, served.alice.keyholder, ca_file=str(served.ca.ca_file))
    served.alice.keyholder.me()
    alice = https_engineer_keyholder(served.alice.engineers, https)
    state = database_state(served.db_url)
    try:
        with pytest.raises(AccessDenied):
            alice.pending("hank2")
    finally:
        https.close()
    assert without_nonces(database_state(served.db_url)) == without_nonces(state)
