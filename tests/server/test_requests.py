"""What the server refuses before a handler runs, and its unauthenticated routes (docs/server.md §2).

Each body below is *signed* by alice (an engineer with a certified key: the insider), so
what refuses it is the check named, not authentication: a malformed or non-canonical
envelope is 400, a body over the limit 413, another media type 415, an unknown route 404.
Each asserts the problem document and, for a refusal, that nothing was written.
"""

from __future__ import annotations

import base64

import httpx
import pytest
from server_harness import JSON, Served, asgi_call, database_state, keyid_of, signed_headers, signed_post, signing_key
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from vault.authority.checkout_reads import ORG_KEYS
from vault.server.app import build_app
from vault.storage import rows
from vault.storage.engine import Store
from vault.wire.httpsig import MemoryNonceStore

WHOAMI = "/v1/engineers/whoami"
RID = base64.urlsafe_b64encode(b"\x01" * 16).rstrip(b"=").decode()


def envelope_text(body: str = "{}", *, type_: str = "engineers.whoami", rid: str = RID, v: str = "1") -> bytes:
    return ('{"body":' + body + ',"request_id":"' + rid + '","type":"' + type_ + '","v":' + v + "}").encode()


def assert_problem(response: httpx.Response, status: int, error: str, code: str | None = None) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    kebab = {"InvalidInput": "invalid-input", "NotFound": "not-found", "Locked": "locked"}[error]
    assert problem["type"] == f"urn:credvault:{kebab}"
    assert (problem["status"], problem["error"], problem["code"]) == (status, error, code)
    assert set(problem) == {"type", "title", "status", "detail", "hint", "error", "code"}
    return problem


def test_the_canonical_envelope_is_answered(served: Served) -> None:
    assert signed_post(served, WHOAMI, envelope_text(), served.alice).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"body":{}', id="malformed_json"),
        pytest.param(envelope_text('{"x":1,"x":2}'), id="duplicate_keys_in_body"),
        pytest.param(envelope_text(v="1.0"), id="float"),
        pytest.param(envelope_text("[" * 16 + "]" * 16), id="depth_17"),
        pytest.param(envelope_text('{"engineer_id":1}'), id="unknown_field"),
        pytest.param(envelope_text(type_="engineers.list"), id="envelope_names_another_operation"),
        pytest.param(envelope_text(rid="AQEB"), id="request_id_not_16_bytes"),
        pytest.param(envelope_text(v="2"), id="another_wire_version"),
        pytest.param(envelope_text().replace(b'"body":{}', b'"body": {}'), id="not_canonical"),
        pytest.param(b"\xff\xfe", id="not_utf8"),
    ],
)
def test_a_bad_envelope_is_400(served: Served, body: bytes) -> None:
    before = database_state(served.db_url)
    response = signed_post(served, WHOAMI, body, served.alice)
    problem = assert_problem(response, 400, "InvalidInput")
    assert str(problem["detail"]).startswith(("body", "envelope"))
    assert database_state(served.db_url) == before


def test_a_duplicate_envelope_key_is_400(served: Served) -> None:
    body = b'{"body":{},"body":{},' + envelope_text()[1:]
    assert_problem(signed_post(served, WHOAMI, body, served.alice), 400, "InvalidInput")


def test_a_body_over_the_limit_is_413(served: Served) -> None:
    body = b"x" * (64 * 1024 + 1)
    before = database_state(served.db_url)
    response = signed_post(served, WHOAMI, body, served.alice)
    assert_problem(response, 413, "InvalidInput", "body-too-large")
    assert database_state(served.db_url) == before


def test_ten_mebibytes_without_a_length_are_413(served: Served) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(160):
            yield b"x" * 65536

    with served.client() as client:
        response = client.post(WHOAMI, content=chunks(), headers={"Content-Type": JSON})
    assert_problem(response, 413, "InvalidInput", "body-too-large")


def test_another_media_type_is_415(served: Served) -> None:
    body = envelope_text()
    headers = signed_headers(served, WHOAMI, body, key=signing_key(served.alice), keyid=keyid_of(served.alice))
    headers["Content-Type"] = "text/plain"
    with served.client() as client:
        response = client.post(WHOAMI, content=body, headers=headers)
    assert_problem(response, 415, "InvalidInput", "unsupported-media-type")


@pytest.mark.parametrize("path", ["/v1/subjects/find", "/v1/backups/restore", "/v1/nouns/x", "/v2/engineers/whoami"])
def test_an_unknown_route_is_404(served: Served, path: str) -> None:
    response = signed_post(served, path, envelope_text(), served.alice)
    assert_problem(response, 404, "NotFound", "no-route")


def test_get_on_an_operation_is_refused(served: Served) -> None:
    with served.client() as client:
        response = client.get(WHOAMI)
    assert response.status_code == 405
    assert response.json()["code"] == "method-not-allowed"


def test_healthz_answers(served: Served) -> None:
    with served.client() as client:
        response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_readyz_answers_ready_at_the_migration_head(served: Served) -> None:
    with served.client() as client:
        response = client.get("/readyz")
    assert (response.status_code, response.json()) == (200, {"ready": True, "reasons": []})


def test_identity_answers_the_vault_and_the_organisation_key_head(served: Served) -> None:
    with served.client() as client:
        response = client.get("/v1/identity")
    assert response.status_code == 200
    me = served.alice.keyholder.me()
    store = Store(served.db_url)
    try:
        with store.read() as s:
            head = ORG_KEYS.all(rows.connection(s), {})[-1]
    finally:
        store.close()
    b64 = base64.urlsafe_b64encode
    assert response.json() == {
        "vault_id": b64(me.vault_id).rstrip(b"=").decode(),
        "org_key": {"version": head[0], "public": b64(me.org_signing_public).rstrip(b"=").decode()},
    }


# -- readiness and identity on databases of their own ------------------------------------------------


def test_readyz_is_503_with_an_object_credvault_did_not_create(db_url: str) -> None:
    engine = create_engine(db_url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE stolen_copies (x INTEGER)"))
    engine.dispose()
    store = Store(db_url)
    try:
        app = build_app(store, public_url="http://127.0.0.1:8443", nonce_store=MemoryNonceStore())
        response = asgi_call(app, "GET", "/readyz")
    finally:
        store.close()
    assert (response.status_code, response.json()) == (503, {"ready": False, "reasons": ["foreign-objects"]})
    assert response.headers["retry-after"] == "1"


def test_readyz_is_503_below_the_migration_head(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = Store(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        app = build_app(store, public_url="http://127.0.0.1:8443", nonce_store=MemoryNonceStore())
        response = asgi_call(app, "GET", "/readyz")
    finally:
        store.close()
    assert (response.status_code, response.json()) == (503, {"ready": False, "reasons": ["schema-not-at-head"]})


def test_identity_of_a_database_without_a_vault_is_404(db_url: str) -> None:
    store = Store(db_url)
    try:
        app = build_app(store, public_url="http://127.0.0.1:8443", nonce_store=MemoryNonceStore())
        response = asgi_call(app, "GET", "/v1/identity")
    finally:
        store.close()
    assert_problem(response, 404, "NotFound")


def test_identity_extra_adds_its_fields_and_may_not_replace_the_vaults(served: Served) -> None:
    store = Store(served.db_url)
    try:
        extra = build_app(
            store,
            public_url="http://127.0.0.1:8443",
            nonce_store=MemoryNonceStore(),
            identity_extra=lambda: {"server_key": {"version": 1}},
        )
        assert asgi_call(extra, "GET", "/v1/identity").json()["server_key"] == {"version": 1}
        clash = build_app(
            store,
            public_url="http://127.0.0.1:8443",
            nonce_store=MemoryNonceStore(),
            identity_extra=lambda: {"vault_id": "someone else's"},
        )
        response = asgi_call(clash, "GET", "/v1/identity")
    finally:
        store.close()
    assert response.status_code == 500
    assert response.json()["error"] == "internal"

