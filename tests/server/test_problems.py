"""problem+json (RFC 9457) both ways: docs/server.md §2's status table on the server, and the
client's whitelist that turns a problem back into the ``vault/errors.py`` class it names."""

from __future__ import annotations

import json

import httpx
import pytest

from vault import errors
from vault.authority import requests as checkout_values
from vault.server import problems
from vault.transport.https import ERRORS, problem_error

TABLE = [
    (errors.InvalidInput("x"), 400),
    (errors.RecoveryShareError("x"), 400),
    (errors.Locked("x"), 401),
    (errors.SessionExpired("x"), 401),
    (errors.Unauthenticated("replayed"), 401),
    (errors.AccessDenied("x"), 403),
    (errors.GrantExpired("x"), 403),
    (errors.EnrolmentError("x"), 403),
    (errors.NotFound("x"), 404),
    (errors.AlreadyExists("x"), 409),
    (errors.CheckoutConflict("x"), 409),
    (errors.RateLimited("x", retry_after=42), 429),
    (errors.InvalidInput(checkout_values.STALE_CONTEXT), 409),
    (errors.InvalidInput(problems.BODY_TOO_LARGE), 413),
    (errors.InvalidInput(problems.NOT_JSON), 415),
    (errors.IntegrityError("x"), 500),
    (errors.DecryptionFailed(), 500),
    (errors.UntrustedRecord("x"), 500),
    (errors.TamperedSchema("x"), 500),
    (errors.ConfigurationError("x"), 500),
    (errors.StoreUnavailable("x"), 503),
    (errors.StoreBusy("x"), 503),
    (errors.ConcurrentChange("x"), 503),
    (errors.AuditUnavailable("x"), 503),
]


@pytest.mark.parametrize(("error", "status"), TABLE, ids=lambda v: type(v).__name__ if isinstance(v, Exception) else "")
def test_each_error_class_answers_its_status(error: errors.VaultError, status: int) -> None:
    answered, headers, body = problems.problem(error)
    document = json.loads(body)
    assert answered == document["status"] == status
    assert headers["content-type"] == "application/problem+json"
    assert document["error"] == type(error).__name__
    assert document["type"] == "urn:credvault:" + problems.kebab(type(error).__name__)
    assert (document["detail"], document["hint"]) == (str(error), error.hint)
    assert ("retry-after" in headers) == (status in (429, 503))


def test_a_rate_limit_says_when_to_try_again_both_ways() -> None:
    status, headers, body = problems.problem(errors.RateLimited("too many failed authentications", retry_after=42))
    assert status == 429 and headers["retry-after"] == "42"
    raised = problem_error(httpx.Response(status, headers=headers, content=body))
    assert isinstance(raised, errors.RateLimited) and raised.retry_after == 42


def test_a_marker_travels_as_its_code() -> None:
    document = json.loads(problems.problem(errors.NotFound(checkout_values.MISSING_TARGET))[2])
    assert document["code"] == "MISSING_TARGET" and document["status"] == 404
    assert json.loads(problems.problem(errors.NotFound("no such thing"))[2])["code"] is None


def test_a_vault_error_outside_the_table_is_a_plain_vault_error_500() -> None:
    class Unlisted(errors.VaultError):
        pass

    status, _, body = problems.problem(Unlisted("x"))
    assert status == 500 and json.loads(body)["error"] == "VaultError"


def test_internal_names_the_request_and_nothing_else() -> None:
    status, _, body = problems.internal("0123456789abcdef")
    document = json.loads(body)
    assert status == 500 and document["error"] == "internal" and "0123456789abcdef" in document["detail"]


def _response(document: object, status: int = 400, content_type: str = "application/problem+json") -> httpx.Response:
    return httpx.Response(status, headers={"content-type": content_type}, content=json.dumps(document).encode())


@pytest.mark.parametrize(("error", "status"), TABLE, ids=lambda v: type(v).__name__ if isinstance(v, Exception) else "")
def test_the_client_raises_the_class_the_server_named(error: errors.VaultError, status: int) -> None:
    _, _, body = problems.problem(error)
    raised = problem_error(httpx.Response(status, headers={"content-type": "application/problem+json"}, content=body))
    assert type(raised) is type(error)
    assert (str(raised), raised.hint) == (str(error), error.hint)


@pytest.mark.parametrize(
    "name",
    ["internal", "os.system", "__import__('os')", "VaultError", "WrongPassphrase", "Exception", "SystemExit", None, 7],
)
def test_a_name_outside_the_whitelist_is_a_plain_vault_error(name: object) -> None:
    raised = problem_error(_response({"error": name, "detail": "d", "hint": "h"}, 500))
    assert type(raised) is errors.VaultError
    assert str(raised) == "d"


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(502, headers={"content-type": "text/html"}, content=b"<html>bad gateway</html>"),
        httpx.Response(500, headers={"content-type": "application/problem+json"}, content=b"not json"),
        httpx.Response(500, headers={"content-type": "application/problem+json"}, content=b"[1, 2]"),
    ],
)
def test_a_5xx_that_is_not_a_problem_is_unavailable_naming_its_status(response: httpx.Response) -> None:
    """Not the server's word (a proxy's page, or a server that failed before answering): unavailable
    with its status (tests/server/test_proxy_failures.py has the unsigned pages themselves)."""
    raised = problem_error(response)
    assert type(raised) is errors.StoreUnavailable and str(response.status_code) in str(raised) and raised.hint


def test_a_4xx_that_is_not_a_problem_is_a_plain_vault_error() -> None:
    raised = problem_error(httpx.Response(404, headers={"content-type": "text/html"}, content=b"<html>gone</html>"))
    assert type(raised) is errors.VaultError and "404" in str(raised)


def test_a_long_detail_is_cut() -> None:
    raised = problem_error(_response({"error": "NotFound", "detail": "x" * 2_000, "hint": "y" * 2_000}))
    assert isinstance(raised, errors.NotFound) and len(str(raised)) == 500 and len(raised.hint) == 500


def test_the_whitelist_holds_only_vault_errors() -> None:
    assert all(issubclass(cls, errors.VaultError) for cls in ERRORS.values())
    assert "WrongPassphrase" not in ERRORS
