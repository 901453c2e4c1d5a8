"""Secrets, where the engineer's keys are: ask by tags, verify every row, then decrypt.

``SecretKeyholder`` turns a reference (``client/name``) into a request naming only ids and
lookup tags (the client's id or an admin's slug tag; the secret's name tag under the
client's lookup key), sends it through the transport, and checks every row it is given
before any of it is used (the same checks as the checkout's, keyholder/checkouts.py):

* its own engineer row: certified under the organisation key it pinned (or one the signed
  chain leads to), active, with this session's id, name, key generation and sealing key;
* an engineer's grant: the head of their ledger for this client, signed by an active
  admin, unrevoked, unexpired; an admin's role, certified;
* the client asked for (its slug blob opening to the slug asked for when it changed) and
  the secret under the name tag sent;
* a client key: its record signed by an active admin, the sealed copy opened for this
  engineer (or the recovery key) and matching the signed fingerprint;
* a version: its data key unwraps under that client key, bound to (client, secret,
  version) (docs/format.md §4: a blob moved to another row does not open), and its
  metadata holds the name asked for.

A new version (add, update) is encrypted here, for the ids the authority assigned inside
its unit of work, under the client-key version whose signed record it sent.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from vault import validation
from vault.authority.requests import MISSING_TARGET, Caller, NewVersion, SealedClientKey
from vault.authority.secret_requests import (
    HISTORY,
    NAME_TAKEN,
    VIEW,
    AddRequest,
    ReadRequest,
    SecretRows,
    SecretTarget,
    UpdateRequest,
)
from vault.crypto import blobs, signing
from vault.crypto.labels import LABEL_CLIENT_KEY_SEAL, LABEL_TAG_SECRET_NAME
from vault.errors import (
    AlreadyExists,
    CheckoutConflict,
    DecryptionFailed,
    Locked,
    LookupMismatch,
    NotFound,
    UntrustedRecord,
)
from vault.keyholder import versions
from vault.keyholder.checkouts import EngineerKeys, Signed
from vault.keyholder.responses import ResponseChecks, trusted_org_key
from vault.service.sessions import UnlockedSession
from vault.storage.rows import ACTIVE, ROLE_ADMIN, EngineerRow, KeyCache


@dataclass(frozen=True, repr=False)
class SecretContext:
    """What a request for one client is built on, verified when it was learned."""

    client_id: int
    slug: str
    slug_tag: bytes | None  # an admin's: the client is asked for by its slug tag
    slug_blob: bytes
    lookup_key: bytes

    def __repr__(self) -> str:
        return f"SecretContext(client={self.client_id}, <redacted>)"


class SecretLookup(Protocol):
    """Learns a client's context by its slug (grant, slug and lookup checks made), or raises
    what the lookup finds (NotFound, GrantExpired, LookupMismatch...)."""

    def context(self, slug: str) -> SecretContext:
        """The client's context (its id, slug, lookup key), learned in a read of its own."""


class SecretTransport(Protocol):
    def read(self, request: ReadRequest, seal: Any) -> SecretRows: ...
    def add(self, request: AddRequest, seal: Any) -> SecretRows: ...
    def update(self, request: UpdateRequest, seal: Any) -> SecretRows: ...


@dataclass(frozen=True, repr=False)
class OpenedSecret:
    """A verified answer: its rows, the slug asked for and the version's metadata (no password)."""

    rows: SecretRows
    slug: str
    metadata: dict[str, Any]

    def __repr__(self) -> str:
        return f"OpenedSecret(secret={self.rows.secret.id}, <redacted>)"


# (current metadata, current password, current kind) -> (password, metadata) of the new version
Compose = Callable[[dict[str, Any], str, str], tuple[str, dict[str, Any]]]


def draft_digest(draft: SecretRows) -> bytes:
    """SHA-256 of a canonical, typed and length-prefixed encoding of ``draft`` (every field)."""
    out: list[bytes] = []

    def put(tag: bytes, data: bytes) -> None:
        out.append(tag + len(data).to_bytes(8, "big") + data)

    def encode(value: object) -> None:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            put(b"D", type(value).__name__.encode())
            for f in dataclasses.fields(value):
                encode(getattr(value, f.name))
        elif isinstance(value, tuple):
            put(b"T", str(len(value)).encode())
            for item in value:
                encode(item)
        elif value is None or isinstance(value, bool):
            put(b"B", repr(value).encode())
        elif isinstance(value, int):
            put(b"I", str(value).encode())
        elif isinstance(value, str):
            put(b"S", value.encode("utf-8", "surrogatepass"))
        elif isinstance(value, bytes):
            put(b"Y", value)
        elif isinstance(value, dt.datetime):
            put(b"d", value.isoformat().encode())
        else:
            raise UntrustedRecord("the authority's answer holds a value of an unexpected type")

    encode(draft)
    return hashlib.sha256(b"".join(out)).digest()


class _Seal:
    """The keyholder's side of ``SecretSeal``: the draft verified before the event is written;
    a new version encrypted for the draft it admitted, and for nothing else.

    It keeps only the admitted draft's digest and secret id, and the ciphertext it made:
    what ``verify`` opens (metadata, a kept password) goes straight to ``make`` in
    ``encrypt`` and is not kept, and ``close`` (after the call) drops both functions, so
    nothing reachable from this object, handed to the authority, holds plaintext."""

    def __init__(
        self,
        verify: Callable[[SecretRows], tuple[dict[str, Any] | None, str | None]] | None,
        make: Callable[[SecretRows, dict[str, Any] | None, str | None, int], NewVersion] | None,
    ) -> None:
        self._verify, self._make = verify, make
        self.admitted: bytes | None = None  # the admitted draft's digest
        self.admitted_secret: int | None = None
        self.made: NewVersion | None = None

    def __repr__(self) -> str:
        return "SecretSeal(<redacted>)"

    def admit(self, draft: SecretRows) -> None:
        self.admitted = self.admitted_secret = None
        if self._verify is None:
            raise UntrustedRecord("this request is over")
        self._verify(draft)  # raises, and nothing is written, if it does not verify; what it opens is dropped
        self.admitted, self.admitted_secret = draft_digest(draft), draft.secret.id

    def encrypt(self, draft: SecretRows, version: int) -> NewVersion:
        if self._make is None or self._verify is None or self.admitted is None or draft_digest(draft) != self.admitted:
            raise UntrustedRecord("the authority asked to encrypt a version this request did not admit")
        self.made = self._make(draft, *self._verify(draft), version)  # opened again, handed straight on
        return self.made

    def close(self) -> None:
        """The request is over: no more admits or encryptions, no reference to what opens."""
        self._verify = self._make = None


class SecretKeyholder:
    """Show, history, add and update of secrets for the engineer whose keys ``keys`` holds."""

    def __init__(
        self,
        transport: SecretTransport,
        keys: EngineerKeys,
        lookup: SecretLookup,
        cache: KeyCache,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.transport, self.keys, self.lookup, self.cache, self.clock = transport, keys, lookup, cache, clock

    # -- the operations ----------------------------------------------------------------------

    def show(self, ref: str) -> OpenedSecret:
        """The current version's metadata, after the authority committed the view's event."""
        return self._read(VIEW, ref)

    def history(self, ref: str) -> OpenedSecret:
        """The secret's versions (``rows.history``), after the history's event is committed."""
        return self._read(HISTORY, ref)

    def add(self, ref: str, *, kind: str, password: str, metadata: dict[str, Any]) -> OpenedSecret:
        slug, name = validation.secret_ref(ref)
        me, ctx, target = self._target(slug, name)

        def verify(draft: SecretRows) -> tuple[dict[str, Any] | None, str | None]:
            self._verify(me, ctx, target.name_tag, None, draft)
            if draft.version is not None or draft.secret.current_version != 0 or draft.kind != kind:
                raise UntrustedRecord("the authority answered with another secret than the new one")
            if draft.write_key is None:
                raise UntrustedRecord("the authority sent no client key to write under")
            return None, None

        def make(draft: SecretRows, _m: dict[str, Any] | None, _p: str | None, number: int) -> NewVersion:
            if number != 1:
                raise UntrustedRecord("the authority asked for another first version than 1")
            return self._encrypt(me, draft, number, password, metadata)

        seal = _Seal(verify, make)
        try:
            answer = self.transport.add(AddRequest(target, kind), seal)
        except AlreadyExists as error:
            if str(error) == NAME_TAKEN:
                raise AlreadyExists(
                    f"secret {ref!r} already exists", hint="use `credvault secret update` to change it"
                ) from None
            raise
        except NotFound as error:
            raise self._missing(error, ref, slug) from None
        finally:
            seal.close()
        self._check_written(seal, answer)
        return OpenedSecret(answer, slug, metadata)

    def update(self, ref: str, *, kind: str | None, password_changed: bool, compose: Compose) -> OpenedSecret:
        """A new version made by ``compose`` from the current one (verified, then opened here: its
        password only if it is kept, ``password_changed`` False)."""
        slug, name = validation.secret_ref(ref)
        me, ctx, target = self._target(slug, name)
        made: list[dict[str, Any]] = []

        def verify(draft: SecretRows) -> tuple[dict[str, Any] | None, str | None]:
            if draft.version is None:
                raise UntrustedRecord("the authority sent no current version to update")
            if draft.write_key is None:
                raise UntrustedRecord("the authority sent no client key to write under")
            return self._verify(me, ctx, target.name_tag, name, draft, password=not password_changed)

        def make(draft: SecretRows, metadata: dict[str, Any] | None, old: str | None, number: int) -> NewVersion:
            if metadata is None or draft.version is None:
                raise UntrustedRecord("the authority sent no current version to update")
            if number != draft.version.version + 1:
                raise UntrustedRecord("the authority asked for a version that does not follow the current one")
            password, new_metadata = compose(metadata, old or "", draft.kind)  # old: opened only if kept
            made.append(new_metadata)
            return self._encrypt(me, draft, number, password, new_metadata)

        seal = _Seal(verify, make)
        request = UpdateRequest(target, kind, password_changed)
        try:
            answer = self.transport.update(request, seal)
        except NotFound as error:
            raise self._missing(error, ref, slug) from None
        except CheckoutConflict as error:
            raise CheckoutConflict(f"{ref} is {error}", hint=error.hint) from None
        finally:
            seal.close()
        self._check_written(seal, answer)
        return OpenedSecret(answer, slug, made[-1])

    # -- the request ------------------------------------------------------------------------

    def _target(self, slug: str, name: str) -> tuple[UnlockedSession, SecretContext, SecretTarget]:
        me = self.keys.session()
        ctx = self.lookup.context(slug)
        target = SecretTarget(
            caller=Caller(me.engineer_id, me.key_generation),
            client_id=ctx.client_id if ctx.slug_tag is None else None,
            slug_tag=ctx.slug_tag,
            name_tag=signing.lookup_tag(ctx.lookup_key, LABEL_TAG_SECRET_NAME, name),
            known_key_versions=tuple(v for (c, v) in self.cache if c == ctx.client_id),
            org_pin=me.org_signing_public,
        )
        return me, ctx, target

    @staticmethod
    def _missing(error: NotFound, ref: str, slug: str) -> NotFound:
        if str(error) == MISSING_TARGET:
            return NotFound(f"no secret {ref!r}", hint=f"`credvault secret list {slug}` shows its secrets")
        return error

    def _read(self, action: str, ref: str) -> OpenedSecret:
        slug, name = validation.secret_ref(ref)
        me, ctx, target = self._target(slug, name)

        def verify(draft: SecretRows) -> tuple[dict[str, Any] | None, str | None]:
            return self._verify(me, ctx, target.name_tag, name, draft)

        seal = _Seal(verify, None)
        try:
            answer = self.transport.read(ReadRequest(action, target), seal)
        except NotFound as error:
            raise self._missing(error, ref, slug) from None
        finally:
            seal.close()
        if seal.admitted is None or draft_digest(dataclasses.replace(answer, seq=0)) != seal.admitted:
            raise UntrustedRecord("the authority's answer is not the draft this keyholder admitted")
        metadata, _ = verify(answer)  # opened here, for the caller: the seal kept nothing of it
        if metadata is None:
            raise UntrustedRecord("the authority sent no current version")
        return OpenedSecret(answer, slug, metadata)

    @staticmethod
    def _check_written(seal: _Seal, answer: SecretRows) -> None:
        """What the authority says it stored is what this keyholder encrypted, for the secret admitted."""
        made, admitted = seal.made, seal.admitted_secret
        v = answer.version
        if made is None or admitted is None or v is None or answer.secret.id != admitted:
            raise UntrustedRecord("the authority's answer is not the version this keyholder wrote")
        if (v.key_version, v.wrapped_dek, v.password_blob, v.metadata_blob) != (
            made.key_version,
            made.wrapped_dek,
            made.password_blob,
            made.metadata_blob,
        ):
            raise UntrustedRecord("the authority's answer is not the version this keyholder wrote")

    # -- the answer, verified, then opened ------------------------------------------------------

    def me_checked(self, me: UnlockedSession, r: Signed) -> tuple[ResponseChecks, EngineerRow]:
        """The answer's organisation key (the pinned one, or reached from it by the signed chain)
        and the caller's own row in it: certified, active, this session's keys."""
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

    def _verify(
        self,
        me: UnlockedSession,
        ctx: SecretContext,
        tag: bytes,
        name: str | None,
        r: SecretRows,
        *,
        password: bool = False,
    ) -> tuple[dict[str, Any] | None, str | None]:
        """Every row of ``r`` checked; the version's metadata (and ``password``: its password)
        opened and its name checked, when ``r`` carries a version."""
        checks, row = self.me_checked(me, r)
        admin = row.role == ROLE_ADMIN
        if not admin:
            checks.grant(r.grant, r.grant_signer, row, ctx.client_id)
        client, secret = r.client, r.secret
        if client.id != ctx.client_id:
            if ctx.slug_tag is not None:
                raise LookupMismatch(f"the client found for {ctx.slug!r} holds another slug: its lookup tag was moved")
            raise UntrustedRecord("the authority answered for another client than the one asked for")
        if secret.name_tag != tag:
            raise UntrustedRecord("the authority answered for another secret than the one asked for")
        if client.slug_blob != ctx.slug_blob:
            version = blobs.blob_key_version(client.slug_blob)
            key = self.client_key(me, admin, checks, client.id, version, None)
            if blobs.decrypt_client_field(key, version, client.slug_blob, client.id, "slug") != ctx.slug.encode():
                raise LookupMismatch(f"the client found for {ctx.slug!r} holds another slug: its lookup tag was moved")
        v, opened = r.version, None
        if v is not None:
            key = self.client_key(me, admin, checks, client.id, v.key_version, r.sealed_key)
            opened = versions.open_metadata(key, client.id, secret.id, v, name)
        if r.write_key is not None:  # a new value goes under it: not older than a key verified already
            held = [version for (c, version) in self.cache if c == client.id]  # the version's, once it opened
            versions.check_write_key(r.write_key.record.version, held)
            self.client_key(me, admin, checks, client.id, r.write_key.record.version, r.write_key)
        if opened is None or v is None:
            return None, None
        value = versions.open_password(opened.data_key, client.id, secret.id, v) if password else None
        return opened.metadata, value

    def _encrypt(
        self, me: UnlockedSession, draft: SecretRows, number: int, password: str, metadata: dict[str, Any]
    ) -> NewVersion:
        """Version ``number`` of the draft's secret under the client key the draft's signed
        record names (verified in ``admit``), with a fresh data key."""
        if draft.write_key is None:
            raise UntrustedRecord("the authority sent no client key to write under")
        version = draft.write_key.record.version
        key = self.cache.get((draft.client.id, version))
        if key is None:
            raise DecryptionFailed()
        return versions.new_version(key, version, draft.client.id, draft.secret.id, number, password, metadata)

    def client_key(
        self,
        me: UnlockedSession,
        admin: bool,
        checks: ResponseChecks,
        client_id: int,
        version: int,
        sealed: SealedClientKey | None,
    ) -> bytes:
        """Client key ``version``: the sealed copy returned, whose record must verify and whose
        key must match the signed fingerprint, or the one held already (verified when cached)."""
        if sealed is not None:
            checks.client_key(sealed, client_id, version)
        cached = self.cache.get((client_id, version))
        if cached is not None:
            if sealed is not None and signing.client_key_fingerprint(cached) != sealed.record.fingerprint:
                raise UntrustedRecord(f"the signed record of client key version {version} names another key")
            return cached
        if sealed is None:
            raise DecryptionFailed()  # no such client-key version
        if sealed.blob is None:
            raise NotFound("no such client, or you hold no grant for it")
        kind = "recovery" if admin else "engineer"
        recipient = sealed.recipient_id if admin else me.engineer_id
        if (sealed.kind, sealed.recipient_id) != (kind, recipient):
            raise DecryptionFailed()
        context = (LABEL_CLIENT_KEY_SEAL, checks.vault_id, client_id, version, kind, recipient)
        key = self.keys.open_sealed(kind, recipient, version, sealed.blob, context)
        if signing.client_key_fingerprint(key) != sealed.record.fingerprint:
            raise UntrustedRecord(f"the sealed client key does not match its signed version {version}")
        self.cache[(client_id, version)] = key
        return key
