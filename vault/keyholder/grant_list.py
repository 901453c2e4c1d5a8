"""The listing of grants, where the engineer's keys are: every state decided here.

``GrantListKeyholder.list(engineer=, client=)`` names the client by the id its checked
lookup found (``NotFound`` for a client the caller may not see, as before) and is answered
with rows (``GrantListRows``); then, before anything is shown:

* its own row is verified (certified, active, this session's keys) and decides the rules:
  an engineer is shown only their own grants, an admin all (a row of another engineer in
  an engineer's answer, or of an engineer or client not asked for, is an untrue answer
  and refused whole, ``UntrustedRecord``);
* each (engineer, client) ledger is ordered newest first (its signed ``seq``, then id) and
  its head is the newest row that is revoked or whose signature verifies (an active,
  certified admin's, over the grantee's sealing key, the grantee's row certified: the name
  shown is the one its certificate binds); the rows before it that do not
  verify are ``unverified``, the others ``revoked`` or ``superseded``; the head is
  ``expired`` by this keyholder's clock, and for an admin ``unconfirmed`` where the
  verified audit log does not back it (``GrantHistorySource``, the in-process adapter
  over the grant ledger); else ``active``;
* each client's slug is opened under a client key whose record is signed by an active
  admin and whose sealed copy matches it (``ClientKeyholder.open_field``); an engineer
  opens only the slugs of clients whose ledger head is theirs and active (or whose key
  this session holds already), and rows they cannot open are left out, as before.
"""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Callable
from typing import Protocol

from vault.authority.grant_requests import NO_ENGINEER, GrantListRequest, GrantListRows, ListedGrant
from vault.authority.requests import Caller, SealedClientKey
from vault.crypto import signing
from vault.errors import AccessDenied, DecryptionFailed, NotFound, UntrustedRecord, VaultError
from vault.keyholder.checkouts import EngineerKeys
from vault.keyholder.clients import ClientKeyholder, ClientLookup, Me, verified_caller
from vault.keyholder.responses import ResponseChecks
from vault.keyholder.trust import grant_fields, grant_label
from vault.records import GrantInfo
from vault.storage.rows import EngineerRow, GrantRow, is_revoked

Confirms = Callable[[str, int, GrantRow], "str | None"]


class GrantHistorySource(Protocol):
    def confirmations(self, client_ids: set[int]) -> Confirms:
        """For an admin: why the verified audit log does not back a grant (None: it does)."""


class GrantListTransport(Protocol):
    def list(self, request: GrantListRequest) -> GrantListRows: ...


def _newest_first(listed: ListedGrant) -> tuple[int, int]:
    return (-(listed.row.seq or 0), -listed.row.id)  # GRANT_ORDER


def states(
    checks: ResponseChecks,
    ledger: list[ListedGrant],
    target: EngineerRow,
    people: dict[int, EngineerRow],
    confirms: Confirms | None,
) -> dict[int, str]:
    """The state of each row of one (engineer, client) ledger, ``ledger`` newest first."""
    now = int(checks.now.timestamp())
    out: dict[int, str] = {}
    head: GrantRow | None = None
    for listed in ledger:
        grant = listed.row
        if head is None:
            if is_revoked(grant) or _verifies(checks, grant, people.get(grant.granted_by), target):
                head = grant
            else:
                out[grant.id] = "unverified"
                continue
        if is_revoked(grant):
            out[grant.id] = "revoked"
        elif grant is not head:
            out[grant.id] = "superseded"
        elif grant.until is not None and grant.until <= now:
            out[grant.id] = "expired"
        elif confirms is not None and confirms(target.name, grant.client_id, grant) is not None:
            out[grant.id] = "unconfirmed"  # the audit log does not back it: it counts for nothing
        else:
            out[grant.id] = "active"
    return out


def _verifies(checks: ResponseChecks, grant: GrantRow, signer: EngineerRow | None, target: EngineerRow) -> bool:
    """The grant is signed by an active, certified admin over the grantee's sealing key, and the
    grantee's row is certified: its certificate binds the name shown to that key (a row renamed
    by a database writer lists its grants as unverified, never under the new name)."""
    try:
        checks.certificate(target)
        admin = checks.admin(signer, grant.granted_by)
        assert admin.signing_public is not None
        fields = grant_fields(checks.vault_id, grant, target.sealing_public)
        signing.verify(admin.signing_public, grant.signature, grant_label(grant), *fields, what="the grant")
    except VaultError:
        return False
    return True


class GrantListKeyholder:
    """``grants.list`` for the engineer whose keys ``keys`` holds."""

    def __init__(
        self,
        transport: GrantListTransport,
        keys: EngineerKeys,
        lookup: ClientLookup,
        clients: ClientKeyholder,
        history: GrantHistorySource,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.transport, self.keys, self.lookup, self.clients = transport, keys, lookup, clients
        self.history, self.clock = history, clock

    def __repr__(self) -> str:
        return "GrantListKeyholder()"

    def list(self, *, engineer: str | None = None, client: str | None = None) -> builtins.list[GrantInfo]:
        me = self.keys.session()
        client_id = self.lookup.context(client).client_id if client is not None else None
        request = GrantListRequest(
            Caller(me.engineer_id, me.key_generation),
            engineer,
            client_id,
            tuple(self.clients.cache),
            me.org_signing_public,
        )
        try:
            rows = self.transport.list(request)
        except NotFound as error:
            if str(error) == NO_ENGINEER:
                raise NotFound(f"no engineer named {engineer!r}", hint="`credvault engineer list` shows them") from None
            raise
        checks, admin = verified_caller(me, rows, self.keys.sealing_public(), self.clock())
        people = {e.id: e for e in rows.engineers}
        if len(people) != len(rows.engineers):
            raise UntrustedRecord("the authority listed an engineer twice")
        ledgers = self._ledgers(rows, me, admin, people, engineer, client_id)
        if admin and any(k.kind == "recovery" and k.blob is not None for k in rows.sealed_keys):
            self.keys.open_recovery()
        confirms = self.history.confirmations({c for _, c in ledgers}) if admin and ledgers else None
        slugs = dict(rows.slugs)
        sealed = {(k.record.client_id, k.record.version): k for k in rows.sealed_keys}
        out: builtins.list[tuple[int, GrantInfo]] = []
        for (engineer_id, client_id_), ledger in ledgers.items():
            target = people.get(engineer_id)
            if target is None:
                continue  # the grant names an engineer that is gone (as before)
            ledger.sort(key=_newest_first)
            found = states(checks, ledger, target, people, confirms)
            live = any(state == "active" for state in found.values())
            try:
                slug = self._slug(me, admin, live, checks, client_id_, slugs, sealed)
            except (NotFound, AccessDenied):
                continue  # the viewer can no longer open that client's slug
            for listed in ledger:
                grant = listed.row
                signer = people.get(grant.granted_by)
                until = dt.datetime.fromtimestamp(grant.until, dt.UTC) if grant.until else None
                info = GrantInfo(
                    target.name,
                    slug,
                    signer.name if signer is not None else f"#{grant.granted_by}",
                    listed.created_at,
                    until,
                    found[grant.id],
                )
                out.append((grant.id, info))
        return [info for _, info in sorted(out, key=lambda pair: pair[0])]

    @staticmethod
    def _ledgers(
        rows: GrantListRows,
        me: Me,
        admin: bool,
        people: dict[int, EngineerRow],
        engineer: str | None,
        client_id: int | None,
    ) -> dict[tuple[int, int], builtins.list[ListedGrant]]:
        """The rows by ledger, each one the caller may see and asked for, else UntrustedRecord."""
        ledgers: dict[tuple[int, int], builtins.list[ListedGrant]] = {}
        seen: set[int] = set()
        for listed in rows.grants:
            grant = listed.row
            if grant.id in seen:
                raise UntrustedRecord("the authority listed a grant twice")
            seen.add(grant.id)
            if not admin and grant.engineer_id != me.engineer_id:
                raise UntrustedRecord("the authority showed an engineer another engineer's grant")
            named = people.get(grant.engineer_id)
            if engineer is not None and (named is None or named.name != engineer):
                raise UntrustedRecord("the authority listed a grant of another engineer than the one named")
            if client_id is not None and grant.client_id != client_id:
                raise UntrustedRecord("the authority listed a grant of another client than the one named")
            ledgers.setdefault((grant.engineer_id, grant.client_id), []).append(listed)
        return ledgers

    def _slug(
        self,
        me: Me,
        admin: bool,
        live: bool,
        checks: ResponseChecks,
        client_id: int,
        slugs: dict[int, bytes],
        sealed: dict[tuple[int, int], SealedClientKey],
    ) -> str:
        blob = slugs.get(client_id)
        if blob is None:
            raise NotFound("the grant names a client that is gone")
        usable = sealed if admin or live else {}  # an engineer opens a copy only through a live grant
        try:
            raw = self.clients.open_field(me, admin, checks, client_id, blob, "slug", usable)
        except DecryptionFailed:
            if usable:
                raise
            raise NotFound("no such client, or you hold no grant for it") from None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptionFailed() from None
