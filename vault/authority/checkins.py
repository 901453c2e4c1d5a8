"""Check-in and break, where the database is: authorise, lock, release, record, commit.

One write unit of work per request, in the checkout's order (``checkouts.py``): who calls
(the same caller checks; a break needs an admin) — refused before any row of the client
or secret is read; then the client, the secret by its name tag and its current version;
a stale audit ring refused (``STALE_CONTEXT``); the secret's row lock and its open holds.
The keyholder is shown the rows (``admit``: a ``CheckoutResponse`` draft of the current
version, which it verifies and opens) before anything is written.

A check-in that stores a new value first checks that no other engineer holds the secret
exclusively (each hold honoured only if its event verifies), then asks the keyholder for
the new version (``new_version``: a fresh data key wrapped under the client's current key —
the newest admin-signed version, which must match ``clients.current_key_version`` and not be
destroyed, the secrets authority's check; a client removed meanwhile is ``NotFound`` —
the value and the unchanged metadata under it: ciphertext only crosses), stores it, counts
the encryption under the client key, prunes old versions and appends ``secret-update``.
Then the holds are released and ``checkin`` (or ``checkout-break``) is appended; the
commit follows, and only then the answer.

Through the team server (``ServerEvent`` in place of the keyholder's seal) the request's
nonce is remembered first in the unit, nothing is shown to the keyholder (a plain release
opens nothing), a request whose events are committed already (a retry under a new signature:
docs/server.md §3) is answered from them under the secret's lock, changing nothing, and the
event is format 3 (``checkout_events.append``: the keyholder's
pre-sealed details, the server's facts in its signed ``details_json``, the signed request
kept). A new value goes through the server as the version the keyholder encrypted for a
``secrets.update_draft`` (on record as its ``secret-view``) with that draft's digest: the
draft recomputed in this unit after the holds are checked (409 ``stale-draft`` if it
changed), the version stored (layered) and ``secret-update`` appended by
``SecretDraftAuthority.store_drafted``, then the holds released and ``checkin`` appended.
On a vault with a certified server key an embedded release is refused
before any row of the client is read (``EMBEDDED_REFUSED``): its format-2 event would follow
format-3 ones, a downgrade that ``audit verify`` refuses.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from vault.authority import checkout_events, versions
from vault.authority.checkout_events import ServerEvent
from vault.authority.checkout_reads import NAME, TARGET, CallerRead
from vault.authority.checkouts import EMBEDDED_REFUSED, ROLE_ADMIN, CheckoutAuthority, EventSeal, PublicChecks
from vault.authority.requests import (
    BREAK,
    CHECKIN,
    MISSING_TARGET,
    NOT_CHECKED_OUT,
    NOT_HELD,
    ONLY_ADMINS_BREAK,
    SECRET_UPDATE,
    STALE_CONTEXT,
    CheckoutResponse,
    NewVersion,
    ReleaseRequest,
    ReleaseResponse,
    WriteKey,
)
from vault.authority.secret_drafts import SecretDraftAuthority
from vault.authority.secret_requests import SecretTarget
from vault.authority.versions import VersionChecks
from vault.errors import CheckoutConflict, ConcurrentChange, ConfigurationError, InvalidInput, NotFound
from vault.storage import models as m
from vault.storage import rows
from vault.storage.rows import (
    ClientRow,
    HoldRow,
    PolicyRow,
    SecretRow,
    VersionRow,
)


class ReleaseSeal(EventSeal, Protocol):
    """The acting engineer's seal (the in-process seam), and the new version it encrypts."""

    def new_version(self, write: WriteKey) -> NewVersion:
        """The new version of the secret admitted last, encrypted under ``write``'s client key."""


@dataclass(frozen=True)
class _Action:
    """An event's action, for the append (the secret-update written by a check-in)."""

    action: str


class CheckinAuthority:
    """Check-ins and breaks, given a request, in one write unit of work each."""

    def __init__(
        self,
        checkouts: CheckoutAuthority,
        checks: PublicChecks,
        versions: VersionChecks | None,
        drafts: SecretDraftAuthority | None = None,
    ) -> None:
        """``versions``: what a new version depends on in-process; ``drafts``: on the team server,
        the secrets' drafts a new value is stored by (None: a check-in through the server stores
        no new value)."""
        self.checkouts = checkouts
        self.store, self.checks, self.clock = checkouts.store, checks, checkouts.clock
        self.versions, self.drafts = versions, drafts

    def __repr__(self) -> str:
        return "CheckinAuthority()"

    def release(self, request: ReleaseRequest, seal: ReleaseSeal | ServerEvent) -> ReleaseResponse:
        """Release the caller's holds (a check-in, perhaps with a new version) or every hold (a
        break), record it, commit; the answer leaves after the commit. ``seal``: the keyholder's
        (in-process, format 2) or the team server's (format 3; a new value by its draft: see the
        module docstring)."""
        if request.action not in (CHECKIN, BREAK) or (request.action == BREAK and request.new_value):
            raise InvalidInput(f"unknown release {request.action!r}")
        with self.store.unit() as s:
            response = self._release(s, request, seal)
        return response

    def _release(self, s: Session, request: ReleaseRequest, seal: ReleaseSeal | ServerEvent) -> ReleaseResponse:
        a = self.checkouts
        served = isinstance(seal, ServerEvent)
        if isinstance(seal, ServerEvent) and seal.nonce is not None:
            seal.nonce(s)  # the request's nonce, in this unit: kept only if it commits
        conn = rows.connection(s)
        sqlite = conn.dialect.name == "sqlite"
        now = self.clock()
        caller = a._authorise(s, conn, sqlite, request, ONLY_ADMINS_BREAK if request.action == BREAK else None)
        me = caller.me
        if caller.server_keyed and not served:
            raise ConfigurationError(EMBEDDED_REFUSED, hint="check in through the team server (credvault serve)")
        if served and request.new_value and (self.drafts is None or request.new_version is None):
            raise InvalidInput(
                "a check-in with a new value through the team server carries the version drafted for it",
                hint="the keyholder drafts it first (secrets.update_draft)",
            )
        client, secret, stored_policy, current, holds = self._target(conn, sqlite, request, now)
        locked = holds is None
        if holds is None:  # PostgreSQL: lock the secret's row, then read its open checkouts
            holds = a._lock_and_find_holds(conn, secret.id, now)
        # A retry (the same request under a new signature) is answered from its committed events and
        # changes nothing; looked for under the secret's lock, so a first copy in flight has committed.
        again = self._answered(conn, me.id, seal, request, secret)
        if again is not None:
            return again
        if client.audit_keys_blob is None or client.audit_keys_blob != request.audit_keys_blob:
            raise ConcurrentChange(STALE_CONTEXT)
        if locked and request.new_value:  # read again under the lock: the new version follows the last committed one
            client, secret, stored_policy, current, _ = self._target(conn, sqlite, request, now)
        if current is None:
            raise NotFound("the secret has no current version")
        released = holds if request.action == BREAK else [c for c in holds if c.engineer_id == me.id]
        if not released and not request.new_value:
            raise NotFound(NOT_CHECKED_OUT if request.action == BREAK else NOT_HELD)
        if request.new_value:
            policy = self.checks.policy(s, client.id, stored_policy, (me, *caller.signers))
            blocking = [c for c in holds if c.engineer_id != me.id and (c.exclusive or policy.exclusive)]
            theirs = a._genuine(conn, s, caller.vault_id, client.id, secret.id, blocking, seal)
            others = [c for c in theirs if c.exclusive]
            if others:
                name = NAME.all(conn, {"id": others[0].engineer_id})
                until = others[0].expires_at.isoformat(timespec="minutes")
                raise CheckoutConflict(f"checked out exclusively by {name[0][0] if name else '?'} until {until}")
        if not isinstance(seal, ServerEvent):  # format 3: the keyholder is shown nothing first (it opens nothing)
            self._admit(conn, caller, request, client, secret, current, seal)
        version, must_change = secret.current_version, secret.must_change
        if request.new_value and not isinstance(seal, ServerEvent):
            version = self._store_version(s, conn, caller, client.id, secret, seal, now)
            caller.head = None  # moved by that event: the next append reads it again
            must_change = False
        elif request.new_value and isinstance(seal, ServerEvent) and self.drafts is not None:
            target = SecretTarget(request.caller, request.client_id, request.slug_tag, request.name_tag,
                                  request.known_key_versions, request.org_pin)  # fmt: skip
            version = self.drafts.store_drafted(s, seal, target, request.new_version, request.draft_digest)
            must_change = False
        if released:
            rows.RELEASE.run_many(conn, [{"checkout": c.id, "at": now, "by": me.id} for c in released])
        holders: list[str] = []
        if request.action == BREAK:
            for c in released:
                found = NAME.all(conn, {"id": c.engineer_id})
                holders.append(found[0][0] if found else "?")
            facts: dict[str, Any] = {"holders": holders}
        else:
            facts = {"new_version": request.new_value, "released": len(released)}
        if isinstance(seal, ServerEvent):
            args = (request, me.id, me.key_generation, client.id, secret.id, facts)
            seq = checkout_events.append(s, seal, self.clock, *args)
        else:
            seq = a._append(conn, sqlite, caller, request, client.id, secret.id, facts, seal)
        return ReleaseResponse(seq, len(released), tuple(holders), version, must_change)

    @staticmethod
    def _answered(
        conn: Connection, engineer_id: int, seal: ReleaseSeal | ServerEvent, request: ReleaseRequest, secret: SecretRow
    ) -> ReleaseResponse | None:
        """docs/server.md §3 "Retries are not replays", for a release through the server: the first
        copy's answer, rebuilt from its committed events — the seq and the holds released (a break:
        their holders) of its ``checkin``/``checkout-break``; with a new value, the version its
        ``secret-update`` stored (no longer to be changed); else the secret's current version and
        flag as read now. None if the request has no event yet; the same request id with another
        body is refused (``AlreadyExists``, ``REQUEST_ID_REUSED``: 409, ``checkout_events.answered``)."""
        needs = ("holders",) if request.action == BREAK else ("new_version", "released")
        found = checkout_events.answered(conn, engineer_id, seal, request.action, needs)
        if found is None:
            return None
        facts = found.facts
        if request.action == BREAK:
            holders = facts["holders"]
            if not isinstance(holders, list) or not holders or not all(isinstance(h, str) for h in holders):
                raise InvalidInput("the event of this request is not a break")
            return ReleaseResponse(found.seq, len(holders), tuple(holders), secret.current_version, secret.must_change)
        released = facts["released"]
        if type(released) is not int or facts["new_version"] is not request.new_value:
            raise InvalidInput("the event of this request is not this check-in")
        if not request.new_value:
            return ReleaseResponse(found.seq, released, (), secret.current_version, secret.must_change)
        stored = checkout_events.answered(conn, engineer_id, seal, SECRET_UPDATE)
        if stored is None or type(stored.facts["version"]) is not int:
            raise InvalidInput("the check-in of this request names no stored version")
        return ReleaseResponse(found.seq, released, (), stored.facts["version"], False)

    def _admit(
        self,
        conn: Connection,
        caller: CallerRead,
        request: ReleaseRequest,
        client: ClientRow,
        secret: SecretRow,
        current: VersionRow,
        seal: ReleaseSeal,
    ) -> None:
        """Show the in-process keyholder the rows acted on, as a checkout's draft answer."""
        a, me = self.checkouts, caller.me
        engineer = me.role != ROLE_ADMIN
        sealed = None
        if current.key_version not in request.known_key_versions:
            sealed = a._sealed_key(conn, caller, client.id, current.key_version)
        seal.admit(
            CheckoutResponse(
                seq=0,
                vault_id=caller.vault_id,
                org_signing_public=caller.org_signing_public,
                org_chain=a._org_chain(conn, request.org_pin, caller.org_signing_public),
                me=me,
                grant=caller.grants[0] if engineer and caller.grants else None,
                grant_signer=caller.signers[0] if engineer and caller.signers else None,
                client=client,
                secret=secret,
                version=current,
                sealed_key=sealed,
                expires_us=None,
                flagged=secret.must_change,
            )
        )

    def _target(
        self, conn: Connection, sqlite: bool, request: ReleaseRequest, now: dt.datetime
    ) -> tuple[ClientRow, SecretRow, PolicyRow | None, VersionRow | None, list[HoldRow] | None]:
        """The client, the secret by its name tag, its policy, its current version and, on
        SQLite, its open holds (one statement: the checkout's)."""
        by_tag = request.slug_tag is not None
        params: dict[str, Any] = {"tag": request.name_tag, "version": None, "now": now}
        params |= {"slug_tag": request.slug_tag} if by_tag else {"client": request.client_id}
        found: Sequence[Any] = TARGET[by_tag, sqlite].all(conn, params)
        if not found:
            raise NotFound(MISSING_TARGET)
        return self.checkouts._split_target(found, sqlite)

    def _store_version(
        self,
        s: Session,
        conn: Connection,
        caller: CallerRead,
        client_id: int,
        secret: SecretRow,
        seal: ReleaseSeal,
        now: dt.datetime,
    ) -> int:
        """The keyholder's new version, under the client's current key: stored, counted, the
        secret moved to it (its must-change flag cleared), old versions pruned, and recorded."""
        a = self.checkouts
        secret_id, current = secret.id, secret.current_version
        client = s.get(m.Client, client_id)
        if client is None:  # removed since the target was read (PostgreSQL: no lock on the client row)
            raise NotFound(MISSING_TARGET)
        if self.versions is None:
            raise InvalidInput("this authority stores no new version", hint="check in without a new value")
        write = versions.write_key(s, self.versions, caller, client, current)
        stored = versions.store_version(
            s,
            self.versions,
            write,
            seal.new_version(write),
            client_id=client_id,
            secret_id=secret_id,
            created_by=caller.me.id,
            now=now,
            clear_must_change=True,
        )
        facts = {"version": stored.version, "password_changed": True}
        a._append(
            conn, conn.dialect.name == "sqlite", caller, _Action(SECRET_UPDATE), client_id, secret_id, facts, seal
        )
        return stored.version
