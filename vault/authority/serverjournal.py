"""Appending a format-3 event: the engineer signed the request, the server signs the event.

docs/server.md §4 rule 1 and docs/format.md §8.2. The team server (step 4 of issue 14; until
then, tests and the benchmark in-process) appends, inside the unit of work of the change it
records, one event per action of a request it has verified (``httpsig.verify_request``):

* ``ServerSeal`` is the server's part: the server signing key (``ServerSigningKey``, from the
  key file) signs the hash the unit computed, under its version. Before the first signature
  of a unit it checks that this key is the one ``server_keys`` holds as the active version
  (a key file out of step with the database would write events no verifier believes);
* ``ServerJournal.append`` locks the audit head, dates the event no earlier than the one
  before it (as ``journal.Journal``; an event so dated more than ``EVENT_WINDOW`` after its
  request was made is refused, ``AuditUnavailable``: the chain would call it replayed),
  hashes it in format 3 over the request's id and digest,
  has the seal sign it and writes the row with the request's record
  (``eventrequest.RecordedRequest``: its signature and route, the body when kept).

The append is on every writing request's hot path, so it runs as Core statements compiled once
(``storage/prepared.py``), not through the ORM: the head locked (``FOR UPDATE``), then in a
statement of its own (``journal.lock_head`` says why) the head event's time, the engineer's row
and the seal's newest key's ``server_keys`` row as committed when the lock was granted (on
PostgreSQL the two statements travel in one round trip, ``prepared.pipelined``: the second still
runs after the first has the lock), then the insert and the head's update (a checkout hands them
to its caller, which sends them with its own write in one round trip: every round trip under
the head's lock is one more wait for every writer queued on it). The vault id
is the one the unit's caller read returned (``checkout_reads.unit_vault_id``), else it is read.

Nothing here opens a key of an engineer or a client: the details come sealed by the
keyholder (``details_blob``, ``key_version``) or public (``details_json``, the server's facts).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, bindparam, insert, select
from sqlalchemy.orm import Session

from vault.authority.checkout_reads import unit_vault_id
from vault.authority.journal import NOT_YET_ACTIVE, Core, check_still_current, us
from vault.authority.server_keys import ACTIVE
from vault.crypto import chain
from vault.crypto.serverkey import ServerKeyring, ServerSigningKey, SigningKeys, keyring_of
from vault.errors import AuditUnavailable, ConfigurationError, InvalidInput
from vault.storage import models as m
from vault.storage import rows
from vault.storage.prepared import Prepared, Step, pipelined
from vault.storage.rows import ENGINEERS, EVENTS, HEAD
from vault.wire.eventrequest import (
    EVENT_WINDOW,
    SERVER_ACTIONS,
    RecordedRequest,
    allows,
    operation_of,
    out_of_window,
    parse_sig,
)

_SERVER_KEYS: Table = m.ServerKey.__table__  # type: ignore[assignment]
_KEY_ROW = _SERVER_KEYS.c.version == bindparam("version")
# after the lock, in a statement of its own (``journal.lock_head``): what was committed when it was granted
_HEAD_SEQ = select(HEAD.c.seq).where(HEAD.c.id == 1).scalar_subquery()
_AFTER_LOCK = Prepared(
    select(
        select(EVENTS.c.at_us).where(EVENTS.c.seq == _HEAD_SEQ).scalar_subquery(),
        select(ENGINEERS.c.status).where(ENGINEERS.c.id == bindparam("me")).scalar_subquery(),
        select(ENGINEERS.c.key_generation).where(ENGINEERS.c.id == bindparam("me")).scalar_subquery(),
        select(_SERVER_KEYS.c.state).where(_KEY_ROW).scalar_subquery(),
        select(_SERVER_KEYS.c.signing_public).where(_KEY_ROW).scalar_subquery(),
    )
)
_ADD_EVENT = Prepared(insert(EVENTS), rows.EVENT_COLUMNS)


class ServerSeal:
    """The server signing key's signature over the events a unit appends (module docstring).

    ``keys``: one key, or the key file's ring during a rotation (``ServerKeyring``); each unit
    signs with the version ``server_keys`` holds as active (``active_key``), so that once an admin
    certifies the next version the server signs with it, without a restart."""

    def __init__(self, keys: SigningKeys) -> None:
        self.ring = keyring_of(keys)

    def __repr__(self) -> str:
        return f"ServerSeal({self.ring!r})"

    @property
    def key(self) -> ServerSigningKey:
        """The newest key the seal holds (a unit signs with ``check_active``'s)."""
        return self.ring.newest

    def check_active(self, s: Session) -> ServerSigningKey:
        """The key of the version ``server_keys`` holds as active, if the seal holds it (the same
        public key); else ``ConfigurationError``."""
        key = active_key(s, self.ring)
        if key is None:
            versions = ", ".join(str(k.version) for k in self.ring.keys)
            raise ConfigurationError(
                f"server key version {versions} is not the vault's active, certified server key",
                hint="an admin certifies it on the server's host (credvault --db URL --server-key FILE server "
                "certify FILE); after every copy of the old key file was lost: serve recover-key, then "
                "server certify FILE --recover (docs/deployment.md §8)",
            )
        return key


def active_key(s: Session, ring: ServerKeyring) -> ServerSigningKey | None:
    """The newest key of ``ring`` that ``server_keys`` holds as the active version (same public
    key), or None. Certifying a version retires the one before it, so this is the newest
    certified version the ring holds."""
    for key in ring.newest_first():
        row = s.get(m.ServerKey, key.version)
        if row is not None and row.state == ACTIVE and bytes(row.signing_public) == key.public:
            return key
    return None


class ServerJournal:
    """Appends format-3 events in the caller's unit of work (module docstring)."""

    def __init__(self, core: Core, seal: ServerSeal) -> None:
        self.core, self.seal = core, seal

    def __repr__(self) -> str:
        return f"ServerJournal({self.seal!r})"

    def append(
        self,
        s: Session,
        action: str,
        request: RecordedRequest,
        *,
        engineer_id: int,
        key_generation: int,
        client_id: int | None = None,
        secret_id: int | None = None,
        key_version: int | None = None,
        details_blob: bytes | None = None,
        public: dict[str, Any] | None = None,
    ) -> m.AuditEvent:
        """Append one event of ``request`` (an action its route appends); the row written."""
        target = (client_id, secret_id, key_version, details_blob)
        return m.AuditEvent(**self.append_values(s, action, request, engineer_id, key_generation, target, public))

    def append_values(
        self,
        s: Session,
        action: str,
        request: RecordedRequest,
        engineer_id: int,
        key_generation: int,
        target: tuple[int | None, int | None, int | None, bytes | None],
        public: dict[str, Any] | None,
        writes: list[Step] | None = None,
        leading: Sequence[Step] = (),
    ) -> dict[str, Any]:
        """``append`` on the hot path: the row's values, no ORM object (a checkout needs its seq).
        ``target``: (client id, secret id, audit key version, sealed details). ``writes``: the
        event's insert and the head's move are added to it, not run (the caller runs them, with
        what else it writes, in one round trip: ``prepared.pipelined``); the event is not in the
        database until then. ``leading``: statements of the unit sent first, in the head lock's
        round trip (writes that need no seq)."""
        lines = parse_sig(request.sig)
        operation = operation_of(lines.path) if lines is not None else None
        if operation is None or not allows(operation, action):
            raise InvalidInput("the request's route does not append this action")
        if (target[3] is None) != (target[2] is None):
            raise InvalidInput("sealed details name the audit key version they are sealed under")
        details = json.dumps(public, sort_keys=True) if public else None
        return self._write(s, action, request, engineer_id, key_generation, target, details, writes, leading)

    def append_server_event(self, s: Session, action: str, *, engineer_id: int, public: dict[str, int]) -> m.AuditEvent:
        """Append one event the server makes on its own (``SERVER_ACTIONS``: ``auth-refused``):
        no request, no key generation (0), no client; ``public`` its facts. Whatever the engineer's
        state: it is about them, not by them (docs/format.md §8.2, the verifier's
        ``server_event_problem``)."""
        if action not in SERVER_ACTIONS:
            raise InvalidInput("not an event the server appends on its own")
        details = json.dumps(public, sort_keys=True)
        return m.AuditEvent(**self._write(s, action, None, engineer_id, 0, (None, None, None, None), details))

    def _write(
        self,
        s: Session,
        action: str,
        request: RecordedRequest | None,
        engineer_id: int,
        key_generation: int,
        target: tuple[int | None, int | None, int | None, bytes | None],
        details_json: str | None,
        writes: list[Step] | None = None,
        leading: Sequence[Step] = (),
    ) -> dict[str, Any]:
        """Lock the head, hash event n+1 in format 3, sign it, write it (``request`` kept, if any;
        ``writes``: add the writes to it instead); the row's values (module docstring)."""
        client_id, secret_id, key_version, details_blob = target
        s.flush()  # what the unit added through the ORM (an enrolment's engineer) is written before its event
        conn = rows.connection(s)
        vault_id = unit_vault_id(s)
        if vault_id is None:
            vault_id = self.core.info(s).vault_id
        newest = self.seal.ring.newest
        # the lock, then (its own statement, in the same round trip) what was committed when it was granted
        sent = [*leading, (rows.HEAD_FOR_UPDATE, {}), (_AFTER_LOCK, {"me": engineer_id, "version": newest.version})]
        *_, locked, found = pipelined(conn, sent)
        if locked:
            head_seq, head_hash = int(locked[0][0]), bytes(locked[0][1])
        else:  # an empty chain: its head row is made here, locked by this unit's insert
            s.add(m.AuditHead(id=1, seq=0, hash=chain.GENESIS))
            s.flush()
            head_seq, head_hash = 0, chain.GENESIS
        after, status, generation, state, public = found[0]
        # the engineer as of the head lock: removed or re-keyed since the request was checked, no
        # event (an enrolment's engineer is not active yet: its unit holds their row's lock); the
        # server's own events are about an engineer, not by one: whatever their state
        if locked and request is not None and action not in NOT_YET_ACTIVE:
            check_still_current(status, generation, key_generation)
        # the key signs only as the version ``server_keys`` holds active (a rotation's older one: read again)
        key = newest if state == ACTIVE and public is not None and bytes(public) == newest.public else None
        key = key if key is not None else self.seal.check_active(s)
        seq, now = head_seq + 1, us(self.core.clock())
        at_us = now if after is None else max(now, after)
        if request is not None and out_of_window(at_us, request.sig):
            # dated at the event before it, far ahead of this clock (a clock stepped back, servers out
            # of step): the event would keep a request the chain refuses as replayed; nothing written
            raise AuditUnavailable(
                f"the event would be dated more than {EVENT_WINDOW} s from its request (this server's clock "
                "behind the audit log's last event, or an old request) and would not verify",
                hint="set the clocks of the team servers and of this host right (NTP), then retry",
            )
        request_id = request.request_id if request is not None else None
        request_digest = request.digest if request is not None else None
        digest = chain.event_hash_v3(
            vault_id,
            seq,
            at_us,
            engineer_id,
            key_generation,
            action,
            client_id,
            secret_id,
            key_version,
            details_blob,
            details_json,
            request_id=request_id,
            request_digest=request_digest,
            prev_hash=head_hash,
        )
        values = {
            "seq": seq,
            "at_us": at_us,
            "engineer_id": engineer_id,
            "key_generation": key_generation,
            "action": action,
            "client_id": client_id,
            "secret_id": secret_id,
            "key_version": key_version,
            "details_blob": details_blob,
            "details_json": details_json,
            "prev_hash": head_hash,
            "hash": digest,
            "signature": key.sign_event(vault_id, seq, digest),
            "request_id": request_id,
            "request_digest": request_digest,
            "request_sig": request.sig if request is not None else None,
            "request_body": request.body if request is not None else None,
            "server_key_version": key.version,
        }
        steps: list[Step] = [(_ADD_EVENT, values), (rows.MOVE_HEAD, {"new_seq": seq, "new_hash": digest})]
        if writes is not None:
            writes.extend(steps)
        else:
            for prepared, step in steps:
                prepared.run(conn, step)
        return values
