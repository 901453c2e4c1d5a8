"""``status`` and ``stale``, where the admin's keys are: ask, verify what is used, then open.

``ReportKeyholder`` sends a ``ReportRequest`` (the action, the caller, the pin, the client
keys it holds) and checks the answer before it believes or opens any of it:

* the answer is for this request's action, from this vault, under an organisation key the
  pin leads to; the caller's own row certified, active, of this session's keys, an admin;
* the clients come once each, in growing id order, and their number is the count the
  answer states (a client the authority leaves out of the list, or a count it swaps, is
  refused); every secret belongs to a listed client, at most once, and the secrets'
  count is not below the secrets listed;
* each policy verifies under its signer's row (certified, an active admin), else the
  strict policy applies and ``status`` says so; the settings likewise (they bound the
  cryptoperiod: a forged row can only make keys reported old sooner);
* each client key is the recovery copy matching its admin-signed record (or one held
  already); each slug and each secret's name opens under it, bound to its row: a moved
  or rewritten blob does not open and is reported as such in ``status`` (a warning naming
  the client by id, never a slug), and refuses ``stale`` (``DecryptionFailed``).

A verified policy is remembered by client (the exact policy and signer rows and the
organisation key it was verified under; ``POLICY_LIMIT`` at most): the next ``status``
verifies only the rows that changed. What was opened stays in this module's calls.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from vault.authority.policy import Policy
from vault.authority.report_requests import STALE, STATUS, ClientState, ReportRequest, ReportRows, StoredSettings
from vault.authority.requests import Caller, SealedClientKey
from vault.authority.settings_requests import SettingsRow
from vault.crypto import blobs
from vault.errors import DecryptionFailed, UntrustedRecord, VaultError
from vault.keyholder import policies
from vault.keyholder.checkouts import EngineerKeys
from vault.keyholder.responses import ResponseChecks
from vault.keyholder.settings import Settings, settings_warnings, verified_settings
from vault.keyholder.versions import open_metadata
from vault.records import StaleSecret, StatusReport
from vault.storage.rows import ENCRYPTION_WARNING, KeyCache

POLICY_LIMIT = 100_000  # remembered verified policies, a bound against churn


class ClientKeys(Protocol):
    """Client keys, verified and opened (``keyholder/clients.ClientKeyholder.client_key``)."""

    def client_key(
        self, me: Any, admin: bool, checks: ResponseChecks, client_id: int, version: int, sealed: SealedClientKey | None
    ) -> bytes: ...


class ReportTransport(Protocol):
    def status(self, request: ReportRequest) -> ReportRows: ...
    def stale(self, request: ReportRequest) -> ReportRows: ...


class _Version(NamedTuple):
    """A version as ``open_metadata`` reads it (no password blob crosses for a report)."""

    version: int
    key_version: int
    wrapped_dek: bytes
    password_blob: bytes
    metadata_blob: bytes


class ReportKeyholder:
    """``status`` and ``stale`` for the admin whose keys ``keys`` holds."""

    def __init__(
        self,
        transport: ReportTransport,
        keys: EngineerKeys,
        client_keys: ClientKeys,
        cache: KeyCache,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.transport, self.keys, self.client_keys, self.cache, self.clock = (
            transport,
            keys,
            client_keys,
            cache,
            clock,
        )
        self._policies: dict[int, tuple[tuple[Any, ...], Policy]] = {}

    def __repr__(self) -> str:
        return "ReportKeyholder(<redacted>)"

    # -- the operations ----------------------------------------------------------------------

    def status(self) -> StatusReport:
        """Warnings an admin should act on, from an answer verified first (module docstring)."""
        me, answer = self._ask(STATUS)
        checks = self._verified(me, answer)
        counts = answer.counts
        if counts is None or answer.settings is None or counts.clients != len(answer.clients):
            raise UntrustedRecord("the status answer's counts are not those of the clients it lists")
        if counts.secrets < len(answer.secrets):
            raise UntrustedRecord("the status answer's counts are not those of the secrets it lists")
        settings, settings_said = self.settings(checks, answer.settings)
        period, now = settings.cryptoperiod_days, checks.now
        old = now - dt.timedelta(days=period)
        warnings: list[str] = []
        foreign = list(answer.schema_problems)
        if foreign:
            warnings.append(
                f"the database holds {len(foreign)} object(s) credvault did not create ({', '.join(foreign)}): "
                "every other command refuses to work until an admin removes them"
            )
        if answer.revision != answer.head_revision:
            warnings.append(
                f"the database schema is at revision {answer.revision}; this version of credvault brings "
                f"{answer.head_revision}: run `credvault db upgrade`"
            )
        warnings += settings_said
        if answer.root_created_at is None:
            raise UntrustedRecord("the vault has no active recovery key")
        if answer.root_created_at < old:
            warnings.append(f"the recovery key is older than {period} days: run `credvault rotate root`")
        sealed = self._sealed(answer)
        slugs: dict[int, str] = {}
        for client in answer.clients:
            warnings += self._client_warnings(me, checks, client, sealed, slugs, old, period)
        for key in answer.key_ages:
            if dt.datetime.fromtimestamp(key.certified_at, dt.UTC) < old:
                warnings.append(f"engineer {key.engineer}: keys older than {period} days")
        for done, total in answer.rotations:
            warnings.append(f"a client-key rotation is incomplete ({done}/{total}): run `credvault rotate resume`")
        must_change = []
        for secret in answer.secrets:
            slug = slugs.get(secret.client_id)
            name = self._name(me, checks, secret, sealed) if slug is not None else None
            if slug is None or name is None:
                warnings.append(f"secret #{secret.id}: must be changed, but its name does not open (damaged)")
                continue
            must_change.append(f"{slug}/{name}")
        if must_change:
            warnings.append(f"{len(must_change)} secret(s) must be changed after checkout")
        return StatusReport(
            warnings,
            counts.clients,
            counts.secrets,
            counts.engineers,
            len(answer.rotations),
            sorted(must_change),
            schema_problems=foreign,
        )

    def stale(self) -> list[StaleSecret]:
        """Secrets unused for longer than their client's stale_days, each verified and opened."""
        me, answer = self._ask(STALE)
        checks = self._verified(me, answer)
        sealed = self._sealed(answer)
        now = checks.now
        clients = {c.id: c for c in answer.clients}
        out = []
        for secret in answer.secrets:
            client = clients[secret.client_id]
            days = self._policy(checks, client).stale_days
            if days is None or secret.last_used >= now - dt.timedelta(days=days):
                raise UntrustedRecord("the authority listed a secret as stale that is not")
            slug = self._slug(me, checks, client, sealed)
            name = self._name(me, checks, secret, sealed)
            if slug is None or name is None:
                raise DecryptionFailed()
            out.append(StaleSecret(slug, name, secret.last_used, (now - secret.last_used).days, days))
        return sorted(out, key=lambda x: (x.client, x.secret))

    # -- the answer, verified ------------------------------------------------------------------

    def _ask(self, action: str) -> tuple[Any, ReportRows]:
        me = self.keys.session()
        held = tuple(sorted(self.cache))
        request = ReportRequest(action, Caller(me.engineer_id, me.key_generation), held, me.org_signing_public)
        answer = self.transport.status(request) if action == STATUS else self.transport.stale(request)
        if answer.action != action:
            raise UntrustedRecord(f"the authority answered another report than {action!r}")
        return me, answer

    def _verified(self, me: Any, answer: ReportRows) -> ResponseChecks:
        """The caller verified (an admin), then the shape of the lists (module docstring)."""
        row = (answer.vault_id, answer.org_signing_public, answer.org_chain, answer.me)
        checks = policies.verified_caller(me, self.keys.sealing_public(), self.clock(), row, admin=True)
        last = 0
        for client in answer.clients:
            if client.id <= last:
                raise UntrustedRecord("the authority listed a client twice or out of order")
            last = client.id
        ids, seen = {c.id for c in answer.clients}, set()
        for secret in answer.secrets:
            if secret.client_id not in ids or secret.id in seen:
                raise UntrustedRecord("the authority listed a secret of a client it did not list, or twice")
            seen.add(secret.id)
        if any(k.kind == "recovery" and k.blob is not None for k in answer.sealed_keys):
            self.keys.open_recovery()
        return checks

    def settings(self, checks: ResponseChecks, stored: StoredSettings) -> tuple[Settings, list[str]]:
        """The settings as they apply (``keyholder/settings.verified_settings``: signed by an
        active admin over exactly these values, or the bounded defaults) and their warning."""
        row = SettingsRow(stored.retention, stored.cryptoperiod, stored.signed_by, stored.signed_at, stored.signature)
        applied = verified_settings(checks.vault_id, row, lambda signer_id: checks.admin(stored.signer, signer_id))
        return applied, settings_warnings(row, applied)

    def _policy(self, checks: ResponseChecks, client: ClientState) -> Policy:
        """The policy that applies (``keyholder/policies.applies``), remembered by its exact rows."""
        proof = (client.policy, client.policy_signer, checks.org_public, checks.vault_id)
        known = self._policies.get(client.id)
        if known is not None and known[0] == proof:
            return known[1]
        policy = policies.verified_policy(
            checks.vault_id, client.id, client.policy, lambda signer_id: checks.admin(client.policy_signer, signer_id)
        )
        if len(self._policies) >= POLICY_LIMIT:
            self._policies.clear()
        self._policies[client.id] = (proof, policy)
        return policy

    def _client_warnings(
        self,
        me: Any,
        checks: ResponseChecks,
        client: ClientState,
        sealed: dict[tuple[int, int], SealedClientKey],
        slugs: dict[int, str],
        old: dt.datetime,
        period: int,
    ) -> list[str]:
        out = []
        slug = self._slug(me, checks, client, sealed)
        if slug is None:
            out.append(
                f"client #{client.id}: its slug does not open (rewritten or moved in the database): "
                "run `credvault audit verify` and restore it from a backup"
            )
            who = f"#{client.id}"
        else:
            slugs[client.id] = who = slug
        has_key = client.key_created_at is not None
        if client.key_created_at is not None and client.key_created_at < old:
            out.append(f"client {who}: key version {client.current_key_version} is older than {period} days")
        if not self._policy(checks, client).signed:
            out.append(
                f"client {who}: its policy does not verify, so the strict one applies: review it "
                f"with `credvault policy show {who}`, re-sign it with `credvault policy set {who}`"
            )
        if has_key and (client.key_encryptions or 0) > ENCRYPTION_WARNING:
            out.append(
                f"client {who}: key version {client.current_key_version} has made {client.key_encryptions} "
                "encryptions; rotate it"
            )
        return out

    def _key(
        self,
        me: Any,
        checks: ResponseChecks,
        client_id: int,
        version: int,
        sealed: dict[tuple[int, int], SealedClientKey],
    ) -> bytes:
        return self.client_keys.client_key(me, True, checks, client_id, version, sealed.get((client_id, version)))

    def _slug(
        self, me: Any, checks: ResponseChecks, client: ClientState, sealed: dict[tuple[int, int], SealedClientKey]
    ) -> str | None:
        """The client's slug, opened under its key (once per exact blob and key), or None."""
        try:
            version = blobs.blob_key_version(client.slug_blob)
            key = self._key(me, checks, client.id, version, sealed)
            slot = (client.id, version)
            opened = self.cache.fields.setdefault(slot, {}) if self.cache.get(slot) is key else {}
            value = opened.get((client.slug_blob, "slug"))
            if value is None:
                value = blobs.decrypt_client_field(key, version, client.slug_blob, client.id, "slug")
                if len(opened) >= 16:
                    opened.clear()
                opened[(client.slug_blob, "slug")] = value
            return value.decode("utf-8")
        except (VaultError, UnicodeDecodeError):
            return None  # a blob that does not open, or a key whose record does not verify

    def _name(
        self, me: Any, checks: ResponseChecks, secret: Any, sealed: dict[tuple[int, int], SealedClientKey]
    ) -> str | None:
        """A secret's name from its version's metadata, opened under its client key, or None."""
        try:
            key = self._key(me, checks, secret.client_id, secret.key_version, sealed)
            version = _Version(secret.version, secret.key_version, secret.wrapped_dek, b"", secret.metadata_blob)
            name = open_metadata(key, secret.client_id, secret.id, version).metadata.get("name")
        except VaultError:
            return None
        return name if isinstance(name, str) else None

    @staticmethod
    def _sealed(answer: ReportRows) -> dict[tuple[int, int], SealedClientKey]:
        return {(k.record.client_id, k.record.version): k for k in answer.sealed_keys}
