"""The body limit (docs/server.md §2, Limits), driven as uvicorn drives the app: one ``http.request``
message per chunk, each counted as the app pulls it. 10 MiB are refused 413 after reading at most
the limit and one chunk (nothing at all when ``Content-Length`` says so first)."""

from __future__ import annotations

import asyncio
import json

import pytest

from vault.server.app import build_app
from vault.server.handlers import Operations, whoami
from vault.server.limits import DEFAULT_LIMIT, BodyLimit
from vault.storage.engine import Store
from vault.wire.httpsig import MemoryNonceStore

WHOAMI = "/v1/engineers/whoami"
CHUNK = 16 * 1024
TEN_MIB = 10 * 1024 * 1024


class Upload:
    """A client sending ``total`` bytes in ``CHUNK``-sized messages; counts what the app read."""

    def __init__(self, total: int) -> None:
        self.total, self.read, self.sent = total, 0, []

    async def receive(self) -> dict[str, object]:
        size = min(CHUNK, self.total - self.read)
        self.read += size
        return {"type": "http.request", "body": b"x" * size, "more_body": self.read < self.total}

    async def send(self, message: dict[str, object]) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return next(int(m["status"]) for m in self.sent if m["type"] == "http.response.start")  # type: ignore[call-overload]

    @property
    def problem(self) -> dict[str, object]:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body"))  # type: ignore[misc]


def scope(length: int | None, path: str = WHOAMI) -> dict[str, object]:
    headers = [(b"host", b"127.0.0.1:8443"), (b"content-type", b"application/json")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8443),
    }


@pytest.fixture
def app(tmp_path):  # type: ignore[no-untyped-def]
    """The server's app over a database it never reaches (the body is refused first)."""
    store = Store(f"sqlite:///{tmp_path / 'unused.db'}")
    operations = Operations()
    operations.add("engineers.whoami", whoami, max_body=DEFAULT_LIMIT * 2)
    yield build_app(store, public_url="https://127.0.0.1:8443", nonce_store=MemoryNonceStore(), operations=operations)
    store.close()


def upload(app, total: int, length: int | None) -> Upload:  # type: ignore[no-untyped-def]
    client = Upload(total)
    asyncio.run(app(scope(length), client.receive, client.send))
    return client


def test_ten_mebibytes_without_content_length_are_refused_after_the_limit_and_one_chunk(app) -> None:  # type: ignore[no-untyped-def]
    client = upload(app, TEN_MIB, None)
    assert client.status == 413 and client.problem["code"] == "body-too-large"
    assert DEFAULT_LIMIT * 2 < client.read <= DEFAULT_LIMIT * 2 + CHUNK


def test_ten_mebibytes_with_content_length_are_refused_before_reading(app) -> None:  # type: ignore[no-untyped-def]
    client = upload(app, TEN_MIB, TEN_MIB)
    assert client.status == 413 and client.problem["code"] == "body-too-large"
    assert client.read == 0


def test_a_content_length_that_lies_is_caught_while_reading(app) -> None:  # type: ignore[no-untyped-def]
    client = upload(app, TEN_MIB, 100)
    assert client.status == 413
    assert client.read <= DEFAULT_LIMIT * 2 + CHUNK


def test_a_route_of_its_own_takes_its_larger_limit(app) -> None:  # type: ignore[no-untyped-def]
    """Over the default, under whoami's own limit here: read whole, then refused as unsigned."""
    client = upload(app, DEFAULT_LIMIT + CHUNK, None)
    assert client.read == DEFAULT_LIMIT + CHUNK
    assert client.status == 401 and client.problem["code"] == "unsigned"


@pytest.mark.parametrize("value", [b"-1", b"1e6", b" 12", b"0x10"])
def test_a_content_length_that_is_not_a_number_is_400(value: bytes) -> None:
    sent: list[dict[str, object]] = []

    async def never() -> dict[str, object]:
        raise AssertionError("the body was read")

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def inner(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        raise AssertionError("the app was called")

    request = scope(None)
    request["headers"] = [*request["headers"], (b"content-length", value)]  # type: ignore[misc]
    asyncio.run(BodyLimit(inner)(request, never, send))
    assert sent[0]["status"] == 400


def test_two_content_lengths_are_400() -> None:
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def inner(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        raise AssertionError("the app was called")

    request = scope(10)
    request["headers"] = [*request["headers"], (b"content-length", b"10")]  # type: ignore[misc]
    asyncio.run(BodyLimit(inner)(request, None, send))  # type: ignore[arg-type]
    assert sent[0]["status"] == 400


@pytest.mark.parametrize("bad", [0, -1])
def test_a_limit_is_positive(bad: int) -> None:
    with pytest.raises(ValueError):
        BodyLimit(None, default=bad)  # type: ignore[arg-type]
