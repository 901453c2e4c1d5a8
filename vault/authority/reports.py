"""``status`` and ``stale``, where the database is: authorise, read set-based, answer unopened.

Who may call: an admin, as before the split (``permissions.py`` lets any unlocked engineer
reach ``reports.status`` / ``stale``; this authority refuses every one who is not an admin).
``ReportAuthority`` checks the request's fields before any SQL, then, in ``Store.read()``
(no write lock), the caller through ``CallerGate`` (active, certified, of the key
generation named, an admin) before any other row is read, and only then reads:

* ``status``: every client a page per statement, each with its current key record's age
  and encryption count, its stored policy and the policy signer's row (one statement per
  page, joined); the secrets flagged to be changed with their current version (a page per
  statement); the settings with their signer; the recovery key's age; active engineers'
  active keys; running rotations; three counts; the client keys the keyholder lacks, a
  statement per batch. The schema's revision and the foreign objects are read as before
  (the revision on its own connection, first; ``status`` names foreign objects instead of
  refusing to run, ``permissions.NAMES_FOREIGN_OBJECTS``).
* ``stale``: the clients whose stored policy names a stale-after, and their secrets unused
  for longer, each with its current version, a page per statement.

Neither report writes an audit event (neither did before the split). The authority never
opens anything: it returns ciphertext, ids, signed rows and counts; the keyholder verifies
the policies and settings, opens the slugs and names, and decides what is shown.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from vault.authority.checkout_reads import ENGINEER_WIDTH, CallerRead
from vault.authority.clients import MAX_KNOWN, field_key_versions, sealed_keys
from vault.authority.policies_caller import CallerChecks, CallerGate, checked_caller, checked_pin, org_chain
from vault.authority.report_requests import (
    STALE,
    STATUS,
    ClientState,
    Counts,
    KeyAge,
    ReportRequest,
    ReportRows,
    SecretState,
    StoredSettings,
)
from vault.authority.rotation_requests import RUNNING
from vault.crypto.blobs import blob_key_version
from vault.errors import InvalidInput, VaultError
from vault.storage import engine as storage
from vault.storage import models as m
from vault.storage import rows
from vault.storage.engine import Store
from vault.storage.repositories import paging
from vault.storage.rows import ACTIVE, ENGINEERS, EngineerRow, PolicyRow

CLIENTS, KEYS, POLICIES = m.Client.__table__, m.ClientKey.__table__, m.ClientPolicy.__table__
SECRETS, VERSIONS = m.Secret.__table__, m.SecretVersion.__table__
_SIGNER = ENGINEERS.alias("policy_signer")
_POLICY = [POLICIES.c[name] for name in PolicyRow._fields]
_SIGNER_COLUMNS = [_SIGNER.c[name] for name in EngineerRow._fields]
_POLICY_WIDTH = len(PolicyRow._fields)


def checked_request(request: object, action: str) -> ReportRequest:
    """The request, of its type, action, caller, pin and held key versions, else InvalidInput
    (before any SQL): a ``stale`` request is never answered as a ``status`` or the reverse."""
    if not isinstance(request, ReportRequest):
        raise InvalidInput("not a report request")
    if not isinstance(request.action, str) or request.action != action:
        raise InvalidInput(f"the request's action is not {action!r}")
    checked_caller(request.caller)
    checked_pin(request.org_pin)
    known = request.known_key_versions
    if not isinstance(known, tuple) or len(known) > MAX_KNOWN:
        raise InvalidInput("the request's known key versions are not a short tuple")
    for pair in known:  # plain ints only (a bool is not one), each at least 1
        if type(pair) is not tuple or len(pair) != 2 or type(pair[0]) is not int or type(pair[1]) is not int:
            raise InvalidInput("a known key version is not a (client, version) pair of numbers")
        if pair[0] < 1 or pair[1] < 1:
            raise InvalidInput("a known key version names a client or version below 1")
    return request


def _rows(conn: Any, query: Any, key: Any) -> Iterator[Any]:
    """The rows of ``query`` by ``key``, a page per statement (indexed by position)."""
    return paging.rows(conn, query, key)


def _policy(r: Any, at: int) -> tuple[PolicyRow | None, EngineerRow | None]:
    """The policy and signer columns of a joined row starting at ``at`` (None where absent)."""
    policy = None if r[at] is None else PolicyRow._make(r[at : at + _POLICY_WIDTH])
    s = at + _POLICY_WIDTH
    signer = None if r[s] is None else EngineerRow._make(r[s : s + ENGINEER_WIDTH])
    return policy, signer


def _wanted(clients: tuple[ClientState, ...], secrets: tuple[SecretState, ...]) -> set[tuple[int, int]]:
    """(client, version) of every client key the slugs and the secrets' versions are under."""
    out = set()
    for c in clients:
        out |= {(c.id, v) for v in field_key_versions(c.slug_blob, c.slug_blob)}
    for secret in secrets:
        out.add((secret.client_id, secret.key_version))
        try:
            out.add((secret.client_id, blob_key_version(secret.metadata_blob)))
        except VaultError:
            continue  # a damaged blob: the keyholder reports it when it opens it
    return out


class ReportAuthority:
    """``status`` and ``stale`` of the whole vault, given a request, in a read unit each."""

    def __init__(self, store: Store, checks: CallerChecks, clock: Callable[[], dt.datetime]) -> None:
        self.store, self.gate, self.clock = store, CallerGate(checks), clock

    def status(self, request: ReportRequest) -> ReportRows:
        """What ``status`` warns about, as stored (see the module's docstring)."""
        checked_request(request, STATUS)
        with self.store.inspecting() as foreign:  # names foreign objects, not refused
            with self.store.read() as s:  # the caller first: a refusal reads nothing else
                self.gate.authorise(s, request.caller, admin=True)
            revision, head = storage.current_revision(self.store), storage.head_revision()  # its own connection
            with self.store.read() as s:
                read = self.gate.authorise(s, request.caller, admin=True)
                conn = rows.connection(s)
                clients = tuple(self._clients(s))
                flagged = (
                    select(*self._secret_columns()).select_from(self._current()).where(SECRETS.c.must_change.is_(True))
                )
                secrets = tuple(SecretState(*r) for r in _rows(conn, flagged, SECRETS.c.id))
                info = conn.execute(
                    select(
                        m.VaultInfo.retention_versions,
                        m.VaultInfo.cryptoperiod_days,
                        m.VaultInfo.settings_signed_by,
                        m.VaultInfo.settings_signed_at,
                        m.VaultInfo.settings_signature,
                        *[ENGINEERS.c[name] for name in EngineerRow._fields],
                    ).select_from(
                        m.VaultInfo.__table__.outerjoin(ENGINEERS, ENGINEERS.c.id == m.VaultInfo.settings_signed_by)
                    )
                ).one()
                signer = None if info[5] is None else EngineerRow._make(info[5 : 5 + ENGINEER_WIDTH])
                settings = StoredSettings(info[0], info[1], info[2], info[3], info[4], signer)
                root = s.scalar(
                    select(m.RootKey.created_at).where(m.RootKey.state == ACTIVE).order_by(m.RootKey.version.desc())
                )
                ages = conn.execute(
                    select(m.Engineer.name, m.EngineerKey.certified_at)
                    .join(m.EngineerKey, m.EngineerKey.engineer_id == m.Engineer.id)
                    .where(m.EngineerKey.state == ACTIVE, m.Engineer.status == ACTIVE)
                    .order_by(m.Engineer.id, m.EngineerKey.generation)
                )
                key_ages = tuple(KeyAge(name, int(at)) for name, at in ages)
                running = conn.execute(
                    select(m.Rotation.done, m.Rotation.total).where(m.Rotation.state == RUNNING).order_by(m.Rotation.id)
                )
                counts = Counts(
                    *(int(s.scalar(select(func.count()).select_from(t)) or 0) for t in (m.Client, m.Secret, m.Engineer))
                )
                return ReportRows(
                    STATUS,
                    read.vault_id,
                    read.org_signing_public,
                    org_chain(s, request.org_pin, read.org_signing_public),
                    read.me,
                    clients,
                    secrets,
                    self._sealed(s, read, request, clients, secrets),
                    settings=settings,
                    root_created_at=root,
                    key_ages=key_ages,
                    rotations=tuple((int(d), int(t)) for d, t in running),
                    counts=counts,
                    revision=revision,
                    head_revision=head,
                    schema_problems=tuple(foreign),
                )

    def stale(self, request: ReportRequest) -> ReportRows:
        """The secrets of clients with a stale-after, unused for longer (see the module's docstring)."""
        checked_request(request, STALE)
        now = self.clock()
        with self.store.read() as s:
            read = self.gate.authorise(s, request.caller, admin=True)
            conn = rows.connection(s)
            query = (
                select(CLIENTS.c.id, CLIENTS.c.slug_blob, CLIENTS.c.current_key_version, *_POLICY, *_SIGNER_COLUMNS)
                .select_from(
                    CLIENTS.join(POLICIES, POLICIES.c.client_id == CLIENTS.c.id).outerjoin(
                        _SIGNER, _SIGNER.c.id == POLICIES.c.signed_by
                    )
                )
                .where(POLICIES.c.stale_days.is_not(None))
            )
            clients = tuple(
                ClientState(r[0], r[1], r[2], None, None, *_policy(r, 3)) for r in _rows(conn, query, CLIENTS.c.id)
            )
            stale_after = {c.id: c.policy.stale_days for c in clients if c.policy is not None}
            secret_query = (  # their secrets with current versions, a page per statement; the cutoff per client
                select(*self._secret_columns())
                .select_from(self._current().join(POLICIES, POLICIES.c.client_id == SECRETS.c.client_id))
                .where(POLICIES.c.stale_days.is_not(None))
            )
            secrets = []
            for r in _rows(conn, secret_query, SECRETS.c.id):
                days = stale_after.get(r[1])
                if isinstance(days, int) and days > 0 and r[6] < now - dt.timedelta(days=days):
                    secrets.append(SecretState(*r))
            return ReportRows(
                STALE,
                read.vault_id,
                read.org_signing_public,
                org_chain(s, request.org_pin, read.org_signing_public),
                read.me,
                clients,
                tuple(secrets),
                self._sealed(s, read, request, clients, tuple(secrets)),
            )

    # -- the rows -----------------------------------------------------------------------------

    @staticmethod
    def _current() -> Any:
        on = and_(VERSIONS.c.secret_id == SECRETS.c.id, VERSIONS.c.version == SECRETS.c.current_version)
        return SECRETS.join(VERSIONS, on)

    @staticmethod
    def _secret_columns() -> list[Any]:
        s, v = SECRETS.c, VERSIONS.c
        return [
            s.id,
            s.client_id,
            v.version,
            v.key_version,
            v.wrapped_dek,
            v.metadata_blob,
            func.coalesce(s.last_used_at, s.created_at),
        ]

    def _clients(self, s: Session) -> list[ClientState]:
        """Every client by id, a page per statement, joined with its current key record, its
        stored policy and that policy's signer."""
        c, k = CLIENTS.c, KEYS.c
        query = select(
            c.id, c.slug_blob, c.current_key_version, k.created_at, k.encryptions, *_POLICY, *_SIGNER_COLUMNS
        )
        query = query.select_from(
            CLIENTS.outerjoin(KEYS, and_(k.client_id == c.id, k.version == c.current_key_version))
            .outerjoin(POLICIES, POLICIES.c.client_id == c.id)
            .outerjoin(_SIGNER, _SIGNER.c.id == POLICIES.c.signed_by)
        )
        return [
            ClientState(r[0], r[1], r[2], r[3], r[4], *_policy(r, 5)) for r in _rows(rows.connection(s), query, c.id)
        ]

    @staticmethod
    def _sealed(
        s: Session,
        read: CallerRead,
        request: ReportRequest,
        clients: tuple[ClientState, ...],
        secrets: tuple[SecretState, ...],
    ) -> tuple[Any, ...]:
        """The recovery copies of the client keys needed that the keyholder does not hold."""
        wanted = _wanted(clients, secrets) - set(request.known_key_versions)
        return sealed_keys(s, wanted, "recovery", read.root_version or 0) if wanted else ()
