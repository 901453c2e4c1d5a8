"""Grants, where the admin's keys are: verify the draft, sign and seal, check what was stored.

``GrantKeyholder`` sends an admin's grant or revoke naming the engineer and the client's
slug tag, and lends the authority its hands inside the unit of work (``GrantSeal``), for
the draft it admitted and nothing else:

* ``admit``: the caller's own row (certified, active, this session's keys, an admin); the
  client the lookup found (same id and slug blob: a moved slug tag is refused); the
  engineer named, and for a grant their certificate (a swapped public key is refused
  before anything is sealed to it), active, not an admin; every grant row the engineer's
  and the client's, unrevoked; a grant's new row (this admin's, of the end asked for,
  after every older entry); each client-key record signed by an active admin and its
  recovery copy opening to the signed fingerprint;
* ``revocations`` / ``sign_grant`` / ``seal_copies``: the signatures and copies.

The answer is the ledger as stored after the change: a revoke or grant the authority says
it made but did not (a revocation missing or not this admin's, the new grant unsigned or
under another event, a copy left behind or not made) is refused with UntrustedRecord.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from typing import Any, Protocol

from vault import validation
from vault.authority.grant_requests import (
    GRANT,
    NO_CLIENT,
    NO_ENGINEER,
    NO_GRANT,
    REVOKE,
    GrantRequest,
    GrantRows,
    RevokeRequest,
    SealedCopy,
)
from vault.authority.grant_requests import revocation_fields as revocation_fields  # the layout, shared
from vault.authority.requests import Caller
from vault.crypto import blobs, sealing, signing
from vault.crypto.labels import LABEL_CLIENT_KEY_SEAL, LABEL_SIG_GRANT, LABEL_SIG_GRANT_REVOCATION, LABEL_SIG_GRANT_V3
from vault.errors import InvalidInput, LookupMismatch, NotFound, UntrustedRecord
from vault.keyholder.checkouts import EngineerKeys
from vault.keyholder.clients import ClientContext, ClientKeyholder, ClientLookup, verified_caller
from vault.keyholder.trust import grant_fields
from vault.records import GrantInfo
from vault.storage.rows import ACTIVE, ROLE_ADMIN, GrantRow, is_revoked

SIGNED_AT_SLACK = 300  # seconds a grant's date (set by the authority) may be from the keyholder's clock


class SigningKeys(EngineerKeys, Protocol):
    def sign(self, label: bytes, *fields: signing.ContextItem) -> bytes:
        """The acting engineer's signature over ``fields`` under ``label``."""


class GrantTransport(Protocol):
    def grant(self, request: GrantRequest, seal: Any) -> GrantRows: ...
    def revoke(self, request: RevokeRequest, seal: Any) -> GrantRows: ...


Rings = Callable[[int], bytes]  # a client's audit-key ring by its id, opened by the lookup (a server's keyholder)


class _Seal:
    """The keyholder's side of ``GrantSeal``: every call is for the draft admitted. Through a
    team server (``transport/https_grant_writes.py``) the same seal is shown the server's draft,
    signs the grant in format 3 (``sign_grant_v3``: over the commit's request id) and seals the
    event's details to that request id (``seal_request``) before the commit is sent."""

    def __init__(
        self,
        verify: Callable[[GrantRows], dict[int, bytes]],
        keys: SigningKeys,
        private: dict[str, Any] | None = None,
        rings: Rings | None = None,
    ) -> None:
        self._verify: Callable[[GrantRows], dict[int, bytes]] | None = verify
        self._keys: SigningKeys | None = keys
        self._private = private  # a grant's reason: sealed into its event, never sent in clear
        self._rings = rings
        self._client_keys: dict[int, bytes] = {}
        self.admitted: GrantRows | None = None
        self.revoked: dict[int, GrantRow] = {}
        self.signed: bytes | None = None
        self.request_id: bytes | None = None  # what a format-3 grant's signature binds
        self.sealed: set[int] = set()

    def __repr__(self) -> str:
        return "GrantSeal(<redacted>)"

    def admit(self, draft: GrantRows) -> None:
        self.admitted = None
        if self._verify is None:
            raise UntrustedRecord("this request is over")
        self.revoked, self.signed, self.request_id, self.sealed = {}, None, None, set()
        self._client_keys = self._verify(draft)
        self.admitted = draft

    def _check(self, draft: GrantRows) -> SigningKeys:
        if self._keys is None or self.admitted is None or draft != self.admitted:
            raise UntrustedRecord("the authority asked to sign for a draft this request did not admit")
        return self._keys

    def revocations(self, draft: GrantRows) -> tuple[bytes, ...]:
        keys = self._check(draft)
        out = []
        for grant in draft.grants:
            revoked = grant._replace(revoked_at=draft.revoked_at, revoked_by=draft.me.id)
            signature = keys.sign(LABEL_SIG_GRANT_REVOCATION, *revocation_fields(draft.vault_id, revoked))
            self.revoked[grant.id] = revoked._replace(revocation=signature)
            out.append(signature)
        return tuple(out)

    def sign_grant(self, draft: GrantRows, grant: GrantRow) -> bytes:
        keys = self._check(draft)
        new = draft.new_grant
        if new is None or grant != new._replace(event_seq=grant.event_seq) or not grant.event_seq:
            raise UntrustedRecord("the authority asked to sign another grant than the one admitted")
        self.signed = keys.sign(LABEL_SIG_GRANT, *grant_fields(draft.vault_id, grant, draft.engineer.sealing_public))
        return self.signed

    def sign_grant_v3(self, draft: GrantRows, request_id: bytes) -> bytes:
        """Through the server: the draft's new grant signed before its event exists, over the id
        of the request that commits it (``LABEL_SIG_GRANT_V3``)."""
        keys = self._check(draft)
        new = draft.new_grant
        if new is None or new.request_id is not None or not isinstance(request_id, bytes) or len(request_id) != 16:
            raise UntrustedRecord("the draft's new grant cannot be signed for a request")
        grant = new._replace(request_id=request_id)
        self.signed = keys.sign(LABEL_SIG_GRANT_V3, *grant_fields(draft.vault_id, grant, draft.engineer.sealing_public))
        self.request_id = request_id
        return self.signed

    def seal_request(self, request_id: bytes, action: str) -> tuple[int, bytes]:
        """Through the server: the event's details (what the in-process journal seals: for a grant
        the engineer, end, grant id, ledger position and the reason; for a revoke the engineer and
        the grants revoked) sealed under the client's current audit key, bound to ``request_id``."""
        draft = self.admitted
        if draft is None or self._rings is None or action not in (GRANT, REVOKE):
            raise UntrustedRecord("the event to seal is not the one this request asked for")
        new = draft.new_grant
        if action == GRANT:
            if new is None:
                raise UntrustedRecord("the event to seal is not the one this request asked for")
            details: dict[str, Any] = {"engineer": draft.engineer.name, "until": new.until, "grant": new.id,
                                       "seq": new.seq, **(self._private or {})}  # fmt: skip
        else:
            ids = [g.id for g in draft.grants]
            details = {"engineer": draft.engineer.name, "grants": len(ids), "grant_ids": ids}
        ring = self._rings(draft.client_id)
        if not ring or len(ring) % 32:
            raise UntrustedRecord("the client's audit keys are not open")
        version = len(ring) // 32
        raw = json.dumps(details, sort_keys=True).encode("utf-8")
        return version, blobs.encrypt_audit_detail_v3(ring[-32:], version, raw, draft.client_id, request_id, action)

    def seal_copies(self, draft: GrantRows) -> tuple[SealedCopy, ...]:
        self._check(draft)
        public = draft.engineer.sealing_public
        if draft.new_grant is None or public is None:
            raise UntrustedRecord("the authority asked to seal keys for a draft that grants nothing")
        out = []
        for version, key in sorted(self._client_keys.items()):
            context = (LABEL_CLIENT_KEY_SEAL, draft.vault_id, draft.client_id, version, "engineer", draft.engineer.id)
            out.append(SealedCopy(version, sealing.seal(public, version, key, context)))
            self.sealed.add(version)
        return tuple(out)

    def private_details(self, client_id: int, action: str) -> dict[str, Any]:
        """The reason, for the journal's sealing of the grant's event (and for no other event)."""
        admitted = self.admitted
        if (
            self._private is None
            or admitted is None
            or admitted.new_grant is None
            or client_id != admitted.client_id
            or action != GRANT
        ):
            raise UntrustedRecord("the authority asked for details of an event this request did not make")
        return dict(self._private)

    def close(self) -> None:
        self._private = None
        self._verify = self._keys = self._rings = None
        self._client_keys = {}


class GrantKeyholder:
    """An admin's grant and revoke (the listing: grant_list.py; the sweep: grant_sweep.py)."""

    def __init__(
        self,
        transport: GrantTransport,
        keys: SigningKeys,
        lookup: ClientLookup,
        clients: ClientKeyholder,
        clock: Callable[[], dt.datetime],
        rings: Rings | None = None,
    ) -> None:
        self.transport, self.keys, self.lookup, self.clients, self.clock = transport, keys, lookup, clients, clock
        self.rings = rings  # through a team server: the audit keys a request's details are sealed under

    def grant(self, engineer: str, slug: str, *, until: int | None, reason: str | None) -> GrantInfo:
        if reason is not None and not isinstance(reason, str):
            raise InvalidInput("a grant's reason is text")
        validation.field_value("reason", reason)  # checked here: its text never reaches the authority
        me = self.keys.session()
        ctx, slug_tag = self._context(slug)
        request = GrantRequest(
            Caller(me.engineer_id, me.key_generation),
            engineer,
            slug_tag,
            until,
            bool(reason),
            me.org_signing_public,
        )

        def verify(draft: GrantRows) -> dict[int, bytes]:
            checks = self._common(me, ctx, engineer, draft)
            target = draft.engineer
            checks.certificate(target)
            if target.status != ACTIVE or target.role == ROLE_ADMIN:
                raise UntrustedRecord("the authority would grant a client to an engineer who may not hold one")
            new = draft.new_grant
            fresh = new is not None and new.signature is None and new.event_seq is None and new.request_id is None
            if new is None or not fresh or is_revoked(new):
                raise UntrustedRecord("the authority's new grant is not a fresh, unsigned row")
            if (new.engineer_id, new.client_id, new.granted_by, new.until) != (
                target.id,
                draft.client_id,
                draft.me.id,
                until,
            ) or any((g.seq or 0) >= (new.seq or 0) for g in draft.grants):
                raise UntrustedRecord("the authority's new grant is not the one asked for")
            if not isinstance(new.signed_at, int) or abs(new.signed_at - self.clock().timestamp()) > SIGNED_AT_SLACK:
                raise UntrustedRecord("the authority dates the new grant away from this keyholder's clock")
            keys = {}
            for sealed in draft.client_keys:
                version = sealed.record.version
                if version in keys or sealed.kind != "recovery":
                    raise UntrustedRecord("the authority sent a client key twice, or not the recovery copy")
                keys[version] = self.clients.client_key(me, True, checks, draft.client_id, version, sealed)
            if not keys:
                raise UntrustedRecord("the authority sent no client key to hand out")
            return keys

        seal = _Seal(verify, self.keys, {"reason": reason}, self.rings)
        try:
            answer = self.transport.grant(request, seal)
        except NotFound as error:
            raise self._missing(error, engineer, slug) from None
        finally:
            seal.close()
        self._check_revoked(seal, answer)
        new = answer.new_grant
        if (
            new is None
            or seal.signed is None
            or new.signature != seal.signed
            or new.event_seq != answer.seq
            or new.request_id != seal.request_id
            or is_revoked(new)
            or set(answer.copies) != seal.sealed
            or answer.created_at is None
        ):
            raise UntrustedRecord("the authority's answer is not the grant this keyholder signed and sealed")
        end = dt.datetime.fromtimestamp(new.until, dt.UTC) if new.until else None
        return GrantInfo(answer.engineer.name, slug, answer.me.name, answer.created_at, end, "active")

    def revoke(self, engineer: str, slug: str) -> int:
        me = self.keys.session()
        ctx, slug_tag = self._context(slug)
        request = RevokeRequest(Caller(me.engineer_id, me.key_generation), engineer, slug_tag, me.org_signing_public)

        def verify(draft: GrantRows) -> dict[int, bytes]:
            self._common(me, ctx, engineer, draft)
            if not draft.grants or draft.new_grant is not None or draft.client_keys:
                raise UntrustedRecord("the authority's draft is not a revocation")
            return {}

        seal = _Seal(verify, self.keys, None, self.rings)
        try:
            answer = self.transport.revoke(request, seal)
        except NotFound as error:
            if str(error) == NO_GRANT:
                raise NotFound(f"{engineer!r} holds no grant for {slug!r}") from None
            raise self._missing(error, engineer, slug) from None
        finally:
            seal.close()
        self._check_revoked(seal, answer)
        if answer.copies:
            raise UntrustedRecord("the authority left copies of the client's keys sealed to the engineer")
        return len(answer.grants)

    # -- the checks ----------------------------------------------------------------------------

    def _context(self, slug: str) -> tuple[ClientContext | NotFound, bytes]:
        """The client's context and slug tag; for a client the lookup does not find, the
        lookup's error and the tag all the same: the request still goes, so that the
        authority reports an unknown engineer (or an admin named) before the unknown client."""
        ctx: ClientContext | NotFound
        try:
            ctx = self.lookup.context(slug)
            slug_tag = ctx.slug_tag
        except NotFound as missing:
            ctx, slug_tag = missing, self.lookup.slug_tag(slug)
            if slug_tag is None:
                raise
        if slug_tag is None:
            raise UntrustedRecord("only an admin names a client by its slug tag")
        return ctx, slug_tag

    def _common(self, me: Any, ctx: ClientContext | NotFound, engineer: str, draft: GrantRows) -> Any:
        if isinstance(ctx, NotFound):  # the authority found a client under a tag the lookup did not
            raise ctx
        checks, admin = verified_caller(me, draft, self.keys.sealing_public(), self.clock())
        if not admin:
            raise UntrustedRecord("the authority answered as if this engineer were an admin")
        if draft.client_id != ctx.client_id or draft.slug_blob != ctx.slug_blob:
            raise LookupMismatch(f"the client found for {ctx.slug!r} holds another slug: its lookup tag was moved")
        if draft.engineer.name != engineer:
            raise UntrustedRecord("the authority answered for another engineer than the one named")
        for grant in draft.grants:
            if (grant.engineer_id, grant.client_id) != (draft.engineer.id, draft.client_id) or is_revoked(grant):
                raise UntrustedRecord("the authority would revoke a grant of another engineer or client")
        if len({g.id for g in draft.grants}) != len(draft.grants):
            raise UntrustedRecord("the authority named a grant twice")
        return checks

    @staticmethod
    def _check_revoked(seal: _Seal, answer: GrantRows) -> None:
        """Every grant the keyholder signed a revocation for is stored revoked, with that signature."""
        admitted = seal.admitted
        if admitted is None or answer.seq < 1:
            raise UntrustedRecord("the authority's answer is not for the draft this keyholder admitted")
        stored = {g.id: g for g in answer.grants}
        if set(stored) != set(seal.revoked) or len(stored) != len(admitted.grants):
            raise UntrustedRecord("the authority's answer does not show the revocations this keyholder signed")
        for grant_id, signed in seal.revoked.items():
            row = stored[grant_id]
            if (row.revocation, row.revoked_by) != (signed.revocation, signed.revoked_by) or row.revoked_at is None:
                raise UntrustedRecord("the authority's answer does not show the revocations this keyholder signed")
        if (
            dataclasses.replace(
                answer, seq=0, grants=admitted.grants, new_grant=admitted.new_grant, copies=(), created_at=None
            )
            != admitted
        ):
            raise UntrustedRecord("the authority's answer is not for the draft this keyholder admitted")

    @staticmethod
    def _missing(error: NotFound, engineer: str, slug: str) -> Exception:
        if str(error) == NO_ENGINEER:
            return NotFound(f"no engineer named {engineer!r}", hint="`credvault engineer list` shows them")
        if str(error) == NO_CLIENT:
            return NotFound(f"no client {slug!r} that you may see")
        if str(error) == NO_GRANT:
            return NotFound(f"{engineer!r} holds no grant for {slug!r}")
        return error

    def __repr__(self) -> str:
        return "GrantKeyholder()"
