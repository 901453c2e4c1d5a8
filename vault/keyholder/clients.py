"""Clients, where the engineer's keys are: ask by ids and tags, verify every row, then open.

``ClientKeyholder`` sends ``client show`` and ``client list`` as requests naming ids and
lookup tags only, and checks every row it is given before it opens anything (the checks
of ``keyholder/responses.py``, as the checkout's and the secrets' keyholders make them):

* its own engineer row: certified under the organisation key it pinned (or one the signed
  chain leads to), active, with this session's id, name, key generation and sealing key;
* for an engineer, each client's grant: the head of their ledger for that client, theirs,
  signed by an active admin, over their current sealing key; an entry without one, or
  with a grant of another engineer or client, is an untrue answer and refused whole; a
  revoked or expired head hides the client (as it always did);
* each client-key record signed by an active admin and the sealed copy matching its signed
  fingerprint; each slug and name opened under its client's key, bound to the client's row
  (docs/format.md: a blob moved to another client does not open); for ``show``, the slug is
  the one asked for.

The answer is checked while the authority holds its draft (``admit``: a refusal writes no
event); what it opens stays in this module's call, never in the object the authority holds.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from vault.authority.client_requests import MISSING_CLIENT, ClientEntry, ClientRows, ListRequest, ShowRequest
from vault.authority.requests import Caller, OrgKeyRow, SealedClientKey
from vault.crypto import blobs, signing
from vault.crypto.labels import LABEL_CLIENT_KEY_SEAL
from vault.errors import AccessDenied, DecryptionFailed, Locked, LookupMismatch, NotFound, UntrustedRecord
from vault.keyholder.checkouts import EngineerKeys
from vault.keyholder.responses import ResponseChecks, trusted_org_key
from vault.records import ClientInfo
from vault.storage.rows import ACTIVE, ROLE_ADMIN, EngineerRow, KeyCache, is_revoked


class Me(Protocol):
    """The unlocked session, as these checks read it."""

    @property
    def vault_id(self) -> bytes: ...
    @property
    def engineer_id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def key_generation(self) -> int: ...
    @property
    def org_signing_public(self) -> bytes: ...


@dataclass(frozen=True, repr=False)
class ClientContext:
    """A client as a request names it, learned (grant, slug and lookup checks made) before."""

    client_id: int
    slug: str
    slug_tag: bytes | None  # an admin's: the client is asked for by its slug tag
    slug_blob: bytes

    def __repr__(self) -> str:
        return f"ClientContext(client={self.client_id}, <redacted>)"


class ClientLookup(Protocol):
    def context(self, slug: str) -> ClientContext:
        """The client named ``slug``, or what the lookup finds (NotFound, GrantExpired, LookupMismatch)."""

    def slug_tag(self, slug: str) -> bytes | None:
        """An admin's lookup tag of ``slug`` (None for an engineer), whether a client holds it or not."""


class ClientTransport(Protocol):
    def show(self, request: ShowRequest, seal: Any) -> ClientRows: ...
    def list(self, request: ListRequest, seal: Any) -> ClientRows: ...


class Seal:
    """The keyholder's side of ``ClientSeal``: the draft verified (and opened) by ``verify``
    before the event is written; it keeps the admitted draft (ciphertext only) and drops
    ``verify`` on ``close``, so nothing the authority holds reaches what was opened."""

    def __init__(self, verify: Callable[[ClientRows], None]) -> None:
        self._verify: Callable[[ClientRows], None] | None = verify
        self.admitted: ClientRows | None = None

    def __repr__(self) -> str:
        return "ClientSeal(<redacted>)"

    def admit(self, draft: ClientRows) -> None:
        self.admitted = None
        if self._verify is None:
            raise UntrustedRecord("this request is over")
        self._verify(draft)
        self.admitted = draft

    def close(self) -> None:
        self._verify = None

    def answered(self, answer: ClientRows) -> ClientRows:
        """``answer`` if it is the draft admitted with its event's number, else UntrustedRecord."""
        if self.admitted is None or answer.seq < 1 or _unnumbered(answer) != self.admitted:
            raise UntrustedRecord("the authority's answer is not the draft this keyholder admitted")
        return answer


def _unnumbered(rows: ClientRows) -> ClientRows:
    return dataclasses.replace(rows, seq=0)


class ClientKeyholder:
    """Show and list of clients for the engineer whose keys ``keys`` holds."""

    def __init__(
        self,
        transport: ClientTransport,
        keys: EngineerKeys,
        lookup: ClientLookup,
        cache: KeyCache,
        clock: Callable[[], dt.datetime],
        hints: Callable[[], dict[str, int]],
    ) -> None:
        self.transport, self.keys, self.lookup, self.cache, self.clock = transport, keys, lookup, cache, clock
        self.hints = hints

    # -- the operations ----------------------------------------------------------------------

    def show(self, slug: str) -> ClientInfo:
        me = self.keys.session()
        ctx = self.lookup.context(slug)
        request = ShowRequest(
            Caller(me.engineer_id, me.key_generation),
            ctx.client_id if ctx.slug_tag is None else None,
            ctx.slug_tag,
            tuple(v for (c, v) in self.cache if c == ctx.client_id),
            me.org_signing_public,
        )
        shown: list[ClientInfo] = []

        def verify(draft: ClientRows) -> None:
            shown.clear()
            checks, admin = self.caller_checks(me, draft)
            if len(draft.clients) != 1:
                raise UntrustedRecord("the authority answered with another number of clients than one")
            entry = draft.clients[0]
            if entry.id != ctx.client_id:
                if ctx.slug_tag is not None:
                    raise LookupMismatch(f"the client found for {slug!r} holds another slug: its lookup tag was moved")
                raise UntrustedRecord("the authority answered for another client than the one asked for")
            if not admin:
                self._grant(checks, draft.me, entry)
            info = self._open(me, admin, checks, entry, _sealed_by_slot(draft))
            if info.slug != slug:
                raise LookupMismatch(f"the client found for {slug!r} holds another slug: its lookup tag was moved")
            shown.append(info)

        seal = Seal(verify)
        try:
            answer = self.transport.show(request, seal)
        except NotFound as error:
            if str(error) == MISSING_CLIENT:
                raise NotFound(f"no client {slug!r} that you may see") from None
            raise
        finally:
            seal.close()
        seal.answered(answer)
        return shown[-1]

    def list(self) -> list[ClientInfo]:
        """The clients the engineer may see, each verified and opened, once the event is committed."""
        me = self.keys.session()
        request = ListRequest(Caller(me.engineer_id, me.key_generation), tuple(self.cache), me.org_signing_public)
        listed: list[ClientInfo] = []

        def verify(draft: ClientRows) -> None:
            listed.clear()
            checks, admin = self.caller_checks(me, draft)
            if admin and any(k.kind == "recovery" and k.blob is not None for k in draft.sealed_keys):
                self.keys.open_recovery()
            sealed = _sealed_by_slot(draft)
            seen: set[int] = set()
            hints = self.hints()
            for entry in draft.clients:
                if entry.id in seen:
                    raise UntrustedRecord("the authority listed a client twice")
                seen.add(entry.id)
                if not admin:
                    try:
                        self._grant(checks, draft.me, entry, index=True)
                    except (AccessDenied, NotFound):
                        continue  # a revoked or expired head hides the client, as it always did
                info = self._open(me, admin, checks, entry, sealed)
                listed.append(info)
                hints[info.slug] = entry.id  # where to look next time: checked on every use

        seal = Seal(verify)
        try:
            answer = self.transport.list(request, seal)
        finally:
            seal.close()
        seal.answered(answer)
        return sorted(listed, key=lambda c: c.slug)

    # -- the answer, verified ------------------------------------------------------------------

    def caller_checks(self, me: Me, r: Answer) -> tuple[ResponseChecks, bool]:
        return verified_caller(me, r, self.keys.sealing_public(), self.clock())

    def _grant(self, checks: ResponseChecks, row: EngineerRow, entry: ClientEntry, *, index: bool = False) -> None:
        """The entry's grant is the head of ``row``'s ledger for the client, verified; ``index``:
        remembered (the exact rows and keys) so that the next listing checks only what changed."""
        grant, signer = entry.grant, entry.grant_signer
        if grant is None:
            raise UntrustedRecord("the authority answered with a client this engineer holds no grant for")
        if (grant.engineer_id, grant.client_id) != (row.id, entry.id):
            raise UntrustedRecord("the grant returned is not this engineer's for this client")
        proof = (grant, signer, checks.org_public, row.sealing_public, row.id)
        if index and self.cache.grants.get(entry.id) == proof and not is_revoked(grant):
            if grant.until is not None and grant.until <= int(checks.now.timestamp()):
                raise NotFound("no such client, or you hold no grant for it")
            return
        checks.grant(grant, signer, row, entry.id)
        if index:
            if len(self.cache.grants) >= self.cache.GRANTS_LIMIT:
                self.cache.grants.clear()
            self.cache.grants[entry.id] = proof

    def _open(
        self,
        me: Me,
        admin: bool,
        checks: ResponseChecks,
        entry: ClientEntry,
        sealed: dict[tuple[int, int], SealedClientKey],
    ) -> ClientInfo:
        slug = self._field(me, admin, checks, entry.id, entry.slug_blob, "slug", sealed)
        name = self._field(me, admin, checks, entry.id, entry.name_blob, "name", sealed)
        try:
            slug_text, name_text = slug.decode("utf-8"), name.decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptionFailed() from None
        return ClientInfo(slug_text, name_text, entry.current_key_version, entry.secrets, entry.created_at)

    def open_field(
        self,
        me: Me,
        admin: bool,
        checks: ResponseChecks,
        client_id: int,
        blob: bytes,
        purpose: str,
        sealed: dict[tuple[int, int], SealedClientKey],
    ) -> bytes:
        """A client field opened as ``_field`` does (the grants' listing opens the slugs with it)."""
        return self._field(me, admin, checks, client_id, blob, purpose, sealed)

    def _field(
        self,
        me: Me,
        admin: bool,
        checks: ResponseChecks,
        client_id: int,
        blob: bytes,
        purpose: str,
        sealed: dict[tuple[int, int], SealedClientKey],
    ) -> bytes:
        """A client field, opened under the client key it names (once per exact blob and key)."""
        version = blobs.blob_key_version(blob)
        key = self.client_key(me, admin, checks, client_id, version, sealed.get((client_id, version)))
        slot = (client_id, version)
        opened = self.cache.fields.setdefault(slot, {}) if self.cache.get(slot) is key else {}
        value = opened.get((blob, purpose))
        if value is None:
            value = blobs.decrypt_client_field(key, version, blob, client_id, purpose)
            if len(opened) >= 16:
                opened.clear()
            opened[(blob, purpose)] = value
        return value

    def client_key(
        self, me: Me, admin: bool, checks: ResponseChecks, client_id: int, version: int, sealed: SealedClientKey | None
    ) -> bytes:
        """Client key ``version``: the sealed copy sent (its record verified, the key matching the
        signed fingerprint), or the one held already (verified when it was cached)."""
        if sealed is not None:
            checks.client_key(sealed, client_id, version)
        cached = self.cache.get((client_id, version))
        if cached is not None:
            if sealed is not None and signing.client_key_fingerprint(cached) != sealed.record.fingerprint:
                raise UntrustedRecord(f"the signed record of client key version {version} names another key")
            return cached
        if sealed is None:
            raise DecryptionFailed()
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


class Answer(Protocol):
    """What every answer carries to vouch for the caller: the vault, its organisation key
    (with the chain from the pinned one) and the caller's own row."""

    @property
    def vault_id(self) -> bytes: ...
    @property
    def org_signing_public(self) -> bytes: ...
    @property
    def org_chain(self) -> tuple[OrgKeyRow, ...]: ...
    @property
    def me(self) -> EngineerRow: ...


def verified_caller(me: Me, r: Answer, sealing_public: bytes, now: dt.datetime) -> tuple[ResponseChecks, bool]:
    """The checks of an answer's records under the organisation key reached from the pin,
    after the caller's own row is verified (certified, active, this session's keys); and
    whether the caller is an admin."""
    if r.vault_id != me.vault_id:
        raise UntrustedRecord("the answer comes from another vault")
    org = trusted_org_key(r.vault_id, me.org_signing_public, r.org_signing_public, r.org_chain)
    checks = ResponseChecks(r.vault_id, org, now)
    row = r.me
    if row.id != me.engineer_id or row.name != me.name:
        raise Locked(f"engineer {me.name!r} no longer exists in this vault")
    checks.certificate(row)
    if row.status != ACTIVE:
        raise UntrustedRecord(f"the account of {me.name!r} is {row.status}")
    if row.key_generation != me.key_generation or row.sealing_public != sealing_public:
        raise Locked(f"the keys of {me.name!r} have changed since this session was unlocked")
    return checks, row.role == ROLE_ADMIN


def _sealed_by_slot(rows: ClientRows) -> dict[tuple[int, int], SealedClientKey]:
    return {(k.record.client_id, k.record.version): k for k in rows.sealed_keys}
