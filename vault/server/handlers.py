"""The operations the server answers: ``POST /v1/<noun>/<operation>`` → a handler.

A handler is thin: it receives the authenticated caller (the rows ``caller_read`` checked)
and the request's decoded body, calls the authority, and returns the response value that the
codec registered as ``<noun>.<operation>.response``. Each operation is also a name of
``vault.wire.codec.REGISTRY`` (its request's value) and of ``permissions.OPERATIONS``.

``engineers.whoami`` is the first: it answers the caller's own row, which authentication
has already read and checked (certificate under the trusted organisation key, active, the
key generation the signature's ``keyid`` names). It reads nothing more and writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vault.authority.checkout_reads import CallerRead
from vault.authority.engineer_requests import WhoamiAnswer
from vault.authority.permissions import OPERATIONS
from vault.wire import codec


@dataclass(frozen=True)
class Call:
    """One authenticated request, as a handler sees it."""

    caller: CallerRead
    request_id: bytes
    body: object


Handler = Callable[[Call], object]


@dataclass(frozen=True)
class Operation:
    name: str  # "engineers.whoami"
    handler: Handler
    max_body: int | None  # None: the server's default limit

    @property
    def path(self) -> str:
        noun, operation = self.name.split(".")
        return f"/v1/{noun}/{operation}"


class Operations:
    """The routes of the server, by ``noun.operation``."""

    def __init__(self, registry: codec.Registry = codec.REGISTRY) -> None:
        self.registry = registry
        self._operations: dict[str, Operation] = {}

    def add(self, name: str, handler: Handler, *, max_body: int | None = None) -> None:
        """Route ``name``: it must be an operation of ``permissions.OPERATIONS`` whose request and
        response values the codec registry knows."""
        noun, _, operation = name.partition(".")
        if operation not in OPERATIONS.get(noun, {}):
            raise ValueError(f"{name!r} is not an operation of permissions.OPERATIONS")
        if not {name, f"{name}.response"} <= set(self.registry.names()):
            raise ValueError(f"{name!r} has no registered request and response values")
        if name in self._operations:
            raise ValueError(f"{name!r} is routed already")
        self._operations[name] = Operation(name, handler, max_body)

    def find(self, noun: str, operation: str) -> Operation | None:
        return self._operations.get(f"{noun}.{operation}")

    def body_limits(self) -> dict[str, int]:
        """Each route's own body limit, by path (for ``BodyLimit``)."""
        return {op.path: op.max_body for op in self._operations.values() if op.max_body is not None}


def whoami(call: Call) -> WhoamiAnswer:
    me = call.caller.me
    return WhoamiAnswer(call.caller.vault_id, me.id, me.name, me.role, me.key_generation)


def default_operations() -> Operations:
    """Every operation the server answers today."""
    operations = Operations()
    operations.add("engineers.whoami", whoami)
    return operations
