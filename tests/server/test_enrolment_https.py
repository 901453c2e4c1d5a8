"""Enrolment over HTTPS (issue 14): ``engineers.enroll_draft`` and ``engineers.enroll``.

The admin invites in-process before the vault goes to the team server (an embedded append is
refused after); the ``keyed`` server (its key certified, nonces in the database, both
authentication limits) then takes the enrolments. ``enroll_over_https`` needs no database and
no ``Vault``: it returns the key record, which opens with the passphrase, and the fingerprint
the admin's pending confirmation shows. The ``enroll`` event is format 3, signed by the server,
keeping the request signed by the key it enrols, and ``audit verify`` passes.

Refusals, each writing nothing (``database_state``; a draft, which writes only its nonce, is
compared ``without_nonces``): a wrong code, an expired invitation, a name not invited (or
another's), enrolling twice, a replayed draft and commit, a changed body, a commit signed by
another key than the one it enrols, keys swapped under the proof; over the address limit of
failed codes, 429. The body scan: no passphrase, code, code secret or private key in any body.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import os

import pytest
from enrolment_harness import (
    COMMIT_PATH,
    DRAFT_PATH,
    Capture,
    Enrolment,
    commit_of,
    drafted,
    enrol,
    keyid,
    post,
    problem,
)
from server_harness import (
    Keyed,
    asgi_call,
    database_state,
    envelope,
    events,
    mid_window,
    signed_headers,
    without_nonces,
)
from sqlalchemy import update

from vault.authority.engineer_requests import EnrollCommit, EnrollRequest
from vault.authority.enrolment_proof import invite_keyid
from vault.authority.requests import Caller
from vault.crypto import keyrecord, signing
from vault.crypto.keyrecord import FLOOR
from vault.crypto.signing import SigningKey
from vault.errors import (
    ConfigurationError,
    EnrolmentError,
    Unauthenticated,
    UntrustedRecord,
    WrongPassphrase,
)
from vault.server.app import build_app
from vault.storage import models as m
from vault.storage.engine import Store
from vault.transport.https_enrolment import enroll_over_https
from vault.wire.authlimits import AddressLimit, AuthenticationLimits, EngineerLimit
from vault.wire.nonces import DbNonceStore

NAMES = ("dave", "frank", "gina", "hank", "ivy", "ivy2", "jack", "kate")


@pytest.fixture(scope="module")
def codes(module_team) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Invitations made in-process before the vault goes to the team server (``keyed``)."""
    return {name: module_team.admin.engineers.invite(name) for name in NAMES}


@pytest.fixture(scope="module")
def enrolment(codes: dict[str, str], keyed: Keyed) -> Enrolment:
    return Enrolment(keyed, codes)


# -- the happy path --------------------------------------------------------------------------------


def test_an_engineer_enrols_over_https_and_holds_their_key_record(enrolment: Enrolment) -> None:
    served = enrolment.keyed.served
    before = len(events(served))
    record = enrol(enrolment, "dave", "dave's passphrase")
    assert (record.name, record.key_generation) == ("dave", 1)
    assert "passphrase" not in repr(record) and record.key_record.hex()[:16] not in repr(record)
    bundle = keyrecord.open_record(record.key_record, "dave's passphrase", record.vault_id, record.engineer_id, 1)
    assert bundle.org_signing_public == record.org_signing_public
    with pytest.raises(WrongPassphrase):
        keyrecord.open_record(record.key_record, "another passphrase", record.vault_id, record.engineer_id, 1)
    admin = served.admin
    assert admin.engineers.pending_fingerprint("dave") == record.fingerprint  # what the admin compares
    with enrolment.keyed.store.read() as s:
        row = s.get(m.Engineer, record.engineer_id)
        assert row is not None and (row.status, row.key_record) == ("enrolled", record.key_record)
        assert record.vault_id == s.get(m.VaultInfo, 1).vault_id  # type: ignore[union-attr]
    appended = events(served)[before:]
    assert [(e.action, e.engineer_id, e.key_generation) for e in appended] == [("enroll", record.engineer_id, 1)]
    assert appended[0].server_key_version == enrolment.keyed.key.version and appended[0].request_sig is not None
    assert admin.audit.verify().ok


def test_the_admins_audit_log_streams_through_the_https_enrolment(enrolment: Enrolment) -> None:
    """The keyholder's page checks (``keyholder/audit.py``) accept the format-3 ``enroll`` as the
    chain check does: signed by the key it enrols, before that key's certification."""
    entries = enrolment.keyed.served.admin.audit.log(stream=False)
    assert any(e.action == "enroll" for e in entries)


def test_the_enrolment_event_is_bound_to_the_key_it_enrols(enrolment: Enrolment) -> None:
    """``audit verify`` checks a format-3 ``enroll`` under the key its details name: another key there fails."""
    served = enrolment.keyed.served
    enrolled = [e for e in events(served) if e.action == "enroll" and e.server_key_version is not None]
    assert enrolled, "the happy path enrolled first"
    event = enrolled[0]
    original = event.details_json
    other = SigningKey.generate().public.hex()
    assert original is not None
    with enrolment.keyed.store.transaction() as s:
        s.execute(
            update(m.AuditEvent)
            .where(m.AuditEvent.seq == event.seq)
            .values(details_json=original.replace(original.split('"signing_public": "')[1][:64], other))
        )
    try:
        assert not served.admin.audit.verify().ok
    finally:
        with enrolment.keyed.store.transaction() as s:
            s.execute(update(m.AuditEvent).where(m.AuditEvent.seq == event.seq).values(details_json=original))
    assert served.admin.audit.verify().ok


def test_an_in_process_confirmation_on_the_server_keyed_vault_is_refused(enrolment: Enrolment) -> None:
    """In-process it would append a format-2 event after format-3 ones (a downgrade ``audit
    verify`` refuses), so it is refused, writing nothing: the admin confirms through the server."""
    admin = enrolment.keyed.served.admin
    fingerprint = admin.engineers.pending_fingerprint("dave")
    state = database_state(enrolment.keyed.served.db_url)
    with pytest.raises(ConfigurationError, match="team server"):
        admin.engineers.confirm("dave", fingerprint)
    assert database_state(enrolment.keyed.served.db_url) == state


# -- refusals: nothing written ---------------------------------------------------------------------


def test_a_wrong_code_is_refused_and_writes_nothing(enrolment: Enrolment) -> None:
    served = enrolment.keyed.served
    org = served.admin.keyholder.me().org_signing_public
    wrong = signing.make_enrolment_code(
        os.urandom(signing.INVITE_SECRET_SIZE), org
    )  # the right vault, a made-up secret
    state = database_state(served.db_url)
    with pytest.raises(Unauthenticated, match="unknown-key"):
        enrol(enrolment, "jack", "jack's passphrase", code=wrong)
    assert database_state(served.db_url) == state  # not even a nonce


def test_another_vaults_code_is_refused_before_anything_is_sent(enrolment: Enrolment) -> None:
    secret = signing.parse_enrolment_code(enrolment.codes["jack"])[0]
    other = signing.make_enrolment_code(secret, SigningKey.generate().public)  # the org fingerprint of another key
    state = database_state(enrolment.keyed.served.db_url)
    with pytest.raises(EnrolmentError, match="another vault"):
        enrol(enrolment, "jack", "jack's passphrase", code=other)
    assert without_nonces(database_state(enrolment.keyed.served.db_url)) == without_nonces(state)


def test_an_expired_invitation_is_refused(enrolment: Enrolment) -> None:
    served = enrolment.keyed.served
    with enrolment.keyed.store.transaction() as s:
        row = s.query(m.Engineer).filter_by(name="gina").one()
        kept = row.invite_expires_at
        row.invite_expires_at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    state = database_state(served.db_url)
    try:
        with pytest.raises(EnrolmentError, match="expired"):
            enrol(enrolment, "gina", "gina's passphrase")
        assert without_nonces(database_state(served.db_url)) == without_nonces(state)  # the draft's nonce only
    finally:
        with enrolment.keyed.store.transaction() as s:
            s.query(m.Engineer).filter_by(name="gina").one().invite_expires_at = kept


@pytest.mark.parametrize("as_name", ["nobody", "ivy"])
def test_a_name_not_invited_with_this_code_is_refused(enrolment: Enrolment, as_name: str) -> None:
    """A name never invited, or another invited engineer's name with this code: the server shows
    no invitation (not even another's) and stores nothing."""
    state = database_state(enrolment.keyed.served.db_url)
    with pytest.raises(EnrolmentError, match="no open invitation"):
        enrol(enrolment, "jack", "jack's passphrase", as_name=as_name)
    assert without_nonces(database_state(enrolment.keyed.served.db_url)) == without_nonces(state)


def test_enrolling_twice_is_refused(enrolment: Enrolment) -> None:
    served = enrolment.keyed.served
    first = enrol(enrolment, "kate", "kate's passphrase")
    state = database_state(served.db_url)
    with pytest.raises(Unauthenticated, match="unknown-key"):  # the code's invitation is no longer open
        enrol(enrolment, "kate", "another passphrase")
    assert database_state(served.db_url) == state
    with enrolment.keyed.store.read() as s:
        assert s.get(m.Engineer, first.engineer_id).key_record == first.key_record  # type: ignore[union-attr]


def test_a_replayed_draft_and_a_replayed_commit_are_refused(enrolment: Enrolment) -> None:
    served, capture = enrolment.keyed.served, Capture(enrolment.keyed)
    enrol(enrolment, "hank", "hank's passphrase", capture)
    assert [r.url.path for r in capture.requests] == [DRAFT_PATH, COMMIT_PATH]
    state = database_state(served.db_url)
    with served.client() as client:
        for request in capture.requests:  # the code's invitation is no longer open: neither key is believed
            again = client.post(request.url.path, content=request.content, headers=dict(request.headers))
            assert problem(again) == (401, "unknown-key")
    assert database_state(served.db_url) == state


def test_a_draft_or_commit_replayed_while_its_invitation_is_open_is_refused(enrolment: Enrolment) -> None:
    """A draft's nonce is stored before it answers; the commit's in its unit: the same signed
    request sent again while the invitation is open (for the commit: the row reset as before it,
    as a DBA could) is ``replayed``, and writes nothing."""
    served = enrolment.keyed.served
    secret, org_fp = signing.parse_enrolment_code(enrolment.codes["ivy"])
    code_key = signing.invite_auth_key(secret)
    body = envelope("engineers.enroll_draft", EnrollRequest("ivy", org_fp))
    headers = signed_headers(served, DRAFT_PATH, body, key=code_key, keyid=invite_keyid(code_key.public))
    with served.client() as client:
        assert client.post(DRAFT_PATH, content=body, headers=headers).status_code == 200
        state = database_state(served.db_url)
        assert problem(client.post(DRAFT_PATH, content=body, headers=headers)) == (401, "replayed")
    assert database_state(served.db_url) == state
    secret, draft = drafted(enrolment, "ivy")
    commit, key = commit_of("ivy", secret, draft)
    body = envelope("engineers.enroll", commit)
    headers = signed_headers(served, COMMIT_PATH, body, key=key, keyid=keyid(commit))
    with served.client() as client:
        assert client.post(COMMIT_PATH, content=body, headers=headers).status_code == 200
        with enrolment.keyed.store.transaction() as s:  # the row as before the commit (a DBA's reset)
            row = s.get(m.Engineer, commit.caller.engineer_id)
            assert row is not None
            row.status, row.key_generation = "invited", 0
        state = database_state(served.db_url)
        again = client.post(COMMIT_PATH, content=body, headers=headers)
    assert problem(again) == (401, "replayed")
    assert database_state(served.db_url) == state


def commit_refusal(enrolment: Enrolment, name: str) -> tuple[EnrollCommit, SigningKey, dict[str, object]]:
    secret, draft = drafted(enrolment, name)
    commit, key = commit_of(name, secret, draft)
    return commit, key, database_state(enrolment.keyed.served.db_url)


def test_a_commit_whose_body_was_changed_is_refused(enrolment: Enrolment) -> None:
    commit, key, state = commit_refusal(enrolment, "frank")
    body = envelope("engineers.enroll", commit)
    changed = envelope("engineers.enroll", dataclasses.replace(commit, name="frank2"))
    response = post(enrolment, COMMIT_PATH, body, key, keyid(commit), sent=changed)
    assert problem(response) == (401, "bad-signature")
    assert database_state(enrolment.keyed.served.db_url) == state


def test_a_commit_signed_by_another_key_than_the_one_it_enrols_is_refused(enrolment: Enrolment) -> None:
    commit, _, state = commit_refusal(enrolment, "frank")
    body = envelope("engineers.enroll", commit)
    response = post(enrolment, COMMIT_PATH, body, SigningKey.generate(), keyid(commit))
    assert problem(response) == (401, "bad-signature")
    assert database_state(enrolment.keyed.served.db_url) == state


def test_other_keys_under_a_captured_proof_are_refused(enrolment: Enrolment) -> None:
    """An insider who captured a commit swaps in keys of their own (and signs with them): the
    code's proof covers the keys, so the server does not believe the request's key."""
    commit, _, state = commit_refusal(enrolment, "frank")
    theirs, their_key = commit_of("frank", os.urandom(signing.INVITE_SECRET_SIZE), drafted(enrolment, "frank")[1])
    swapped = dataclasses.replace(commit, keys=theirs.keys)
    response = post(enrolment, COMMIT_PATH, envelope("engineers.enroll", swapped), their_key, keyid(commit))
    assert problem(response) == (401, "unknown-key")
    assert without_nonces(database_state(enrolment.keyed.served.db_url)) == without_nonces(state)


def test_a_commit_for_another_engineer_id_is_refused(enrolment: Enrolment) -> None:
    commit, key, state = commit_refusal(enrolment, "frank")
    moved = dataclasses.replace(commit, caller=Caller(commit.caller.engineer_id + 1000, 1))
    response = post(enrolment, COMMIT_PATH, envelope("engineers.enroll", moved), key, keyid(moved))
    assert problem(response) == (401, "unknown-key")
    assert database_state(enrolment.keyed.served.db_url) == state


def test_the_keyholder_refuses_an_invitation_the_admin_did_not_sign(enrolment: Enrolment) -> None:
    """A DBA widens the invited role: the draft shows it, the keyholder refuses it, nothing is stored."""
    served = enrolment.keyed.served
    with enrolment.keyed.store.transaction() as s:
        s.execute(update(m.Engineer).where(m.Engineer.name == "frank").values(role="admin"))
    state = database_state(served.db_url)
    try:
        with pytest.raises(UntrustedRecord):
            enrol(enrolment, "frank", "frank's passphrase")
        assert without_nonces(database_state(served.db_url)) == without_nonces(state)
    finally:
        with enrolment.keyed.store.transaction() as s:
            s.execute(update(m.Engineer).where(m.Engineer.name == "frank").values(role="engineer"))


# -- the failed-code limit ------------------------------------------------------------------------


def test_failed_codes_over_the_address_limit_are_429(enrolment: Enrolment) -> None:
    """Wrong codes count as failed authentication for the address (an app of its own over the same
    database, limit 3): the fourth request is refused before any signature check, right code or not."""
    keyed = enrolment.keyed
    store = Store(keyed.served.db_url)
    try:
        limits = AuthenticationLimits(AddressLimit(limit=3), EngineerLimit(store), clock=mid_window())
        url = "http://127.0.0.1:8443"
        app = build_app(store, public_url=url, nonce_store=DbNonceStore(store), server_key=keyed.key, limits=limits)
        org = keyed.served.admin.keyholder.me().org_signing_public
        state = database_state(keyed.served.db_url)
        statuses = []
        for attempt in range(4):
            secret = os.urandom(signing.INVITE_SECRET_SIZE) if attempt < 3 else None
            if secret is None:  # the right code, once over the limit
                secret, org_fp = signing.parse_enrolment_code(enrolment.codes["frank"])
            else:
                org_fp = signing.parse_enrolment_code(signing.make_enrolment_code(secret, org))[1]
            key = signing.invite_auth_key(secret)
            body = envelope("engineers.enroll_draft", EnrollRequest("frank", org_fp))
            headers = signed_headers(
                keyed.served, DRAFT_PATH, body, key=key, keyid=invite_keyid(key.public), authority="127.0.0.1:8443"
            )
            response = asgi_call(app, "POST", DRAFT_PATH, body, headers)
            statuses.append(response.status_code)
        assert statuses == [401, 401, 401, 429]
        assert database_state(keyed.served.db_url) == state
    finally:
        store.close()


# -- the body scan ---------------------------------------------------------------------------------


def forms(secret: bytes) -> list[bytes]:
    return [
        secret,
        secret.hex().encode(),
        base64.b64encode(secret).rstrip(b"="),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
    ]


def test_no_body_of_an_enrolment_holds_the_passphrase_the_code_or_a_private_key(enrolment: Enrolment) -> None:
    served, capture = enrolment.keyed.served, Capture(enrolment.keyed)
    passphrase = "zebra-quartz-1187 passphrase"
    code = enrolment.codes["ivy2"]
    record = enroll_over_https(
        served.url,
        ca_file=str(served.ca.ca_file),
        name="ivy2",
        code=code,
        passphrase=passphrase,
        kdf_params=FLOOR,
        transport=capture,
    )
    bundle = keyrecord.open_record(record.key_record, passphrase, record.vault_id, record.engineer_id, 1)
    secret = signing.parse_enrolment_code(code)[0]
    seeds = [bundle.sealing_private, bundle.signing_seed, secret, signing.invite_auth_key(secret).seed]
    texts = [passphrase.encode(), code.encode(), code.replace("-", "").encode()]
    assert len(capture.bodies) == 4 and any(
        form in capture.bodies[2] for form in forms(record.key_record)
    )  # the control
    found = [t for t in texts for body in capture.bodies if t in body]
    found += [s[:4].hex() for s in seeds for form in forms(s) for body in capture.bodies if form in body]
    assert found == []


# -- the code's key and its keyid ------------------------------------------------------------------


def test_the_codes_key_is_derived_from_its_secret_alone() -> None:
    secret = os.urandom(signing.INVITE_SECRET_SIZE)
    assert signing.invite_auth_key(secret).public == signing.invite_auth_key(bytes(secret)).public
    assert signing.invite_auth_key(secret).public != signing.invite_auth_key(os.urandom(16)).public
    with pytest.raises(ValueError):
        signing.invite_auth_key(secret[:15])
    assert "seed" not in repr(signing.invite_auth_key(secret)) and secret.hex() not in repr(
        signing.invite_auth_key(secret)
    )


@pytest.mark.parametrize(
    "keyid",
    ["i:", "e:1:1", "i:" + "A" * 42, "i:" + "A" * 44, "i:" + "A" * 42 + "B", "I:" + "A" * 43, "i:" + "+" * 43],
)
def test_a_keyid_that_is_not_one_code_key_names_none(keyid: str) -> None:
    """``invite_key_of`` takes exactly 32 bytes in canonical base64url (``...B`` has stray bits)."""
    from vault.authority.enrolment_proof import invite_key_of

    assert invite_key_of(keyid) is None


def test_a_code_keys_keyid_round_trips() -> None:
    from vault.authority.enrolment_proof import invite_key_of

    public = SigningKey.generate().public
    assert invite_key_of(invite_keyid(public)) == public
