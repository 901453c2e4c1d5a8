"""A refused signature (401) said in the engineer's words (vault/transport/https.py ``explained``).

The server answers every refused signature with its code alone (``unknown-key`` whoever is
unknown: docs/server.md §3), so the engineer's machine says what the code means to them, the
code kept in the message; an enrolment's transport, whose first key is the code's, keeps the
bare code (a wrong or spent code, which its caller says). Found in session 16 through the agent
of a removed engineer (tests/cli/test_agent_cli.py): the CLI printed ``error: unknown-key``.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import pytest

from vault.authority.engineer_requests import WhoamiRequest
from vault.crypto.signing import SigningKey
from vault.errors import Locked, Unauthenticated
from vault.transport.https import HttpsTransport
from vault.transport.https_enrolment import _EnrolmentTransport
from vault.wire import httpsig


class _Keys:
    def me(self) -> SimpleNamespace:
        return SimpleNamespace(engineer_id=7, key_generation=1)

    def my_signing_key(self) -> SigningKey:
        return SigningKey(bytes(32))


def _refusing(code: str) -> httpx.MockTransport:
    document = {"error": "Unauthenticated", "detail": code, "hint": "as the server words it", "status": 401}
    headers = {"content-type": "application/problem+json"}
    return httpx.MockTransport(lambda request: httpx.Response(401, headers=headers, content=json.dumps(document)))


@pytest.mark.parametrize(
    ("code", "message", "hint"),
    [
        (httpsig.UNKNOWN_KEY, "the server accepts no key of yours (unknown-key)", "removed, disabled or re-keyed"),
        (httpsig.STALE, "the server refused the request's time (stale)", "clock is more than 60 s"),
        (httpsig.REPLAYED, "replayed", "as the server words it"),
    ],
)
def test_an_engineers_refused_signature_says_what_it_means(code: str, message: str, hint: str) -> None:
    https = HttpsTransport("https://vault.example", _Keys(), transport=_refusing(code))
    with pytest.raises(Unauthenticated) as refused:
        https.call("engineers.whoami", WhoamiRequest())
    assert str(refused.value) == message and hint in (refused.value.hint or "")
    assert isinstance(refused.value, Locked)  # still a Locked: an agent holding the session ends


def test_an_enrolments_refused_code_keeps_the_bare_code() -> None:
    https = _EnrolmentTransport("https://vault.example", None, _refusing(httpsig.UNKNOWN_KEY), lambda: 0.0)
    https.use(SigningKey(bytes(32)), "i:code")
    with pytest.raises(Unauthenticated) as refused:
        https.call("engineers.whoami", WhoamiRequest())
    assert str(refused.value) == "unknown-key" and refused.value.hint == "as the server words it"
