"""Root rotation, where the database is: a new recovery key and organisation key, in one unit
of work, over ids, public keys, signatures and ciphertext.

``RootRotationAuthority.rotate`` checks the request's fields before any SQL, then, first in its
unit, authorises the caller through ``CallerGate`` (an active admin whose certificate
verifies, of the key generation the request names): nothing of the roster, the root keys
or any client is read before. Then:

1. the draft (``RootDraft``): the current recovery key and the caller's sealed copy of the
   bundle, the head of the organisation key chain with its share policy, the vault backup
   key's copy, and the roster as ``RootChecks.roster`` gives it: the certificates the signed
   audit chain vouches for (``Signers.key_lifetimes``: the in-process adapter of
   service/rootrotation.py reads the chain; the keyholder re-verifies each certificate);
2. the keyholder's ``RootPlan`` checked against the draft (versions that follow the current
   ones, certificates and root seals only for roster rows it was shown, root seals only to
   active admins, the chain link signed by the current organisation key: a public-key check)
   and the new recovery key stored as pending;
3. the clients walked in pages of ``PAGE`` (keyset by id; one statement for every live key
   version of the page with its recovery copy and signer); the keyholder's ``Resealed`` is
   stored only if it answers each row handed out once (a copy or a refusal) and a slug tag
   for each client of the page, and nothing else; a refused version's copies are deleted;
4. the organisation key link, the certificates, the root seals, the backup key's copy and
   the share policy written; the old recovery copies and root seals deleted, the old root
   destroyed, the new one active; the ``root-key-rotate`` event (``Recorder``); the commit.

The keyholder's hands inside the unit (``RootSeal``) and the event's signature are the
in-process seam, as for the client-key rotation; an admin's removal runs the same steps in
its own unit of work (``s``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from sqlalchemy import and_, delete, select
from sqlalchemy.orm import Session

from vault import validation
from vault.authority.checkout_reads import ENGINEER_WIDTH
from vault.authority.engineer_requests import EngineerKeyRow, Identity, RootCopy
from vault.authority.policies_caller import CallerChecks, CallerGate, checked_caller, checked_pin, org_chain
from vault.authority.requests import ClientKeyRow, SealedClientKey
from vault.authority.root_lock import take_root
from vault.authority.root_rotation_requests import (
    PAGE,
    ROTATE_ROOT,
    ClientPage,
    Resealed,
    RootDraft,
    RootPlan,
    RootRotated,
    RootRotateRequest,
    ShareRecord,
)
from vault.authority.server_keys import ServerKeyRow
from vault.crypto import signing
from vault.crypto.blobs import blob_key_version
from vault.crypto.labels import LABEL_SIG_ORG_KEY
from vault.errors import AccessDenied, InvalidInput, UntrustedRecord
from vault.storage import models as m
from vault.storage.engine import Store
from vault.storage.rows import ACTIVE, ROLE_ADMIN, EngineerRow

DESTROYED = "destroyed"
KEY_BYTES, SIGNATURE_BYTES, TAG_BYTES = 32, 64, 32


class RootChecks(CallerChecks, Protocol):
    """The caller's checks, and the roster the signed audit chain vouches for."""

    def roster(self, s: Session) -> tuple[Sequence[m.Engineer], Sequence[m.EngineerKey], Sequence[str]]:
        """The engineers and key generations whose certificate verifies and that the audit
        chain vouches for, and the names of the others (never re-issued)."""

    def server_keys(self, s: Session) -> Sequence[ServerKeyRow]:
        """The team server's keys whose certification the signed audit chain vouches for (a
        ``server-key-certify`` event naming the version and the key): the only ones a rotation
        re-certifies, so that a row planted with the old organisation seed is not carried over."""


class Recorder(Protocol):
    def append(self, s: Session, action: str, *, public: dict[str, Any]) -> int:
        """The new event's seq."""


class RootSeal(Protocol):
    """The keyholder's hands inside the rotation's unit of work."""

    def plan(self, draft: RootDraft) -> RootPlan:
        """Verify ``draft``, then make the new bundle for it; raise to refuse (nothing written)."""

    def reseal(self, page: ClientPage) -> Resealed:
        """Verify ``page``, then re-seal its client keys to the new recovery key; raise to refuse."""


def _engineer(row: m.Engineer) -> EngineerRow:
    return EngineerRow(*(getattr(row, name) for name in EngineerRow._fields))


def _bytes(what: str, value: object, size: int) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        raise UntrustedRecord(f"the keyholder's {what} is not a {size}-byte value")
    return value


def _blob(what: str, value: object) -> bytes:
    if not isinstance(value, bytes) or not 0 < len(value) <= 4096:
        raise UntrustedRecord(f"the keyholder's {what} is not a sealed blob")
    return value


def _shares(value: object) -> tuple[int, int] | None:
    if value is None:
        return None
    if not isinstance(value, tuple) or len(value) != 2:
        raise InvalidInput("bad recovery shares")
    k = validation.number("share threshold", value[0], 2, 9)
    n = validation.number("share count", value[1], k, 16)
    return k, n


class RootRotationAuthority:
    """``rotate``: a new root bundle and organisation key, in one unit of work."""

    def __init__(
        self, store: Store, checks: RootChecks, recorder: Recorder, clock: Callable[[], dt.datetime], page: int = PAGE
    ) -> None:
        self.store, self.checks, self.recorder, self.clock, self.page = store, checks, recorder, clock, page

    def __repr__(self) -> str:
        return "RootRotationAuthority()"

    def rotate(self, request: RootRotateRequest, seal: RootSeal, *, s: Session | None = None) -> RootRotated:
        if not isinstance(request, RootRotateRequest) or request.action != ROTATE_ROOT:
            raise InvalidInput("not a root rotation request")
        caller, pin, shares = checked_caller(request.caller), checked_pin(request.org_pin), _shares(request.shares)
        if s is None:
            with self.store.transaction() as unit:
                return self.rotate(request, seal, s=unit)
        s.flush()  # a caller's unit (an admin's removal): its changes are read by the statements below
        read = CallerGate(self.checks).authorise(s, caller, admin=True)
        me = read.me
        identity = Identity(read.vault_id, read.org_signing_public, org_chain(s, pin, read.org_signing_public), me)
        old_root = take_root(s)  # FOR UPDATE: a unit sealing to it waits, then refuses (root_lock.py)
        sealed = s.get(m.RootSeal, (old_root.version, me.id))
        if sealed is None:
            raise AccessDenied(
                f"no copy of the recovery key is sealed to {me.name!r}", hint="another admin can re-confirm you"
            )
        head = s.scalars(select(m.OrgKey).order_by(m.OrgKey.version.desc())).first()
        if head is None or head.public != read.org_signing_public:
            raise UntrustedRecord("the organisation key chain does not end with the current organisation key")
        info = s.get(m.VaultInfo, 1)
        assert info is not None
        engineers, keys, refused = self.checks.roster(s)
        draft = RootDraft(
            identity,
            RootCopy(old_root.version, old_root.recovery_public, sealed.blob),
            ShareRecord(head.version, head.public, head.share_threshold, head.share_count, head.share_signature),
            info.backup_key_seal,
            tuple(_engineer(row) for row in engineers),
            tuple(
                EngineerKeyRow(
                    k.engineer_id, k.generation, k.sealing_public, k.signing_public, k.certified_at, k.certificate
                )
                for k in keys
            ),
            tuple(
                (int(i), str(n))
                for i, n in s.execute(
                    select(m.Engineer.id, m.Engineer.name)
                    .where(m.Engineer.id.in_({k.engineer_id for k in keys}))
                    .order_by(m.Engineer.id)
                )
            ),
            tuple(refused),
            tuple(self.checks.server_keys(s)),
        )
        plan = seal.plan(draft)
        self._check_plan(draft, plan, shares)
        now = self.clock()
        s.add(
            m.RootKey(version=plan.root_version, recovery_public=plan.recovery_public, state="pending", created_at=now)
        )
        s.flush()
        clients, dropped = self._walk(s, seal, old_root.version, plan.root_version)
        self._write_plan(s, draft, plan, info, engineers, keys, now)
        s.execute(
            delete(m.ClientKeySeal).where(
                m.ClientKeySeal.recipient_kind == "recovery", m.ClientKeySeal.recipient_id == old_root.version
            )
        )
        s.execute(delete(m.RootSeal).where(m.RootSeal.root_version == old_root.version))
        old_root.state, old_root.retired_at, old_root.destroyed_at = DESTROYED, now, now
        new_root = s.get(m.RootKey, plan.root_version)
        assert new_root is not None
        new_root.state = ACTIVE
        by_id = {row.id: row.name for row in draft.engineers}
        admins = tuple(sorted(by_id[engineer_id] for engineer_id, _ in plan.root_seals))
        refusals = tuple(plan.refused) + tuple(f"client #{c} key version {v}" for c, v in dropped)
        public: dict[str, Any] = {
            "from_version": old_root.version,
            "to_version": plan.root_version,
            "clients": clients,
            "by": me.name,
            "org_version": plan.org_version,
            "admins": len(admins),
            "server_keys": len(plan.server_certificates),
            "shares": f"{plan.share_policy[0]}-of-{plan.share_policy[1]}" if plan.share_policy else None,
        }
        if refusals:
            public["refused"] = len(refusals)
        seq = self.recorder.append(s, ROTATE_ROOT, public=public)
        s.flush()
        return RootRotated(seq, plan.root_version, plan.org_version, clients, admins, refusals)

    # -- the plan ------------------------------------------------------------------------------

    @staticmethod
    def _check_plan(draft: RootDraft, plan: RootPlan, shares: tuple[int, int] | None) -> None:
        """What the keyholder made is for this draft: the next versions, the roster shown, a
        link signed by the current organisation key; else nothing is written."""
        if not isinstance(plan, RootPlan):
            raise UntrustedRecord("the keyholder's answer is not a root plan")
        if plan.root_version != draft.root.version + 1 or plan.org_version != draft.head.version + 1:
            raise UntrustedRecord("the new root bundle is not the version this rotation makes")
        _bytes("recovery key", plan.recovery_public, KEY_BYTES)
        _bytes("organisation key", plan.org_public, KEY_BYTES)
        validation.number("signing time", plan.org_signed_at, 1, 2**40)
        signing.verify(
            draft.head.public,
            _bytes("organisation key signature", plan.org_signature, SIGNATURE_BYTES),
            LABEL_SIG_ORG_KEY,
            draft.identity.vault_id,
            plan.org_version,
            plan.org_public,
            draft.head.public,
            plan.org_signed_at,
            what="the new organisation key",
        )
        engineers = {row.id: row for row in draft.engineers}
        keys = {(k.engineer_id, k.generation) for k in draft.keys}
        certified = [engineer_id for engineer_id, _ in plan.certificates]
        if len(set(certified)) != len(certified) or not set(certified) <= set(engineers):
            raise UntrustedRecord("the keyholder certified engineers the roster does not hold")
        re_keyed = [(engineer_id, generation) for engineer_id, generation, _ in plan.key_certificates]
        if len(set(re_keyed)) != len(re_keyed) or not set(re_keyed) <= keys:
            raise UntrustedRecord("the keyholder certified key generations the roster does not hold")
        sealed_to = [engineer_id for engineer_id, _ in plan.root_seals]
        if len(set(sealed_to)) != len(sealed_to) or any(
            engineer_id not in certified
            or engineers[engineer_id].role != ROLE_ADMIN
            or engineers[engineer_id].status != ACTIVE
            for engineer_id in sealed_to
        ):
            raise UntrustedRecord("the new root bundle is sealed to someone who is not a certified active admin")
        if draft.identity.me.id not in sealed_to:
            raise UntrustedRecord("the new root bundle is not sealed to the admin rotating it")
        if (plan.backup_key_seal is None) != (draft.backup_key_seal is None):
            raise UntrustedRecord("the vault backup key does not follow the recovery key")
        if shares is not None and (plan.share_policy is None or plan.share_policy[:2] != shares):
            raise UntrustedRecord("the keyholder's share policy is not the one asked for")
        servers = [version for version, _ in plan.server_certificates]
        if len(set(servers)) != len(servers) or not set(servers) <= {k.version for k in draft.server_keys}:
            raise UntrustedRecord("the keyholder certified server keys the vault does not hold")

    def _write_plan(
        self,
        s: Session,
        draft: RootDraft,
        plan: RootPlan,
        info: m.VaultInfo,
        engineers: Sequence[m.Engineer],
        keys: Sequence[m.EngineerKey],
        now: dt.datetime,
    ) -> None:
        link = m.OrgKey(
            version=plan.org_version,
            public=plan.org_public,
            signed_at=plan.org_signed_at,
            signature=plan.org_signature,
            created_at=now,
        )
        s.add(link)
        info.org_signing_public = plan.org_public
        s.flush()
        rows = {row.id: row for row in engineers}
        for engineer_id, certificate in plan.certificates:
            rows[engineer_id].certificate = _bytes("certificate", certificate, SIGNATURE_BYTES)
        generations = {(k.engineer_id, k.generation): k for k in keys}
        for engineer_id, generation, certificate in plan.key_certificates:
            generations[(engineer_id, generation)].certificate = _bytes("certificate", certificate, SIGNATURE_BYTES)
        for version, certificate in plan.server_certificates:  # the same key and time, under the new key
            server = s.get(m.ServerKey, version)
            assert server is not None
            server.certificate = _bytes("certificate", certificate, SIGNATURE_BYTES)
        for engineer_id, blob in plan.root_seals:
            s.add(m.RootSeal(root_version=plan.root_version, engineer_id=engineer_id, blob=_blob("root seal", blob)))
        if plan.backup_key_seal is not None:
            info.backup_key_seal = _blob("backup key seal", plan.backup_key_seal)
        if plan.share_policy is not None:
            k, n, signature = plan.share_policy
            link.share_threshold, link.share_count = _shares((k, n)) or (k, n)
            link.share_signature = _bytes("share policy signature", signature, SIGNATURE_BYTES)

    # -- the re-seal walk ----------------------------------------------------------------------

    def _walk(self, s: Session, seal: RootSeal, old: int, new: int) -> tuple[int, list[tuple[int, int]]]:
        """Every client, a page at a time: its live key versions re-sealed to the new recovery
        key by the keyholder, its slug re-tagged. Returns the clients and the versions refused."""
        after, clients = 0, 0
        dropped: list[tuple[int, int]] = []
        while True:
            page = self.client_page(s, after, old, new)
            if page is None:
                return clients, dropped
            ids = [client_id for client_id, _ in page.clients]
            answer = seal.reseal(page)
            dropped += self._store_page(s, ids, page.keys, answer, new)
            clients += len(ids)
            after = ids[-1]

    def client_page(self, s: Session, after: int, old: int, new: int) -> ClientPage | None:
        """The page of clients after id ``after`` (at most ``page``), with every live key version's
        recovery copy for root version ``old``; None when no client is left."""
        page = s.execute(
            select(m.Client.id, m.Client.slug_blob).where(m.Client.id > after).order_by(m.Client.id).limit(self.page)
        ).all()
        if not page:
            return None
        ids = [int(r[0]) for r in page]
        return ClientPage(old, new, tuple((int(r[0]), bytes(r[1])) for r in page), self._page_keys(s, ids, old))

    @staticmethod
    def _page_keys(s: Session, client_ids: list[int], root_version: int) -> tuple[SealedClientKey, ...]:
        """Every live key version of the clients (one statement): its record, signer, recovery copy."""
        signer = m.Engineer.__table__
        found = s.execute(
            select(
                m.ClientKey.client_id,
                m.ClientKey.version,
                m.ClientKey.fingerprint,
                m.ClientKey.signed_at,
                m.ClientKey.signed_by,
                m.ClientKey.signature,
                m.ClientKey.state,
                m.ClientKeySeal.blob,
                *(signer.c[name] for name in EngineerRow._fields),
            )
            .select_from(m.ClientKey)
            .outerjoin(
                m.ClientKeySeal,
                and_(
                    m.ClientKeySeal.client_id == m.ClientKey.client_id,
                    m.ClientKeySeal.version == m.ClientKey.version,
                    m.ClientKeySeal.recipient_kind == "recovery",
                    m.ClientKeySeal.recipient_id == root_version,
                ),
            )
            .outerjoin(signer, signer.c.id == m.ClientKey.signed_by)
            .where(m.ClientKey.client_id.in_(client_ids), m.ClientKey.state != DESTROYED)
            .order_by(m.ClientKey.client_id, m.ClientKey.version)
        ).all()
        out = []
        for r in found:
            who = None if r[8] is None else EngineerRow._make(r[8 : 8 + ENGINEER_WIDTH])
            out.append(SealedClientKey(ClientKeyRow(*r[:7]), who, "recovery", root_version, r[7]))
        return tuple(out)

    @staticmethod
    def _store_page(
        s: Session, client_ids: list[int], keys: tuple[SealedClientKey, ...], answer: Resealed, new: int
    ) -> list[tuple[int, int]]:
        """The keyholder's answer stored if it answers exactly the rows handed out."""
        if not isinstance(answer, Resealed):
            raise UntrustedRecord("the keyholder's answer is not a re-sealed page")
        shown = sorted((k.record.client_id, k.record.version) for k in keys)
        sealed = [(c, v) for c, v, _ in answer.seals]
        if sorted(sealed + list(answer.refused)) != shown:
            raise UntrustedRecord("the re-sealed keys are not the rows this page handed out")
        if sorted(c for c, _ in answer.slug_tags) != client_ids:
            raise UntrustedRecord("the new slug tags are not for the clients of this page")
        for client_id, version, blob in answer.seals:
            if blob_key_version(_blob("sealed client key", blob)) != version:
                raise UntrustedRecord("a re-sealed client key does not name its key version")
            s.add(
                m.ClientKeySeal(
                    client_id=client_id, version=version, recipient_kind="recovery", recipient_id=new, blob=blob
                )
            )
        for client_id, version in answer.refused:
            s.execute(
                delete(m.ClientKeySeal).where(
                    m.ClientKeySeal.client_id == client_id, m.ClientKeySeal.version == version
                )
            )
        tags = dict(answer.slug_tags)
        for client in s.scalars(select(m.Client).where(m.Client.id.in_(client_ids))):
            client.slug_tag = _bytes("slug tag", tags[client.id], TAG_BYTES)
        s.flush()
        return list(answer.refused)
