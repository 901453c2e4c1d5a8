"""``HttpsTransport.within``: every request inside ends within a budget, its retries included.

The agent answers its client within ``agentclient.REPLY_TIMEOUT`` (30 s) or the client gives up
and blames the agent ("run `credvault agent stop`, then start it again"). Through a team server
that hangs or a network that drops packets, a checkout's two calls took up to 3 × 10 s each (the
read timeout and two retries), so the client gave up first and the engineer was told to restart
a healthy agent (found in session 16: tests/cli/test_agent_cli.py). Within a budget each phase's
timeout is cut to what is left and no attempt starts once it is spent: the server's failure is
said in time. The re-pinning of a newer server key (``ServerKeyRenewal``: a read of ``/v1/identity``
in the middle of an answer) takes what is left of the same budget (session 17; it had 10 s of its own).
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import httpx
import pytest

from vault.authority.engineer_requests import WhoamiRequest
from vault.crypto.serverkey import ServerSigningKey
from vault.crypto.signing import SigningKey
from vault.errors import StoreUnavailable
from vault.service.serverkey_renewal import IDENTITY_TIMEOUT, ServerKeyRenewal
from vault.service.serverpins import ServerPin
from vault.transport.https import RETRIES, HttpsTransport
from vault.wire import httpsig_response


class _Keys:
    def me(self) -> SimpleNamespace:
        return SimpleNamespace(engineer_id=7, key_generation=1)

    def my_signing_key(self) -> SigningKey:
        return SigningKey(bytes(32))


class _Hung:
    """A server that never answers: each attempt waits out its read timeout (up to 0.3 s here)."""

    def __init__(self) -> None:
        self.timeouts: list[dict[str, float]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions["timeout"]
        self.timeouts.append(timeout)
        time.sleep(min(timeout["read"], 0.3))
        raise httpx.ReadTimeout("no answer", request=request)


def test_without_a_budget_every_attempt_has_the_whole_timeout() -> None:
    hung = _Hung()
    https = HttpsTransport("https://vault.example", _Keys(), transport=httpx.MockTransport(hung), timeout=10.0)
    with pytest.raises(StoreUnavailable, match="could not be reached"):
        https.call("engineers.whoami", WhoamiRequest())  # retried: RETRIES more attempts
    assert [t["read"] for t in hung.timeouts] == [10.0] * (1 + RETRIES)


def test_within_a_budget_the_attempts_share_it_and_stop_when_it_is_spent() -> None:
    hung = _Hung()
    https = HttpsTransport("https://vault.example", _Keys(), transport=httpx.MockTransport(hung), timeout=10.0)
    started = time.monotonic()
    with https.within(0.5), pytest.raises(StoreUnavailable):
        https.call("engineers.whoami", WhoamiRequest())
    assert time.monotonic() - started < 1.5  # not 3 × 10 s
    first = hung.timeouts[0]
    assert all(0 < first[phase] <= 0.5 for phase in ("connect", "read", "write", "pool"))
    assert len(hung.timeouts) <= 2  # 0.3 s and the pause, then at most what is left; never a third
    assert https.deadline is None  # the budget ended with its block
    sent = len(hung.timeouts)
    with pytest.raises(StoreUnavailable, match="did not answer in time"), https.within(0.0):
        https.call("engineers.whoami", WhoamiRequest())  # spent before the first attempt: none sent
    assert len(hung.timeouts) == sent


def _renewing(hung: _Hung) -> tuple[HttpsTransport, list[str]]:
    """A transport pinned to server key v1 whose server answers under v2 (a rotation), and whose
    ``/v1/identity`` (the renewal's read) is ``hung``."""
    newer, older = ServerSigningKey.generate(2), ServerSigningKey.generate(1)
    asked: list[str] = []

    def server(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if request.url.path == "/v1/identity":
            return hung(request)
        request_sig = httpsig_response.request_signature(request.headers.multi_items())
        assert request_sig is not None
        body = b'{"not": "read"}'
        return httpx.Response(200, content=body, headers=httpsig_response.sign_response(200, body, request_sig, newer))

    mock = httpx.MockTransport(server)
    pin = ServerPin("https://vault.example", bytes(16), bytes(32), (1, older.public), None)
    renewal = ServerKeyRenewal(pin, mock)
    pinned = (1, older.public)
    https = HttpsTransport("https://vault.example", _Keys(), transport=mock, server_key=pinned, renew=renewal)
    return https, asked


def test_without_a_budget_the_renewals_identity_read_has_its_own_timeout() -> None:
    hung = _Hung()
    https, asked = _renewing(hung)
    with pytest.raises(StoreUnavailable, match="could not be reached"):
        https.call("engineers.whoami", WhoamiRequest())
    assert asked == ["/v1/engineers/whoami", "/v1/identity"]
    assert hung.timeouts[0]["read"] == IDENTITY_TIMEOUT


def test_within_a_budget_the_renewals_identity_read_has_what_is_left() -> None:
    hung = _Hung()
    https, asked = _renewing(hung)
    started = time.monotonic()
    with https.within(0.5), pytest.raises(StoreUnavailable):
        https.call("engineers.whoami", WhoamiRequest())
    assert time.monotonic() - started < 1.5  # not 10 s
    assert asked == ["/v1/engineers/whoami", "/v1/identity"]
    assert all(0 < hung.timeouts[0][phase] <= 0.5 for phase in ("connect", "read", "write", "pool"))
