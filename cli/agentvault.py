"""The everyday ``Vault`` calls of the click commands, answered by the running agent.

When the selected engineer's agent runs, ``AppContext.session_vault`` hands the click
commands an ``AgentVault``: the calls the agent serves (``whoami``, ``list_clients``,
``list_secrets``, ``show_secret``, ``audit_log``, ``checkin``, ``add_secret``, ``status``) become
one request each (docs/format.md §12) and come back as the library's own records;
every other call goes to an in-process ``Vault`` whose session must be here (the
keyring or --passphrase-file): the agent lends no key. So a click command prints the
same records whether the fast path (cli/fast/) or click read its command line.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from vault import errors
from vault.service import agent_calls, agentclient
from vault.service.records import AuditEntry, ClientInfo, Revealed, SecretInfo, SessionInfo, StatusReport


def _time(value: object) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else None


# The noun methods the agent serves: Vault noun -> {method -> the AgentVault method that asks}.
SERVED: dict[str, dict[str, str]] = {
    "engineers": {"whoami": "whoami"},
    "clients": {"list": "list_clients"},
    "secrets": {"list": "list_secrets", "show": "show_secret", "add": "add_secret"},
    "audit": {"log": "audit_log"},
    "checkouts": {"checkin": "checkin"},
    "reports": {"status": "status"},
}


class _AgentNoun:
    """One noun of the ``Vault`` API (``vault.secrets``, ...): its served methods ask the
    agent; any other method is the in-process ``Vault``'s."""

    def __init__(self, owner: AgentVault, noun: str) -> None:
        self._owner, self._noun = owner, noun

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        served = SERVED.get(self._noun, {}).get(name)
        if served is None:
            if (self._noun, name) in agent_calls.CALLS:
                return self._owner._call(self._noun, name)
            return getattr(getattr(self._owner._in_process(), self._noun), name)
        ask = getattr(self._owner, served)

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return ask(*args, **kwargs)
            except agentclient.AgentAbsent:  # it has ended, or (an earlier release) does not serve this
                return getattr(getattr(self._owner._in_process(), self._noun), name)(*args, **kwargs)

        return call


class AgentVault:
    """The agent's answers as ``Vault`` methods (flat, or by noun: ``vault.secrets.list()``);
    anything else from ``fallback()``."""

    def __init__(self, path: str, fallback: Callable[[], Any]) -> None:
        self.path, self._fallback = path, fallback
        self._vault: Any = None

    def _in_process(self) -> Any:
        if self._vault is None:
            self._vault = self._fallback()
        return self._vault

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in SERVED or name in agent_calls.NOUNS:
            return _AgentNoun(self, name)
        if ("", name) in agent_calls.CALLS:
            return self._call("", name)
        return getattr(self._in_process(), name)

    def _call(self, noun: str, method: str) -> Any:
        """``noun.method`` made by the agent (``agent_calls``); an agent of an earlier release,
        or one that has ended: in this process."""
        call = agent_calls.CALLS[noun, method]

        def in_process() -> Any:
            vault = self._in_process()
            return getattr(getattr(vault, noun) if noun else vault, method)

        def ask(*args: Any, **kwargs: Any) -> Any:
            try:
                message = {"noun": noun, "method": method, "args": agent_calls.arguments(call, args, kwargs)}
                answer = self._ask("call", timeout=agent_calls.LONG_REPLY if call.long else None, **message)
            except agentclient.AgentAbsent:
                return in_process()(*args, **kwargs)
            return agent_calls.result(noun, method, answer["result"])

        if call.attribute:
            try:
                return agent_calls.result(noun, method, self._ask("call", noun=noun, method=method)["result"])
            except agentclient.AgentAbsent:
                return in_process()
        return ask

    def _ask(self, op: str, timeout: float | None = None, **values: object) -> Any:
        try:
            if timeout is not None:
                return agentclient.request(self.path, {"op": op, **values}, timeout=timeout)
            return agentclient.request(self.path, {"op": op, **values})
        except errors.InvalidInput as error:
            if agentclient.unknown_request(error):  # an agent of an earlier release: no agent for this
                raise agentclient.AgentAbsent() from None
            raise

    def whoami(self) -> SessionInfo:
        data = self._ask("whoami")["result"]
        expires = dt.datetime.fromisoformat(data["expires_at"])
        return SessionInfo(data["engineer"], data["role"], expires, data["vault_id"])

    def status(self) -> StatusReport:
        data = self._ask("status")["result"]
        return StatusReport(
            warnings=list(data["warnings"]),
            clients=data["clients"],
            secrets=data["secrets"],
            engineers=data["engineers"],
            open_rotations=data["open_rotations"],
            must_change=list(data["must_change"]),
            schema_problems=list(data["schema_problems"]),
        )

    def list_clients(self) -> list[ClientInfo]:
        return [
            ClientInfo(c["slug"], c["name"], c["key_version"], c["secrets"], dt.datetime.fromisoformat(c["created_at"]))
            for c in self._ask("client-list")["result"]
        ]

    def list_secrets(self, client: str | None = None) -> list[SecretInfo]:
        return [_secret(s) for s in self._ask("secret-list", client=client)["result"]]

    def show_secret(self, ref: str) -> SecretInfo:
        return _secret(self._ask("secret-show", ref=ref)["result"])

    def audit_log(
        self,
        *,
        client: str | None = None,
        engineer: str | None = None,
        since: dt.datetime | None = None,
        limit: int | None = None,
    ) -> list[AuditEntry]:
        since_text = since.isoformat() if since is not None else None
        entries = self._ask("audit-log", client=client, engineer=engineer, since=since_text, limit=limit)["result"]
        return [
            AuditEntry(
                seq=e["seq"],
                at=dt.datetime.fromisoformat(e["at"]),
                engineer=e["engineer"],
                action=e["action"],
                client=e["client"],
                client_id=e["client_id"],
                secret_id=e["secret_id"],
                details=e["details"],
                readable=e["readable"],
                secret=e["secret"],
            )
            for e in entries
        ]

    def checkin(
        self, ref: str, *, new_password: str | None = None, generate: bool = False, length: int | None = None
    ) -> Revealed | None:
        """As ``Vault.checkin``; the agent does not send a generated value back, so the
        record's ``value`` is empty (the command prints only ``must_change``)."""
        answer = self._ask("checkin", ref=ref, new_password=new_password, generate=generate, length=length)
        result = answer.get("result")
        if not isinstance(result, dict):
            return None
        return Revealed(
            ref=result["ref"],
            field=result["field"],
            version=result["version"],
            value="",
            expires_at=_time(result["expires_at"]),
            must_change=result["must_change"] is True,
        )

    def add_secret(self, ref: str, *, password: str, **metadata: Any) -> SecretInfo:
        return _secret(self._ask("secret-add", ref=ref, password=password, **metadata)["result"])


def _secret(data: dict[str, Any]) -> SecretInfo:
    return SecretInfo(
        client=data["client"],
        name=data["name"],
        kind=data["kind"],
        version=data["version"],
        username=data["username"],
        url=data["url"],
        host=data["host"],
        note=data["note"],
        fields=dict(data["fields"]),
        created_at=_time(data["created_at"]),
        updated_at=_time(data["updated_at"]),
        sensitive_fields=tuple(data["sensitive_fields"]),
    )
