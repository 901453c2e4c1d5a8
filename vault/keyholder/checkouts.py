"""The checkout, where the engineer's keys are: ask, then verify everything, then decrypt.

``CheckoutKeyholder.checkout`` turns a reference (``client/name``) into a request that
names only ids and lookup tags (the client's id, the secret's name tag under the
client's lookup key), sends it through the transport, and checks every row of the
answer before any of it is used:

* its own engineer row: certified under the organisation key this engineer pinned (or
  one the signed chain leads to from it), active, with this session's id, name, key
  generation and sealing key;
* an engineer's grant: the head of their ledger for this client, signed by an active
  admin whose certificate verifies, unrevoked, unexpired; an admin's role, certified;
* the client and the secret: the client asked for, whose slug opens to the slug asked
  for, the secret under the name tag sent;
* a client key it does not hold yet: its record signed by an active admin, the sealed
  copy opened for this engineer (or the recovery key) and matching the signed fingerprint;
* the version: its data key unwraps under the client key (bound to the client, secret
  and version) and its metadata holds the name asked for.

What the request is built on (the client's id, slug, lookup key and audit-key ring) is
the client's key context, learned once per session through ``ClientLookup`` and kept
while the client key that opened it is in the session's key cache; if the authority
says it is stale, it is learned again once and the request sent again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from vault import validation
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
from vault.crypto import blobs, chain, signing
from vault.crypto.labels import (
    LABEL_CLIENT_KEY_SEAL,
    LABEL_TAG_SECRET_NAME,
)
from vault.errors import (
    CheckoutConflict,
    ConcurrentChange,
    DecryptionFailed,
    IntegrityError,
    InvalidInput,
    Locked,
    LookupMismatch,
    NotFound,
    UntrustedRecord,
    VaultError,
)
from vault.keyholder import versions
from vault.keyholder.contexts import ContextLearner, ContextTransport
from vault.keyholder.responses import ResponseChecks, trusted_org_key
from vault.records import Revealed
from vault.service.sessions import UnlockedSession
from vault.storage.rows import ACTIVE, ROLE_ADMIN, EngineerRecord, EngineerRow, KeyCache

METADATA_FIELDS = ("username", "url", "host", "note", "name")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, repr=False)
class ClientContext:
    """What a request for one client is built on, verified when it was learned."""

    client_id: int
    slug: str
    slug_tag: bytes | None  # an admin's: the client is asked for by its slug tag, every time
    slug_blob: bytes
    lookup_key: bytes
    audit_keys_blob: bytes
    ring: bytes  # the audit keys, 32 bytes per generation, oldest first
    ring_key: bytes  # the client key that opened the ring (the context lives while the cache holds it)

    def __repr__(self) -> str:
        return f"ClientContext(client={self.client_id}, <redacted>)"


class Opened:
    """A version opened after its response verified: metadata, data key, and the checks and
    the caller's row it verified under (for what the same answer asks next)."""

    def __init__(self, metadata: dict[str, Any], data_key: bytes, checks: ResponseChecks, me: EngineerRecord) -> None:
        self.metadata, self.data_key, self.checks, self.me = metadata, data_key, checks, me

    def __repr__(self) -> str:
        return "Opened(<redacted>)"


class Signed(Protocol):
    """What ``me_checked`` reads of a response: its vault, organisation key chain, the caller's row."""

    @property
    def vault_id(self) -> bytes: ...

    @property
    def org_signing_public(self) -> bytes: ...

    @property
    def org_chain(self) -> tuple[OrgKeyRow, ...]: ...

    @property
    def me(self) -> EngineerRow: ...


class ClientLookup(Protocol):
    """Learns a client's key context by its slug (grant, slug and lookup checks made), or
    raises what the lookup finds (NotFound, GrantExpired, LookupMismatch...)."""

    def context(self, slug: str) -> ClientContext: ...

    def known(self, slug: str) -> int | None:
        """The client id this session remembers for an engineer's ``slug`` (a context naming
        another is learned again), or None."""


class EngineerKeys(Protocol):
    """The acting engineer's unlocked keys, and the trust anchor they pinned."""

    def session(self) -> UnlockedSession:
        """The unlocked session (identity, private keys, organisation key pin)."""

    def sealing_public(self) -> bytes:
        """The X25519 public key of the session's private key."""

    def open_sealed(self, kind: str, recipient_id: int, version: int, blob: bytes, context: tuple[Any, ...]) -> bytes:
        """A client key sealed to this engineer (``engineer``) or to the recovery key an admin holds."""

    def recovery_version(self) -> int | None:
        """The version of the recovery key this admin holds unsealed (None: none yet)."""

    def slug_tag(self, slug: str) -> bytes | None:
        """An admin's: the slug's lookup tag under the recovery bundle held open (None: none open)."""

    def open_recovery(self) -> None:
        """An admin's: open the vault's current recovery key for this session (if not open yet)."""


class Transport(Protocol):
    def call(self, request: CheckoutRequest, seal: Any) -> CheckoutResponse: ...

    def answer_refused(self, request: CheckoutRequest, response: CheckoutResponse, reason: str) -> None:
        """Record that ``response`` was refused after its event was committed (best effort)."""


class _EventSeal:
    """The keyholder's side of the authority's ``EventSeal`` (the in-process seam): the
    event's details, sealed under the client's current audit key with the seq the append
    gives, and the engineer's signature of the event; and another's hold opened."""

    def __init__(
        self, seed: bytes, ctx: ClientContext, own: dict[str, Any], verify: Callable[[CheckoutResponse], Revealed]
    ) -> None:
        self._seed, self._ctx, self._own, self._verify = seed, ctx, own, verify
        self.admitted: tuple[CheckoutResponse, Revealed] | None = None

    def __repr__(self) -> str:
        return "EventSeal(<redacted>)"

    def admit(self, draft: CheckoutResponse) -> None:
        self.admitted = None
        self.admitted = (draft, self._verify(draft))  # raises, and nothing is written, if it does not verify

    def details(self, client_id: int, seq: int, action: str, facts: dict[str, Any]) -> tuple[int, bytes]:
        if client_id != self._ctx.client_id or action not in (CHECKOUT, REVEAL):
            raise UntrustedRecord("the event to seal is not the one this request asked for")
        allowed = {"version", "exclusive", "until"} if action == CHECKOUT else {"version"}
        if set(facts) != allowed or not all(isinstance(v, int) for v in facts.values()):
            raise UntrustedRecord("the event to seal carries details this request did not ask for")
        ring = self._ctx.ring
        version = len(ring) // 32
        raw = json.dumps({**facts, **self._own}, sort_keys=True).encode("utf-8")
        return version, blobs.encrypt_audit_detail(ring[-32:], version, raw, client_id, seq, action)

    def sign(self, vault_id: bytes, seq: int, digest: bytes) -> bytes:
        return chain.sign_event(self._seed, vault_id, seq, digest)

    def seal_request(self, request_id: bytes, action: str) -> tuple[int, bytes]:
        """Through the team server (format 3): this request's own details (field, reason) sealed
        before it is sent, under the client's current audit key, bound to ``request_id``:
        (audit-key generation, blob). The server's facts go in its signed ``details_json``."""
        if action not in (CHECKOUT, REVEAL):
            raise UntrustedRecord("the event to seal is not the one this request asked for")
        ring = self._ctx.ring
        version = len(ring) // 32
        raw = json.dumps(self._own, sort_keys=True).encode("utf-8")
        return version, blobs.encrypt_audit_detail_v3(ring[-32:], version, raw, self._ctx.client_id, request_id, action)

    def hold_claim(
        self, client_id: int, seq: int, action: str, key_version: int, blob: bytes, until: int
    ) -> bool | None:
        """Whether the event's details claim an exclusive hold ending at ``until`` (None: they do
        not open, or name another end). Only that bit goes back to the authority."""
        ring = self._ctx.ring
        if client_id != self._ctx.client_id or not 1 <= key_version <= len(ring) // 32:
            return None
        key = ring[(key_version - 1) * 32 : key_version * 32]
        try:
            details = json.loads(blobs.decrypt_audit_detail(key, key_version, blob, client_id, seq, action))
        except (VaultError, ValueError):
            return None
        if not isinstance(details, dict) or details.get("until") != until:
            return None
        return details.get("exclusive") is True


class CheckoutKeyholder:
    """Checkouts and reveals for the engineer whose keys ``keys`` holds."""

    def __init__(
        self,
        transport: Transport,
        keys: EngineerKeys,
        lookup: ClientLookup,
        cache: KeyCache,
        clock: Callable[[], dt.datetime],
        contexts: ContextTransport | None = None,
    ) -> None:
        self.transport, self.keys, self.lookup, self.cache, self.clock = transport, keys, lookup, cache, clock
        self._contexts: dict[tuple[int, str], ClientContext] = {}
        self.learner = None if contexts is None else ContextLearner(contexts, self)

    def checkout(
        self,
        ref: str,
        *,
        reason: str | None,
        field: str,
        version: int | None,
        hold: bool,
        hold_for: dt.timedelta | None,
    ) -> Revealed:
        """Reveal ``field`` of ``ref`` after the authority committed its audit event."""
        slug, name = validation.secret_ref(ref)
        me = self.keys.session()
        for attempt in (0, 1):
            ctx = self.context(me, slug, fresh=attempt > 0)
            tag = self.tag(ctx, slug, name, fresh=attempt > 0)
            request = CheckoutRequest(
                action=CHECKOUT if hold else REVEAL,
                caller=Caller(me.engineer_id, me.key_generation),
                client_id=ctx.client_id if ctx.slug_tag is None else None,
                slug_tag=ctx.slug_tag,
                name_tag=tag,
                version=version,
                hold_seconds=int(hold_for.total_seconds()) if hold and hold_for is not None else None,
                has_reason=bool(reason),
                field_is_password=field == "password",
                audit_keys_blob=ctx.audit_keys_blob,
                known_key_versions=tuple(v for (c, v) in self.cache if c == ctx.client_id),
                org_pin=me.org_signing_public,
            )

            def verify(
                r: CheckoutResponse, ctx: ClientContext = ctx, tag: bytes = tag, request: CheckoutRequest = request
            ) -> Revealed:
                return self._reveal(me, ctx, ref, name, tag, field, request, r)

            seal = _EventSeal(me.signing_seed, ctx, {"field": field, "reason": reason}, verify)
            try:
                response = self.transport.call(request, seal)
            except ConcurrentChange as error:
                if attempt == 0 and str(error) == STALE_CONTEXT:
                    continue  # learn the client's context again, and ask once more
                raise
            except NotFound as error:
                if str(error) == MISSING_TARGET and attempt == 0:
                    continue  # perhaps a stale context (a moved tag, a purged client): the lookup says which
                if str(error) == MISSING_TARGET:
                    raise NotFound(
                        f"no secret {ref!r}", hint=f"`credvault secret list {slug}` shows its secrets"
                    ) from None
                raise
            except InvalidInput as error:
                if str(error) == REASON_REQUIRED:
                    raise InvalidInput(
                        f"client {slug!r} requires a reason for every checkout", hint=error.hint
                    ) from None
                raise
            except CheckoutConflict as error:
                raise CheckoutConflict(f"{ref} is {error}") from None
            admitted = seal.admitted
            if admitted is not None and dataclasses.replace(response, seq=0) == admitted[0]:
                return admitted[1]  # what was verified and opened before the event was written
            try:
                return verify(response)  # an answer not shown before: verified now, in full
            except (IntegrityError, NotFound) as refused:  # its event is committed: say it was refused
                reason = (
                    "undecryptable"
                    if isinstance(refused, DecryptionFailed)
                    else "no-such-field"
                    if isinstance(refused, NotFound) and str(refused).endswith(" field")  # _reveal's
                    else "untrusted"  # a row that does not verify, or a sealed key that is missing
                )
                with contextlib.suppress(VaultError):
                    self.transport.answer_refused(request, response, reason)
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the client's key context ------------------------------------------------------------

    def context(self, me: UnlockedSession, slug: str, *, fresh: bool) -> ClientContext:
        """The client's key context for ``slug`` (kept per session): learned the short way
        (``ContextLearner``: one read of the authority, verified here) where it applies, else
        through the lookup; always through the lookup when ``fresh`` (after a stale answer)."""
        slot = (me.engineer_id, slug)
        ctx = self._contexts.get(slot)
        held = None if ctx is None else self.cache.get((ctx.client_id, blobs.blob_key_version(ctx.audit_keys_blob)))
        fits = ctx is not None and (ctx.slug_tag is not None or self.lookup.known(slug) == ctx.client_id)
        if not fresh and ctx is not None and held is ctx.ring_key and fits:
            return ctx
        learned = None if fresh or self.learner is None else self.learner.learn(slug)
        ctx = learned if learned is not None else self.lookup.context(slug)
        if len(self._contexts) >= 4096:  # a context per client used; bounded
            self._contexts.clear()
        self._contexts[slot] = ctx
        return ctx

    def tag(self, ctx: ClientContext, slug: str, name: str, *, fresh: bool) -> bytes:
        """The secret's name tag: remembered per (slug, name) as a guess (the authority finds no
        secret under a stale one: a client purged and made again has a new lookup key), and
        computed from the client's lookup key when ``fresh``."""
        tags = self.cache.tags
        tag = None if fresh else tags.get((slug, name))
        if tag is None:
            tag = signing.lookup_tag(ctx.lookup_key, LABEL_TAG_SECRET_NAME, name)
            if len(tags) >= 4096:  # a tag per secret checked out; bounded
                tags.clear()
            tags[(slug, name)] = tag
        return tag

    # -- the response, verified, then opened ------------------------------------------------------

    def me_checked(self, me: UnlockedSession, r: Signed) -> tuple[ResponseChecks, EngineerRecord]:
        """The response's organisation key (the pinned one, or reached from it by the signed
        chain) and the caller's own row in it: certified, active, this session's keys."""
        if r.vault_id != me.vault_id:
            raise UntrustedRecord("the answer comes from another vault")
        org = trusted_org_key(r.vault_id, me.org_signing_public, r.org_signing_public, r.org_chain)
        checks = ResponseChecks(r.vault_id, org, self.clock())
        row = r.me
        if row.id != me.engineer_id or row.name != me.name:
            raise Locked(f"engineer {me.name!r} no longer exists in this vault")
        checks.certificate(row)
        if row.status != ACTIVE:
            raise UntrustedRecord(f"the account of {me.name!r} is {row.status}")
        if row.key_generation != me.key_generation or row.sealing_public != self.keys.sealing_public():
            raise Locked(f"the keys of {me.name!r} have changed since this session was unlocked")
        return checks, row

    def verified(
        self,
        me: UnlockedSession,
        ctx: ClientContext,
        name: str,
        tag: bytes,
        asked_version: int | None,
        r: CheckoutResponse,
    ) -> Opened:
        """Every row of ``r`` verified (see the module's docstring), then the version's data key
        unwrapped and its metadata opened, holding ``name``."""
        checks, row = self.me_checked(me, r)
        if row.role != ROLE_ADMIN:
            checks.grant(r.grant, r.grant_signer, row, ctx.client_id)
        client, secret, version = r.client, r.secret, r.version
        if client.id != ctx.client_id:
            if ctx.slug_tag is not None:  # the slug tag asked for led to another client
                raise LookupMismatch(f"the client found for {ctx.slug!r} holds another slug: its lookup tag was moved")
            raise UntrustedRecord("the authority answered for another client than the one asked for")
        if secret.name_tag != tag:
            raise UntrustedRecord("the authority answered for another secret than the one asked for")
        if client.slug_blob != ctx.slug_blob:
            key = self.client_key(me, row, checks, client.id, blobs.blob_key_version(client.slug_blob), None)
            opened = blobs.decrypt_client_field(
                key, blobs.blob_key_version(client.slug_blob), client.slug_blob, client.id, "slug"
            )
            if opened != ctx.slug.encode("utf-8"):
                raise LookupMismatch(f"the client found for {ctx.slug!r} holds another slug: its lookup tag was moved")
        if asked_version is not None and version.version != asked_version:
            raise UntrustedRecord("the authority answered with another version than the one asked for")
        key = self.client_key(me, row, checks, client.id, version.key_version, r.sealed_key)
        found = versions.open_metadata(key, client.id, secret.id, version, name)
        return Opened(found.metadata, found.data_key, checks, row)

    def _reveal(
        self,
        me: UnlockedSession,
        ctx: ClientContext,
        ref: str,
        name: str,
        tag: bytes,
        field: str,
        request: CheckoutRequest,
        r: CheckoutResponse,
    ) -> Revealed:
        opened = self.verified(me, ctx, name, tag, request.version, r)
        metadata, dek = opened.metadata, opened.data_key
        client, secret, version = r.client, r.secret, r.version
        if field == "password":
            value: Any = versions.open_password(dek, client.id, secret.id, version)
        elif field in METADATA_FIELDS:
            value = metadata.get(field)
        else:
            value = (metadata.get("fields") or {}).get(field)
        if value is None:
            raise NotFound(f"secret {ref!r} has no {validation.shown(field)} field")
        expires = None if r.expires_us is None else EPOCH + dt.timedelta(microseconds=r.expires_us)
        return Revealed(ref, field, version.version, str(value), expires, r.flagged)

    def client_key(
        self,
        me: UnlockedSession,
        row: EngineerRecord,
        checks: ResponseChecks,
        client_id: int,
        version: int,
        sealed: SealedClientKey | None,
    ) -> bytes:
        """Client key ``version``: held already, or opened from the sealed copy returned, whose
        record must verify and whose key must match the signed fingerprint."""
        cached = self.cache.get((client_id, version))
        if cached is not None:
            return cached
        if sealed is None:
            raise DecryptionFailed()  # no such client-key version
        checks.client_key(sealed, client_id, version)
        if sealed.blob is None:
            raise NotFound("no such client, or you hold no grant for it")
        if row.role == ROLE_ADMIN:
            kind, held = "recovery", self.keys.recovery_version()
            if sealed.kind == kind and held != sealed.recipient_id:
                raise ConcurrentChange(
                    STALE_CONTEXT
                )  # the recovery key was rotated: open the current one, and ask again
            recipient = sealed.recipient_id
        else:
            kind, recipient = "engineer", me.engineer_id
        if (sealed.kind, sealed.recipient_id) != (kind, recipient):
            raise DecryptionFailed()
        context = (LABEL_CLIENT_KEY_SEAL, checks.vault_id, client_id, version, kind, recipient)
        key = self.keys.open_sealed(kind, recipient, version, sealed.blob, context)
        if signing.client_key_fingerprint(key) != sealed.record.fingerprint:
            raise UntrustedRecord(f"the sealed client key does not match its signed version {version}")
        self.cache[(client_id, version)] = key
        return key
