"""The agent's ``call`` op (vault/service/agent_calls.py): the calls it makes, and what it refuses.

Through a real Unix socket to an agent serving in a thread (``served``, on SQLite and
PostgreSQL); each write is checked through the library afterwards, and each refusal leaves the
agent serving and nothing written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import inspect
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_harness import ADMIN, PASSWORD, Clock
from sqlalchemy import func, select, text

from vault import Vault, records
from vault.errors import ConfigurationError, EnrolmentError, InvalidInput, NotFound, TamperedSchema
from vault.service import agent, agent_calls, agentclient
from vault.service.remote import RemoteVault
from vault.storage import models as m

Served = tuple[agent.Agent, Path, Clock]


def _call(path: Path, noun: str, method: str, *args: Any, **kwargs: Any) -> Any:
    """What the CLI's ``AgentVault`` does: the arguments out, the answer back as records."""
    call = agent_calls.CALLS[noun, method]
    message = {"op": "call", "noun": noun, "method": method, "args": agent_calls.arguments(call, args, kwargs)}
    return agent_calls.result(noun, method, agentclient.request(path, message)["result"])


def _rows(vault: Vault) -> dict[str, int]:
    tables = (m.AuditEvent, m.Grant, m.Client, m.Secret, m.SecretVersion, m.ClientPolicy, m.Engineer, m.Checkout)
    with vault.store.transaction() as s:
        return {t.__tablename__: int(s.scalar(select(func.count()).select_from(t)) or 0) for t in tables}


def test_every_call_is_a_public_method_that_takes_those_arguments(admin: Vault) -> None:
    """The table cannot drift from the API: each call is a method of the noun on ``Vault``
    and on ``RemoteVault``, and every parameter named is one the method takes."""
    for (noun, method), call in agent_calls.CALLS.items():
        assert not method.startswith("_") and not noun.startswith("_"), (noun, method)
        target = getattr(admin, noun) if noun else admin
        if call.attribute:
            continue  # ``audit.whole_chain``: a RemoteAudit's value (the agent's default: True)
        params = inspect.signature(getattr(target, method)).parameters
        assert [name for name, _ in call.params] == [p for p in params if p in dict(call.params)], (noun, method)
        assert set(dict(call.params)) <= set(params), (noun, method)


def test_every_call_is_a_method_of_a_served_engineer_s_vault_too(team3: Any) -> None:
    """Through the team server the agent holds a ``RemoteVault``: the same nouns, the same methods."""
    bob = team3.engineer("bob")
    for (noun, method), call in agent_calls.CALLS.items():
        target = getattr(bob, noun) if noun else bob
        if isinstance(bob, RemoteVault) and (noun, method) == ("purge", "scrub"):
            with pytest.raises(ConfigurationError, match="not served through a team server"):
                getattr(target, method)  # refused by name, as without the agent (the host's command)
            continue
        if call.attribute:
            assert not isinstance(bob, RemoteVault) or isinstance(getattr(target, method), bool), (noun, method)
            continue
        params = inspect.signature(getattr(target, method)).parameters
        free = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())  # RemoteVault's policies.set
        assert free or set(dict(call.params)) <= set(params), (noun, method)


def _sample(hint: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _sample(next(a for a in args if a is not type(None)))
    if hint is dt.datetime:
        return dt.datetime(2026, 12, 6, 14, 45, 7, 123456, tzinfo=dt.UTC)
    if hint is bool:
        return True
    if hint is int:
        return 7
    if hint is str:
        return "text ✓"
    if origin is tuple:
        return ("a", "b")
    if origin is list:
        return [_sample(args[0])] if args else []
    if origin is dict or hint is dict:
        return {"key": "value"}
    if dataclasses.is_dataclass(hint):  # a record inside a record
        hints = typing.get_type_hints(hint)
        return hint(**{f.name: _sample(hints[f.name]) for f in dataclasses.fields(hint)})
    raise AssertionError(f"no sample of {hint!r}")


def test_every_record_comes_back_as_it_left() -> None:
    kinds = {c.result for c in agent_calls.CALLS.values() if isinstance(c.result, type)}
    assert records.AuditVerification in kinds and records.SecretInfo in kinds
    for cls in kinds:
        hints = typing.get_type_hints(cls)
        original = cls(**{f.name: _sample(hints[f.name]) for f in dataclasses.fields(cls)})
        assert agent_calls.record(cls, original.to_json()) == original, cls.__name__


def test_reads_through_the_agent_answer_what_the_library_answers(served: Served, admin: Vault, team: Any) -> None:
    _server, path, _clock = served
    team.engineer("bob")
    admin.grants.grant("bob", "agentco")
    admin.checkouts.checkout("agentco/fw", reason="T-9")
    assert _call(path, "checkouts", "list") == admin.checkouts.list() != []
    assert _call(path, "clients", "show", "agentco") == admin.clients.show("agentco")
    assert _call(path, "secrets", "history", "agentco/fw") == admin.secrets.history("agentco/fw")
    assert _call(path, "grants", "list", client="agentco") == admin.grants.list(client="agentco") != []
    assert _call(path, "engineers", "list") == admin.engineers.list()
    assert _call(path, "policies", "get", "agentco") == admin.policies.get("agentco")
    assert _call(path, "purge", "preview", "agentco") == admin.purge.preview("agentco")
    assert _call(path, "subjects", "find", "root") == admin.subjects.find("root") != []
    assert _call(path, "secrets", "search", "ROOT") == admin.secrets.search("root", "agentco") != []
    with pytest.raises(InvalidInput, match="control characters"):
        _call(path, "secrets", "search", "fw\x1b[2J")  # refused by the library, as in the command's process
    assert _call(path, "", "vault_id") == admin.vault_id()
    head = _call(path, "audit", "head")
    assert head == admin.audit.head() and isinstance(head[1], bytes)
    verified = _call(path, "audit", "verify", known_head=head, checkpoints=[_call(path, "audit", "checkpoint")])
    assert verified.ok and verified.head_seq >= head[0]
    assert _call(path, "audit", "whole_chain") is True  # a local vault's chain is all there


def test_writes_through_the_agent_are_the_library_s(served: Served, admin: Vault, team: Any) -> None:
    _server, path, _clock = served
    team.engineer("bob")
    assert _call(path, "clients", "add", "globex", "Globex Inc").slug == "globex"
    seen: list[object] = []
    rotated = _call(path, "keys", "rotate_client", "globex", batch_size=10, progress=seen.append)
    assert (rotated.to_version, rotated.state) == (2, "done") and admin.keys.versions("globex")[-1] == (2, "active")
    assert seen == []  # the callback stays here: the agent reports at the end
    assert _call(path, "keys", "resume") == []
    granted = _call(path, "grants", "grant", "bob", "globex", until=dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
    assert granted.state == "active" and [g.client for g in admin.grants.list(engineer="bob")] == ["globex"]
    updated = _call(path, "secrets", "update", "agentco/fw", password="new-pw-2", host="10.0.0.9", note=None)
    assert updated.version == 2 and admin.secrets.show("agentco/fw").host == "10.0.0.9"
    assert admin.checkouts.reveal("agentco/fw", reason="T-10") == "new-pw-2"
    assert admin.secrets.show("agentco/fw").username == "root"  # not passed: kept
    assert _call(path, "keys", "rotate_secret", "agentco/fw", length=30).version == 3
    assert len(admin.checkouts.reveal("agentco/fw", reason="T-11")) == 30
    policy = _call(path, "policies", "set", "agentco", exclusive=True, checkout_for=dt.timedelta(minutes=45))
    assert policy == admin.policies.get("agentco") and policy.exclusive and policy.checkout_minutes == 45
    assert _call(path, "keys", "set_retention", 4) is None
    assert _call(path, "grants", "revoke", "bob", "globex") == 1
    assert admin.grants.list(engineer="bob")[0].state == "revoked"
    code = _call(path, "engineers", "invite", "carol", valid_for=dt.timedelta(hours=1))
    assert code.startswith("CV1-") and "carol" in {e.name for e in admin.engineers.list()}


def test_a_confirmation_through_the_agent_compares_what_the_admin_was_shown(
    served: Served, admin: Vault, team: Any
) -> None:
    _server, path, _clock = served
    code = admin.engineers.invite("dave")
    fingerprint = team.open("dave").engineers.enroll("dave", code, "pass of dave")
    pending = _call(path, "engineers", "pending_confirmation", "dave")
    assert pending == admin.engineers.pending_confirmation("dave") and pending.fingerprint == fingerprint
    before = _rows(admin)
    changed = dataclasses.replace(pending, role="admin")
    with pytest.raises(EnrolmentError, match="changed since it was shown"):
        _call(path, "engineers", "confirm", "dave", fingerprint, shown=changed)
    assert _rows(admin) == before
    assert _call(path, "engineers", "confirm", "dave", fingerprint, shown=pending).status == "active"


REFUSED: dict[str, dict[str, Any]] = {
    "shown-list": {
        "op": "call",
        "noun": "engineers",
        "method": "confirm",
        "args": {"name": "x", "fingerprint": "y", "shown": [1]},
    },
    "shown-carried-null": {
        "op": "call",
        "noun": "engineers",
        "method": "confirm",
        "args": {
            "name": "x",
            "fingerprint": "y",
            "shown": {
                "name": "x",
                "role": "engineer",
                "fingerprint": "y",
                "key_generation": 1,
                "invited_by": "r",
                "carried": None,
                "dropped": [],
            },
        },
    },
    "no-noun": {"op": "call", "method": "list"},
    "noun-int": {"op": "call", "noun": 3, "method": "list"},
    "unknown-method": {"op": "call", "noun": "engineers", "method": "remove", "args": {"name": "bob"}},
    "private-method": {"op": "call", "noun": "clients", "method": "_core"},
    "flat-private": {"op": "call", "noun": "", "method": "__class__"},
    "args-list": {"op": "call", "noun": "clients", "method": "show", "args": ["agentco"]},
    "unknown-arg": {"op": "call", "noun": "clients", "method": "show", "args": {"slug": "agentco", "x": 1}},
    "missing-arg": {"op": "call", "noun": "clients", "method": "show", "args": {}},
    "null-required": {"op": "call", "noun": "clients", "method": "show", "args": {"slug": None}},
    "str-int": {"op": "call", "noun": "clients", "method": "show", "args": {"slug": 5}},
    "int-bool": {"op": "call", "noun": "purge", "method": "verify_receipt", "args": {"receipt_id": True}},
    "int-text": {"op": "call", "noun": "purge", "method": "verify_receipt", "args": {"receipt_id": "1"}},
    "bool-text": {"op": "call", "noun": "policies", "method": "set", "args": {"client": "agentco", "exclusive": "y"}},
    "timedelta-text": {"op": "call", "noun": "engineers", "method": "invite", "args": {"name": "x", "valid_for": "1h"}},
    "datetime-int": {
        "op": "call",
        "noun": "grants",
        "method": "grant",
        "args": {"engineer": "x", "client": "agentco", "until": 5},
    },
    "datetime-words": {
        "op": "call",
        "noun": "grants",
        "method": "grant",
        "args": {"engineer": "x", "client": "agentco", "until": "next week"},
    },
    "datetime-naive": {
        "op": "call",
        "noun": "grants",
        "method": "grant",
        "args": {"engineer": "x", "client": "agentco", "until": "2027-01-01T00:00:00"},
    },
    "texts-list": {"op": "call", "noun": "secrets", "method": "update", "args": {"ref": "agentco/fw", "fields": ["a"]}},
    "texts-int-value": {
        "op": "call",
        "noun": "secrets",
        "method": "update",
        "args": {"ref": "agentco/fw", "fields": {"a": 1}},
    },
    "lines-text": {"op": "call", "noun": "audit", "method": "verify", "args": {"checkpoints": "one"}},
    "seqhash-short": {"op": "call", "noun": "audit", "method": "verify", "args": {"since": [1]}},
    "seqhash-not-hex": {"op": "call", "noun": "audit", "method": "verify", "args": {"since": [1, "zz"]}},
    "seqhash-seq-text": {"op": "call", "noun": "audit", "method": "verify", "args": {"since": ["1", "ab"]}},
}


def test_the_agent_refuses_a_call_not_in_its_table_or_an_argument_of_the_wrong_kind(
    served: Served, admin: Vault
) -> None:
    server, path, _clock = served
    before = _rows(admin)
    for name, message in REFUSED.items():
        with pytest.raises(InvalidInput) as caught:
            agentclient.request(path, message)
        assert "internal error" not in str(caught.value) and caught.value.hint, name
        assert server.running, name
    assert _rows(admin) == before  # nothing written by any of them
    assert _call(path, "clients", "show", "agentco").slug == "agentco"  # it serves on


def test_the_library_s_own_refusals_come_back_as_its_errors(served: Served, admin: Vault) -> None:
    _server, path, _clock = served
    with pytest.raises(NotFound):
        _call(path, "clients", "show", "nobody")
    with pytest.raises(InvalidInput):
        _call(path, "secrets", "update", "agentco/fw", kind="not-a-kind")
    assert admin.secrets.show("agentco/fw").version == 1


def test_a_local_verify_through_the_agent_reports_a_foreign_object_as_the_command_does(
    served: Served, admin: Vault
) -> None:
    """The command runs a local ``audit verify`` in ``store.inspecting()``: a view nobody made
    is reported in the verification, not a reason to refuse the reads before it. The agent does
    the same (``INSPECTED``: without it, the head's read is refused with ``TamperedSchema``)."""
    _server, path, _clock = served
    with contextlib.closing(admin.store.engine.connect()) as conn:
        conn.execute(text("CREATE VIEW planted AS SELECT 1 AS one"))
        conn.commit()
    head = _call(path, "audit", "head")  # read before the verify (cli/audit.py): not refused
    with admin.store.inspecting():
        assert head == admin.audit.head() and _call(path, "", "vault_id") == admin.vault_id()
    verified = _call(path, "audit", "verify", known_head=head, checkpoints=[])
    assert not verified.ok and "view 'planted'" in (verified.problem or "")  # reported, as by the command
    if admin.store.engine.dialect.name == "sqlite":  # PostgreSQL's catalog is read again after a while
        with pytest.raises(TamperedSchema):  # any other read is refused
            _call(path, "clients", "show", "agentco")


class _Audit:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def verify(self, **_: Any) -> records.AuditVerification:
        return records.AuditVerification(ok=True, checked=1, first_seq=1, head_seq=1, head_hash="00")

    def checkpoint(self) -> str:
        return "checkpoint"


class _Budgeted:
    """A stand-in for a ``RemoteVault``: it records each time budget the agent sets."""

    engineer_name = ADMIN

    def __init__(self) -> None:
        self.audit = _Audit()
        self.budgets: list[float] = []

    @contextlib.contextmanager
    def within(self, seconds: float) -> Iterator[None]:
        self.budgets.append(seconds)
        yield


def test_a_long_call_runs_without_the_server_budget_and_a_short_one_within_it() -> None:
    vault = _Budgeted()
    server = agent.Agent(vault, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1), Clock())
    short = server.answer({"op": "call", "noun": "audit", "method": "checkpoint"})
    assert short == {"ok": True, "result": "checkpoint"} and vault.budgets == [agent.SERVER_BUDGET]
    long = server.answer({"op": "call", "noun": "audit", "method": "verify", "args": {"checkpoints": []}})
    assert long["ok"] and long["result"]["ok"] is True and vault.budgets == [agent.SERVER_BUDGET]
    assert agent_calls.CALLS["audit", "verify"].long and agent_calls.runs_long(
        {"op": "call", "noun": "audit", "method": "verify"}
    )
    assert not agent_calls.runs_long({"op": "checkout", "noun": "audit", "method": "verify"})


def test_no_answer_carries_a_secret_value(served: Served, admin: Vault) -> None:
    _server, path, _clock = served
    for noun, method, args in (
        ("secrets", "history", ("agentco/fw",)),
        ("checkouts", "list", ()),
        ("audit", "head", ()),
    ):
        call = agent_calls.CALLS[noun, method]
        message = {"op": "call", "noun": noun, "method": method, "args": agent_calls.arguments(call, args, {})}
        assert PASSWORD not in repr(agentclient.request(path, message)), (noun, method)
