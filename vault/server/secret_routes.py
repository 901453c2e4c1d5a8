"""The secrets' writes on the team server: ``secrets.add_draft``/``add``, ``update_draft``/``update``.

docs/server.md §4 rule 2; the authority is ``authority/secret_drafts.py``, its values
``authority/secret_draft_requests.py``. Each handler checks that the body's caller is the
request's signer (else 403, nothing read of the target), then calls the authority; the
routes that append an event (``update_draft``: ``secret-view``; ``add``: ``secret-create``;
``update``: ``secret-update``) are given a ``ServerEvent`` (the server's seal, the signed
request kept, the nonce remembered in the operation's unit). ``add_draft`` appends nothing:
its nonce is kept by the authenticator, its reservation in its own unit.

With the server layer (``layer.ServerLayer``): a commit's new data key is layered in the unit
that stores it (``ServerLayer.layered``; a blob that is not a wrapped data key of its key
version is refused, 400); an update draft's current version is answered with its layer
removed once the draft's ``secret-view`` has committed, for that one version only.

``SecretServerChecks`` adds to ``ServerChecks`` what a new version depends on, verified with
public keys only under the organisation key the server trusts: the client-key version new
data goes under (the newest admin-signed record, which must be the client's current and not
destroyed), the retention (the admin-signed settings, else the bounded defaults), and the
other engineers' exclusive holds (the secret's row locked; each hold honoured only if its
event vouches for it, as a checkout through the server checks them).
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.authority import checkout_events
from vault.authority.checkout_events import ServerEvent
from vault.authority.checkouts import CheckoutAuthority
from vault.authority.record_signatures import current_key_version, newest_signed_key, verified_settings
from vault.authority.requests import NewVersion
from vault.authority.secret_draft_requests import (
    AddCommit,
    AddDraftRequest,
    SecretDraft,
    UpdateCommit,
    UpdateDraftRequest,
)
from vault.authority.secret_drafts import SecretDraftAuthority
from vault.authority.secret_requests import SecretRows
from vault.authority.secrets import SecretAuthority
from vault.authority.serverjournal import ServerSeal
from vault.authority.settings_requests import SettingsRow
from vault.errors import ConfigurationError, DecryptionFailed, InvalidInput, UntrustedRecord
from vault.server.checks import ServerChecks
from vault.server.handlers import Call, Operations, signer_only
from vault.server.layer import ServerLayer, is_layered
from vault.server.problems import NO_SERVER_KEY
from vault.storage import models as m
from vault.storage import rows
from vault.storage.engine import Store
from vault.storage.rows import EngineerRecord, HoldRow
from vault.wire import codec


class SecretServerChecks(ServerChecks):
    """``SecretChecks`` on the server (module docstring)."""

    def __repr__(self) -> str:
        return "SecretServerChecks()"

    def _signer(self, s: Session, signer_id: int) -> EngineerRecord:
        return self.admin(s, s.get(m.Engineer, signer_id) if signer_id else None)

    def current_key_version(self, s: Session, client: m.Client) -> int:
        vault_id, _ = self.organisation.trusted(s)
        records = s.scalars(
            select(m.ClientKey).where(m.ClientKey.client_id == client.id).order_by(m.ClientKey.version.desc())
        )
        newest = newest_signed_key(vault_id, records, lambda signer_id: self._signer(s, signer_id))
        return current_key_version(client.id, client.current_key_version, newest)

    def retention(self, s: Session) -> int:
        vault_id, _ = self.organisation.trusted(s)
        info = s.get(m.VaultInfo, 1)
        if info is None:
            raise UntrustedRecord("the vault's identity row is missing")
        stored = SettingsRow(
            info.retention_versions,
            info.cryptoperiod_days,
            info.settings_signed_by,
            info.settings_signed_at,
            info.settings_signature,
        )
        return verified_settings(vault_id, stored, lambda signer_id: self._signer(s, signer_id)).retention_versions

    def exclusive_holds(self, s: Session, client: m.Client, secret: m.Secret, me: int) -> list[HoldRow]:
        conn = rows.connection(s)
        holds = CheckoutAuthority._lock_and_find_holds(conn, secret.id, self.clock())
        others = [c for c in holds if c.engineer_id != me]
        if not others:
            return []
        policy = self.policy(s, client.id, None if (p := s.get(m.ClientPolicy, client.id)) is None else _policy(p), ())
        claimed = [c for c in others if c.exclusive or policy.exclusive]
        vault_id, _ = self.organisation.trusted(s)
        found = checkout_events.genuine(conn, s, self, vault_id, client.id, secret.id, claimed, None)
        return [c for c in found if c.exclusive]


def _policy(p: m.ClientPolicy) -> rows.PolicyRow:
    return rows.PolicyRow(*(getattr(p, f) for f in rows.PolicyRow._fields))


class SecretRoutes:
    """The secrets' write routes over the server's secrets authority (module docstring)."""

    def __init__(
        self, authority: SecretDraftAuthority, seal: ServerSeal | None, layer: ServerLayer | None = None
    ) -> None:
        self.authority, self.seal, self.layer = authority, seal, layer

    def __repr__(self) -> str:
        return f"SecretRoutes({self.seal!r})"

    def add_draft(self, call: Call) -> SecretDraft:
        request = call.body
        assert isinstance(request, AddDraftRequest)
        signer_only(call, request.caller)
        return self.authority.add_draft(request)

    def add(self, call: Call) -> SecretRows:
        request = call.body
        assert isinstance(request, AddCommit)
        signer_only(call, request.caller)
        return self.authority.add(request, self._event(call))

    def update_draft(self, call: Call) -> SecretDraft:
        request = call.body
        assert isinstance(request, UpdateDraftRequest)
        signer_only(call, request.caller)
        draft = self.authority.update_draft(request, self._event(call))  # returns once its view committed
        version = draft.rows.version
        if self.layer is None or version is None or not is_layered(version.wrapped_dek):
            return draft
        with self.authority.store.read() as s:
            r = draft.rows
            opened = self.layer.unlayered(s, r.vault_id, r.client.id, r.secret.id, version)
        return dataclasses.replace(draft, rows=dataclasses.replace(draft.rows, version=opened))

    def update(self, call: Call) -> SecretRows:
        request = call.body
        assert isinstance(request, UpdateCommit)
        signer_only(call, request.caller)
        return self.authority.update(request, self._event(call))

    def _event(self, call: Call) -> ServerEvent:
        if self.seal is None:
            raise ConfigurationError(NO_SERVER_KEY, hint="start the server with --server-key FILE")
        assert call.recorded is not None
        return ServerEvent(self.seal, call.recorded, call.nonce)

    def add_to(self, operations: Operations) -> None:
        operations.add("secrets.add_draft", self.add_draft)
        # a commit carries the new version's blobs: a field may hold 64 KiB (codec.ONE_VERSION_BYTES)
        operations.add("secrets.add", self.add, writes=True, max_body=codec.ONE_VERSION_BYTES)
        operations.add("secrets.update_draft", self.update_draft, writes=True)
        operations.add("secrets.update", self.update, writes=True, max_body=codec.ONE_VERSION_BYTES)


def secret_routes(
    store: Store, checks: SecretServerChecks, seal: ServerSeal | None, layer: ServerLayer | None = None
) -> SecretRoutes:
    """The secrets' write routes over ``store``, checked by ``checks``, signed by ``seal``, what
    they store put under ``layer`` (and an update draft's version taken from under it)."""
    authority = SecretAuthority(store, checks, _NoRecorder(), checks.clock)
    return SecretRoutes(SecretDraftAuthority(authority, _WriteLayer(layer) if layer else None), seal, layer)


class _WriteLayer:
    """``WriteLayer`` by the server's ``ServerLayer``."""

    def __init__(self, layer: ServerLayer) -> None:
        self.layer = layer

    def __call__(self, s: Session, vault_id: bytes, client_id: int, secret_id: int, new: NewVersion) -> NewVersion:
        try:
            wrapped = self.layer.layered(s, vault_id, client_id, secret_id, new.version, new.key_version,
                                         new.wrapped_dek)  # fmt: skip
        except DecryptionFailed:
            raise InvalidInput("the new version's data key is not a wrapped data key of its client key") from None
        return dataclasses.replace(new, wrapped_dek=wrapped)


class _NoRecorder:
    """The in-process journal's place: through the server every event is format 3 (``ServerEvent``)."""

    def append(self, s: Session, action: str, **_: object) -> int:
        raise ConfigurationError("the team server appends format-3 events only")
