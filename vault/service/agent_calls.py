"""The ``Vault`` calls the agent makes for any command, named in one table (docs/format.md §12).

The agent's first requests (``checkout``, ``whoami``, the listings, ``secret add``, ``checkin``)
each have an op of their own, shaped for the fast path (cli/fast/). Every other command a
session can serve without a prompt or a file goes through one op, ``call``::

    {"op": "call", "noun": "checkouts", "method": "list", "args": {...}}

``CALLS`` names each call the agent makes: its noun and method on the public ``Vault`` API (the
same on a ``RemoteVault``), the kind of each argument and of its answer. The agent refuses a
call not in the table, an argument not named, and an argument of the wrong kind
(``InvalidInput``), before it calls anything; the library then checks the values as it
checks a command's. An answer travels as the records' own JSON (``to_json``) and is made a
record again here (``result``), so a click command prints the same whether the agent or an
in-process ``Vault`` answered.

Not in the table, so run in the command's own process: what asks a passphrase or reads a file
there (``unlock``, ``passwd``, ``enroll``, backups, ``restore``), what streams without bound
(``audit export``, ``report access``) and what returns more than records (``rotate root``'s
shares, an engineer's removal, ``policy adopt``). A progress callback stays in the command's
process (kind ``here``): a rotation through the agent reports at its end. This module imports
only the standard library and ``vault.records``: the command's side must not pay for
SQLAlchemy or cryptography.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from vault import errors, records

HINT = "see the agent's socket protocol in docs/format.md §12"
LONG_REPLY = 3600.0  # an admin's whole-chain ``audit verify`` of a million events takes about a minute


@dataclasses.dataclass(frozen=True)
class Call:
    """One call: ``params`` (name -> kind, in positional order), its ``result`` kind, and
    whether it may run long (no time budget at a team server; the command waits LONG_REPLY)."""

    params: tuple[tuple[str, str], ...] = ()
    result: str | type = "none"
    long: bool = False
    attribute: bool = False  # a value read, not a method called (``audit.whole_chain``)


def _c(result: str | type, *params: tuple[str, str], long: bool = False) -> Call:
    return Call(tuple(params), result, long)


S, S_, B_ = "str", "str?", "bool?"
HERE = "here"  # an argument that stays in the command's process (a progress callback): never sent
CALLS: dict[tuple[str, str], Call] = {
    ("", "vault_id"): _c("bytes"),
    ("engineers", "list"): _c(records.EngineerInfo),
    ("engineers", "invite"): _c("str", ("name", S), ("role", S), ("valid_for", "timedelta")),
    ("engineers", "pending_confirmation"): _c(records.PendingConfirmation, ("name", S)),
    ("engineers", "confirm"): _c(records.EngineerInfo, ("name", S), ("fingerprint", S), ("shown", "pending?")),
    ("clients", "show"): _c(records.ClientInfo, ("slug", S)),
    ("clients", "add"): _c(records.ClientInfo, ("slug", S), ("name", S)),
    ("grants", "list"): _c(records.GrantInfo, ("engineer", S_), ("client", S_)),
    ("grants", "grant"): _c(records.GrantInfo, ("engineer", S), ("client", S), ("until", "datetime?"), ("reason", S_)),
    ("grants", "revoke"): _c("int", ("engineer", S), ("client", S)),
    ("grants", "maintain"): _c("int"),
    ("secrets", "history"): _c(records.VersionInfo, ("ref", S)),
    ("secrets", "search"): _c(records.SearchMatch, ("query", S), ("client", S_)),
    ("secrets", "update"): _c(
        records.SecretInfo,
        ("ref", S),
        ("password", S_),
        ("username", S_),
        ("url", S_),
        ("host", S_),
        ("note", S_),
        ("fields", "texts?"),
        ("kind", S_),
        ("sensitive_fields", "texts?"),
        ("public_fields", "texts?"),
    ),
    ("checkouts", "list"): _c(records.CheckoutInfo),
    ("checkouts", "break_checkout"): _c("str", ("ref", S)),
    ("policies", "get"): _c(records.PolicyInfo, ("client", S)),
    ("policies", "set"): _c(
        records.PolicyInfo,
        ("client", S),
        ("reason_required", B_),
        ("exclusive", B_),
        ("rotate_after_checkout", B_),
        ("checkout_for", "timedelta?"),
        ("stale_days", "int?"),
    ),
    ("keys", "rotate_secret"): _c(records.SecretInfo, ("ref", S), ("length", "int?")),
    ("keys", "rotate_client"): _c(
        records.RotationInfo, ("client", S), ("batch_size", "int"), ("progress", HERE), long=True
    ),
    ("keys", "resume"): _c(records.RotationInfo, ("batch_size", "int"), ("progress", HERE), long=True),
    ("keys", "set_retention"): _c("none", ("versions", "int")),
    ("keys", "set_cryptoperiod"): _c("none", ("days", "int")),
    ("audit", "head"): _c("seqhash"),
    ("audit", "checkpoint"): _c("str"),
    ("audit", "verify"): _c(
        records.AuditVerification,
        ("since", "seqhash?"),
        ("known_head", "seqhash?"),
        ("checkpoints", "lines"),
        long=True,
    ),
    ("audit", "whole_chain"): Call(result="bool", attribute=True),
    ("reports", "stale"): _c(records.StaleSecret),
    ("reports", "at_risk"): _c(records.AccessRecord, ("engineer", S)),
    ("purge", "preview"): _c(records.PurgePreview, ("client", S)),
    ("purge", "client"): _c(records.ReceiptInfo, ("client", S), ("request", S), ("vacuum", "bool"), long=True),
    ("purge", "secret"): _c(records.ReceiptInfo, ("ref", S), ("request", S), ("vacuum", "bool"), long=True),
    ("purge", "scrub"): _c("str", ("vacuum", "bool"), long=True),
    ("purge", "receipts"): _c(records.ReceiptInfo),
    ("purge", "verify_receipt"): _c(records.ReceiptCheck, ("receipt_id", "int")),
    ("subjects", "find"): _c(records.SubjectMatch, ("query", S)),
    ("subjects", "report"): _c("json", ("query", S)),
    ("subjects", "purge"): _c(records.ReceiptInfo, ("query", S), ("request", S), ("vacuum", "bool"), long=True),
}
NOUNS = frozenset(noun for noun, _ in CALLS if noun)
# What ``audit verify`` reads before it verifies (``cli/audit.py``): in the command's process they
# run in ``store.inspecting()`` with the verification (which runs in its own), so that objects in
# the database that credvault did not create are reported by it, not a refusal of these reads.
INSPECTED = frozenset({("", "vault_id"), ("audit", "head")})


def _named(message: Mapping[str, Any]) -> tuple[str, str, Call] | None:
    noun, method = message.get("noun"), message.get("method")
    if not (isinstance(noun, str) and isinstance(method, str)):
        return None
    call = CALLS.get((noun, method))
    return None if call is None else (noun, method, call)


def runs_long(message: Mapping[str, Any]) -> bool:
    """Whether ``message`` is a call that may run long (no time budget at a team server)."""
    named = _named(message) if message.get("op") == "call" else None
    return named is not None and named[2].long


# -- the command's side: arguments out, the answer back as records ------------------------------


def arguments(call: Call, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The call's arguments as JSON: positional ones named in the table's order; a keyword
    argument not passed is not sent (the method's own default applies)."""
    names = [name for name, _ in call.params]
    if len(args) > len(names):
        raise TypeError("too many positional arguments for an agent call")
    given = dict(zip(names, args, strict=False)) | dict(kwargs)
    unknown = set(given) - set(names)
    if unknown:
        raise TypeError(f"an agent call takes no argument {sorted(unknown)[0]!r}")
    kinds = dict(call.params)
    return {name: _out(kinds[name], value) for name, value in given.items() if kinds[name] != HERE}


def _out(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind.startswith("datetime"):
        return value.isoformat()
    if kind.startswith("timedelta"):
        return value.total_seconds()
    if kind.startswith("seqhash"):
        return [value[0], value[1].hex()]
    if kind == "lines":
        return list(value)
    if kind.startswith("pending"):
        return value.to_json()
    return value


def result(noun: str, method: str, value: Any) -> Any:
    """The answer made what the method returns (records from their JSON)."""
    kind = CALLS[noun, method].result
    if value is None:
        return None
    if isinstance(kind, type):  # a record, or a list of them (a listing's answer)
        return [record(kind, item) for item in value] if isinstance(value, list) else record(kind, value)
    if kind == "bytes":
        return bytes.fromhex(value)
    if kind == "seqhash":
        return (value[0], bytes.fromhex(value[1]))
    return value


def record(cls: type, data: Mapping[str, Any]) -> Any:
    """A record from its ``to_json``: times parsed, tuples made tuples again, records inside
    made records (``PendingConfirmation.carried``). A member that is not there: the field's default."""
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: _typed(hints[f.name], data[f.name]) for f in dataclasses.fields(cls) if f.name in data})


def _typed(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _typed(next(a for a in args if a is not type(None)), value)
    if hint is dt.datetime:
        return dt.datetime.fromisoformat(value)
    if origin is tuple:
        return tuple(value)
    if origin is list and args and isinstance(args[0], type) and dataclasses.is_dataclass(args[0]):
        return [record(args[0], item) for item in value]
    return value


# -- the agent's side: arguments checked, the call made, its answer as JSON ----------------------


def serve(vault: Any, message: Mapping[str, Any]) -> Any:
    """Make the call ``message`` names on ``vault`` and answer its result as JSON (``INSPECTED``
    calls of a local vault in its ``store.inspecting()``; a served vault has no store)."""
    named = _named(message)
    if named is None:
        raise errors.InvalidInput("the agent makes no such call", hint=HINT)
    noun, method, call = named
    raw = message.get("args", {})
    if not isinstance(raw, dict):
        raise errors.InvalidInput("the agent call's args are not an object", hint=HINT)
    kinds = {name: kind for name, kind in call.params if kind != HERE}
    unknown = set(raw) - set(kinds)
    if unknown:
        raise errors.InvalidInput("the agent call has an argument it does not take", hint=HINT)
    kwargs = {name: _in(kinds[name], name, value) for name, value in raw.items()}
    target = getattr(vault, noun) if noun else vault
    if call.attribute:
        return bool(getattr(target, method, True))
    import inspect  # the agent's side only: the command's side does not pay for it

    function = getattr(target, method)
    try:
        inspect.signature(function).bind(**kwargs)
    except TypeError:
        raise errors.InvalidInput("the agent call lacks an argument it needs", hint=HINT) from None
    if (noun, method) in INSPECTED and hasattr(type(vault), "store"):  # a local ``Vault``
        with vault.store.inspecting():
            return _json(function(**kwargs))
    return _json(function(**kwargs))


def _json(value: Any) -> Any:
    if isinstance(value, list):
        return [_json(v) for v in value]
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], bytes):
        return [value[0], value[1].hex()]
    return value


def _in(kind: str, name: str, value: Any) -> Any:
    """An argument of ``kind`` from JSON, or InvalidInput (a wrong type is never "absent")."""
    optional = kind.endswith("?")
    base = kind.rstrip("?")
    if value is None:
        if optional:
            return None
        raise errors.InvalidInput(f"the agent call's {name} is missing", hint=HINT)
    try:
        return _READERS[base](value)
    except (TypeError, ValueError, OverflowError):
        raise errors.InvalidInput(f"the agent call's {name} is not a {base}", hint=HINT) from None


def _exactly(kind: type) -> Callable[[Any], Any]:
    def read(value: Any) -> Any:
        if type(value) is not kind:
            raise TypeError(kind.__name__)
        return value

    return read


def _lines(value: Any) -> tuple[str, ...]:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise TypeError("lines")


def _texts(value: Any) -> dict[str, str]:
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return dict(value)
    raise TypeError("texts")


def _seqhash(value: Any) -> tuple[int, bytes]:
    if not (isinstance(value, list) and len(value) == 2 and type(value[0]) is int and isinstance(value[1], str)):
        raise TypeError("seqhash")
    return value[0], bytes.fromhex(value[1])


def _seconds(value: Any) -> dt.timedelta:
    if type(value) not in (int, float):
        raise TypeError("timedelta")
    return dt.timedelta(seconds=value)


def _pending(value: Any) -> records.PendingConfirmation:
    """What the admin was shown before confirming (the confirmation compares it, member by
    member, with what it would do: a member of another kind is a difference, so refused there)."""
    if not isinstance(value, dict):
        raise TypeError("pending")
    pending: records.PendingConfirmation = record(records.PendingConfirmation, value)
    if not (isinstance(pending.carried, list) and isinstance(pending.dropped, list)):
        raise TypeError("pending")
    return pending


def _time(value: Any) -> dt.datetime:
    """An aware ISO-8601 time (a grant's end): a time without a zone is refused, as ``audit-log``'s ``since``."""
    if not isinstance(value, str):
        raise TypeError("datetime")
    found = dt.datetime.fromisoformat(value)
    if found.tzinfo is None:
        raise TypeError("datetime")
    return found


_READERS: dict[str, Callable[[Any], Any]] = {
    "str": _exactly(str),
    "int": _exactly(int),
    "bool": _exactly(bool),
    "texts": _texts,
    "lines": _lines,
    "seqhash": _seqhash,
    "timedelta": _seconds,
    "datetime": _time,
    "pending": _pending,
}
