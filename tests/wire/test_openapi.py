"""The team server's OpenAPI document (``vault/wire/openapi.py``, ``docs/openapi.json``).

It is made from the codec's own compiled schemas, so these tests check it against the codec: every
route's request and answer envelopes, as the codec encodes random values of them (hypothesis), are
valid under the document's schemas (JSON Schema 2020-12, ``jsonschema``), and one the codec would
refuse (an unknown field, a missing one, a float, an int past 64 bits, padded base64) is refused by
the schema too. The checked-in document must be the one the code makes now.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from wire_values import strategy

from vault import __version__
from vault.authority.access_report_values import ACCESS, AccessReportRequest
from vault.authority.permissions import KEYHOLDER_REQUESTS, OPERATIONS
from vault.authority.requests import Caller
from vault.wire import codec, openapi
from vault.wire.routes import ROUTES, STREAMED

DOC = openapi.document(__version__)
CHECKED_IN = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def _validator(path: str, which: str) -> jsonschema.protocols.Validator:
    post = DOC["paths"][path]["post"]
    content = post["requestBody"]["content"] if which == "request" else post["responses"]["200"]["content"]
    schema = {**content["application/json"]["schema"], "components": DOC["components"]}
    return jsonschema.Draft202012Validator(schema)


def test_the_checked_in_document_is_the_one_the_code_makes() -> None:
    assert CHECKED_IN.read_text(encoding="utf-8") == openapi.dumps(__version__), (
        "docs/openapi.json is stale: run `credvault server openapi > docs/openapi.json`"
    )


def test_every_route_is_documented_with_the_role_it_needs() -> None:
    assert DOC["openapi"] == "3.1.0"
    jsonschema.Draft202012Validator.check_schema({"components": DOC["components"]})
    for name, _request, _response in ROUTES:
        post = DOC["paths"]["/v1/" + name.replace(".", "/")]["post"]
        noun, _, operation = name.partition(".")
        role = OPERATIONS.get(noun, {}).get(operation) or KEYHOLDER_REQUESTS.get(noun, {}).get(operation)
        assert post["x-credvault-role"] == (role or "enrolment code")
        assert {p["name"] for p in post["parameters"]} == {"Signature-Input", "Signature", "Content-Digest"}
    assert {"/healthz", "/readyz", "/v1/identity"} <= set(DOC["paths"])
    assert len([p for p in DOC["paths"] if p.startswith("/v1/") and p != "/v1/identity"]) == len(ROUTES)


@pytest.mark.parametrize(("name", "request_cls", "response_cls"), ROUTES, ids=[r[0] for r in ROUTES])
def test_what_the_codec_writes_is_valid_under_the_document(name: str, request_cls: Any, response_cls: Any) -> None:
    path = "/v1/" + name.replace(".", "/")
    if name in STREAMED:  # its answer is JSON lines (wire/backupstream.py), not an envelope
        assert set(DOC["paths"][path]["post"]["responses"]["200"]["content"]) == {"application/x-ndjson"}
    requests = _validator(path, "request")
    answers = requests if name in STREAMED else _validator(path, "response")

    @settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(strategy(request_cls), strategy(response_cls))
    def check(request: Any, response: Any) -> None:
        rid = secrets.token_bytes(codec.REQUEST_ID_BYTES)
        requests.validate(json.loads(codec.envelope(name, request, rid)))
        if name in STREAMED:
            return
        answers.validate(json.loads(codec.envelope(f"{name}.response", response, rid)))

    check()


def test_what_the_codec_refuses_the_schema_refuses() -> None:
    validator = _validator("/v1/reports/access", "request")
    rid = secrets.token_bytes(codec.REQUEST_ID_BYTES)
    value = AccessReportRequest(ACCESS, Caller(7, 2), "bob", ((1, 2, 3, 0),), ((1, 1),), bytes(32))
    good = json.loads(codec.envelope("reports.access", value, rid))
    validator.validate(good)
    body, caller = good["body"], good["body"]["caller"]
    for bad in (
        {**good, "extra": 1},
        {**good, "type": "checkouts.checkout"},
        {**good, "body": {**body, "caller": {**caller, "engineer_id": 1.5}}},
        {**good, "body": {**body, "caller": {**caller, "engineer_id": 2**63}}},
        {**good, "body": {**body, "caller": {"engineer_id": 1}}},
        {**good, "body": {**body, "items": [[1, 2, 3]]}},  # a fixed-length tuple: exactly four
        {**good, "body": {**body, "org_pin": body["org_pin"] + "="}},
        {**good, "request_id": good["request_id"] + "=="},
    ):
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(bad)


def test_the_cli_prints_the_document() -> None:
    from click.testing import CliRunner
    from vault.cli.main import cli

    result = CliRunner().invoke(cli, ["server", "openapi"])
    assert result.exit_code == 0, result.output
    assert result.stdout == CHECKED_IN.read_text(encoding="utf-8")
