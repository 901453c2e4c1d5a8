"""The grant ledger: which grant of an (engineer, client) counts, and what the signed
audit log says about it (issue 12, items 4 and 7).

A grant row is an entry of a per-(engineer, client) ledger: its admin signature covers
its position ``seq`` (one more than the entry it replaces) and the sequence number of
the audit event that recorded it (docs/format.md §5). Only the newest entry that
verifies counts; an older one never stands in for it. Revocation is signed too, and any
mark of revocation on a row keeps it revoked.

Rows alone cannot prove that nothing newer existed: a writer of the database can delete
the newest entry, or clear every column of a revocation. So every operation that
*hands out* a key (a client-key rotation sealing the new version to the grantees) or
decides *exposure* (engineer removal) also asks the audit log, whose grant, revoke and
rotation events are hash-chained and signed by the admin who acted: the entry must be
the last word of the log about that engineer and client. Deleting the later ``revoke``
or ``grant`` event breaks the chain, which ``audit verify`` reports (and removal, when
the chain does not verify, rotates every client). A checkout only reads the ledger: the
revoked engineer's sealed copies are deleted at revocation, and only the operations
above make new ones.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, exists, func, select
from sqlalchemy.orm import Session, aliased

from vault.authority.server_keys import stored_rows
from vault.crypto import blobs, chain
from vault.errors import VaultError
from vault.keyholder.auditchain import ServerKeys
from vault.keyholder.serverkeys import verified_server_keys
from vault.service import auditverify
from vault.service.core import ROLE_ADMIN, epoch, is_revoked
from vault.service.rows import GRANT_ORDER, EngineerRecord, GrantRecord
from vault.storage import models as m

if TYPE_CHECKING:
    from vault.authority.journal import Journal
    from vault.keyholder.grant_sweep import GrantSweepKeyholder
    from vault.keyholder.signers import Signers
    from vault.keyholder.trust import Trust
    from vault.service.core import Core


GRANT_ACTIONS = ("grant", "revoke")
ROTATE_ACTION = "client-key-rotate"


@dataclass(frozen=True)
class Word:
    """One verified grant or revoke event about an engineer and a client."""

    seq: int
    at_us: int
    action: str
    by_admin: bool
    until: int | None
    grant_id: int | None


@dataclass
class GrantHistory:
    """What the verified audit log says about grants, by (engineer name, client id)."""

    words: dict[tuple[str, int], list[Word]] = field(default_factory=dict)
    doubts: dict[int, list[int]] = field(default_factory=dict)  # client -> seqs of events that did not verify or open
    rotations: dict[int, dict[int, tuple[int, int]]] = field(default_factory=dict)  # client -> version -> (seq, at_us)
    last_missing: int | None = None  # the newest sequence number missing from the log (a deleted event), if any

    def add(
        self, seq: int, at_us: int, client_id: int, action: str, by_admin: bool, details: dict[str, Any] | None
    ) -> None:
        """One grant, revoke or rotation event about ``client_id`` whose hash and signature verified,
        with its opened details (None: they did not open, a doubt about the client from ``seq``)."""
        if details is None:
            self.doubts.setdefault(client_id, []).append(seq)
            return
        if action == ROTATE_ACTION:
            version = details.get("to_version")
            if by_admin and isinstance(version, int):
                self.rotations.setdefault(client_id, {})[version] = (seq, at_us)
            return
        name, until, grant_id = details.get("engineer"), details.get("until"), details.get("grant")
        if not isinstance(name, str):
            self.doubts.setdefault(client_id, []).append(seq)
            return
        word = Word(
            seq,
            at_us,
            action,
            by_admin,
            until if isinstance(until, int) else None,
            grant_id if isinstance(grant_id, int) else None,
        )
        self.words.setdefault((name, client_id), []).append(word)

    def last(self, name: str, client_id: int) -> Word | None:
        words = self.words.get((name, client_id))
        return words[-1] if words else None

    def clients_of(self, name: str) -> set[int]:
        return {client for who, client in self.words if who == name}

    def doubted_after(self, client_id: int, seq: int) -> bool:
        """Whether an event after ``seq`` about the client did not verify, or any event after
        ``seq`` is missing (a deleted event could have been about this client)."""
        if self.last_missing is not None and self.last_missing > seq:
            return True
        return any(bad > seq for bad in self.doubts.get(client_id, ()))

    def confirms(self, name: str, client_id: int, grant: GrantRecord) -> str | None:
        """None if ``grant`` is the log's last word about ``name`` and the client, else why not."""
        last = self.last(name, client_id)
        if last is None:
            return "the audit log has no grant event for it"
        if last.action != "grant":
            return "the audit log records a later revocation"
        if not last.by_admin:
            return "its audit event is not signed by an admin"
        if grant.event_seq is not None and last.seq != grant.event_seq:
            return "the audit log records a later grant or revocation"
        if grant.event_seq is None and last.until != grant.until:
            return "it does not match the last grant in the audit log"
        if self.doubted_after(client_id, last.seq):
            return "a later event of the audit log is missing, or a later grant or revoke event does not verify"
        return None

    def ended_before(self, name: str, client_id: int, version: int, now: int) -> bool:
        """Whether the log proves that the engineer's access to the client ended before the
        rotation that made client-key ``version`` (so they never held it)."""
        last, made = self.last(name, client_id), self.rotations.get(client_id, {}).get(version)
        if last is None or made is None or self.doubted_after(client_id, last.seq):
            return False
        made_seq, made_at = made
        if last.action == "revoke":
            return last.seq < made_seq
        return last.until is not None and last.until <= now and last.until * 1_000_000 < made_at


def public_rotation(action: str, request_id: bytes | None, details_json: str | None) -> dict[str, Any] | None:
    """The public details of a client-key rotation's format-3 event (a rotation through the team
    server: ``{"data_keys", "from_version", "to_version"}`` in ``details_json``, covered by the
    event's hash and the server key's signature, with nothing sealed), else None. Only a rotation:
    a grant or revoke event's details (the engineer's name) are always sealed, so public ones on
    such an event are refused (a doubt), as details that do not open are."""
    if action != ROTATE_ACTION or request_id is None or details_json is None:
        return None
    try:
        details = json.loads(details_json)
    except ValueError:
        return None
    return details if isinstance(details, dict) else None


class GrantLedger:
    """The grant ledger: what the signed audit events say about each grant."""

    def __init__(self, core: Core, trust: Trust, signers: Signers, journal: Journal) -> None:
        self.core = core
        self.trust = trust
        self.signers = signers
        self.journal = journal
        self._sweeper: GrantSweepKeyholder | None = None

    def grant_history(self, s: Session, client_ids: Collection[int] | None = None) -> GrantHistory:
        """The grant, revoke and client-key rotation events of the audit log, each verified
        (its hash, and its signature by a certified key) and opened; the acting engineer
        must be able to open the clients' audit keys (an admin can)."""
        keys, admins = self._event_keys(s)
        codec = chain.EventCodec(self.core.vid(s))
        servers = verified_server_keys(stored_rows(s), self.core.vid(s), self.trust.org_public(s))
        query = select(m.AuditEvent).where(m.AuditEvent.action.in_((*GRANT_ACTIONS, ROTATE_ACTION)))
        if client_ids is not None:
            query = query.where(m.AuditEvent.client_id.in_(list(client_ids)))
        history = GrantHistory(last_missing=self._last_missing_event(s))
        for event in s.scalars(query.order_by(m.AuditEvent.seq)):
            if event.client_id is None:
                continue
            details = self._verified_details(s, event, codec, keys, servers)
            history.add(event.seq, event.at_us, event.client_id, event.action, event.engineer_id in admins, details)
        return history

    def _last_missing_event(self, s: Session) -> int | None:
        """The newest sequence number from 1 to the audit head that has no event, or None.

        Each event is checked on its own here, which cannot see that one was deleted (a
        ``revoke`` removed so that the ``grant`` before it reads as the last word); the
        sequence numbers, signed into every event, can. One count in the usual case."""
        e = m.AuditEvent
        head = s.get(m.AuditHead, 1)  # first: every event up to a committed head is committed
        end = head.seq if head is not None else 0
        if s.scalar(select(func.count()).select_from(e).where(e.seq >= 1, e.seq <= end)) == end:
            return None
        if s.get(e, end) is None:
            return end
        before = aliased(e)
        first_after_gap = s.scalar(
            select(func.max(e.seq)).where(e.seq > 1, e.seq <= end, ~exists().where(before.seq == e.seq - 1))
        )
        return first_after_gap - 1 if first_after_gap is not None else end

    def _event_keys(self, s: Session) -> tuple[auditverify.Keys, set[int]]:
        """Certified signing keys by (engineer id, generation), each with its certified lifetime
        in the chain (the full verification's ``Signers.key_lifetimes``: a key retired by
        ``rotate engineer`` or removal signs nothing after), and the ids whose verified
        certificate says admin (a removed admin included: what they signed in their lifetime
        stays theirs); worked out once per transaction (a removal rotates many clients in one)."""
        cached = s.info.get("grant_event_keys")
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        certified = self.signers.signing_keys(s)
        keys, _, _ = self.signers.key_lifetimes(s, certified)
        admins: set[int] = set()
        for row in s.scalars(select(m.Engineer).where(m.Engineer.role == ROLE_ADMIN)):
            try:
                self.trust.verify_certificate(s, row)
            except VaultError:
                continue
            admins.add(row.id)
        s.info["grant_event_keys"] = (keys, admins)
        return keys, admins

    def _verified_details(
        self,
        s: Session,
        event: m.AuditEvent,
        codec: chain.EventCodec,
        keys: auditverify.Keys,
        servers: ServerKeys,
    ) -> dict[str, Any] | None:
        """The event's decrypted details if its hash and signature verify (an admin's work on
        the server's host: format 3, signed by a certified server key), else None."""
        row = tuple(getattr(event, c.key) for c in auditverify._COLUMNS)
        if auditverify._check([row], codec, keys, event.seq, server_keys=servers).problem is not None:
            return None
        if event.details_blob is None:
            return public_rotation(event.action, event.request_id, event.details_json)
        client = s.get(m.Client, event.client_id)
        if client is None or event.details_blob is None or event.key_version is None:
            return None
        try:
            key = self.journal.audit_keys.audit_key(s, client, event.key_version)
            if event.request_id is not None:  # format 3: sealed to its request
                raw = blobs.decrypt_audit_detail_v3(
                    key, event.key_version, event.details_blob, client.id, event.request_id, event.action
                )
            else:
                raw = blobs.decrypt_audit_detail(
                    key, event.key_version, event.details_blob, client.id, event.seq, event.action
                )
            details = json.loads(raw)
        except (VaultError, ValueError):
            return None
        return details if isinstance(details, dict) else None

    # -- the ledger's rows ----------------------------------------------------------------------

    def ledger_head(
        self, s: Session, grants: Sequence[m.Grant], engineer: EngineerRecord
    ) -> tuple[m.Grant | None, list[tuple[m.Grant, str]]]:
        """The newest entry of one (engineer, client) ledger that verifies (or is revoked:
        marking a row revoked only takes access away), and the rows before it that did not
        verify (with why). ``grants`` come newest first (``GRANT_ORDER``)."""
        bad: list[tuple[m.Grant, str]] = []
        for grant in grants:
            if is_revoked(grant):
                return grant, bad  # a revoked entry grants nothing, whoever signed it (a removed admin)
            try:
                self.trust.verify_grant(s, grant, engineer)
            except VaultError as exc:
                bad.append((grant, str(exc)))
                continue
            return grant, bad
        return None, bad

    def grants_to_carry(self, s: Session, engineer: EngineerRecord) -> tuple[list[m.Grant], list[tuple[m.Grant, str]]]:
        """What may be re-sealed to an engineer's new keys (``engineer confirm`` after
        ``rotate engineer``): for each client, the head of their ledger, its signature
        checked over ``engineer.sealing_public`` (the keys it was signed for), live, and
        the last word of the verified audit log; with every other row and why it is not
        carried. A revocation cleared or a newer grant deleted in the database carries nothing."""
        ledgers: dict[int, list[m.Grant]] = {}
        query = select(m.Grant).where(m.Grant.engineer_id == engineer.id).order_by(*GRANT_ORDER)
        for grant in s.scalars(query):
            ledgers.setdefault(grant.client_id, []).append(grant)
        history = self.grant_history(s, list(ledgers)) if ledgers else GrantHistory()
        carried: list[m.Grant] = []
        refused: list[tuple[m.Grant, str]] = []
        for client_id, grants in sorted(ledgers.items()):
            head, bad = self.ledger_head(s, grants, engineer)
            refused += bad
            if head is None or not self.is_live(head):
                continue
            problem = history.confirms(engineer.name, client_id, head)
            if problem is None:
                carried.append(head)
            else:
                refused.append((head, problem))
        return carried, refused

    def is_live(self, grant: m.Grant | None) -> bool:
        """A verified head that is not revoked and not past its until."""
        if grant is None or is_revoked(grant):
            return False
        return grant.until is None or grant.until > epoch(self.core.clock())

    def refuse_grants(
        self, s: Session, client_id: int, engineer: m.Engineer, refused: Iterable[tuple[m.Grant | None, str]]
    ) -> int:
        """Report grants that do not count (an audit event each) and delete every key copy
        sealed to the engineer for the client. Returns how many were reported."""
        n = 0
        for grant, problem in refused:
            details = {"engineer": engineer.name, "grant": grant.id if grant else None, "problem": problem[:200]}
            self.journal.append(s, "grant-refused", client_id=client_id, details=details)
            n += 1
        self.delete_seals(s, client_id, engineer.id)
        return n

    def delete_seals(self, s: Session, client_id: int, engineer_id: int) -> None:
        s.execute(
            delete(m.ClientKeySeal).where(
                m.ClientKeySeal.client_id == client_id,
                m.ClientKeySeal.recipient_kind == "engineer",
                m.ClientKeySeal.recipient_id == engineer_id,
            )
        )

    # -- expiry -----------------------------------------------------------------------------------------

    def sweep(self) -> int:
        """Sweep expired grants as the acting admin, in a unit of work of its own (``grants.maintain``
        and the start of an admin's ``clients.add``, ``grant``, ``revoke``): the authority finds
        the grants past their end, the keyholder signs the revocations of those it verifies
        (keyholder/grant_sweep.py). Returns how many sealed copies were deleted."""
        if self._sweeper is None:
            from vault.service import clientparts  # clientparts builds the halves of these nouns

            self._sweeper = clientparts.grant_sweep_keyholder(self.core, self.trust, self.journal)
        return self._sweeper.sweep()
