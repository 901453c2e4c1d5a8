"""Helpers of the enrolment tests (``test_enrolment_https.py``, ``test_confirm_https.py``): an
enrolment over HTTPS against the ``keyed`` server, raw requests signed with the code's key or the
new key (as an insider who holds the code would sign them), and a transport that keeps every
request and response (replays, the body scan).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ssl
from typing import Any

import httpx
from server_harness import Keyed, envelope, signed_headers

from vault.authority.engineer_requests import EnrollCommit, EnrollRequest, EnrolmentDraft
from vault.authority.enrolment_proof import invite_keyid, sign_proof
from vault.authority.requests import Caller
from vault.crypto import signing
from vault.crypto.keyrecord import FLOOR
from vault.crypto.signing import SigningKey
from vault.keyholder.enrolment import enrolment_keys
from vault.transport.https_enrolment import EnrolledRecord, enroll_over_https
from vault.wire import codec

DRAFT_PATH, COMMIT_PATH = "/v1/engineers/enroll_draft", "/v1/engineers/enroll"


@dataclasses.dataclass
class Enrolment:
    keyed: Keyed
    codes: dict[str, str]


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
