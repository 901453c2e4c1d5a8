"""The access log (docs/server.md §6): one line per request, naming no value a request carries,
and the catch-all (500 ``internal``) that logs an unexpected exception's class, not its text."""

from __future__ import annotations

import logging
import re
import time

import pytest
from server_harness import Served, asgi_call, signed_post

from vault.server.app import build_app
from vault.storage.engine import Store
from vault.wire.httpsig import MemoryNonceStore

SECRET = "hunter2-Tr0ub4dor&3"
NAME = "acme-widgets-ltd"
LINE = re.compile(
    r"time=\S+Z request=[0-9a-f]{16} route=(\S+) status=(\d{3}) ms=\d+\.\d engineer=(\d+|-) in=(\d+) out=(\d+)"
)


def access_lines(caplog: pytest.LogCaptureFixture, expected: int = 0) -> list[str]:
    """The access log's lines; ``expected``: wait (at most 5 s) until that many are written, since
    the server thread writes a line once the response has gone out, maybe after the client read it."""
    deadline = time.monotonic() + 5
    while True:
        lines = [r.getMessage() for r in caplog.records if r.name == "credvault.access"]
        if len(lines) >= expected or time.monotonic() > deadline:
            return lines
        time.sleep(0.01)


def test_one_line_per_request_naming_no_value_it_carried(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="credvault.access")
    body = ('{"body":{"name":"' + NAME + '","password":"' + SECRET + '"},"request_id":"AQ","type":"x","v":1}').encode()
    refused = signed_post(served, "/v1/engineers/whoami", body, served.alice)
    unrouted = signed_post(served, f"/v1/{NAME}/show", body, served.alice)
    answered = signed_post(
        served,
        "/v1/engineers/whoami",
        b'{"body":{},"request_id":"AQEBAQEBAQEBAQEBAQEBAQ","type":"engineers.whoami","v":1}',
        served.alice,
    )
    assert (refused.status_code, unrouted.status_code, answered.status_code) == (400, 404, 200)
    lines = access_lines(caplog, expected=3)
    assert len(lines) == 3
    matches = [LINE.fullmatch(line) for line in lines]
    assert all(matches), lines
    alice = str(served.alice.keyholder.me().engineer_id)
    assert [(m.group(1), m.group(2), m.group(3)) for m in matches if m] == [
        ("/v1/engineers/whoami", "400", alice),
        ("/v1/{noun}/{operation}", "404", "-"),
        ("/v1/engineers/whoami", "200", alice),
    ]
    assert matches[0] and int(matches[0].group(4)) == len(body)
    logged = "\n".join(r.getMessage() for r in caplog.records)  # every logger, not only the access log
    for value in (SECRET, NAME, "alice", "hunter2", refused.request.headers["signature"][3:20]):
        assert value not in logged
    for header in ("signature-input", "content-digest"):
        assert refused.request.headers[header][10:30] not in logged


def test_a_bug_answers_internal_and_logs_its_class_only(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    def broken() -> dict[str, object]:
        raise RuntimeError(f"a driver quoting {SECRET}")

    store = Store(served.db_url)
    try:
        app = build_app(
            store, public_url="http://127.0.0.1:8443", nonce_store=MemoryNonceStore(), identity_extra=broken
        )
        response = asgi_call(app, "GET", "/v1/identity")
    finally:
        store.close()
    problem = response.json()
    assert response.status_code == 500
    assert (problem["type"], problem["error"], problem["code"]) == ("urn:credvault:internal", "internal", None)
    request_id = response.headers["x-request-id"]
    assert request_id in problem["detail"]
    assert SECRET not in response.text and "RuntimeError" not in response.text and "Traceback" not in response.text
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert SECRET not in logged
    assert f"request {request_id} failed: RuntimeError" in logged
    lines = access_lines(caplog, expected=1)
    assert any(f"request={request_id} route=/v1/identity status=500" in line for line in lines)


def test_a_line_nobody_would_receive_is_not_built() -> None:
    """``credvault serve`` without ``--access-log``: the logger has no handler and does not
    propagate, so the line (a time, a format) is skipped; with a handler it is written."""
    from vault.server.accesslog import AccessLog

    logger = logging.getLogger("credvault.test-access-unheard")
    logger.propagate, logger.level = False, logging.INFO
    log = AccessLog(None, logger)  # type: ignore[arg-type]
    assert not log.listened()
    handler = logging.NullHandler()
    logger.addHandler(handler)
    try:
        assert log.listened()
    finally:
        logger.removeHandler(handler)
