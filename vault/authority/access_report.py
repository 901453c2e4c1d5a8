"""``report access`` / ``report at-risk`` through a team server, where the database is.

``AccessReportAuthority`` answers the request values of ``access_report_values.py``: it checks
every field before any SQL (``checked_request``), then, in ``Store.read()``, the caller (active,
certified, of the key generation named, an admin: ``CallerGate``) before any other row is read,
then the engineer named (``NotFound``), and only then, for a page of reveals, the secrets and
their versions, set-based (a statement for the secrets, one for the times asked, one for the
versions, one per batch of client keys). It never opens anything; the route appends the event
and removes a layered vault's layer (``server/access_routes.py``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.orm import Session

from vault import validation
from vault.authority.access_report_values import (
    ACTIONS,
    MAX_ITEMS,
    AccessAnswer,
    AccessReportRequest,
    ComparedSecret,
)
from vault.authority.checkout_reads import CallerRead
from vault.authority.clients import MAX_KNOWN, sealed_keys
from vault.authority.journal import from_us
from vault.authority.policies_caller import CallerChecks, CallerGate, checked_caller, checked_pin, org_chain
from vault.crypto.blobs import blob_key_version
from vault.errors import InvalidInput, NotFound, VaultError
from vault.storage import models as m
from vault.storage import rows
from vault.storage.engine import Store
from vault.storage.rows import VersionRow

MAX_US = 2**63 - 1
_VERSION = [m.SecretVersion.__table__.c[name] for name in VersionRow._fields]


def _number(value: object, low: int) -> bool:
    return type(value) is int and low <= value <= MAX_US


def checked_request(request: object) -> AccessReportRequest:
    """The request, each field of its type and range, else InvalidInput (before any SQL)."""
    if not isinstance(request, AccessReportRequest):
        raise InvalidInput("not a report request")
    if request.action not in ACTIONS:
        raise InvalidInput(f"the request's action is not one of {', '.join(ACTIONS)}")
    checked_caller(request.caller)
    checked_pin(request.org_pin)
    if not isinstance(request.engineer, str):
        raise InvalidInput("the request names no engineer")
    validation.engineer_name(request.engineer)
    items, known = request.items, request.known_key_versions
    if not isinstance(items, tuple) or len(items) > MAX_ITEMS:
        raise InvalidInput(f"a report's page names at most {MAX_ITEMS} reveals")
    for item in items:
        if type(item) is not tuple or len(item) != 4 or not all(_number(x, 0) for x in item):
            raise InvalidInput("a reveal to compare is four numbers (client, secret, version, time)")
        if item[0] < 1 or item[1] < 1 or (item[2] != 0 and item[3] != 0):
            raise InvalidInput("a reveal names a client, a secret, and its version or its time, not both")
    if not isinstance(known, tuple) or len(known) > MAX_KNOWN:
        raise InvalidInput("the request's known key versions are not a short tuple")
    for pair in known:
        if type(pair) is not tuple or len(pair) != 2 or not all(_number(x, 1) for x in pair):
            raise InvalidInput("a known key version is not a (client, version) pair of numbers")
    return request


class AccessReportAuthority:
    """The reads of ``reports.access`` (module docstring), each in a read unit of its own."""

    def __init__(self, store: Store, checks: CallerChecks, clock: Callable[[], dt.datetime]) -> None:
        self.store, self.gate, self.clock = store, CallerGate(checks), clock

    def __repr__(self) -> str:
        return "AccessReportAuthority()"

    def read(self, request: AccessReportRequest) -> AccessAnswer:
        """The caller and the engineer checked, then the secrets of ``request.items`` as stored."""
        checked_request(request)
        with self.store.read() as s:
            read = self.gate.authorise(s, request.caller, admin=True)  # first: a refusal reads nothing else
            engineer_id = s.scalar(select(m.Engineer.id).where(m.Engineer.name == request.engineer))
            if engineer_id is None:
                raise NotFound(f"no engineer named {request.engineer!r}")
            secrets = self._secrets(s, request.items) if request.items else ()
            return AccessAnswer(
                request.action,
                read.vault_id,
                read.org_signing_public,
                org_chain(s, request.org_pin, read.org_signing_public),
                read.me,
                int(engineer_id),
                secrets,
                self._sealed(s, read, request, secrets),
            )

    @staticmethod
    def _secrets(s: Session, items: tuple[tuple[int, int, int, int], ...]) -> tuple[ComparedSecret, ...]:
        conn = rows.connection(s)
        ids = sorted({item[1] for item in items})
        stored = {
            r[0]: (int(r[1]), int(r[2]))
            for r in conn.execute(
                select(m.Secret.id, m.Secret.client_id, m.Secret.current_version).where(m.Secret.id.in_(ids))
            )
        }
        at_versions: dict[int, dict[int, int]] = {}
        for _, secret_id, _, at_us in items:
            if at_us and secret_id in stored:  # an old view: the version current at that time
                found = s.scalar(
                    select(func.max(m.SecretVersion.version)).where(
                        m.SecretVersion.secret_id == secret_id, m.SecretVersion.created_at <= from_us(at_us)
                    )
                )
                if found is not None:
                    at_versions.setdefault(secret_id, {})[at_us] = int(found)
        wanted: dict[int, set[int]] = {sid: {current} for sid, (_, current) in stored.items()}
        for _, secret_id, version, _ in items:
            if version and secret_id in wanted:
                wanted[secret_id].add(version)
        for secret_id, times in at_versions.items():
            wanted[secret_id] |= set(times.values())
        pairs = [(sid, v) for sid, versions in wanted.items() for v in versions]
        found_rows: dict[int, list[VersionRow]] = {}
        if pairs:
            query = select(m.SecretVersion.secret_id, *_VERSION).where(
                tuple_(m.SecretVersion.secret_id, m.SecretVersion.version).in_(pairs)
            )
            for r in conn.execute(query.order_by(m.SecretVersion.secret_id, m.SecretVersion.version)):
                found_rows.setdefault(int(r[0]), []).append(VersionRow(*r[1:]))
        return tuple(
            ComparedSecret(
                client_id,
                secret_id,
                current,
                tuple(found_rows.get(secret_id, ())),
                tuple(sorted(at_versions.get(secret_id, {}).items())),
            )
            for secret_id, (client_id, current) in sorted(stored.items())
        )

    @staticmethod
    def _sealed(
        s: Session, read: CallerRead, request: AccessReportRequest, secrets: tuple[ComparedSecret, ...]
    ) -> tuple[Any, ...]:
        """The recovery copies of the client keys the versions are under that the keyholder lacks."""
        wanted = set(_key_versions(secrets)) - set(request.known_key_versions)
        return sealed_keys(s, wanted, "recovery", read.root_version or 0) if wanted else ()


def _key_versions(secrets: tuple[ComparedSecret, ...]) -> Iterable[tuple[int, int]]:
    for secret in secrets:
        for version in secret.versions:
            yield secret.client_id, version.key_version
            for blob in (version.metadata_blob, version.password_blob):
                try:
                    yield secret.client_id, blob_key_version(blob)
                except VaultError:
                    continue  # a damaged blob: the keyholder reports it when it opens it


__all__ = ["AccessReportAuthority", "checked_request"]
