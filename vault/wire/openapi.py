"""The team server's API as an OpenAPI 3.1 document, made from the codec's own schemas.

Starlette gives no OpenAPI document of its own, so this module writes one from what the server
actually decodes and encodes: one ``POST /v1/<noun>/<operation>`` per route of ``wire/routes.py``,
its request envelope and its answer's, each body's JSON Schema read from the codec's compiled
value (``codec.compile_value``: the same nodes ``decode`` checks a body against, so the document
cannot drift from the code), the role each route needs (``permissions``: ``x-credvault-role``), and
the server's three GET routes. ``credvault server openapi`` prints it; ``docs/openapi.json`` is
its output, checked to be current by ``tests/wire/test_openapi.py``.

The JSON Schema of a node: an ``int`` an integer of |x| < 2**63; a ``bool`` a boolean; a ``str`` a
string; ``bytes`` a base64url string without padding; a ``datetime`` an integer (µs since the
epoch, UTC); ``X | None`` ``anyOf`` X and null; ``tuple[X, ...]`` an array of X; ``tuple[X, Y]`` an
array of exactly those items (``prefixItems``); a value an object of exactly its fields
(``additionalProperties: false``, every field required), in ``components.schemas`` under its
module and class name. What a schema cannot say, the codec still refuses (a duplicate key, a
non-canonical encoding, a body past its size limit): ``info.description`` says so.
"""

from __future__ import annotations

import json
from typing import Any

from vault.wire import codec
from vault.wire.codec import ArrayNode, BytesNode, Node, OptionalNode, RecordNode, ScalarNode, TimeNode
from vault.wire.routes import ROUTES, STREAMED

INT_MAX = codec.INT_LIMIT - 1
DESCRIPTION = (
    "Every POST carries a canonical JSON envelope {type, v, request_id, body} and is signed by the "
    "engineer's certified Ed25519 key (RFC 9421: Signature-Input, Signature, Content-Digest; "
    "docs/format.md §15); every answer is the envelope of '<operation>.response', signed by the server "
    "key (§16). The codec also refuses what a schema cannot say: floats, duplicate keys, depth over "
    f"{codec.MAX_DEPTH}, a non-canonical encoding, a body past its size limit. Errors are "
    "application/problem+json (RFC 9457). docs/server.md describes each route."
)
SIGNED = {
    "Signature-Input": 'cv=("@method" "@authority" "@path" "content-type" "content-digest");created;nonce;keyid',
    "Signature": "cv=:<Ed25519 signature, base64>:",
    "Content-Digest": "sha-256=:<SHA-256 of the body, base64>:",
}


def _name(cls: type[Any]) -> str:
    module = cls.__module__.rsplit(".", 1)[-1]
    return f"{module}.{cls.__qualname__}"


class _Schemas:
    """JSON Schemas of codec nodes; each value once, in ``components``."""

    def __init__(self) -> None:
        self.components: dict[str, dict[str, Any]] = {}

    def of(self, node: Node) -> dict[str, Any]:
        if isinstance(node, ScalarNode):
            if node.kind is bool:
                return {"type": "boolean"}
            if node.kind is int:
                return {"type": "integer", "minimum": -INT_MAX, "maximum": INT_MAX}
            return {"type": "string"}
        if isinstance(node, BytesNode):
            return {"type": "string", "contentEncoding": "base64url", "pattern": "^[A-Za-z0-9_-]*$"}
        if isinstance(node, TimeNode):
            return {"type": "integer", "description": "microseconds since the epoch, UTC"}
        if isinstance(node, OptionalNode):
            return {"anyOf": [self.of(node.inner), {"type": "null"}]}
        if isinstance(node, ArrayNode):
            if node.items is None:
                return {"type": "array", "items": self.of(node.item)}
            items = [self.of(item) for item in node.items]
            return {"type": "array", "prefixItems": items, "minItems": len(items), "maxItems": len(items)}
        if isinstance(node, RecordNode):
            return {"$ref": f"#/components/schemas/{self.record(node)}"}
        raise TypeError(f"no JSON Schema for {type(node).__name__}")

    def record(self, node: RecordNode) -> str:
        name = _name(node.cls)
        if name not in self.components:
            self.components[name] = {}  # a placeholder first: a value refers to itself at most once
            self.components[name] = {
                "type": "object",
                "properties": {field: self.of(inner) for field, inner in node.fields.items()},
                "required": sorted(node.fields),
                "additionalProperties": False,
            }
        return name

    def envelope(self, operation: str, body: type[Any]) -> dict[str, Any]:
        record = codec.compile_value(body)
        assert isinstance(record, RecordNode)
        return {
            "type": "object",
            "properties": {
                "type": {"const": operation},
                "v": {"const": codec.WIRE_VERSION},
                "request_id": {"type": "string", "contentEncoding": "base64url", "minLength": 22, "maxLength": 22},
                "body": self.of(record),
            },
            "required": ["body", "request_id", "type", "v"],
            "additionalProperties": False,
        }


def _role(operation: str) -> str:
    from vault.authority.permissions import KEYHOLDER_REQUESTS, OPERATIONS

    noun, _, name = operation.partition(".")
    return str(OPERATIONS.get(noun, {}).get(name) or KEYHOLDER_REQUESTS.get(noun, {}).get(name) or "enrolment code")


def document(version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the server's API (module docstring)."""
    schemas = _Schemas()
    problem = {"application/problem+json": {"schema": {"type": "object"}}}
    paths: dict[str, Any] = {}
    for operation, request, response in sorted(ROUTES, key=lambda route: route[0]):
        paths["/v1/" + operation.replace(".", "/")] = {
            "post": {
                "operationId": operation,
                "x-credvault-role": _role(operation),
                "parameters": [
                    {"name": header, "in": "header", "required": True, "schema": {"type": "string"}, "example": example}
                    for header, example in SIGNED.items()
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": schemas.envelope(operation, request)}},
                },
                "responses": {
                    "200": _streamed(operation)
                    if operation in STREAMED
                    else {
                        "description": f"{operation}.response, signed by the server key",
                        "content": {
                            "application/json": {"schema": schemas.envelope(f"{operation}.response", response)}
                        },
                    },
                    "default": {"description": "a refusal (RFC 9457)", "content": problem},
                },
            }
        }
    plain = {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}}
    for path, summary in (
        ("/healthz", "the process answers"),
        ("/readyz", "the database answers, its schema is current and the server key file matches the vault"),
        ("/v1/identity", "the vault id, organisation key and certified server key (unauthenticated)"),
    ):
        paths[path] = {"get": {"summary": summary, "responses": plain}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "credvault team server", "version": version, "description": DESCRIPTION},
        "paths": paths,
        "components": {"schemas": dict(sorted(schemas.components.items()))},
    }


def _streamed(operation: str) -> dict[str, Any]:
    """A streamed answer: JSON lines whose last one is signed by the server key (docs/format.md §11.1)."""
    return {
        "description": f"{operation}: JSON lines (a header, sections, counters), the end line signed by the server key",
        "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
    }


def dumps(version: str) -> str:
    """``document`` as indented JSON with sorted keys, ending in a newline (docs/openapi.json)."""
    return json.dumps(document(version), indent=1, sort_keys=True, ensure_ascii=False) + "\n"


__all__ = ["document", "dumps"]
