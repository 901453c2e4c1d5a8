"""Appending to the audit chain, inside the transaction of the change it records.

The append locks the single ``audit_head`` row (``SELECT … FOR UPDATE`` on PostgreSQL;
SQLite transactions here start with ``BEGIN IMMEDIATE``), so concurrent writers queue
and sequence numbers stay contiguous. Reading and verifying live in ``audit.py``.

Events are written in format 2 (``chain.event_hash``), and never dated before the event
they follow: a writer whose clock is behind the chain's last event (another machine's
clock, or its own set back) dates its event at that event's time, since the verifier
refuses a format-2 event earlier than its predecessor (a backdated insertion).

A vault with a certified server key (``server_keys``: it has gone to the team server, whose
``serverjournal.py`` appends format 3) takes no more events from here but a local unlock's
and an admin's ``server-key-recover`` (``LOCAL_ACTIONS``): the verifier refuses any other
format-2 event after a format-3 one
(docs/format.md §8.2, no downgrade), so the append is refused instead of writing one.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.crypto import chain
from vault.errors import ConcurrentChange, ConfigurationError
from vault.storage import models as m
from vault.storage.rows import ACTIVE, EngineerRecord

if TYPE_CHECKING:
    from vault.keyholder.auditkeys import AuditKeys
    from vault.keyholder.keys import Keys
    from vault.keyholder.trust import Trust


class Core(Protocol):
    """What the journal uses of the service core: the vault's identity row, and the clock."""

    clock: Callable[[], dt.datetime]

    def info(self, s: Session) -> m.VaultInfo: ...


# Events that nobody can sign: no key of the actor's can be opened at that moment. Shown
# as unauthenticated (anyone with database access could have written one).
UNSIGNED_ACTIONS = frozenset({"unlock-failed"})
# Format-1 events (written before format 2) also left ``enroll`` unsigned; format 2 signs it
# with the key just made (docs/format.md §8).
LEGACY_UNSIGNED_ACTIONS = frozenset({"unlock-failed", "enroll"})
# The events of a local unlock: they authorise and reveal nothing, and an engineer's machine
# may still write them in format 2 after the chain has format-3 events (docs/format.md §8.2).
# Appended in format 2 on a vault with a server key: a local unlock's, and an admin's
# certification of a new server key after the key file was lost (``server-key-recover``: no
# server key is left to sign it; docs/format.md §8.2).
LOCAL_ACTIONS = frozenset({"unlock", "unlock-failed", "server-key-recover"})

# Actions signed by a key that is not (yet) an active engineer's: the first admin's, the enrolling one's.
NOT_YET_ACTIVE = frozenset({"vault-init", "enroll"})
_NOT_YET_ACTIVE = NOT_YET_ACTIVE


def check_still_current(status: str | None, generation: int | None, key_generation: int) -> None:
    """On PostgreSQL (read committed), a transaction that checked its engineer's certificate
    may reach the head lock after an admin removed them or rotated their keys: its event would
    then be signed (or, on the team server, carry a request signed) outside the key's lifetime
    and fail verification for good. Abort it instead (retried as a concurrent change, the retry
    is refused with the usual error). ``status``/``generation``: the engineer's row as read
    under the head lock; ``key_generation``: the one the unit checked."""
    if status != ACTIVE or generation != key_generation:
        raise ConcurrentChange("the engineer's keys changed while this ran: nothing was changed")


class LockedHead(NamedTuple):
    """The audit head as ``lock_head`` read it, and what was committed when its lock was granted."""

    head: m.AuditHead | None  # None: the chain is empty
    after: int | None  # the head event's time (µs)
    status: str | None  # the engineer's status and key generation (None: no such engineer)
    generation: int | None
    server_keyed: bool  # the vault has a server key (it went to the team server)


def lock_head(s: Session, engineer_id: int | None) -> LockedHead:
    """Lock the audit head (``FOR UPDATE`` on PostgreSQL), then read, in a statement of its own,
    its event's time, the engineer's row and whether a server key exists.

    Two statements, not one: on PostgreSQL (read committed) a statement that waited for the
    lock re-checks the locked row only; the rows it joined are those it read before waiting.
    Joined to the lock, the head's event would read as missing (its time unknown, so a writer
    whose clock is behind would backdate its event) and the engineer as they were before an
    admin removed them. The second statement reads what was committed when the lock was granted."""
    locked = select(m.AuditHead).where(m.AuditHead.id == 1).with_for_update()
    head = s.execute(locked.execution_options(populate_existing=True)).scalar_one_or_none()
    at = select(m.AuditEvent.at_us).where(m.AuditEvent.seq == (head.seq if head is not None else -1))
    engineer = select(m.Engineer.status, m.Engineer.key_generation).where(m.Engineer.id == engineer_id)
    found = s.execute(
        select(
            at.scalar_subquery(),
            engineer.with_only_columns(m.Engineer.status).scalar_subquery(),
            engineer.with_only_columns(m.Engineer.key_generation).scalar_subquery(),
            select(m.ServerKey.version).limit(1).scalar_subquery(),
        )
    ).one()
    return LockedHead(head, found[0], found[1], found[2], found[3] is not None)


def us(value: dt.datetime) -> int:
    return int(value.timestamp() * 1_000_000)


def from_us(value: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(value / 1_000_000, dt.UTC)


class Journal:
    """Appending events to the audit chain.

    It computes the chain (sequence, previous hash, event hash) and writes the rows; what
    needs a key is the keyholder's: the encrypted details come from ``audit_keys``
    (``vault/keyholder/auditkeys.py``) and the signature from the acting engineer's key
    (``keys``), handed over in-process (the seam the team server replaces with signed
    requests and server checkpoints)."""

    def __init__(self, core: Core, keys: Keys, trust: Trust, audit_keys: AuditKeys) -> None:
        self.core = core
        self.keys = keys
        self.trust = trust
        self.audit_keys = audit_keys

    def append(
        self,
        s: Session,
        action: str,
        *,
        client_id: int | None = None,
        secret_id: int | None = None,
        details: dict[str, Any] | None = None,
        public: dict[str, Any] | None = None,
        actor: EngineerRecord | None = None,
        sign: bool = True,
        seed: bytes | None = None,
    ) -> m.AuditEvent:
        """Append one event in the caller's transaction (it commits with the change)."""
        info = self.core.info(s)
        if actor is None and sign:
            actor = s.get(m.Engineer, self.keys.me().engineer_id)
        # The head (locked on PostgreSQL), then its event's time and the actor's status and key
        # generation as committed when the lock was granted (``lock_head``).
        found = lock_head(s, actor.id if actor is not None else None)
        if found.head is None:
            head, after = m.AuditHead(id=1, seq=0, hash=chain.GENESIS), None
            s.add(head)
            s.flush()
        else:
            head, after = found.head, found.after
            if found.server_keyed and action not in LOCAL_ACTIONS:
                key = getattr(self.core, "server_key", None)
                if key is None or not sign or actor is None:
                    raise ConfigurationError(
                        "this vault has a team server, which keeps its audit log: an embedded append would not verify",
                        hint="engineers use the team server (credvault --server URL); an admin works on the server's "
                        "host with its key file (credvault --db URL --server-key FILE ...)",
                    )
                from vault.authority.local_events import append_local, local_journal

                request_id = secrets.token_bytes(16)
                sealed = None
                if details is not None:
                    found_client = s.get(m.Client, client_id)
                    assert found_client is not None
                    target: m.Client = found_client

                    def sealed() -> tuple[int, bytes]:
                        return self.audit_keys.seal_request_details(s, target, details, request_id, action)

                return append_local(
                    local_journal(self.core, key), s, action, actor=actor, seed=seed or self.keys.me().signing_seed,
                    request_id=request_id, sealed=sealed, client_id=client_id, secret_id=secret_id, public=public,
                )  # fmt: skip
            if sign and actor is not None and action not in _NOT_YET_ACTIVE and s.get_bind().dialect.name != "sqlite":
                check_still_current(found.status, found.generation, actor.key_generation)
        audit_key = None
        if details is not None:
            if client_id is None:
                raise ValueError("encrypted details need a client")
            client = s.get(m.Client, client_id)
            assert client is not None
            audit_key = self.audit_keys.current_audit_key(s, client)
        values = self._event_values(
            info.vault_id,
            head.seq + 1,
            head.hash,
            action,
            actor,
            client_id,
            secret_id,
            details,
            audit_key,
            public,
            (seed or self.keys.me().signing_seed) if sign else None,
            after,
        )
        event = m.AuditEvent(**values)
        s.add(event)
        head.seq, head.hash = event.seq, event.hash
        return event

    def _event_values(
        self,
        vault_id: bytes,
        seq: int,
        prev_hash: bytes,
        action: str,
        actor: EngineerRecord | None,
        client_id: int | None,
        secret_id: int | None,
        details: dict[str, Any] | None,
        audit_key: tuple[int, bytes] | None,
        public: dict[str, Any] | None,
        seed: bytes | None,
        after: int | None = None,
    ) -> dict[str, Any]:
        """The columns of a new event: encrypted details, chain hash, and the signature when
        ``seed`` is given; dated no earlier than ``after`` (the time of the event it follows)."""
        if seed is not None and actor is not None and actor.signing_public is None:
            raise ValueError("the actor has no signing key")
        details_blob = key_version = None
        if details is not None:
            assert client_id is not None and audit_key is not None
            key_version = audit_key[0]
            raw = json.dumps(details, sort_keys=True).encode("utf-8")
            details_blob = self.audit_keys.encrypt_details(audit_key, raw, client_id, seq, action)
        values: dict[str, Any] = {
            "seq": seq,
            "at_us": us(self.core.clock()) if after is None else max(us(self.core.clock()), after),
            "engineer_id": actor.id if actor else None,
            "key_generation": actor.key_generation if actor else 0,
            "action": action,
            "client_id": client_id,
            "secret_id": secret_id,
            "key_version": key_version,
            "details_blob": details_blob,
            "details_json": json.dumps(public, sort_keys=True) if public else None,
            "prev_hash": prev_hash,
        }
        values["hash"] = chain.event_hash(
            vault_id,
            seq,
            values["at_us"],
            values["engineer_id"],
            values["key_generation"],
            action,
            client_id,
            secret_id,
            key_version,
            details_blob,
            values["details_json"],
            prev_hash=prev_hash,
        )
        values["signature"] = chain.sign_event(seed, vault_id, seq, values["hash"]) if seed is not None else None
        return values
