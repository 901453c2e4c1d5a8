"""Check-in, break and the listing of checkouts, where the engineer's keys are.

``CheckinKeyholder`` names the secret as the checkout does (the client's id or an admin's
slug tag, the secret's name tag: ``CheckoutKeyholder.context``/``tag``) and sends a
``ReleaseRequest``. Before the authority writes anything it shows the rows it acts on
(``admit``): they are verified exactly as a checkout's answer (certificate, grant and its
signer, client and slug, client-key record and sealed copy, the data key's binding, the
name in the metadata). The seal signs and seals an event only after that, and only the
event this request asked for. A check-in with a new value encrypts it here: a fresh
data key wrapped under the client's current key, whose signed record is verified first
(by an active admin, this client's, not destroyed), the value and the unchanged metadata
under it; only ciphertext goes back.

``list`` verifies its answer the same way (its own row, each client key returned, that an
engineer is shown only their own checkouts) and opens each slug and name itself.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Protocol

from vault import validation
from vault.authority.requests import (
    BREAK,
    CHECKIN,
    MISSING_TARGET,
    NOT_CHECKED_OUT,
    NOT_HELD,
    SECRET_UPDATE,
    STALE_CONTEXT,
    Caller,
    CheckoutResponse,
    ListRequest,
    ListResponse,
    NewVersion,
    ReleaseRequest,
    ReleaseResponse,
    SealedClientKey,
    WriteKey,
)
from vault.crypto import blobs, chain
from vault.errors import CheckoutConflict, ConcurrentChange, DecryptionFailed, NotFound, UntrustedRecord, VaultError
from vault.keyholder import versions
from vault.keyholder.checkouts import EPOCH, CheckoutKeyholder, ClientContext, Opened
from vault.records import CheckoutInfo
from vault.service.sessions import UnlockedSession
from vault.storage.rows import ROLE_ADMIN

# The details each event of a release may carry (the authority proposes them; nothing else is sealed).
_FACTS = {SECRET_UPDATE: {"version", "password_changed"}, CHECKIN: {"new_version", "released"}, BREAK: {"holders"}}


def _plain_facts(action: str, facts: dict[str, Any]) -> bool:
    if set(facts) != _FACTS[action]:
        return False
    if action == BREAK:
        holders = facts["holders"]
        return isinstance(holders, list) and all(isinstance(h, str) for h in holders)
    return all(isinstance(v, int) for v in facts.values())


class ReleaseTransport(Protocol):
    def release(self, request: ReleaseRequest, seal: Any) -> ReleaseResponse: ...

    def list_checkouts(self, request: ListRequest) -> ListResponse: ...


class _ReleaseSeal:
    """The keyholder's side of a release at the in-process seam: it verifies the rows shown
    (``admit``), then seals and signs the events of this request only, and encrypts a new version."""

    def __init__(
        self,
        keyholder: CheckinKeyholder,
        me: UnlockedSession,
        ctx: ClientContext,
        name: str,
        tag: bytes,
        request: ReleaseRequest,
        new_value: str | None,
    ) -> None:
        self._k, self._me, self._ctx, self._name, self._tag = keyholder, me, ctx, name, tag
        self._request, self._new_value = request, new_value
        self.admitted: tuple[CheckoutResponse, Opened] | None = None
        self._written: int | None = None  # the number of the version encrypted here
        # The events this request may record, in order: each sealed once, then signed once.
        self._expected = [SECRET_UPDATE, request.action] if request.new_value else [request.action]
        self._unsigned: int | None = None  # the seq of the event sealed and not yet signed
        self.sealed: dict[str, dict[str, Any]] = {}  # action -> the facts sealed (compared with the answer)
        self.last_seq: int | None = None
        self._request_sealed: bytes | None = None  # through the team server: the request id its details are bound to

    def __repr__(self) -> str:
        return "ReleaseSeal(<redacted>)"

    def admit(self, draft: CheckoutResponse) -> None:
        if self._written is not None or self.sealed:
            raise UntrustedRecord("the authority showed new rows after the change was made")
        self.admitted = None
        opened = self._k.checkouts.verified(self._me, self._ctx, self._name, self._tag, None, draft)
        if draft.version.version != draft.secret.current_version:
            raise UntrustedRecord("the authority showed another version than the secret's current one")
        self.admitted = (draft, opened)

    def _admitted(self) -> tuple[CheckoutResponse, Opened]:
        if self.admitted is None:
            raise UntrustedRecord("the authority asked to record a change to rows it did not show")
        return self.admitted

    def new_version(self, write: WriteKey) -> NewVersion:
        draft, opened = self._admitted()
        if self._new_value is None or self._written is not None:
            raise UntrustedRecord("the authority asked for a new version this check-in did not give")
        client, secret = draft.client, draft.secret
        if write.next_version != secret.current_version + 1:
            raise UntrustedRecord("the authority asked for another version number than the next one")
        if write.sealed is None:
            raise DecryptionFailed()  # no such client-key version
        # Versions only grow and a rotation makes its new one current at once (keyholder/versions.py).
        held = [v for (c, v) in self._k.checkouts.cache if c == client.id]
        versions.check_write_key(write.key_version, [*held, draft.version.key_version])
        opened.checks.client_key(write.sealed, client.id, write.key_version)  # verified even if held
        key = self._k.checkouts.client_key(
            self._me, opened.me, opened.checks, client.id, write.key_version, write.sealed
        )
        self._written = write.next_version
        return versions.new_version(
            key, write.key_version, client.id, secret.id, write.next_version, self._new_value, opened.metadata
        )

    def details(self, client_id: int, seq: int, action: str, facts: dict[str, Any]) -> tuple[int, bytes]:
        draft, _opened = self._admitted()
        if client_id != draft.client.id or not self._expected or action != self._expected[0]:
            raise UntrustedRecord("the event to seal is not the one this request asked for")
        if self._unsigned is not None or (self.last_seq is not None and seq != self.last_seq + 1):
            raise UntrustedRecord("the event to seal does not follow the one sealed before")
        if not _plain_facts(action, facts) or not self._expected_facts(action, facts):
            raise UntrustedRecord("the event to seal records another change than the one made")
        self._expected.pop(0)
        self._unsigned, self.last_seq, self.sealed[action] = seq, seq, dict(facts)
        ring = self._ctx.ring
        version = len(ring) // 32
        raw = json.dumps(facts, sort_keys=True).encode("utf-8")
        return version, blobs.encrypt_audit_detail(ring[-32:], version, raw, client_id, seq, action)

    def _expected_facts(self, action: str, facts: dict[str, Any]) -> bool:
        """The facts pinned to what this request did: the version encrypted here; a check-in's
        new-value flag; at least one hold released when nothing else changed."""
        if action == SECRET_UPDATE:
            return self._written is not None and facts == {"version": self._written, "password_changed": True}
        if action == CHECKIN:
            released = facts["released"]
            new = self._request.new_value
            if facts["new_version"] is not new or isinstance(released, bool) or released < (0 if new else 1):
                return False
            return not new or SECRET_UPDATE in self.sealed
        return len(facts["holders"]) >= 1  # a break releases at least one hold

    def sign(self, vault_id: bytes, seq: int, digest: bytes) -> bytes:
        self._admitted()
        if self._unsigned is None or seq != self._unsigned:
            raise UntrustedRecord("the authority asked for a signature of an event this request did not seal")
        self._unsigned = None  # one signature per event sealed
        return chain.sign_event(self._me.signing_seed, vault_id, seq, digest)

    def seal_request(self, request_id: bytes, action: str) -> tuple[int, bytes]:
        """Through the team server (format 3): the request's own details sealed before it is sent,
        under the client's current audit key, bound to ``request_id``; the server's facts (holds
        released, holders) go in its signed ``details_json``. Once per request, for its action;
        not for a new value (the server stores none yet)."""
        if action != self._request.action or self._request.new_value or self._request_sealed is not None:
            raise UntrustedRecord("the event to seal is not the one this request asked for")
        if self.sealed or self.admitted is not None:
            raise UntrustedRecord("a release sealed in-process is not sent to the team server")
        self._request_sealed = request_id
        ring = self._ctx.ring
        version = len(ring) // 32
        raw = json.dumps({}, sort_keys=True).encode("utf-8")
        return version, blobs.encrypt_audit_detail_v3(ring[-32:], version, raw, self._ctx.client_id, request_id, action)

    def answered(self, r: ReleaseResponse) -> ReleaseResponse:
        """The authority's answer, once committed, compared with what was sealed: every expected
        event recorded, the holds and the version it reports the ones sealed. Through the team
        server (nothing sealed by seq): the answer is what this request can have done."""
        if self._request_sealed is not None:
            return self._served(r)
        facts = self.sealed.get(self._request.action)
        if self._expected or self._unsigned is not None or facts is None or r.seq != self.last_seq:
            raise UntrustedRecord("the authority's answer is not the change this keyholder sealed")
        if self._request.action == BREAK:
            same = list(r.holders) == facts["holders"] and r.released == len(facts["holders"])
        else:
            same = r.released == facts["released"] and (self._written is None or r.version == self._written)
        if not same:
            raise UntrustedRecord("the authority's answer is not the change this keyholder sealed")
        return r

    def _served(self, r: ReleaseResponse) -> ReleaseResponse:
        """A format-3 release's answer: a check-in released at least one hold of the caller's and
        names no holder; a break released as many holds as it names holders, at least one."""
        if isinstance(r.seq, bool) or not isinstance(r.seq, int) or r.seq < 1 or isinstance(r.released, bool):
            raise UntrustedRecord("the server's answer is not the change this request asked for")
        if self._request.action == BREAK:
            same = r.released >= 1 and r.released == len(r.holders)
        else:
            same = r.released >= 1 and not r.holders
        if not same:
            raise UntrustedRecord("the server's answer is not the change this request asked for")
        return r

    def hold_claim(
        self, client_id: int, seq: int, action: str, key_version: int, blob: bytes, until: int
    ) -> bool | None:
        ring = self._ctx.ring
        if client_id != self._ctx.client_id or not 1 <= key_version <= len(ring) // 32:
            return None
        key = ring[(key_version - 1) * 32 : key_version * 32]
        try:
            details = json.loads(blobs.decrypt_audit_detail(key, key_version, blob, client_id, seq, action))
        except (ValueError, VaultError):
            return None
        if not isinstance(details, dict) or details.get("until") != until:
            return None
        return details.get("exclusive") is True


class CheckinKeyholder:
    """Check-ins, breaks and listings for the engineer whose keys the checkout keyholder holds."""

    def __init__(self, checkouts: CheckoutKeyholder, transport: ReleaseTransport) -> None:
        self.checkouts = checkouts
        self.transport = transport

    def __repr__(self) -> str:
        return "CheckinKeyholder()"

    def release(self, ref: str, action: str, new_value: str | None = None) -> ReleaseResponse:
        """Check in (perhaps storing ``new_value``) or break ``ref``; the authority's answer once committed."""
        slug, name = validation.secret_ref(ref)
        k = self.checkouts
        me = k.keys.session()
        for attempt in (0, 1):
            ctx = k.context(me, slug, fresh=attempt > 0)
            tag = k.tag(ctx, slug, name, fresh=attempt > 0)
            request = ReleaseRequest(
                action=action,
                caller=Caller(me.engineer_id, me.key_generation),
                client_id=ctx.client_id if ctx.slug_tag is None else None,
                slug_tag=ctx.slug_tag,
                name_tag=tag,
                new_value=new_value is not None,
                audit_keys_blob=ctx.audit_keys_blob,
                known_key_versions=tuple(v for (c, v) in k.cache if c == ctx.client_id),
                org_pin=me.org_signing_public,
            )
            seal = _ReleaseSeal(self, me, ctx, name, tag, request, new_value)
            try:
                return seal.answered(self.transport.release(request, seal))
            except ConcurrentChange as error:
                if attempt == 0 and str(error) == STALE_CONTEXT:
                    continue
                raise
            except NotFound as error:
                if str(error) == MISSING_TARGET and attempt == 0:
                    continue
                if str(error) == MISSING_TARGET:
                    raise NotFound(
                        f"no secret {ref!r}", hint=f"`credvault secret list {slug}` shows its secrets"
                    ) from None
                if str(error) == NOT_HELD:
                    raise NotFound(f"you hold no checkout of {ref!r}") from None
                if str(error) == NOT_CHECKED_OUT:
                    raise NotFound(f"{ref!r} is not checked out") from None
                raise
            except CheckoutConflict as error:
                raise CheckoutConflict(f"{ref} is {error}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def list(self) -> list[CheckoutInfo]:
        """The open checkouts the caller may see, each slug and name opened here."""
        k = self.checkouts
        me = k.keys.session()
        request = ListRequest(Caller(me.engineer_id, me.key_generation), tuple(sorted(k.cache)), me.org_signing_public)
        r: ListResponse = self.transport.list_checkouts(request)
        checks, row = k.me_checked(me, r)
        admin = row.role == ROLE_ADMIN
        sealed: dict[tuple[int, int], SealedClientKey] = {}
        for item in r.sealed_keys:
            sealed.setdefault((item.record.client_id, item.record.version), item)
        if admin and any(s.kind == "recovery" and s.recipient_id != k.keys.recovery_version() for s in sealed.values()):
            k.keys.open_recovery()  # the recovery key the client keys are sealed to, opened for this session
        out = []
        for c in r.checkouts:
            if not admin and c.engineer_id != me.engineer_id:
                raise UntrustedRecord("the authority listed another engineer's checkout")
            client, secret, version = c.client, c.secret, c.version
            slug_version = blobs.blob_key_version(client.slug_blob)
            key = k.client_key(me, row, checks, client.id, slug_version, sealed.get((client.id, slug_version)))
            slug = blobs.decrypt_client_field(key, slug_version, client.slug_blob, client.id, "slug").decode("utf-8")
            key = k.client_key(
                me, row, checks, client.id, version.key_version, sealed.get((client.id, version.key_version))
            )
            name = versions.open_metadata(key, client.id, secret.id, version).metadata["name"]
            started = EPOCH + dt.timedelta(microseconds=c.started_us)
            expires = EPOCH + dt.timedelta(microseconds=c.expires_us)
            out.append(CheckoutInfo(slug, name, c.holder, c.exclusive, started, expires))
        return out
