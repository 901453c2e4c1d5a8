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
import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from server_harness import (
    Keyed,
    asgi_call,
    database_state,
    envelope,
    events,
    signed_headers,
    without_nonces,
)
from sqlalchemy import update

from vault.authority.engineer_requests import EngineerAnswer, EnrollCommit, EnrollRequest, EnrolmentDraft
from vault.authority.enrolment_proof import invite_keyid, sign_proof
from vault.authority.requests import Caller
from vault.crypto import keyrecord, signing
from vault.crypto.keyrecord import FLOOR
from vault.crypto.signing import SigningKey
from vault.errors import ConfigurationError, EnrolmentError, RateLimited, Unauthenticated, UntrustedRecord
from vault.keyholder.enrolment import enrolment_keys
from vault.server.app import build_app
from vault.storage import models as m
from vault.storage.engine import Store
from vault.transport.https_enrolment import EnrolledRecord, enroll_over_https
from vault.wire import codec
from vault.wire.authlimits import AddressLimit, AuthenticationLimits, EngineerLimit
from vault.wire.nonces import DbNonceStore

DRAFT_PATH, COMMIT_PATH = "/v1/engineers/enroll_draft", "/v1/engineers/enroll"
NAMES = ("dave", "erin", "frank", "gina", "hank", "ivy")


@dataclasses.dataclass
class Enrolment:
    keyed: Keyed
    codes: dict[str, str]


@pytest.fixture(scope="module")
def codes(module_team) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Invitations made in-process before the vault goes to the team server (``keyed``)."""
    return {name: module_team.admin.engineers.invite(name) for name in NAMES}


@pytest.fixture(scope="module")
def enrolment(codes: dict[str, str], keyed: Keyed) -> Enrolment:
    return Enrolment(keyed, codes)


class Capture(httpx.BaseTransport):
    """An httpx transport to the test server that keeps every request and response (body scan, replays)."""

    def __init__(self, keyed: Keyed) -> None:
        context = ssl.create_default_context(cafile=str(keyed.served.ca.ca_file))
        self.inner = httpx.HTTPTransport(verify=context)
        self.requests: list[httpx.Request] = []
        self.bodies: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        self.bodies.append(request.content)
        response = self.inner.handle_request(request)
        response.read()
        self.bodies.append(response.content)
        return response

    def close(self) -> None:
        self.inner.close()


def enrol(
    enrolment: Enrolment, name: str, passphrase: str, capture: Capture | None = None, **changes: Any
) -> EnrolledRecord:
    served = enrolment.keyed.served
    return enroll_over_https(
        served.url,
        ca_file=str(served.ca.ca_file),
        name=changes.get("as_name", name),
        code=changes.get("code", enrolment.codes[name]),
        passphrase=passphrase,
        kdf_params=FLOOR,
        transport=capture,
    )


def post(enrolment: Enrolment, path: str, body: bytes, key: SigningKey, keyid: str, **changes: Any) -> httpx.Response:
    """``body`` POSTed to ``path`` signed with ``key`` as ``keyid`` (``sent``: other bytes sent)."""
    served = enrolment.keyed.served
    sent = changes.pop("sent", body)
    headers = signed_headers(served, path, body, key=key, keyid=keyid, **changes)
    with served.client() as client:
        return client.post(path, content=sent, headers=headers)


def drafted(enrolment: Enrolment, name: str) -> tuple[bytes, EnrolmentDraft]:
    """The invitation of ``name`` through a raw, code-signed draft request: (secret, draft)."""
    secret, org_fp = signing.parse_enrolment_code(enrolment.codes[name])
    key = signing.invite_auth_key(secret)
    response = post(
        enrolment,
        DRAFT_PATH,
        envelope("engineers.enroll_draft", EnrollRequest(name, org_fp)),
        key,
        invite_keyid(key.public),
    )
    assert response.status_code == 200, response.text
    draft = codec.open_envelope(response.content, "engineers.enroll_draft.response").body
    assert isinstance(draft, EnrolmentDraft)
    return secret, draft


def commit_of(name: str, secret: bytes, draft: EnrolmentDraft) -> tuple[EnrollCommit, SigningKey]:
    """The commit a keyholder makes for ``draft``, and its new signing key."""
    org_fp = signing.parse_enrolment_code(signing.make_enrolment_code(secret, draft.org_signing_public))[1]
    now = dt.datetime.now(dt.UTC)
    made, seed = enrolment_keys(draft, name, org_fp, f"pass of {name}", secret, now, FLOOR)
    row = draft.engineer
    proof = sign_proof(secret, draft.vault_id, row.id, row.name, made)
    return EnrollCommit(Caller(row.id, made.key_generation), name, org_fp, made, proof), SigningKey(seed)


def keyid(commit: EnrollCommit) -> str:
    return f"e:{commit.caller.engineer_id}:{commit.caller.key_generation}"


def problem(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json().get("detail", "")


# -- the happy path --------------------------------------------------------------------------------


def test_an_engineer_enrols_over_https_and_holds_their_key_record(enrolment: Enrolment) -> None:
    served = enrolment.keyed.served
    before = len(events(served))
    record = enrol(enrolment, "dave", "dave's passphrase")
    assert (record.name, record.key_generation) == ("dave", 1)
    assert "passphrase" not in repr(record) and record.key_record.hex()[:16] not in repr(record)
    bundle = keyrecord.open_record(record.key_record, "dave's passphrase", record.vault_id, record.engineer_id, 1)
    assert bundle.org_signing_public == record.org_signing_public
    with pytest.raises(Exception):  # noqa: B017 - the record is locked under the passphrase
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
    """Not built yet: ``engineers.confirm`` through the server. In-process it would append a
    format-2 event after format-3 ones (a downgrade ``audit verify`` refuses), so it is refused."""
    admin = enrolment.keyed.served.admin
    fingerprint = admin.engineers.pending_fingerprint("dave")
    state = database_state(enrolment.keyed.served.db_url)
    with pytest.raises(ConfigurationError, match="team server"):
        admin.engineers.confirm("dave", fingerprint)
    assert database_state(enrolment.keyed.served.db_url) == state
