"""``report access`` / ``report at-risk`` through a team server, where the admin's keys are.

``AccessReportKeyholder`` sends ``AccessReportRequest`` values (``authority/access_report_values.py``)
and checks each answer before it believes or opens any of it:

* the answer is for this request's action and this engineer (the id the report's start
  answered), from this vault, under an organisation key the pin leads to; the caller's own row
  certified, active, of this session's keys, an admin (``policies.verified_caller``);
* every secret answered was asked for, once; each version once; the current version among them;
* each client key is the recovery copy matching its admin-signed record (or one held already);
  every version is opened under the key of the client the verified reveal event names (not the
  client the row says): a version moved to another client or secret does not open.

Whether a value changed since it was revealed is decided here, by opening the revealed and the
current version of the field, exactly as in-process (``service/reports.Reports.changed_since``):
a secret the server no longer holds has changed (nothing is left to change); a value that cannot
be opened is reported as still at risk. What is opened stays in this module's calls.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from vault.authority.access_report_values import AccessAnswer, AccessReportRequest, ComparedSecret
from vault.authority.requests import Caller
from vault.errors import NotFound, UntrustedRecord, VaultError
from vault.keyholder import policies
from vault.keyholder.checkouts import METADATA_FIELDS, EngineerKeys
from vault.keyholder.reports import ClientKeys
from vault.keyholder.responses import ResponseChecks
from vault.keyholder.versions import open_metadata, open_password
from vault.storage.rows import KeyCache, VersionRow

Item = tuple[int, int, int, int]  # (client, secret, version, at_us): version 0 names a time


class AccessTransport(Protocol):
    def access(self, request: AccessReportRequest) -> AccessAnswer: ...


class Comparison:
    """A page's versions, verified, opened on demand under the admin's client keys."""

    def __init__(
        self,
        answer: AccessAnswer,
        key: Callable[[int, int], bytes],
    ) -> None:
        self.secrets = {s.id: s for s in answer.secrets}
        self._key = key
        self._opened: dict[tuple[int, int, int], tuple[dict[str, Any], bytes] | None] = {}

    def __repr__(self) -> str:
        return f"Comparison(secrets={len(self.secrets)})"

    def name(self, client_id: int, secret_id: int) -> str | None:
        """The secret's current name (its current version's metadata), or None."""
        secret = self.secrets.get(secret_id)
        opened = self._open(client_id, secret, secret.current) if secret is not None else None
        name = opened[0].get("name") if opened is not None else None
        return name if isinstance(name, str) else None

    def at(self, client_id: int, secret_id: int, at_us: int) -> tuple[int, dict[str, Any]] | None:
        """The version current at ``at_us`` and its metadata (an old view's), or None."""
        secret = self.secrets.get(secret_id)
        version = dict(secret.at_versions).get(at_us) if secret is not None else None
        if secret is None or version is None:
            return None
        opened = self._open(client_id, secret, version)
        return (version, opened[0]) if opened is not None else None

    def changed(self, client_id: int, secret_id: int, version: int, field: str) -> bool:
        """Whether ``field`` of ``version`` differs from the current value (module docstring)."""
        secret = self.secrets.get(secret_id)
        if secret is None:
            return True  # purged or deleted: nothing left to change
        if secret.current == version:
            return False
        try:
            old = self._value(client_id, secret, version, field)
            new = self._value(client_id, secret, secret.current, field)
        except VaultError:
            return False  # cannot tell: report it as still at risk
        return not hmac.compare_digest(old.encode("utf-8"), new.encode("utf-8"))

    def _value(self, client_id: int, secret: ComparedSecret, version: int, field: str) -> str:
        opened = self._open(client_id, secret, version)
        if opened is None:
            raise NotFound("the version does not open")
        metadata, data_key = opened
        if field == "password":
            return open_password(data_key, client_id, secret.id, self._row(secret, version))
        value = metadata.get(field) if field in METADATA_FIELDS else (metadata.get("fields") or {}).get(field)
        if value is None:
            raise NotFound("no such field")
        return str(value)

    def _open(self, client_id: int, secret: ComparedSecret, version: int) -> tuple[dict[str, Any], bytes] | None:
        slot = (client_id, secret.id, version)
        if slot not in self._opened:
            try:
                row = self._row(secret, version)
                got = open_metadata(self._key(client_id, row.key_version), client_id, secret.id, row)
                self._opened[slot] = (got.metadata, got.data_key)
            except VaultError:
                self._opened[slot] = None
        return self._opened[slot]

    @staticmethod
    def _row(secret: ComparedSecret, version: int) -> VersionRow:
        for row in secret.versions:
            if row.version == version:
                return row
        raise NotFound("no such version")


class AccessReportKeyholder:
    """The admin's side of ``reports.access`` (module docstring)."""

    def __init__(
        self,
        transport: AccessTransport,
        keys: EngineerKeys,
        client_keys: ClientKeys,
        cache: KeyCache,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.transport, self.keys, self.client_keys, self.cache, self.clock = transport, keys, client_keys, cache, clock

    def __repr__(self) -> str:
        return "AccessReportKeyholder(<redacted>)"

    def start(self, action: str, engineer: str) -> int:
        """The report's start, on record before any reveal is read: the engineer's id."""
        _, answer, _ = self._ask(action, engineer, ())
        if answer.secrets or answer.sealed_keys:
            raise UntrustedRecord("the server answered versions to a report's start")
        return answer.engineer_id

    def compare(self, action: str, engineer: str, engineer_id: int, items: Sequence[Item]) -> Comparison:
        """The versions of a page of reveals, verified (module docstring)."""
        asked = tuple(sorted(set(items)))
        me, answer, checks = self._ask(action, engineer, asked)
        if answer.engineer_id != engineer_id:
            raise UntrustedRecord("the server answered a page of another engineer's report")
        wanted = {item[1] for item in asked}
        seen: set[int] = set()
        for secret in answer.secrets:
            numbers = [v.version for v in secret.versions]
            if secret.id not in wanted or secret.id in seen or len(set(numbers)) != len(numbers):
                raise UntrustedRecord("the server answered a secret not asked for, or a version twice")
            seen.add(secret.id)
        sealed = {(k.record.client_id, k.record.version): k for k in answer.sealed_keys}
        if any(k.kind == "recovery" and k.blob is not None for k in answer.sealed_keys):
            self.keys.open_recovery()

        def key(client_id: int, version: int) -> bytes:
            return self.client_keys.client_key(me, True, checks, client_id, version, sealed.get((client_id, version)))

        return Comparison(answer, key)

    def _ask(self, action: str, engineer: str, items: tuple[Item, ...]) -> tuple[Any, AccessAnswer, ResponseChecks]:
        me = self.keys.session()
        held = tuple(sorted(self.cache))
        caller = Caller(me.engineer_id, me.key_generation)
        request = AccessReportRequest(action, caller, engineer, items, held, me.org_signing_public)
        answer = self.transport.access(request)
        if answer.action != action:
            raise UntrustedRecord(f"the server answered another report than {action!r}")
        row = (answer.vault_id, answer.org_signing_public, answer.org_chain, answer.me)
        checks = policies.verified_caller(me, self.keys.sealing_public(), self.clock(), row, admin=True)
        return me, answer, checks


__all__ = ["AccessReportKeyholder", "Comparison"]
