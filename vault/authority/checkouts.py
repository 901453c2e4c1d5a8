"""The checkout, where the database is: authorise, lock, record, commit; return ciphertext.

One write unit of work per request, in this order: who calls (an active engineer whose
certificate verifies, with the key generation the request names; the head of their
grant ledger for the client, or the admin role) — a refused caller is refused here,
before any row of the client or secret is read; then the client, the secret, its policy
(used only through its admin's signature) and the version; the secret's row lock and
its open checkouts, each honoured only if its audit event verifies; the audit event; the
checkout row; the commit. Only then does the response leave, holding ciphertext and the
signed rows the keyholder verifies before it decrypts anything.

What is checked here needs public keys and signatures only (``PublicChecks``). The audit
event is made here too, per call, in one of two ways: in-process, in format 2, with two
hands of the acting engineer's keyholder lent for the append (``EventSeal``, the in-process
seam of issue 13; see its docstring); on the team server, in format 3, signed by the server
over the engineer's signed request (``checkout_events.ServerEvent``). A vault with a
certified server key takes no in-process checkout (``ConfigurationError``: its format-2
event would read as a downgrade to ``audit verify``); whether it has one comes with the
caller's read, no statement more.

On the server, nothing is admitted before the event (docs/server.md open question 2): the
keyholder's verdict needs its keys, so the event commits first, the answer leaves, and the
keyholder verifies it after (a refusal then follows its event).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from vault.authority import checkout_events, versions
from vault.authority.checkout_events import ServerEvent
from vault.authority.checkout_reads import (
    ACTIVE,
    CALLER,
    CHECKOUT_CALLER,
    HEAD_LOCK,
    HEAD_TIME_AND_ENGINEER,
    NAME,
    TARGET,
    CallerRead,
    note_vault_id,
    org_chain_rows,
)
from vault.authority.policy import Policy
from vault.authority.requests import (
    CHECKOUT,
    MISSING_TARGET,
    REASON_REQUIRED,
    REVEAL,
    STALE_CONTEXT,
    Caller,
    CheckoutRequest,
    CheckoutResponse,
    OrgKeyRow,
    SealedClientKey,
)
from vault.crypto import chain
from vault.errors import (
    AccessDenied,
    AuditUnavailable,
    CheckoutConflict,
    ConcurrentChange,
    ConfigurationError,
    InvalidInput,
    Locked,
    NotFound,
    StoreBusy,
    StoreUnavailable,
)
from vault.storage import rows
from vault.storage.engine import Store
from vault.storage.prepared import Step, pipelined
from vault.storage.rows import (
    ClientRow,
    EngineerRecord,
    EngineerRow,
    GrantRecord,
    HoldRow,
    PolicyRow,
    SecretRow,
    VersionRow,
)

ROLE_ADMIN = "admin"
MIN_HOLD, MAX_HOLD = dt.timedelta(minutes=1), dt.timedelta(days=7)
# A vault with a certified server key keeps its log on the team server: a format-2 checkout or
# release event after its format-3 ones would not verify (a downgrade), so none is written.
EMBEDDED_REFUSED = "this vault has a team server, which keeps its audit log: an embedded checkout would not verify"


class PublicChecks(Protocol):
    """The trust checks the authority makes: signatures and public keys only."""

    def certificate(self, s: Session, row: EngineerRecord) -> None:
        """The engineer's certificate verifies under the organisation key, else UntrustedRecord."""

    def first_valid_grant(
        self, s: Session, grants: Sequence[GrantRecord], engineer: EngineerRecord, signers: Sequence[EngineerRow | None]
    ) -> int:
        """The index of the grant that counts (the ledger head), else NotFound / GrantExpired."""

    def policy(
        self, s: Session, client_id: int, row: PolicyRow | None, known: tuple[EngineerRow | None, ...]
    ) -> Policy:
        """The client's policy through its admin's signature (the strict policy otherwise)."""

    def event_key(self, s: Session, engineer_id: int, generation: int) -> bytes | None:
        """The certified signing key of an engineer's key generation, or None."""

    def organisation_key(self, s: Session, current: bytes) -> None:
        """The vault's current organisation key as read in this unit of work (certificates verify
        under it, reached from the trust anchor by the signed chain of organisation keys)."""

    def server_key(self, s: Session, version: int) -> bytes | None:
        """The signing key of server key ``version``: its row not revoked (active or retired),
        its certificate verifying under the organisation key; else None."""


class Acting(Protocol):
    """A request's action (the event's)."""

    @property
    def action(self) -> str: ...


class Targeting(Protocol):
    """What ``_authorise`` reads of a request: the caller and how the client is named."""

    @property
    def caller(self) -> Caller: ...

    @property
    def client_id(self) -> int | None: ...

    @property
    def slug_tag(self) -> bytes | None: ...


class DetailSeal(Protocol):
    """The part of a seal the append uses: the event's sealed details and its signature."""

    def details(self, client_id: int, seq: int, action: str, facts: dict[str, Any]) -> tuple[int, bytes]: ...

    def sign(self, vault_id: bytes, seq: int, digest: bytes) -> bytes: ...


class EventSeal(Protocol):
    """The acting engineer's hands inside the append: THE IN-PROCESS SEAM of issue 13.

    An event is signed over (vault id, seq, hash) and its details are encrypted with the
    seq in their associated data (event format 2, unchanged this round): both exist only
    inside the authority's transaction. So the in-process transport lends the authority
    this object of the keyholder's, called at append time; it also opens the details of
    another engineer's hold (the authority cannot: they are sealed under the client's
    audit key), and it lets the keyholder refuse the answer (a secret found under a moved
    lookup tag, a missing field) before the event is written, as the one-process vault
    always did. The team-server issue replaces it with signed requests and server
    checkpoints; nothing else in the authority holds or asks for a key.
    """

    def admit(self, draft: CheckoutResponse) -> None:
        """The keyholder verifies and opens what it will be given (``draft``: the response but
        its seq), before the event is written; it raises to refuse, and nothing is written.
        The opened value stays in the keyholder until the commit."""

    def details(self, client_id: int, seq: int, action: str, facts: dict[str, Any]) -> tuple[int, bytes]:
        """(audit-key version, blob) of the event's details: ``facts`` and the keyholder's own."""

    def sign(self, vault_id: bytes, seq: int, digest: bytes) -> bytes:
        """The acting engineer's signature of event ``seq`` with hash ``digest``."""

    def hold_claim(
        self, client_id: int, seq: int, action: str, key_version: int, blob: bytes, until: int
    ) -> bool | None:
        """Whether another engineer's checkout event claims an exclusive hold ending at ``until``:
        True or False, or None if its details do not open or name another end. Only that bit
        crosses to the authority, never the details (which hold the reason)."""


def us(value: dt.datetime) -> int:
    return int(value.timestamp() * 1_000_000)


class CheckoutAuthority:
    """Checkouts and reveals, given a request, in one write unit of work each."""

    def __init__(self, store: Store, checks: PublicChecks, clock: Callable[[], dt.datetime]) -> None:
        self.store = store
        self.checks = checks
        self.clock = clock

    def checkout(self, request: CheckoutRequest, seal: EventSeal | ServerEvent) -> CheckoutResponse:
        """Authorise, record durably, then return ciphertext (``AuditUnavailable`` if the
        record could not be committed: nothing is returned then). ``seal``: the keyholder's
        (in-process, format 2) or the server's (format 3; see the module docstring)."""
        if request.action not in (CHECKOUT, REVEAL):
            raise InvalidInput(f"unknown action {request.action!r}")
        try:
            with self.store.unit() as s:
                response = self._checkout(s, request, seal)
        except (ConcurrentChange, StoreBusy):
            raise  # nothing was revealed or recorded
        except StoreUnavailable as error:
            raise AuditUnavailable(f"the access could not be recorded ({error}); nothing was revealed") from None
        return response  # only now, after the commit

    def _checkout(self, s: Session, request: CheckoutRequest, seal: EventSeal | ServerEvent) -> CheckoutResponse:
        if isinstance(seal, ServerEvent) and seal.nonce is not None:
            seal.nonce(s)  # the request's nonce, in this unit: kept only if it commits
        conn = rows.connection(s)
        sqlite = conn.dialect.name == "sqlite"
        now = self.clock()
        caller = self._authorise(s, conn, sqlite, request)
        if caller.server_keyed and not isinstance(seal, ServerEvent):
            raise ConfigurationError(EMBEDDED_REFUSED, hint="check out through the team server (credvault serve)")
        me = caller.me
        # a retry (the same request under a new signature): answered from its event, nothing appended
        answered = checkout_events.answered(conn, me.id, seal, request.action)
        by_tag = request.slug_tag is not None
        asked = answered.facts["version"] if answered is not None else request.version
        params = {"tag": request.name_tag, "version": asked, "now": now}
        params |= {"slug_tag": request.slug_tag} if by_tag else {"client": request.client_id}
        found = TARGET[by_tag, sqlite].all(conn, params)
        if not found:
            raise NotFound(MISSING_TARGET)
        client, secret, stored_policy, version, holds = self._split_target(found, sqlite)
        policy = self.checks.policy(s, client.id, stored_policy, (me, *caller.signers))
        if policy.reason_required and not request.has_reason:
            raise InvalidInput(REASON_REQUIRED, hint='pass --reason "T-1234 reset VPN"')
        stale = client.audit_keys_blob is None or client.audit_keys_blob != request.audit_keys_blob
        if stale and answered is None:
            raise ConcurrentChange(STALE_CONTEXT)
        hold = request.action == CHECKOUT
        if answered is not None:
            holds = []  # its checkout was decided and recorded by the first copy
        elif holds is None:  # PostgreSQL: lock the secret's row, then read its open checkouts
            holds = self._lock_and_find_holds(conn, secret.id, now)
        blocking = [c for c in holds if c.engineer_id != me.id and (c.exclusive or (policy.exclusive and hold))]
        theirs = self._genuine(conn, s, caller.vault_id, client.id, secret.id, blocking, seal)
        others = [c for c in theirs if c.exclusive]
        if others or (policy.exclusive and hold and theirs):
            holder = others[0] if others else theirs[0]
            name = NAME.all(conn, {"id": holder.engineer_id})
            until = holder.expires_at.isoformat(timespec="minutes")
            raise CheckoutConflict(f"checked out exclusively by {name[0][0] if name else '?'} until {until}")
        if version is None:
            raise NotFound(f"no version {request.version} of this secret")
        facts: dict[str, Any] = {"version": version.version}
        expires = None
        if hold:
            length = (
                dt.timedelta(seconds=request.hold_seconds)
                if request.hold_seconds is not None
                else dt.timedelta(minutes=policy.checkout_minutes)
            )
            if not MIN_HOLD <= length <= MAX_HOLD:
                raise InvalidInput("bad checkout length", hint="use between 1m and 7d, e.g. --for 2h")
            expires = now + length
            if answered is not None:  # the hold the first copy recorded
                expires = dt.datetime.fromtimestamp(answered.facts["until"], dt.UTC)
            facts.update({"exclusive": policy.exclusive, "until": int(expires.timestamp())})
        flag = policy.rotate_after_checkout and request.field_is_password
        sealed = None
        if version.key_version not in request.known_key_versions:
            sealed = self._sealed_key(conn, caller, client.id, version.key_version)
        engineer = me.role != ROLE_ADMIN
        draft = CheckoutResponse(
            seq=0,  # numbered by the append below
            vault_id=caller.vault_id,
            org_signing_public=caller.org_signing_public,
            org_chain=self._org_chain(conn, request.org_pin, caller.org_signing_public),
            me=me,
            grant=caller.grants[0] if engineer and caller.grants else None,
            grant_signer=caller.signers[0] if engineer and caller.signers else None,
            client=client,
            secret=secret,
            version=version,
            sealed_key=sealed,
            expires_us=us(expires) if expires is not None else None,
            flagged=flag or secret.must_change,
        )
        if answered is not None:
            return dataclasses.replace(draft, seq=answered.seq)
        writes: list[Step] = []
        if isinstance(seal, ServerEvent):  # format 3: the keyholder verifies after the commit
            # what needs no seq is written before the append, and what needs it in one round trip
            # after: the audit head's lock (held to the commit, every writer queues on it) is held
            # for as few round trips as can be (``serverjournal`` module docstring)
            touch = self._touch_and_replace(secret.id, me.id, holds, now, hold=hold, flag=flag)
            args = (request, me.id, me.key_generation, client.id, secret.id, facts)
            seq = checkout_events.append(s, seal, self.clock, *args, writes=writes, leading=touch)
        else:
            seal.admit(draft)  # the keyholder's verdict on what it will be given: a refusal writes nothing
            seq = self._append(conn, sqlite, caller, request, client.id, secret.id, facts, seal)
            for prepared, values in self._touch_and_replace(secret.id, me.id, holds, now, hold=hold, flag=flag):
                prepared.run(conn, values)
        if hold:
            hold_row = {
                "secret_id": secret.id,
                "client_id": client.id,
                "engineer_id": me.id,
                "exclusive": policy.exclusive,
                "event_seq": seq,
                "started_at": now,
                "expires_at": expires,
            }
            writes.append((rows.ADD_CHECKOUT, hold_row))
        pipelined(conn, writes)
        return dataclasses.replace(draft, seq=seq)

    @staticmethod
    def _touch_and_replace(
        secret_id: int, me: int, holds: list[HoldRow], now: dt.datetime, *, hold: bool, flag: bool
    ) -> list[Step]:
        """The secret's last use (and its flag), and the engineer's own open checkouts of it ended
        when a new one replaces them: the checkout's writes that name no event (to run or to send)."""
        mine = [c.id for c in holds if c.engineer_id == me] if hold else []
        steps: list[Step] = [(rows.REPLACE, {"checkout": i, "at": now}) for i in mine]  # replaced by the new one
        return [*steps, (rows.TOUCH_AND_FLAG_SECRET if flag else rows.TOUCH_SECRET, {"secret": secret_id, "at": now})]

    @staticmethod
    def _lock_and_find_holds(conn: Connection, secret_id: int, now: dt.datetime) -> list[HoldRow]:
        """The secret's row lock (``FOR UPDATE``), then its open checkouts (PostgreSQL; one round
        trip, ``prepared.pipelined``: the read still runs once the lock is granted)."""
        steps: list[Step] = [(rows.LOCK_SECRET, {"secret": secret_id}), (rows.HOLDS, {"secret": secret_id, "now": now})]
        return [HoldRow._make(r) for r in pipelined(conn, steps)[1]]

    def _authorise(
        self,
        s: Session,
        conn: Connection,
        sqlite: bool,
        request: Targeting,
        admins_only: str | None = None,
        *,
        appends: bool = True,
    ) -> CallerRead:
        """Who may check out: an active, certified engineer of the key generation the request
        names, who is an admin or holds the grant ledger's head for the client (``admins_only``:
        an admin, else AccessDenied with that message). Nothing of the client or the secret
        has been read when this refuses."""
        if (request.client_id is None) == (request.slug_tag is None):
            raise InvalidInput("a checkout names its client by id or by slug tag")
        client_id = request.client_id if request.client_id is not None else 0  # an admin's: no grant needed
        caller = self._caller(s, conn, sqlite, request.caller, client_id, appends=appends)
        me = caller.me
        if me.role != ROLE_ADMIN:
            if admins_only is not None:
                raise AccessDenied(admins_only, hint="ask an admin")
            if request.slug_tag is not None:
                raise AccessDenied(f"{me.name!r} is not an admin", hint="name the client by the id your grant names")
            self.checks.first_valid_grant(s, caller.grants, me, caller.signers)
        return caller

    def _caller(
        self, s: Session, conn: Connection, sqlite: bool, who: Caller, client_id: int, *, appends: bool = True
    ) -> CallerRead:
        """The acting engineer (with their grants for ``client_id``): present, certified,
        active, of the key generation the request names; else refused. ``appends``: the unit
        appends an event next, so on SQLite the head event's time comes with the caller
        (a read that appends nothing reads no audit event before it has authorised)."""
        found = (CHECKOUT_CALLER if appends else CALLER)[sqlite].all(conn, {"me": who.engineer_id, "client": client_id})
        if not found:
            raise Locked("the acting engineer no longer exists in this vault")
        caller = CallerRead(found, sqlite, head_time=appends)
        me = caller.me
        note_vault_id(s, caller)  # read with the organisation key: its check and the append read it no more
        self.checks.organisation_key(s, caller.org_signing_public)
        self.checks.certificate(s, me)
        if me.status != ACTIVE:
            raise AccessDenied(f"the account of {me.name!r} is {me.status}", hint="ask an admin")
        if me.key_generation != who.key_generation:
            raise Locked(
                f"the keys of {me.name!r} have changed since this session was unlocked",
                hint="run `credvault unlock` again",
            )
        return caller

    @staticmethod
    def _split_target(
        found: Sequence[Sequence[Any]], sqlite: bool
    ) -> tuple[ClientRow, SecretRow, PolicyRow | None, VersionRow | None, list[HoldRow] | None]:
        first = found[0]
        widths = [len(t._fields) for t in (ClientRow, SecretRow, PolicyRow, VersionRow)]
        a, b, c, d = (sum(widths[: i + 1]) for i in range(4))
        client, secret = ClientRow._make(first[:a]), SecretRow._make(first[a:b])
        policy = None if first[b] is None else PolicyRow._make(first[b:c])
        version = None if first[c] is None else VersionRow._make(first[c:d])
        holds: list[HoldRow] | None = None
        if sqlite:
            seen: dict[int, HoldRow] = {}
            for r in found:
                if r[d] is not None and r[d] not in seen:
                    seen[r[d]] = HoldRow._make(r[d : d + len(HoldRow._fields)])
            holds = list(seen.values())
        return client, secret, policy, version, holds

    def _genuine(
        self,
        conn: Connection,
        s: Session,
        vault_id: bytes,
        client_id: int,
        secret_id: int,
        held: list[HoldRow],
        seal: EventSeal | ServerEvent,
    ) -> list[HoldRow]:
        """Other engineers' open checkouts that their audit events vouch for (``checkout_events.genuine``)."""
        claims = None if isinstance(seal, ServerEvent) else seal
        return checkout_events.genuine(conn, s, self.checks, vault_id, client_id, secret_id, held, claims)

    def _append(
        self,
        conn: Connection,
        sqlite: bool,
        caller: CallerRead,
        request: Acting,
        client_id: int,
        secret_id: int,
        facts: dict[str, Any],
        seal: DetailSeal,
    ) -> int:
        """The checkout's audit event, signed by the acting engineer, and the head moved to it.
        On PostgreSQL the head is locked here, last, and held to the commit."""
        me = caller.me
        if caller.head is not None:  # SQLite: read with the caller, under the write lock this unit holds
            head, after = caller.head, caller.head_at
        else:
            locked = HEAD_LOCK.all(conn, {})
            if not locked:
                raise StoreUnavailable("the audit chain has no head")
            head = (locked[0][0], locked[0][1])
            found = HEAD_TIME_AND_ENGINEER.all(conn, {"seq": head[0], "me": me.id})
            after = found[0][0]
            if found[0][1] != ACTIVE or found[0][2] != me.key_generation:
                raise ConcurrentChange("the engineer's keys changed while this ran: nothing was changed")
        seq = head[0] + 1
        key_version, details_blob = seal.details(client_id, seq, request.action, dict(facts))
        at = us(self.clock())
        values: dict[str, Any] = {
            "seq": seq,
            "at_us": at if after is None else max(at, after),
            "engineer_id": me.id,
            "key_generation": me.key_generation,
            "action": request.action,
            "client_id": client_id,
            "secret_id": secret_id,
            "key_version": key_version,
            "details_blob": details_blob,
            "details_json": None,
            "prev_hash": head[1],
        }
        values["hash"] = chain.event_hash(
            caller.vault_id,
            seq,
            values["at_us"],
            me.id,
            me.key_generation,
            request.action,
            client_id,
            secret_id,
            key_version,
            details_blob,
            None,
            prev_hash=head[1],
        )
        values["signature"] = seal.sign(caller.vault_id, seq, values["hash"])
        rows.ADD_EVENT.run(conn, values)
        rows.MOVE_HEAD.run(conn, {"new_seq": seq, "new_hash": values["hash"]})
        return seq

    @staticmethod
    def _org_chain(conn: Connection, pinned: bytes, current: bytes) -> tuple[OrgKeyRow, ...]:
        return org_chain_rows(conn, pinned, current)

    @staticmethod
    def _sealed_key(conn: Connection, caller: CallerRead, client_id: int, version: int) -> SealedClientKey | None:
        """The signed record of a client-key version and the caller's sealed copy of it (an
        admin's: the one sealed to the current recovery key), or None if there is no such version."""
        return versions.sealed_key(conn, caller, client_id, version)
