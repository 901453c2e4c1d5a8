"""The canonical wire codec: request and response values as canonical JSON (docs/server.md §2).

A value is a frozen dataclass or a ``NamedTuple`` (``vault/authority/*requests.py``,
``vault/storage/rows.py``) whose fields are ``int``, ``bool``, ``str``, ``bytes``,
``datetime``, ``X | None``, ``tuple[X, ...]``, ``tuple[X, Y]`` or another such value. Its
schema is read once from its type hints (``typing.get_type_hints``: the modules use
``from __future__ import annotations``); a field of any other type is a ``TypeError`` when
the value is first compiled (``register`` compiles it), never at the first request.

``encode`` writes one byte string per value: keys sorted, no whitespace, UTF-8; ``bytes`` →
base64url without padding; ``int`` → a JSON integer, |x| < 2**63; ``bool`` → true/false;
``datetime`` → integer microseconds since the epoch, UTC (a naive one is refused); tuple →
array; a value → an object by field name; ``None`` → null.

``decode`` is strict, because the body of a request is what an insider (or a compromised
server, for a response) writes: no float, NaN or Infinity; no duplicate key; nesting at most
``MAX_DEPTH``; a size limit; no unknown, missing or mistyped field; a bool is not an int and
an int is not a bool; base64url must be canonical (no padding, no stray bits); strings are
valid UTF-8 without lone surrogates; by default the bytes must be the value's canonical
encoding (one value, one encoding: two parsers cannot read one body two ways). A refusal is
``InvalidInput`` naming the field's path, never its value (ciphertext, tags or names).

The envelope ``{"type", "v", "request_id", "body"}`` names the operation (a name registered
with ``register``: ``"checkouts.checkout"``), the wire version and the request's id (16
bytes: the operation's idempotency key, docs/server.md §4).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import itertools
import json
import re
import types
import typing
from typing import Any, NamedTuple, TypeVar

from vault.errors import InvalidInput
from vault.wire.routes import ROUTES

T = TypeVar("T")

MAX_DEPTH = 16  # objects and arrays, the envelope included
MAX_BYTES = 64 * 1024  # a body's default limit (the bulk routes pass their own)
# A body that carries one secret version's blobs (an add or update, its answer, a checkout's): a
# field may hold 64 KiB (``validation.MAX_FIELD_BYTES``), in base64url a third more, so one version
# with its password and a few such fields passes the default limit.
ONE_VERSION_BYTES = 1024 * 1024
INT_LIMIT = 2**63  # |x| < INT_LIMIT: a signed 64-bit column
WIRE_VERSION = 1
REQUEST_ID_BYTES = 16

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_TYPE_NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")
_NESTING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)  # a whole string, or a bracket
_STEP = {b"[": 1, b"{": 1, b"]": -1, b"}": -1}


class _Refused(Exception):
    """A refusal on its way up; each enclosing field adds its name to ``path``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str] = []

    def at(self, step: str) -> _Refused:
        self.path.append(step)
        return self

    def error(self, root: str) -> InvalidInput:
        where = root + "".join(reversed(self.path))
        return InvalidInput(f"{where}: {self.message}")


class _Pairs(list[tuple[str, object]]):
    """A JSON object as parsed: its pairs in order, duplicates kept for the schema walk to refuse."""


# -- the schema: one node per field type ----------------------------------------------------------


class Node:
    """How one type is written and read."""

    def dump(self, value: object) -> object:
        raise NotImplementedError

    def load(self, raw: object) -> object:
        raise NotImplementedError


def _in_range(number: Any) -> None:
    if not -INT_LIMIT < number < INT_LIMIT:
        raise _Refused("an integer out of the 64-bit range")


def _utf8(text: Any) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _Refused("a string that is not valid UTF-8 (a lone surrogate)") from None


class ScalarNode(Node):
    """``int``, ``bool`` or ``str``: that exact type (a bool is not an int), then ``check``."""

    def __init__(self, kind: type[Any], word: str, check: typing.Callable[[Any], None] | None = None) -> None:
        self.kind, self.word, self.check = kind, word, check

    def dump(self, value: object) -> object:
        if type(value) is not self.kind:
            raise TypeError(f"expected {self.kind.__name__}, got {type(value).__name__}")
        return self.load(value)

    def load(self, raw: object) -> object:
        if type(raw) is not self.kind:
            raise _Refused(f"expected {self.word}")
        if self.check is not None:
            self.check(raw)
        return raw


_INT, _STR, _BOOL = (
    ScalarNode(int, "an integer", _in_range),
    ScalarNode(str, "a string", _utf8),
    ScalarNode(bool, "true or false"),
)


class BytesNode(Node):
    def dump(self, value: object) -> object:
        if not isinstance(value, bytes):
            raise TypeError(f"expected bytes, got {type(value).__name__}")
        return base64.urlsafe_b64encode(value).rstrip(b"=").decode("ascii")

    def load(self, raw: object) -> object:
        if not isinstance(raw, str):
            raise _Refused("expected a base64url string")
        if not _B64URL.fullmatch(raw) or len(raw) % 4 == 1:
            raise _Refused("not base64url without padding")
        decoded = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        if self.dump(decoded) != raw:  # stray bits in the last character: a second spelling
            raise _Refused("not canonical base64url")
        return decoded


class TimeNode(Node):
    def dump(self, value: object) -> object:
        if not isinstance(value, dt.datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise _Refused("a naive datetime (no time zone)")
        try:
            value.astimezone(dt.UTC)  # an instant before year 1 or after 9999 would not decode
        except OverflowError:
            raise _Refused("a time out of range") from None
        return _INT.dump((value - _EPOCH) // _MICROSECOND)

    def load(self, raw: object) -> object:
        micros = _INT.load(raw)
        try:
            return _EPOCH + typing.cast(int, micros) * _MICROSECOND
        except OverflowError:
            raise _Refused("a time out of range") from None


class OptionalNode(Node):
    def __init__(self, inner: Node) -> None:
        self.inner = inner

    def dump(self, value: object) -> object:
        return None if value is None else self.inner.dump(value)

    def load(self, raw: object) -> object:
        return None if raw is None else self.inner.load(raw)


class ArrayNode(Node):
    """``tuple[X, ...]`` (``items`` None), or ``tuple[X, Y]``: an array of exactly those items."""

    def __init__(self, item: Node, items: tuple[Node, ...] | None = None) -> None:
        self.item, self.items = item, items

    def _nodes(self, n: int) -> typing.Iterable[Node]:
        return itertools.repeat(self.item, n) if self.items is None else self.items

    def dump(self, value: object) -> object:
        if not isinstance(value, tuple) or (self.items is not None and len(value) != len(self.items)):
            raise TypeError(f"expected a tuple, got {type(value).__name__}")
        return self._each(value, dump=True)

    def load(self, raw: object) -> object:
        if not isinstance(raw, list) or isinstance(raw, _Pairs):
            raise _Refused("expected an array")
        if self.items is not None and len(raw) != len(self.items):
            raise _Refused(f"expected an array of {len(self.items)} items")
        return tuple(self._each(raw, dump=False))

    def _each(self, values: typing.Sequence[object], dump: bool) -> list[object]:
        out: list[object] = []
        for i, (node, value) in enumerate(zip(self._nodes(len(values)), values, strict=True)):
            try:
                out.append(node.dump(value) if dump else node.load(value))
            except _Refused as refusal:
                raise refusal.at(f"[{i}]") from None
        return out


class RecordNode(Node):
    """A frozen dataclass or a ``NamedTuple``: an object with exactly its fields."""

    def __init__(self, cls: type[Any]) -> None:
        self.cls = cls
        self.fields: dict[str, Node] = {}

    def dump(self, value: object) -> object:
        if type(value) is not self.cls:
            raise TypeError(f"expected a {self.cls.__name__}, got {type(value).__name__}")
        out: dict[str, object] = {}
        for name, node in self.fields.items():
            try:
                out[name] = node.dump(getattr(value, name))
            except _Refused as refusal:
                raise refusal.at(f".{name}") from None
        return out

    def load(self, raw: object) -> object:
        if not isinstance(raw, _Pairs):
            raise _Refused("expected an object")
        seen: dict[str, object] = {}
        for key, item in raw:
            if key in seen:  # named only if it is a field: an unknown key is the sender's text
                refusal = _Refused("a duplicate key")
                raise refusal.at(f".{key}") if key in self.fields else refusal
            seen[key] = item
        if any(key not in self.fields for key in seen):
            raise _Refused("an unknown field")
        values: dict[str, object] = {}
        for name, node in self.fields.items():
            if name not in seen:
                raise _Refused("a missing field").at(f".{name}")
            try:
                values[name] = node.load(seen[name])
            except _Refused as refusal:
                raise refusal.at(f".{name}") from None
        return self.cls(**values)


_SCALARS: dict[object, Node] = {int: _INT, bool: _BOOL, str: _STR, bytes: BytesNode(), dt.datetime: TimeNode()}
_compiled: dict[type[Any], RecordNode] = {}


def _is_value(tp: object) -> bool:
    return isinstance(tp, type) and (dataclasses.is_dataclass(tp) or (issubclass(tp, tuple) and hasattr(tp, "_fields")))


def _node(tp: object, where: str, building: set[type[Any]]) -> Node:
    scalar = _SCALARS.get(tp)
    if scalar is not None:
        return scalar
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        others = [arg for arg in args if arg is not type(None)]
        if len(args) == 2 and len(others) == 1:
            return OptionalNode(_node(others[0], where, building))
        raise TypeError(f"{where}: the codec knows only `X | None` of unions, not {tp!r}")
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return ArrayNode(_node(args[0], f"{where}[]", building))
        if args and Ellipsis not in args:
            items = tuple(_node(arg, f"{where}[{i}]", building) for i, arg in enumerate(args))
            return ArrayNode(items[0], items)
    if _is_value(tp):
        return _record(typing.cast(type[Any], tp), building)
    raise TypeError(f"{where}: the codec does not know the type {tp!r}")


def _record(cls: type[Any], building: set[type[Any]]) -> RecordNode:
    known = _compiled.get(cls)
    if known is not None:
        return known
    if cls in building:
        raise TypeError(f"{cls.__qualname__}: a value that contains itself has no bounded encoding")
    building.add(cls)
    try:
        if dataclasses.is_dataclass(cls):
            fields = dataclasses.fields(cls)
            if any(not f.init for f in fields):
                raise TypeError(f"{cls.__qualname__}: a field outside __init__ cannot be decoded")
            names = [f.name for f in fields]
        else:
            names = list(cls._fields)
        hints = typing.get_type_hints(cls)
        record = RecordNode(cls)
        record.fields = {name: _node(hints[name], f"{cls.__qualname__}.{name}", building) for name in sorted(names)}
    finally:
        building.discard(cls)
    _compiled[cls] = record
    return record


def _depth(node: Node) -> int:
    if isinstance(node, OptionalNode):
        return _depth(node.inner)
    if isinstance(node, ArrayNode):
        return 1 + max(_depth(item) for item in node.items or (node.item,))
    return 1 + max(map(_depth, node.fields.values()), default=0) if isinstance(node, RecordNode) else 0


def compile_value(cls: type[Any]) -> Node:
    """Read a value's schema now: a ``TypeError`` names the first field the codec cannot write."""
    if not _is_value(cls):
        raise TypeError(f"{cls!r} is not a dataclass or a NamedTuple")
    return _record(cls, set())


# -- encode and decode ----------------------------------------------------------------------------


def _dumps(tree: object) -> bytes:
    return json.dumps(tree, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def encode(value: object) -> bytes:
    """The canonical bytes of ``value``; ``InvalidInput`` for an int out of range, a naive time or a
    lone surrogate, ``TypeError`` for a field whose Python type is not its declared one."""
    try:
        return _dumps(compile_value(type(value)).dump(value))
    except _Refused as refusal:
        raise refusal.error("body") from None


def _refuse_number(text: str) -> object:
    raise _Refused("a number that is not an integer (a float, NaN or Infinity)")


def _parse(data: bytes, max_bytes: int) -> object:
    if not isinstance(data, bytes):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise InvalidInput(f"body: over the limit of {max_bytes} bytes")
    depth = 0
    for match in _NESTING.finditer(data):  # before the parser, whose recursion this bounds
        depth += _STEP.get(match.group(), 0)
        if depth > MAX_DEPTH:
            raise InvalidInput(f"body: nested deeper than {MAX_DEPTH}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("body: not valid UTF-8") from None
    try:
        return json.loads(text, parse_float=_refuse_number, parse_constant=_refuse_number, object_pairs_hook=_Pairs)
    except _Refused as refusal:
        raise refusal.error("body") from None
    except (ValueError, RecursionError):  # JSONDecodeError, an integer of over 4300 digits
        raise InvalidInput("body: not well-formed JSON") from None


def _check_canonical(data: bytes, tree: object) -> None:
    if _dumps(tree) != data:
        raise InvalidInput("body: not in canonical form (key order, whitespace, escapes or number spelling)")


def decode(data: bytes, cls: type[T], *, max_bytes: int = MAX_BYTES, canonical: bool = True) -> T:
    """The ``cls`` value ``data`` encodes, or ``InvalidInput`` naming the path of the first refusal.

    ``canonical=False`` accepts whitespace and any key order (every other check holds)."""
    record = compile_value(cls)
    parsed = _parse(data, max_bytes)
    try:
        value = record.load(parsed)
    except _Refused as refusal:
        raise refusal.error("body") from None
    if canonical:
        _check_canonical(data, record.dump(value))
    return typing.cast(T, value)


# -- the envelope and the registry of operations ---------------------------------------------------


class Envelope(NamedTuple):
    """An envelope: the operation's name, the wire version, the request's id and the body."""

    type: str
    v: int
    request_id: bytes
    body: object

    def __repr__(self) -> str:
        return f"Envelope(type={self.type!r}, v={self.v})"


class _Exact(Node):
    """A field that must hold one value (the route's operation, the wire version)."""

    def __init__(self, node: Node, expected: object, refusal: str) -> None:
        self.node, self.expected, self.refusal = node, expected, refusal

    def dump(self, value: object) -> object:
        return self.node.dump(value)

    def load(self, raw: object) -> object:
        if self.node.load(raw) != self.expected:
            raise _Refused(self.refusal)
        return self.expected


class _RequestId(BytesNode):
    def load(self, raw: object) -> object:
        if len(typing.cast(bytes, decoded := super().load(raw))) != REQUEST_ID_BYTES:
            raise _Refused(f"not {REQUEST_ID_BYTES} bytes")
        return decoded


class Registry:
    """Operation names (``"checkouts.checkout"``) to the value class their body holds."""

    def __init__(self) -> None:
        self._classes: dict[str, type[Any]] = {}

    def register(self, name: str, cls: type[Any]) -> None:
        """Name ``cls`` as the body of ``name``; compiles it now (``TypeError`` for an unknown field type)."""
        if not _TYPE_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a type name like 'checkouts.checkout'")
        if self._classes.get(name, cls) is not cls:
            raise ValueError(f"{name!r} is registered already, for another class")
        if 1 + _depth(compile_value(cls)) > MAX_DEPTH:  # the envelope's object, then the body's
            raise TypeError(f"{cls.__qualname__}: nested deeper than an envelope may be ({MAX_DEPTH})")
        self._classes[name] = cls

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._classes))

    def _schema(self, name: str) -> RecordNode:
        """The envelope of operation ``name``: its fields checked in this order, the body last."""
        try:
            body = _record(self._classes[name], set())
        except KeyError:
            raise InvalidInput("envelope.type: not a registered operation") from None
        schema = RecordNode(Envelope)
        schema.fields = {
            "type": _Exact(_STR, name, "not the operation of this route"),
            "v": _Exact(_INT, WIRE_VERSION, f"not wire version {WIRE_VERSION}"),
            "request_id": _RequestId(),
            "body": body,
        }
        return schema

    def envelope(self, name: str, body: object, request_id: bytes) -> bytes:
        """The canonical envelope of ``body`` (a value of the class registered as ``name``)."""
        if type(body) is not self._classes.get(name):
            raise TypeError(f"{name!r} does not carry a {type(body).__name__}")
        if not isinstance(request_id, bytes) or len(request_id) != REQUEST_ID_BYTES:
            raise ValueError(f"a request id is {REQUEST_ID_BYTES} bytes")
        try:
            return _dumps(self._schema(name).dump(Envelope(name, WIRE_VERSION, request_id, body)))
        except _Refused as refusal:
            raise refusal.error("envelope") from None

    def open_envelope(
        self, data: bytes, expected_type: str, *, max_bytes: int = MAX_BYTES, canonical: bool = True
    ) -> Envelope:
        """The envelope ``data`` holds, its body decoded as ``expected_type``'s value (the route's
        operation: an envelope naming another is refused, as is another version or a refused body)."""
        schema = self._schema(expected_type)
        parsed = _parse(data, max_bytes)
        try:
            opened = typing.cast(Envelope, schema.load(parsed))
        except _Refused as refusal:
            raise refusal.error("envelope") from None
        if canonical:
            _check_canonical(data, schema.dump(opened))
        return opened


REGISTRY = Registry()
register = REGISTRY.register
envelope = REGISTRY.envelope
open_envelope = REGISTRY.open_envelope


def _register_routes(registry: Registry) -> None:
    """Each route's request and response values (``vault/wire/routes.py``)."""
    for name, request, response in ROUTES:
        registry.register(name, request)
        registry.register(f"{name}.response", response)


_register_routes(REGISTRY)
