"""Who signed the audit chain when: the signing keys of the chain and their lifetimes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.crypto import chain
from vault.errors import UntrustedRecord
from vault.keyholder import auditchain
from vault.service.audit import _details
from vault.service.core import ACTIVE, ROLE_ADMIN
from vault.service.validation import shown
from vault.storage import models as m
from vault.storage.rows import EngineerRow

if TYPE_CHECKING:
    from vault.keyholder.trust import Trust

_ENGINEER_ROWS = select(*(m.Engineer.__table__.c[name] for name in EngineerRow._fields))


class Signers:
    """Who signed the audit chain when: the engineers' signing keys and their lifetimes."""

    VERIFIED_LIMIT = 100_000  # certificates remembered as verified, at most

    def __init__(self, trust: Trust) -> None:
        self.trust = trust
        # Certificates verified already, by everything their check reads: the organisation key,
        # the certificate and the fields it signs (a row rewritten is another entry, and checked).
        self._verified: set[tuple[Any, ...]] = set()
        self._lifetimes: tuple[Any, tuple[auditchain.Keys, dict[int, str], set[Any]]] | None = None  # the last

    def _seen(self, proof: tuple[Any, ...]) -> bool:
        return proof in self._verified

    def _remember(self, proof: tuple[Any, ...]) -> None:
        if len(self._verified) >= self.VERIFIED_LIMIT:
            self._verified.clear()
        self._verified.add(proof)

    @staticmethod
    def anchor_problem(
        s: Session,
        vault_id: bytes,
        keys: auditchain.Keys,
        problems: auditchain.Problems,
        seq: int,
        server_keys: auditchain.ServerKeys | None = None,
    ) -> str | None:
        """The anchor of an incremental verify checked again: its hash from its fields, its
        signature in its key's lifetime (a format-3 event's: a server key of ``server_keys``, the
        certified ones), what the key-event pass found at it, and its link to the event before it
        (its stored hash)."""
        if seq <= 0:
            return None
        connection = s.connection()
        r = auditchain.check_range(
            connection.connection, connection.dialect, vault_id, keys, seq, seq, problems, server_keys
        )
        if r.problem is not None:
            return r.problem
        before = s.get(m.AuditEvent, seq - 1) if seq > 1 else None
        if r.first_prev != (before.hash if before is not None else chain.GENESIS):
            return "it does not link to the event before it"
        return None

    def signing_keys(self, s: Session) -> dict[tuple[int, int], tuple[bytes, str]]:
        """Certified signing keys of every engineer and key generation, by (id, generation),
        each with the engineer's name its certificate binds."""
        keys: dict[tuple[int, int], tuple[bytes, str]] = {}
        names = {}
        org = self.trust.org_public(s)  # every certificate below is checked under it
        for found in s.execute(_ENGINEER_ROWS):  # plain rows: the identity map would cost more than the checks
            row = EngineerRow._make(found)
            names[row.id] = row.name
            if row.signing_public is None:
                continue
            proof = ("engineer", org, row.certificate, row.certified_at, *self.trust.certificate_fields(s, row))
            if not self._seen(proof):  # an audit-log page needs every signer's: verified once per Vault
                try:
                    self.trust.verify_certificate(s, row)
                except UntrustedRecord:
                    continue
                self._remember(proof)
            keys[(row.id, row.key_generation)] = (row.signing_public, row.name)
        for key in s.scalars(select(m.EngineerKey)):
            name = names.get(key.engineer_id, "")
            proof = ("key", org, key.certificate, key.signing_public, *self.trust.key_fields(s, key, name))
            if self._seen(proof):
                keys[(key.engineer_id, key.generation)] = (key.signing_public, name)
                continue
            try:
                keys[(key.engineer_id, key.generation)] = (self.trust.verified_key(s, key, name), name)
            except UntrustedRecord:
                keys.pop((key.engineer_id, key.generation), None)
                continue
            self._remember(proof)
        return keys

    def key_lifetimes(
        self, s: Session, certified: dict[tuple[int, int], tuple[bytes, str]]
    ) -> tuple[auditchain.Keys, dict[int, str], set[Any]]:
        """When each certified key may sign, from the chain's own signed events, read in order.

        The organisation's certificates say *which* keys are an engineer's; the chain says
        *when*: a key generation signs from the event after the admin-signed ``engineer-confirm``
        that certified it (the first admin's from ``vault-init``, event 1) until the
        admin-signed ``engineer-key-rotate`` or ``engineer-remove`` that retired it. Admins are
        those the chain made admins (``vault-init``, a confirmation with role admin), until
        removed. This first pass reads only those few events, unverified: a forged one is
        itself refused at its own sequence number by the full pass (hash, link, signature),
        and it can only change what is decided about events after it, so the first bad
        event named is still the right one. What this pass finds wrong (a key event not
        signed by a live admin, a second ``vault-init``, an enrolment without an invitation)
        is returned by sequence number, for the range checks to report in order. Also
        returned: the ids of the engineers the chain has made admins and not removed (a
        root rotation seals only to them).
        """
        e = m.AuditEvent
        events: tuple[tuple[int, int | None, int, str, str | None], ...] = tuple(
            (row[0], row[1], row[2], row[3], row[4])
            for row in s.execute(
                select(e.seq, e.engineer_id, e.key_generation, e.action, e.details_json)
                .where(m.KEY_EVENTS)  # the predicate of the partial index ix_audit_events_key
                .order_by(e.seq)
            )
        )
        older_than_chain = s.scalar(select(e.action).where(e.seq == 1)) not in (None, "vault-init")
        # What follows is a function of the certified keys and the key events alone (for a vault
        # as old as its chain): the same inputs as the last call give its answer, recomputed never.
        memo = None if older_than_chain else (tuple(sorted(certified.items())), events)
        if memo is not None and self._lifetimes is not None and self._lifetimes[0] == memo:
            known, found, chain_admins = self._lifetimes[1]
            return dict(known), dict(found), set(chain_admins)
        keys, problems, admins = chain_lifetimes(certified, events, older_than_chain, lambda: self._active_admins(s))
        if memo is not None:
            self._lifetimes = (memo, (dict(keys), dict(problems), set(admins)))
        return keys, problems, admins

    def _active_admins(self, s: Session) -> set[Any]:
        """Active admins by their own (verified) certificates."""
        admins = set()
        for row in s.scalars(select(m.Engineer).where(m.Engineer.role == ROLE_ADMIN, m.Engineer.status == ACTIVE)):
            try:
                self.trust.verify_certificate(s, row)
            except UntrustedRecord:
                continue
            admins.add(row.id)
        return admins


KeyEvents = Sequence[tuple[int, int | None, int, str, str | None]]  # (seq, engineer id, generation, action, details)


def chain_lifetimes(
    certified: dict[tuple[int, int], tuple[bytes, str]],
    events: KeyEvents,
    older_than_chain: bool,
    active_admins: Callable[[], set[Any]],
) -> tuple[auditchain.Keys, dict[int, str], set[Any]]:
    """``Signers.key_lifetimes`` as a function of what it reads (the certified keys, the chain's
    key events in order, whether the vault is older than its chain, and, only then, its active
    admins by their certificates): the same answer wherever the rows were read (in-process, or
    on an engineer's machine from the team server's ``audit.signers``)."""
    by_name_gen: dict[tuple[Any, int], list[int]] = {}
    by_name: dict[str, set[int]] = {}
    for (eid, gen), (_, who) in certified.items():
        by_name_gen.setdefault((who, gen), []).append(eid)
        by_name.setdefault(who, set()).add(eid)
    start: dict[tuple[Any, Any], int] = {}
    end: dict[tuple[Any, Any], int] = {}
    admins: set[Any] = set()
    invited: set[tuple[Any, Any]] = set()
    problems: dict[int, str] = {}
    assumed: set[tuple[int, int]] = set()
    if older_than_chain:
        # A vault older than its audit chain (made before migration 0002): its chain begins
        # after its keys were certified, so the keys certified now sign from event 1, its
        # active admins are admins, and an enrolment may follow an invitation made before
        # the chain. Event 1 is signed: no writer can make a newer vault look like this one.
        assumed = set(certified)
        start = dict.fromkeys(assumed, 1)
        admins = active_admins()
    for seq, engineer_id, generation, action, text in events:
        details = _details(text)
        signer = (engineer_id, generation)
        name = details.get("engineer")
        if action == "vault-init":
            if seq != 1:
                problems[seq] = "a vault-init event after the first event"
            else:
                start[signer], admins = 1, {engineer_id}
            continue
        if action == "enroll":
            if not older_than_chain and (name, generation - 1) not in invited and (name, None) not in invited:
                problems[seq] = f"an enrolment of {shown(str(name))} without an invitation before it"
            continue
        live = signer in start and start[signer] <= seq < end.get(signer, auditchain.NEVER)
        if engineer_id not in admins or not live:
            problems[seq] = f"{action} is not signed by an admin the chain has certified"
            continue
        if action == "engineer-invite":
            invited_gen = details.get("key_generation")
            invited.add((name, invited_gen if type(invited_gen) is int else None))
        elif action == "engineer-confirm":
            confirmed = details.get("key_generation")
            for engineer in by_name_gen.get((name, confirmed), []) if type(confirmed) is int else []:
                if (engineer, confirmed) in assumed:
                    assumed.discard((engineer, confirmed))  # confirmed after the chain began
                elif (engineer, confirmed) in start:
                    problems[seq] = "it certifies again a key generation the chain certified before"
                    break
                start[(engineer, confirmed)] = seq + 1
                (admins.add if details.get("role") == ROLE_ADMIN else admins.discard)(engineer)
        elif action == "engineer-key-rotate":
            for engineer in by_name.get(name, ()) if isinstance(name, str) else ():
                end.setdefault((engineer, details.get("old_generation")), seq)
        elif action == "engineer-remove":
            for engineer in by_name.get(name, ()) if isinstance(name, str) else ():
                for key in [k for k in start if k[0] == engineer]:
                    end.setdefault(key, seq)
                admins.discard(engineer)
    keys: auditchain.Keys = {
        k: (public, start.get(k, auditchain.NEVER), end.get(k, auditchain.NEVER))
        for k, (public, _) in certified.items()
    }
    return keys, problems, admins
