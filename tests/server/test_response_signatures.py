"""Signed responses on the wire (docs/server.md §3, "Responses are signed"; wire/httpsig_response.py).

The ``keyed`` server (conftest.py) signs every answer to a signed POST with its server key. A
keyholder pinning that key (``HttpsTransport(server_key=…)``) takes its answers, 200 and
problem+json alike; a transport between the two (``Tampering``: a TLS-terminating proxy, or
whoever answers in the server's place) changes one thing of a genuine answer, and the pinned
keyholder refuses it with ``UntrustedRecord`` naming the signature check, before reading it.
Without a pin the keyholder behaves as before, and a server without a server key signs nothing.
Both engines.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_harness import (
    JSON,
    CertificateFiles,
    Keyed,
    Served,
    caller_of,
    envelope,
    events,
    server_with,
    signed_post,
    ticking,
)

from vault.authority.engineer_requests import WhoamiAnswer, WhoamiRequest
from vault.authority.requests import AnswerRefusedRequest
from vault.crypto.serverkey import ServerSigningKey
from vault.errors import NotFound, Unauthenticated, UntrustedRecord
from vault.service import serverjoin
from vault.service.checkouts import https_checkout_keyholder
from vault.service.remote import RemoteVault
from vault.service.sessions import MemorySessionStore
from vault.transport.https import HttpsTransport
from vault.wire import httpsig
from vault.wire.httpsig_response import sign_response, verify_response

REASON = "T-9421 signed answers"
Change = Callable[[httpx.Request, httpx.Response], httpx.Response]


class Tampering(httpx.BaseTransport):
    """Delivers each request to the server, keeps the genuine answer, hands ``change``'s version on."""

    def __init__(self, inner: httpx.BaseTransport, change: Change | None = None) -> None:
        self.inner, self.change = inner, change
        self.answers: list[httpx.Response] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        response.read()
        self.answers.append(response)
        return response if self.change is None else self.change(request, response)

    def close(self) -> None:
        self.inner.close()


def rebuilt(response: httpx.Response, *, status: int | None = None, content: bytes | None = None,
            headers: dict[str, str | None] | None = None) -> httpx.Response:
    """``response`` with another status, body or headers (None: a header removed)."""
    replaced = {"content-length", *(name.lower() for name in headers or {})}
    kept = [(n, v) for n, v in response.headers.multi_items() if n.lower() not in replaced]
    kept += [(n, v) for n, v in (headers or {}).items() if v is not None]
    return httpx.Response(status or response.status_code, headers=kept,
                          content=response.content if content is None else content)


def pinned(served: Served, vault: Any, pin: tuple[int, bytes] | None,
           change: Change | None = None) -> tuple[HttpsTransport, Tampering]:
    inner = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=str(served.ca.ca_file)))
    wrapper = Tampering(inner, change)
    vault.keyholder.me()
    return HttpsTransport(served.url, vault.keyholder, transport=wrapper, server_key=pin), wrapper


def pin_of(keyed: Keyed) -> tuple[int, bytes]:
    return keyed.key.version, keyed.key.public


def refusal(keyed: Keyed, change: Change, pin: tuple[int, bytes] | None = None) -> UntrustedRecord:
    https, wrapper = pinned(keyed.served, keyed.served.alice, pin or pin_of(keyed), change)
    with pytest.raises(UntrustedRecord) as caught:
        https.whoami()
    assert wrapper.answers and wrapper.answers[-1].status_code == 200  # the server's own answer was good
    assert "not signed by the pinned server key" in str(caught.value)
    return caught.value


# --- good answers ---------------------------------------------------------------------------------

def test_a_pinned_keyholder_takes_the_servers_signed_answer(keyed: Keyed) -> None:
    https, wrapper = pinned(keyed.served, keyed.served.alice, pin_of(keyed))
    assert isinstance(https.whoami(), WhoamiAnswer)
    answer = wrapper.answers[-1]
    assert answer.headers["signature-input"].startswith('sv=("@status" "content-digest" "signature";req;key="cv")')
    assert 'keyid="s:1"' in answer.headers["signature-input"]


def test_a_checkout_through_a_pinned_keyholder_gives_the_value_and_one_event(keyed: Keyed) -> None:
    https, wrapper = pinned(keyed.served, keyed.served.alice, pin_of(keyed))
    holder = https_checkout_keyholder(keyed.served.alice.checkouts, https)
    before = len(events(keyed.served))
    value = holder.checkout("acme/fw02", reason=REASON, field="password", version=None, hold=False, hold_for=None)
    assert value.value == "pw of acme/fw02"
    assert len(events(keyed.served)) == before + 1
    assert all("signature" in answer.headers for answer in wrapper.answers)


def test_a_problem_answer_is_signed_and_its_error_raised(keyed: Keyed) -> None:
    """An ``answer-refused`` naming no event of the caller's: the handler's 404, signed."""
    https, wrapper = pinned(keyed.served, keyed.carol, pin_of(keyed))
    refusal_of_nothing = AnswerRefusedRequest(caller_of(keyed.carol), 1, 10**9, bytes(16), "untrusted")
    with pytest.raises(NotFound):
        https.call("checkouts.answer_refused", refusal_of_nothing)
    problem = wrapper.answers[-1]
    assert problem.status_code == 404 and problem.headers["content-type"] == "application/problem+json"
    assert "signature" in problem.headers


@pytest.mark.parametrize("case", ["bad-signature", "unknown-route", "too-large", "not-json"])
def test_refusals_before_the_handler_are_signed_too(keyed: Keyed, case: str) -> None:
    served, alice = keyed.served, keyed.served.alice
    body = envelope("engineers.whoami", WhoamiRequest())
    path, content_type = "/v1/engineers/whoami", JSON
    if case == "unknown-route":
        path = "/v1/engineers/nothing"
    elif case == "too-large":
        body = b"x" * (64 * 1024 + 1)
    elif case == "not-json":
        content_type = "text/plain"
    key = keyed.carol.keyholder.my_signing_key() if case == "bad-signature" else alice.keyholder.my_signing_key()
    me = alice.keyholder.me()
    headers = httpsig.sign_request("POST", served.authority, path, content_type, body, key,
                                   f"e:{me.engineer_id}:{me.key_generation}")
    with served.client() as client:
        answer = client.post(path, content=body, headers={"Content-Type": content_type, **headers})
    assert answer.status_code == {"bad-signature": 401, "unknown-route": 404, "too-large": 413, "not-json": 415}[case]
    verify_response(answer.status_code, answer.headers.multi_items(), answer.content, headers["Signature"],
                    pin_of(keyed))


def test_an_unsigned_request_and_the_get_routes_are_answered_unsigned(keyed: Keyed) -> None:
    served = keyed.served
    with served.client() as client:
        unsigned = client.post("/v1/engineers/whoami", content=envelope("engineers.whoami", WhoamiRequest()),
                               headers={"Content-Type": JSON})
        health = client.get("/healthz")
    assert unsigned.status_code == 401 and "signature" not in unsigned.headers
    assert health.status_code == 200 and "signature" not in health.headers


def test_an_unpinned_keyholder_takes_answers_as_before(keyed: Keyed, test_ca: CertificateFiles) -> None:
    """A server run without a server key over the same database: its answers carry no signature."""
    with server_with(keyed, test_ca, None, keyless=True) as keyless:
        https, wrapper = pinned(keyless, keyless.alice, None)
        assert isinstance(https.whoami(), WhoamiAnswer)
        assert "signature" not in wrapper.answers[-1].headers
        refused, _ = pinned(keyless, keyless.alice, pin_of(keyed))
        with pytest.raises(UntrustedRecord, match="lacks content-digest, signature-input, signature"):
            refused.whoami()


def test_a_pinned_retry_takes_the_answer_to_its_own_signature(keyed: Keyed) -> None:
    """A lost answer re-sent under a new signature: the answer that arrives is bound to that one."""
    lost = {"n": 0}

    def lose_first(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if lost["n"] == 0:
            lost["n"] += 1
            raise httpx.ReadError("connection lost", request=request)
        return response

    https, wrapper = pinned(keyed.served, keyed.served.alice, pin_of(keyed), lose_first)
    assert isinstance(https.whoami(), WhoamiAnswer)
    assert len(wrapper.answers) == 2


# --- tampered answers ---------------------------------------------------------------------------------

def test_a_changed_body_is_refused(keyed: Keyed) -> None:
    def change(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        return rebuilt(response, content=response.content.replace(b'"v":1', b'"v":1 '))

    assert "Content-Digest does not match" in str(refusal(keyed, change))


def test_a_changed_body_with_its_digest_recomputed_is_refused(keyed: Keyed) -> None:
    def change(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        content = response.content.replace(b'"v":1', b'"v":1 ')
        return rebuilt(response, content=content, headers={"content-digest": httpsig.content_digest(content)})

    assert "does not verify" in str(refusal(keyed, change))


def test_a_changed_digest_header_is_refused(keyed: Keyed) -> None:
    def change(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        return rebuilt(response, headers={"content-digest": httpsig.content_digest(b"another body")})

    assert "Content-Digest does not match" in str(refusal(keyed, change))


@pytest.mark.parametrize("status", [201, 203, 404])
def test_a_changed_status_is_refused(keyed: Keyed, status: int) -> None:
    def change(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        return rebuilt(response, status=status)

    assert "does not verify" in str(refusal(keyed, change))


@pytest.mark.parametrize("dropped", ["content-digest", "signature-input", "signature"])
def test_an_answer_missing_a_signed_header_is_refused(keyed: Keyed, dropped: str) -> None:
    def change(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        return rebuilt(response, headers={dropped: None})

    assert f"lacks {dropped}" in str(refusal(keyed, change))


def test_an_answer_replayed_to_another_request_is_refused(keyed: Keyed) -> None:
    kept: list[httpx.Response] = []

    def replay(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if not kept:
            kept.append(response)
        return rebuilt(kept[0])

    https, _ = pinned(keyed.served, keyed.served.alice, pin_of(keyed), replay)
    assert isinstance(https.whoami(), WhoamiAnswer)  # the first answer, to its own request
    with pytest.raises(UntrustedRecord, match="does not verify"):
        https.whoami()  # the same answer to the next request: its "signature";req differs


def test_an_answer_signed_by_another_key_is_refused(keyed: Keyed) -> None:
    other = ServerSigningKey.generate(keyed.key.version)
    assert "does not verify" in str(refusal(keyed, lambda request, response: response, (other.version, other.public)))


def test_an_answer_signed_by_another_version_is_refused(keyed: Keyed) -> None:
    pin = (keyed.key.version + 1, keyed.key.public)
    message = str(refusal(keyed, lambda request, response: response, pin))
    assert f"names server key version {keyed.key.version}, not the pinned version {pin[0]}" in message


def test_an_answer_re_signed_by_a_proxy_under_its_own_key_is_refused(keyed: Keyed) -> None:
    """A proxy holding a key of its own signs its altered answer correctly: not the pinned key."""
    proxy = ServerSigningKey.generate(keyed.key.version)

    def re_sign(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        content = response.content.replace(b'"v":1', b'"v":1 ')
        bound = request.headers["signature"].removeprefix("cv=")
        return rebuilt(response, content=content, headers=dict(sign_response(200, content, bound, proxy)))

    assert "does not verify" in str(refusal(keyed, re_sign))


def test_a_refused_answer_raises_before_the_problem_it_carries(keyed: Keyed) -> None:
    """A forged 401 is not believed either: the keyholder sees the forgery, not 'unauthenticated'."""

    def forged(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        return httpx.Response(401, headers={"content-type": "application/problem+json"},
                              content=b'{"error":"Unauthenticated","detail":"unknown-key","status":401}')

    https, _ = pinned(keyed.served, keyed.served.alice, pin_of(keyed), forged)
    with pytest.raises(UntrustedRecord):
        https.whoami()
    unpinned, _ = pinned(keyed.served, keyed.served.alice, None, forged)
    with pytest.raises(Unauthenticated):
        unpinned.whoami()


def test_the_raw_answer_verifies_for_its_request_only(keyed: Keyed) -> None:
    served = keyed.served
    body = envelope("engineers.whoami", WhoamiRequest())
    answer = signed_post(served, "/v1/engineers/whoami", body, served.alice)
    assert answer.status_code == 200
    sent = answer.request.headers["signature"]
    verify_response(200, answer.headers.multi_items(), answer.content, sent, pin_of(keyed))
    other = httpsig.sign_request("POST", served.authority, "/v1/engineers/whoami", JSON, body,
                                 served.alice.keyholder.my_signing_key(), "e:1:1")["Signature"]
    with pytest.raises(UntrustedRecord):
        verify_response(200, answer.headers.multi_items(), answer.content, other, pin_of(keyed))


# --- the engineer's RemoteVault pins the server key it trusted ----------------------------------------

def test_a_remote_vault_checks_every_answer_against_its_pinned_server_key(
    keyed: Keyed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pin ``server trust`` wrote names the server key; a pin naming another key (the
    server's identity changed, or another server answers) unlocks nothing: whoami's answer is refused."""
    monkeypatch.setenv("CREDVAULT_HOME", str(tmp_path / "home"))
    served = keyed.served
    identity = serverjoin.trust(served.url, str(served.ca.ca_file))
    pin = serverjoin.pin(served.url, identity, str(served.ca.ca_file))
    assert pin.server_key == pin_of(keyed)
    serverjoin.join(pin, served.alice, "alice", "pass of alice")
    good = RemoteVault(pin, engineer="alice", sessions=MemorySessionStore(), clock=ticking(served.alice.clock))
    assert good.engineers.unlock("alice", "pass of alice").engineer == "alice"
    other = ServerSigningKey.generate(keyed.key.version)
    wrong = RemoteVault(dataclasses.replace(pin, server_key=(other.version, other.public)), engineer="alice",
                        sessions=MemorySessionStore(), clock=ticking(served.alice.clock))
    with pytest.raises(UntrustedRecord, match="not signed by the pinned server key"):
        wrong.engineers.unlock("alice", "pass of alice")
    good.close()
    wrong.close()
