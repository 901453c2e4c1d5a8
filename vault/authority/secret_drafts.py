"""Secrets' writes through the team server, where the database is: drafts, reservations, commits.

docs/server.md §4 rule 2 (the values: ``secret_draft_requests.py``). The checks and rows are
the in-process secrets authority's (``SecretAuthority``: who calls, before any row of the
client or the secret is read; the client and the secret by their tags; the draft of the
answer; ``versions.write_key`` / ``store_version``), driven in another order:

* ``add_draft`` — one write unit: the caller, the client, the name tag still free, expired
  reservations deleted, the next id taken from the secrets' sequence (PostgreSQL:
  ``nextval``; SQLite: the AUTOINCREMENT counter moved on, so the id is never handed out
  again) and reserved for the caller; the draft of the new secret (current version 0, dated
  by the reservation) with the client key to write under. No event: nothing of a secret is
  released.
* ``update_draft`` — one write unit: the caller, the secret, its current version (password
  blob withheld) and the client key to write under; the ``secret-view`` event (format 3,
  the server's facts: ``fields`` public-only and the version shown) is appended in the same
  unit, since the draft releases the version's metadata. Its digest is over the rows as
  stored (the data key layered); the server removes the layer from the one version after
  the commit (vault/server/secret_routes.py).
* ``add`` / ``update`` — the commit, one write unit: the request's nonce first; the caller;
  the target (an update: the secret's row locked, other engineers' exclusive holds refused,
  each honoured only if its event vouches for it); the reservation (an add: the caller's,
  unexpired, then deleted); the draft recomputed exactly as the draft route made it and its
  digest compared with the commit's (``STALE_DRAFT``, 409, nothing written); the keyholder's
  ``NewVersion`` stored (its number and key version checked by ``store_version``; on the
  server, its data key under the server's layer, ``WriteLayer``: no database copy opens it); the
  ``secret-create`` / ``secret-update`` event (format 3, its facts public: the kind, the
  version, whether the password changed); the commit; then the answer.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping
from typing import Protocol

from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from vault.authority import checkout_events, versions
from vault.authority.checkout_events import ServerEvent, UnitCore
from vault.authority.checkout_reads import CallerRead
from vault.authority.requests import MISSING_TARGET, NewVersion, WriteKey
from vault.authority.secret_draft_requests import (
    RESERVATION_SECONDS,
    RESERVED_SECRET_ID,
    STALE_DRAFT,
    WITHHELD,
    AddCommit,
    AddDraftRequest,
    SecretDraft,
    UpdateCommit,
    UpdateDraftRequest,
    draft_digest,
)
from vault.authority.secret_requests import CREATE, NAME_TAKEN, UPDATE, VIEW, SecretRows, SecretTarget
from vault.authority.secrets import VIEW_KEPT, VIEW_PUBLIC_ONLY, SecretAuthority, checked_kind, checked_target
from vault.authority.serverjournal import ServerJournal
from vault.errors import AlreadyExists, CheckoutConflict, ConcurrentChange, IntegrityError, InvalidInput, NotFound
from vault.storage import models as m
from vault.storage import rows
from vault.storage.rows import SecretRow, VersionRow

NEXT_ID_PG = text("SELECT nextval(pg_get_serial_sequence('secrets', 'id'))")
BUMP_ID_SQLITE = text("UPDATE sqlite_sequence SET seq = seq + 1 WHERE name = 'secrets' RETURNING seq")
FIRST_ID_SQLITE = text(
    "INSERT INTO sqlite_sequence (name, seq) SELECT 'secrets', coalesce(max(id), 0) + 1 FROM secrets RETURNING seq"
)
DIGEST_BYTES = 32  # a draft digest: SHA-256


def _as_sent(stored: VersionRow, new: NewVersion) -> VersionRow:
    """The version stored, as the keyholder sent it (its data key without the server's layer:
    the keyholder's own ciphertext, which it checks it was given back)."""
    return stored._replace(wrapped_dek=new.wrapped_dek)


def _checked_digest(value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != DIGEST_BYTES:
        raise InvalidInput("the commit carries no draft digest")
    return value


class WriteLayer(Protocol):
    """The team server's layer, put on a new version's data key in the unit that stores it."""

    def __call__(self, s: Session, vault_id: bytes, client_id: int, secret_id: int, new: NewVersion) -> NewVersion: ...


class SecretDraftAuthority:
    """Drafts and commits of secrets' writes, over the secrets authority's checks and rows;
    ``layer``: the server's layer on what is stored (None: stored as the keyholder sent it)."""

    def __init__(self, secrets: SecretAuthority, layer: WriteLayer | None = None) -> None:
        self.secrets, self.layer = secrets, layer
        self.store, self.checks, self.clock = secrets.store, secrets.checks, secrets.clock

    def __repr__(self) -> str:
        return "SecretDraftAuthority()"

    # -- add ----------------------------------------------------------------------------------

    def add_draft(self, request: AddDraftRequest) -> SecretDraft:
        """Reserve the new secret's id and draft its first version (module docstring)."""
        if not isinstance(request, AddDraftRequest):
            raise InvalidInput("not an add draft")
        target, kind = checked_target(request.target), checked_kind(request.kind)
        a = self.secrets
        with self.store.transaction() as s:
            caller = a._authorise(s, target)
            client = a._client(s, target)
            self._name_free(s, client.id, target.name_tag)
            now = self.clock()
            s.execute(delete(m.IdReservation).where(m.IdReservation.expires_at <= now))
            secret_id = self._next_secret_id(s)
            expires = now + dt.timedelta(seconds=RESERVATION_SECONDS)
            s.add(m.IdReservation(kind=RESERVED_SECRET_ID, id=secret_id, engineer_id=caller.me.id, reserved_at=now,
                                  expires_at=expires))  # fmt: skip
            draft, _ = self._add_rows(s, caller, target, client, secret_id, kind, now)
        return SecretDraft(draft, 1, draft_digest(draft, 1), 0, expires)

    def add(self, request: AddCommit, event: ServerEvent) -> SecretRows:
        """Insert the reserved secret with the keyholder's first version, if the draft still holds."""
        if not isinstance(request, AddCommit):
            raise InvalidInput("not an add commit")
        target, kind = checked_target(request.target), checked_kind(request.kind)
        digest = _checked_digest(request.draft_digest)
        a = self.secrets
        with self.store.transaction() as s:
            if event.nonce is not None:
                event.nonce(s)  # kept only if the unit commits
            caller = a._authorise(s, target)
            client = a._client(s, target)
            now = self.clock()
            held = s.get(m.IdReservation, (RESERVED_SECRET_ID, request.secret_id), with_for_update=True)
            if held is None or held.engineer_id != caller.me.id or held.expires_at <= now:
                # the commit deleted its reservation: a retry of it is answered from its event
                again = self._added_again(s, event, caller, target, client, request)
                if again is not None:
                    return again
                raise ConcurrentChange(STALE_DRAFT)
            self._name_free(s, client.id, target.name_tag)
            draft, write = self._add_rows(s, caller, target, client, request.secret_id, kind, held.reserved_at)
            if draft_digest(draft, 1) != digest:
                raise ConcurrentChange(STALE_DRAFT)
            s.delete(held)
            secret = m.Secret(id=request.secret_id, client_id=client.id, name_tag=target.name_tag, kind=kind,
                              current_version=0, must_change=False, created_at=now, updated_at=now)  # fmt: skip
            s.add(secret)
            s.flush()
            stored = versions.store_version(s, self.checks, write, request.new_version, client_id=client.id,
                                            secret_id=secret.id, created_by=caller.me.id, now=now,
                                            clear_must_change=False,
                                            layer=self._layer(s, caller, client.id, secret.id))  # fmt: skip
            seq = self._append(
                s, event, CREATE, caller, client.id, secret.id, {"kind": kind, "version": stored.version}
            )
        row, sent = SecretRow(secret.id, target.name_tag, stored.version, False), _as_sent(stored, request.new_version)
        return dataclasses.replace(draft, seq=seq, secret=row, version=sent, created_at=now, updated_at=now)

    def _add_rows(
        self, s: Session, caller: CallerRead, target: SecretTarget, client: m.Client, secret_id: int, kind: str,
        at: dt.datetime,
    ) -> tuple[SecretRows, WriteKey]:  # fmt: skip
        """The draft of the new secret ``secret_id`` (not stored: version 0, dated ``at``)."""
        write = self._write_key(s, caller, client, 0)
        secret = m.Secret(id=secret_id, client_id=client.id, name_tag=target.name_tag, kind=kind, current_version=0,
                          must_change=False, created_at=at, updated_at=at)  # fmt: skip
        return self.secrets._draft(s, caller, target, client, secret, None, write.sealed, ()), write

    @staticmethod
    def _name_free(s: Session, client_id: int, name_tag: bytes) -> None:
        taken = select(m.Secret.id).where(m.Secret.client_id == client_id, m.Secret.name_tag == name_tag)
        if s.scalars(taken).first() is not None:
            raise AlreadyExists(NAME_TAKEN)

    @staticmethod
    def _next_secret_id(s: Session) -> int:
        """An id of the secrets' sequence, never handed out again (module docstring)."""
        conn = rows.connection(s)
        if conn.dialect.name == "sqlite":
            bumped = conn.execute(BUMP_ID_SQLITE).scalar()
            return int(bumped if bumped is not None else conn.execute(FIRST_ID_SQLITE).scalar_one())
        return int(conn.execute(NEXT_ID_PG).scalar_one())

    # -- update -------------------------------------------------------------------------------

    def update_draft(self, request: UpdateDraftRequest, event: ServerEvent) -> SecretDraft:
        """The current version (its password withheld, unless the request keeps it: then on record
        as a view of the password, ``VIEW_KEPT``) and the key to write under; ``secret-view``.
        The digest is over the draft as the commit recomputes it (the password withheld)."""
        if not isinstance(request, UpdateDraftRequest) or not isinstance(request.keep_password, bool):
            raise InvalidInput("not an update draft")
        target = checked_target(request.target)
        a = self.secrets
        with self.store.transaction() as s:
            if event.nonce is not None:
                event.nonce(s)
            caller = a._authorise(s, target)
            client, secret = a._target(s, target)
            draft, write = self._update_rows(s, caller, target, client, secret)
            shown = VIEW_PUBLIC_ONLY
            if request.keep_password:  # the password's blob too: the view is of the password, on record so
                stored = self.secrets._version(s, secret, secret.current_version)
                shown = VIEW_KEPT
            facts = {"fields": shown, "version": secret.current_version}
            seq = self._append(s, event, VIEW, caller, client.id, secret.id, facts)
        digest = draft_digest(draft, write.next_version)
        if request.keep_password:
            assert draft.version is not None
            draft = dataclasses.replace(draft, version=draft.version._replace(password_blob=stored.password_blob))
        return SecretDraft(draft, write.next_version, digest, seq, None)

    def update(self, request: UpdateCommit, event: ServerEvent) -> SecretRows:
        """Store the keyholder's next version, if the draft still holds (module docstring)."""
        if not isinstance(request, UpdateCommit) or not isinstance(request.password_changed, bool):
            raise InvalidInput("not an update commit")
        target = checked_target(request.target)
        kind = None if request.kind is None else checked_kind(request.kind)
        digest = _checked_digest(request.draft_digest)
        a = self.secrets
        with self.store.transaction() as s:
            if event.nonce is not None:
                event.nonce(s)
            caller = a._authorise(s, target)
            client, secret = a._target(s, target, lock=True)
            # a retry (under the secret's lock: a first copy in flight has committed) is answered again
            again = self._updated_again(s, event, caller, target, client, secret, request)
            if again is not None:
                return again
            others = self.checks.exclusive_holds(s, client, secret, caller.me.id)  # checked under the lock
            if others:
                until = others[0].expires_at.isoformat(timespec="minutes")
                raise CheckoutConflict(f"checked out exclusively by another engineer until {until}")
            if secret.id != request.secret_id:
                raise ConcurrentChange(STALE_DRAFT)
            draft, stored, seq = self._store_next(s, event, caller, target, client, secret, request.new_version,
                                                  digest, request.password_changed)  # fmt: skip
            if kind is not None:  # after the draft is recomputed: the draft showed the kind as it was
                secret.kind = kind
            answer = dataclasses.replace(draft, seq=seq, kind=secret.kind, secret=a._secret_row(secret),
                                         version=_as_sent(stored, request.new_version),
                                         updated_at=secret.updated_at)  # fmt: skip
        return answer

    def store_drafted(self, s: Session, event: ServerEvent, target: SecretTarget, new: object, digest: object) -> int:
        """A check-in's new value through the server, in the check-in's unit (its caller checked,
        the secret's row locked and the holds checked there): the version drafted by
        ``update_draft`` stored as an update that changes the password; its number."""
        a = self.secrets
        caller = a._authorise(s, target)
        client, secret = a._target(s, target, lock=True)
        _, stored, _ = self._store_next(s, event, caller, target, client, secret, new, _checked_digest(digest), True)
        return stored.version

    def _store_next(
        self, s: Session, event: ServerEvent, caller: CallerRead, target: SecretTarget, client: m.Client,
        secret: m.Secret, new: object, digest: bytes, password_changed: bool,
    ) -> tuple[SecretRows, VersionRow, int]:  # fmt: skip
        """The draft recomputed (``STALE_DRAFT`` if its digest is not ``digest``), ``new`` stored
        as the next version (layered on the server), the ``secret-update`` event: (the draft, the
        version stored, the event's seq)."""
        draft, write = self._update_rows(s, caller, target, client, secret)
        if draft_digest(draft, write.next_version) != digest:
            raise ConcurrentChange(STALE_DRAFT)
        now = self.clock()
        stored = versions.store_version(s, self.checks, write, new, client_id=client.id, secret_id=secret.id,
                                        created_by=caller.me.id, now=now, clear_must_change=password_changed,
                                        layer=self._layer(s, caller, client.id, secret.id))  # fmt: skip
        set_committed_value(secret, "current_version", stored.version)
        set_committed_value(secret, "updated_at", now)
        if password_changed:
            set_committed_value(secret, "must_change", False)
        facts = {"version": stored.version, "password_changed": password_changed}
        return draft, stored, self._append(s, event, UPDATE, caller, client.id, secret.id, facts)

    def _update_rows(
        self, s: Session, caller: CallerRead, target: SecretTarget, client: m.Client, secret: m.Secret
    ) -> tuple[SecretRows, WriteKey]:
        """The draft of the next version of ``secret``: its current version, password blob withheld."""
        current = self.secrets._version(s, secret, secret.current_version)
        write = self._write_key(s, caller, client, secret.current_version)
        draft = self.secrets._draft(s, caller, target, client, secret, current, write.sealed, ())
        assert draft.version is not None
        return dataclasses.replace(draft, version=draft.version._replace(password_blob=WITHHELD)), write

    # -- a retry ---------------------------------------------------------------------------------

    def _added_again(
        self, s: Session, event: ServerEvent, caller: CallerRead, target: SecretTarget, client: m.Client,
        request: AddCommit,
    ) -> SecretRows | None:  # fmt: skip
        """docs/server.md §3 "Retries are not replays": the answer of an add whose ``secret-create``
        this request committed already, rebuilt from that event and the rows (the draft as the
        first copy made it, with the version stored as the keyholder sent it); None if there is
        none. Another body under the same request id is 409 (``checkout_events.answered``)."""
        conn = rows.connection(s)
        found = checkout_events.answered(conn, caller.me.id, event, CREATE, ("kind", "version"))
        if found is None:
            return None
        secret = s.get(m.Secret, request.secret_id)
        if secret is None or secret.client_id != client.id or secret.name_tag != target.name_tag:
            raise NotFound(MISSING_TARGET)  # removed since the first copy added it
        number, kind = found.facts["version"], found.facts["kind"]
        if type(number) is not int or not isinstance(kind, str):
            raise InvalidInput("the event of this request is not an add")
        stored = self.secrets._version(s, secret, number)
        at = secret.created_at
        draft, _ = self._add_rows(s, caller, target, client, secret.id, kind, at)
        row = VersionRow(stored.version, stored.key_version, stored.wrapped_dek, stored.password_blob,
                         stored.metadata_blob)  # fmt: skip
        added = SecretRow(secret.id, target.name_tag, number, False)
        return dataclasses.replace(draft, seq=found.seq, secret=added, version=_as_sent(row, request.new_version),
                                   created_at=at, updated_at=at)  # fmt: skip

    def _updated_again(
        self, s: Session, event: ServerEvent, caller: CallerRead, target: SecretTarget, client: m.Client,
        secret: m.Secret, request: UpdateCommit,
    ) -> SecretRows | None:  # fmt: skip
        """As ``_added_again``, for an update whose ``secret-update`` this request committed: the
        draft of the version before it (its password withheld; the key of the version stored if
        that one was pruned since), with the version stored, the secret at that version, its kind
        and times as read now."""
        conn = rows.connection(s)
        found = checkout_events.answered(conn, caller.me.id, event, UPDATE, ("version", "password_changed"))
        if found is None:
            return None
        number, changed = found.facts["version"], found.facts["password_changed"]
        if type(number) is not int or number < 2 or not isinstance(changed, bool) or secret.id != request.secret_id:
            raise InvalidInput("the event of this request is not an update of this secret")
        stored = self.secrets._version(s, secret, number)
        shown = s.get(m.SecretVersion, (secret.id, number - 1)) or stored
        write = self._write_key(s, caller, client, number - 1)
        draft = self.secrets._draft(s, caller, target, client, secret, shown, write.sealed, ())
        row = VersionRow(stored.version, stored.key_version, stored.wrapped_dek, stored.password_blob,
                         stored.metadata_blob)  # fmt: skip
        updated = SecretRow(secret.id, secret.name_tag, number, False if changed else bool(secret.must_change))
        return dataclasses.replace(draft, seq=found.seq, secret=updated, version=_as_sent(row, request.new_version))

    # -- shared ---------------------------------------------------------------------------------

    def _layer(
        self, s: Session, caller: CallerRead, client_id: int, secret_id: int
    ) -> Callable[[NewVersion], NewVersion] | None:
        layer = self.layer
        if layer is None:
            return None
        return lambda new: layer(s, caller.vault_id, client_id, secret_id, new)

    def _write_key(self, s: Session, caller: CallerRead, client: m.Client, current: int) -> WriteKey:
        write = versions.write_key(s, self.checks, caller, client, current)
        if write.sealed is None:
            raise IntegrityError(f"client key version {write.key_version} has no record")
        return write

    def _append(
        self, s: Session, event: ServerEvent, action: str, caller: CallerRead, client_id: int, secret_id: int,
        facts: Mapping[str, object],
    ) -> int:  # fmt: skip
        """The request's format-3 event, the server's facts public under its signature; its seq."""
        me = caller.me
        row = ServerJournal(UnitCore(self.clock), event.seal).append(
            s, action, event.request, engineer_id=me.id, key_generation=me.key_generation, client_id=client_id,
            secret_id=secret_id, public=dict(facts),
        )  # fmt: skip
        s.flush()
        return int(row.seq)
