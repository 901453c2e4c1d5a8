"""Client policies, where the engineer's keys are: verify every stored policy, sign changes.

``PolicyKeyholder`` asks the authority for a client's stored policy (by the client id its
lookup verified) and decides itself what applies: a policy whose signature, signer
(certified under the organisation key this engineer pinned, an active admin) or bounds do
not verify reads as the **strict policy** (``vault/authority/policy.py``), whatever the
row says. A change (``set``) and an adoption (``adopt``) are signed here, inside the
authority's unit of work, over the draft it was shown: for the client asked for (set), or
exactly the unverified policies the admin reviewed (adopt: refused if any changed since).

``verified_caller`` is the first check of every answer of these authorities (policies,
purges): it comes from this vault, under an organisation key the pin leads to, and its
caller row is this session's, certified and active.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from vault.authority.policy import (
    MAX_CHECKOUT_MINUTES,
    MAX_STALE_DAYS,
    Policy,
    in_bounds,
    policy_fields,
)
from vault.authority.policy import SignedRow as SignedRow
from vault.authority.policy import verified_policy as verified_policy
from vault.authority.policy_requests import (
    ADOPT,
    CHANGED_SINCE_SHOWN,
    GET,
    MISSING_CLIENT,
    SET,
    UNSIGNED,
    ClientPolicy,
    PolicyRequest,
    PolicyRows,
    SignedPolicy,
)
from vault.authority.requests import Caller, OrgKeyRow
from vault.crypto import signing
from vault.crypto.labels import LABEL_SIG_POLICY
from vault.errors import AccessDenied, IntegrityError, InvalidInput, Locked, NotFound, UntrustedRecord
from vault.keyholder.responses import ResponseChecks, trusted_org_key
from vault.records import PolicyInfo
from vault.storage.rows import ACTIVE, ROLE_ADMIN, EngineerRow, PolicyRow


class Acting(Protocol):
    """The unlocked session as these keyholders read it."""

    @property
    def engineer_id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def key_generation(self) -> int: ...
    @property
    def vault_id(self) -> bytes: ...
    @property
    def org_signing_public(self) -> bytes: ...


class SigningKeys(Protocol):
    """The acting engineer's unlocked keys: their identity, their sealing public key, and a
    signature by their signing key (the private key never leaves)."""

    def session(self) -> Acting: ...
    def sealing_public(self) -> bytes: ...
    def sign(self, label: bytes, *fields: signing.ContextItem) -> bytes: ...


class ClientLookup(Protocol):
    """A client's id and slug blob by its slug, for this engineer (grant, slug tag and slug
    checked), else what the lookup finds (NotFound, ...)."""

    def client(self, slug: str) -> tuple[int, bytes]: ...


class SlugOpener(Protocol):
    """The slugs of clients, by (id, slug blob): opened under their verified client keys;
    a client whose slug does not open is left out."""

    def slugs(self, clients: Sequence[tuple[int, bytes]]) -> dict[int, str]: ...


class PolicyTransport(Protocol):
    def read(self, request: PolicyRequest) -> PolicyRows: ...
    def write(self, request: PolicyRequest, seal: Any) -> PolicyRows: ...


def verified_caller(
    me: Acting,
    sealing_public: bytes,
    now: dt.datetime,
    answer: tuple[bytes, bytes, tuple[OrgKeyRow, ...], EngineerRow],
    *,
    admin: bool,
) -> ResponseChecks:
    """The checks of an answer ``(vault id, organisation key, chain, caller row)``: this vault,
    an organisation key the pin leads to, the caller's own row certified, active, of this
    session's keys (``admin``: an admin). Raises what the service raised for the same row."""
    vault_id, org_public, chain, row = answer
    if vault_id != me.vault_id:
        raise UntrustedRecord("the answer comes from another vault")
    checks = ResponseChecks(vault_id, trusted_org_key(vault_id, me.org_signing_public, org_public, chain), now)
    if row.id != me.engineer_id or row.name != me.name:
        raise Locked(f"engineer {me.name!r} no longer exists in this vault")
    checks.certificate(row)
    if row.status != ACTIVE:
        raise AccessDenied(f"the account of {me.name!r} is {row.status}", hint="ask an admin")
    if row.key_generation != me.key_generation or row.sealing_public != sealing_public:
        raise Locked(f"the keys of {me.name!r} have changed since this session was unlocked")
    if admin and row.role != ROLE_ADMIN:
        raise AccessDenied(f"{row.name!r} is not an admin", hint="ask an admin to do this")
    return checks


def applies(checks: ResponseChecks, p: ClientPolicy) -> Policy:
    """The policy that applies to ``p.client_id`` given its stored row and signer's row."""
    return verified_policy(checks.vault_id, p.client_id, p.stored, lambda signer_id: checks.admin(p.signer, signer_id))


def _as_stored(r: PolicyRow) -> Policy:
    """A stored policy row's values, as stored (not signed: what ``unsigned`` shows)."""
    return Policy(
        bool(r.reason_required), bool(r.exclusive), bool(r.rotate_after_checkout), r.checkout_minutes, r.stale_days,
        False,
    )  # fmt: skip


def info(slug: str, p: Policy) -> PolicyInfo:
    return PolicyInfo(
        slug, p.reason_required, p.exclusive, p.rotate_after_checkout, p.checkout_minutes, p.stale_days, p.signed
    )


class _Seal:
    """The keyholder's side of ``PolicySeal``: ``sign`` is given once, and dropped after the call."""

    def __init__(self, sign: Callable[[PolicyRows], list[SignedPolicy]]) -> None:
        self._sign: Callable[[PolicyRows], list[SignedPolicy]] | None = sign
        self.signed: list[SignedPolicy] = []

    def __repr__(self) -> str:
        return "PolicySeal()"

    def sign(self, draft: PolicyRows) -> list[SignedPolicy]:
        if self._sign is None or self.signed:
            raise UntrustedRecord("the authority asked for a second signature of one request")
        self.signed = self._sign(draft)
        return self.signed

    def close(self) -> None:
        self._sign = None


class PolicyKeyholder:
    """Get, set, list-unsigned and adopt of client policies for the acting engineer."""

    def __init__(
        self,
        transport: PolicyTransport,
        keys: SigningKeys,
        lookup: ClientLookup,
        slugs: SlugOpener,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.transport, self.keys, self.lookup, self.slugs, self.clock = transport, keys, lookup, slugs, clock

    # -- reads -------------------------------------------------------------------------------

    def get(self, slug: str) -> PolicyInfo:
        """The policy that applies (``signed`` False: the stored one does not verify)."""
        client_id, slug_blob = self.lookup.client(slug)
        answer = self._send(lambda: self.transport.read(self._request(GET, client_id)))
        checks = self._checks(answer, admin=False)
        return info(slug, applies(checks, self._one(answer, client_id, slug_blob)))

    def unsigned(self) -> list[PolicyInfo]:
        """Every client whose stored policy does not verify, as stored and within bounds."""
        answer = self.transport.read(self._request(UNSIGNED, None))
        checks = self._checks(answer, admin=True)
        return [shown for _, shown in self._pending(checks, answer)]

    # -- changes -------------------------------------------------------------------------------

    def set(self, slug: str, wanted: Callable[[Policy], dict[str, Any]]) -> PolicyInfo:
        """Sign ``wanted(current)`` (the values asked for, over the policy as it applies now)
        for the client ``slug``; one ``policy-set`` event with what changed."""
        client_id, slug_blob = self.lookup.client(slug)
        made: list[Policy] = []

        def sign(draft: PolicyRows) -> list[SignedPolicy]:
            checks = self._checks(draft, admin=True)
            current = applies(checks, self._one(draft, client_id, slug_blob))
            values = wanted(current)
            changes: dict[str, object] = {
                name: value for name, value in values.items() if name != "signed" and getattr(current, name) != value
            }
            if not current.signed:
                changes["signed"] = True  # a policy that did not verify is signed afresh
            policy = Policy(**{**values, "signed": True})
            made.append(policy)
            return [self._signed(draft, client_id, policy, changes)]

        seal = _Seal(sign)
        try:
            written = self._send(lambda: self.transport.write(self._request(SET, client_id), seal))
        finally:
            seal.close()
        self._check_written(written, seal.signed)
        return info(slug, made[-1])

    def adopt(self, shown: Sequence[PolicyInfo]) -> list[PolicyInfo]:
        """Sign, as stored, exactly the unverified policies ``shown`` (what ``unsigned`` returned
        and the admin reviewed); nothing if the stored policies changed since."""
        adopted: list[PolicyInfo] = []

        def sign(draft: PolicyRows) -> list[SignedPolicy]:
            checks = self._checks(draft, admin=True)
            pending = self._pending(checks, draft)
            if [p for _, p in pending] != list(shown):
                raise IntegrityError(
                    CHANGED_SINCE_SHOWN, hint="run `credvault policy adopt` again and check what it shows"
                )
            out = []
            for client_id, p in pending:
                policy = Policy(
                    p.reason_required, p.exclusive, p.rotate_after_checkout, p.checkout_minutes, p.stale_days, True
                )
                details = {"adopted": True, **{k: v for k, v in policy._asdict().items() if k != "signed"}}
                out.append(self._signed(draft, client_id, policy, details))
                adopted.append(PolicyInfo(**{**p.to_json(), "signed": True}))
            return out

        seal = _Seal(sign)
        try:
            written = self.transport.write(self._request(ADOPT, None), seal)
        finally:
            seal.close()
        self._check_written(written, seal.signed)
        return adopted

    def adopt_one(self, slug: str, shown: PolicyInfo) -> PolicyInfo:
        """Through the team server (a request and a unit per client): sign, as stored, the unverified
        policy ``shown`` of the client ``slug``, with the details in-process ``adopt`` records; nothing
        if the stored policy is no longer the one shown, or verifies now."""
        client_id, slug_blob = self.lookup.client(slug)
        adopted: list[PolicyInfo] = []

        def sign(draft: PolicyRows) -> list[SignedPolicy]:
            checks = self._checks(draft, admin=True)
            p = self._one(draft, client_id, slug_blob)
            if p.stored is None or applies(checks, p).signed or info(slug, _as_stored(p.stored)) != shown:
                raise IntegrityError(
                    CHANGED_SINCE_SHOWN, hint="run `credvault policy adopt` again and check what it shows"
                )
            policy = _as_stored(p.stored)._replace(signed=True)
            details = {"adopted": True, **{k: v for k, v in policy._asdict().items() if k != "signed"}}
            adopted.append(info(slug, policy))
            return [self._signed(draft, client_id, policy, details)]

        seal = _Seal(sign)
        try:
            written = self._send(lambda: self.transport.write(self._request(SET, client_id), seal))
        finally:
            seal.close()
        self._check_written(written, seal.signed)
        return adopted[0]

    # -- helpers -------------------------------------------------------------------------------

    def _request(self, action: str, client_id: int | None) -> PolicyRequest:
        me = self.keys.session()
        return PolicyRequest(action, Caller(me.engineer_id, me.key_generation), client_id, me.org_signing_public)

    @staticmethod
    def _send(call: Callable[[], PolicyRows]) -> PolicyRows:
        try:
            return call()
        except NotFound as error:
            if str(error) == MISSING_CLIENT:
                raise NotFound("no such client", hint="`credvault client list` shows the clients") from None
            raise

    def _checks(self, answer: PolicyRows, *, admin: bool) -> ResponseChecks:
        if not isinstance(answer, PolicyRows):
            raise UntrustedRecord("the authority's answer is not a policy answer")
        parts = (answer.vault_id, answer.org_signing_public, answer.org_chain, answer.me)
        return verified_caller(self.keys.session(), self.keys.sealing_public(), self.clock(), parts, admin=admin)

    @staticmethod
    def _one(answer: PolicyRows, client_id: int, slug_blob: bytes) -> ClientPolicy:
        """The answer's only policy, of the client asked for (the one whose slug was checked)."""
        if len(answer.policies) != 1:
            raise UntrustedRecord("the authority answered with another number of clients than one")
        p = answer.policies[0]
        if p.client_id != client_id or p.slug_blob != slug_blob:
            raise UntrustedRecord("the authority answered for another client than the one asked for")
        return p

    def _pending(self, checks: ResponseChecks, answer: PolicyRows) -> list[tuple[int, PolicyInfo]]:
        """The stored policies that do not verify, within bounds, whose client's slug opens."""
        ids = [p.client_id for p in answer.policies]
        if ids != sorted(set(ids)):
            raise UntrustedRecord("the authority's policies are not one per client in order")
        candidates = []
        for p in answer.policies:
            row = p.stored
            if row is None or applies(checks, p).signed or not in_bounds(row.checkout_minutes, row.stale_days):
                continue
            candidates.append(p)
        slugs = self.slugs.slugs([(p.client_id, p.slug_blob) for p in candidates])
        out = []
        for p in candidates:
            slug = slugs.get(p.client_id)
            if slug is None or p.stored is None:
                continue  # a client whose keys do not open: nothing to show, nothing signed
            out.append((p.client_id, info(slug, _as_stored(p.stored))))
        return out

    def _signed(self, draft: PolicyRows, client_id: int, policy: Policy, details: dict[str, object]) -> SignedPolicy:
        row = PolicyRow(
            policy.reason_required,
            policy.exclusive,
            policy.rotate_after_checkout,
            policy.checkout_minutes,
            policy.stale_days,
            draft.me.id,
            int(self.clock().timestamp()),
            None,
        )
        signature = self.keys.sign(LABEL_SIG_POLICY, *policy_fields(draft.vault_id, client_id, row))
        return SignedPolicy(client_id, row._replace(signature=signature), json.dumps(details))

    @staticmethod
    def _check_written(written: PolicyRows, signed: Sequence[SignedPolicy]) -> None:
        """What the authority says it stored is what this keyholder signed, client by client."""
        stored = {p.client_id: p.stored for p in written.policies}
        if sorted(stored) != sorted(x.client_id for x in signed) or any(stored[x.client_id] != x.row for x in signed):
            raise UntrustedRecord("the authority's answer is not the policies this keyholder signed")


def wanted_values(
    current: Policy,
    *,
    reason_required: bool | None,
    exclusive: bool | None,
    rotate_after_checkout: bool | None,
    checkout_for: dt.timedelta | None,
    stale_days: int | None,
) -> dict[str, Any]:
    """The values of a ``policy set``: what is not given keeps its value as it applies now."""
    wanted = current._asdict()
    for name, value in (
        ("reason_required", reason_required),
        ("exclusive", exclusive),
        ("rotate_after_checkout", rotate_after_checkout),
    ):
        if value is not None:
            wanted[name] = value
    if checkout_for is not None:
        minutes = int(checkout_for.total_seconds() // 60)
        if not 1 <= minutes <= MAX_CHECKOUT_MINUTES:
            raise InvalidInput("bad checkout length", hint="use between 1m and 7d")
        wanted["checkout_minutes"] = minutes
    if stale_days is not None:
        if not 0 <= stale_days <= MAX_STALE_DAYS:
            raise InvalidInput("bad stale-after", hint="use a number of days; 0 turns the flag off")
        wanted["stale_days"] = stale_days or None
    wanted.pop("signed")
    return wanted
