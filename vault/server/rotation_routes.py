"""An admin's client-key rotation on the team server: ``keys.start_draft``/``start``, ``keys.open``,
``keys.rewrap_draft``/``rewrap`` and ``keys.finish``.

docs/server.md §4 rule 2 and §5; the authority is ``authority/rotation_drafts.py``. Every route
refuses an engineer who is not an admin, and a body whose caller is not the request's signer (403,
``grant_routes.admin_only``), before the authority reads any row of the client or the rotation.

The rotation's checks here (``RotationServerChecks``) are signatures and public keys only, under the
organisation key the server trusts: a client-key record signed by a certified, active admin; the
client's current version its newest such record; and the grantees a new version is sealed to —
for each engineer with a grant row for the client, a certified, active engineer whose ledger head
verifies, unrevoked and unexpired (``first_valid_grant``). The admin's keyholder checks all of it
again, and the client's grant and revoke events, which the server cannot open. An engineer whose
ledger does not verify is left out (no copy of the new version), not reported: the in-process
rotation also records a ``grant-refused`` event and deletes their copies of older versions, which
the finish of the rotation destroys anyway.

``keys.rewrap_draft`` on a layered vault: the page's data keys are under the server's layer (§5).
The route appends one format-3 ``client-key-rewrap`` event naming every version it releases
(``released``: ``[client, secret, version]``) in a unit of its own, and only once that committed
removes the layer from those versions and answers them ("no log, no key"). ``keys.rewrap`` puts the
layer back on each re-wrapped key in the unit that stores it (``RotationDraftAuthority.rewrap``'s
``outer``), under the client's newest server client key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.authority.checkout_events import ServerEvent, UnitCore
from vault.authority.policies import engineer_row
from vault.authority.record_signatures import client_key_fields
from vault.authority.rotation_draft_values import (
    REWRAP_RELEASE,
    BatchCommit,
    BatchDrafted,
    StartCommit,
    StartDrafted,
    batch_digest,
)
from vault.authority.rotation_drafts import RotationDraftAuthority
from vault.authority.rotation_requests import (
    BatchDone,
    BatchRequest,
    Finished,
    FinishRequest,
    Grantee,
    OpenRequest,
    Rewrapped,
    RotationBasis,
    Started,
    StartRequest,
)
from vault.authority.serverjournal import ServerJournal, ServerSeal
from vault.crypto import signing
from vault.crypto.labels import LABEL_SIG_CLIENT_KEY
from vault.errors import ConfigurationError, InvalidInput, VaultError
from vault.server.grant_routes import admin_only
from vault.server.handlers import Call, Operations
from vault.server.layer import ServerLayer, is_layered
from vault.server.problems import NO_SERVER_KEY
from vault.server.secret_routes import SecretServerChecks
from vault.storage import models as m
from vault.storage.engine import Store
from vault.storage.rows import ACTIVE, GRANT_ORDER, GrantRow, VersionRow
from vault.wire import codec


class RotationServerChecks(SecretServerChecks):
    """``RotationChecks`` on the server (module docstring)."""

    def __repr__(self) -> str:
        return "RotationServerChecks()"

    def client_key_record(self, s: Session, record: m.ClientKey) -> None:
        """The record's signature, by a certified, active admin, else UntrustedRecord."""
        vault_id, _ = self.organisation.trusted(s)
        admin = self._signer(s, record.signed_by or 0)
        assert admin.signing_public is not None  # certified: a certificate names it
        signing.verify(
            admin.signing_public, record.signature, LABEL_SIG_CLIENT_KEY, *client_key_fields(vault_id, record),
            what=f"client key version {record.version}",
        )  # fmt: skip

    def grantees(self, s: Session, client_id: int) -> Sequence[Grantee]:
        ledgers: dict[int, list[m.Grant]] = {}
        for grant in s.scalars(select(m.Grant).where(m.Grant.client_id == client_id).order_by(*GRANT_ORDER)):
            ledgers.setdefault(grant.engineer_id, []).append(grant)
        out = []
        for engineer_id, grants in sorted(ledgers.items()):
            engineer = s.get(m.Engineer, engineer_id)
            if engineer is None or engineer.status != ACTIVE:
                continue
            try:
                self.certificate(s, engineer)
                head = grants[self.first_valid_grant(s, grants, engineer, [None] * len(grants))]
            except VaultError:
                continue  # left out: no copy of the new version (module docstring)
            signer = s.get(m.Engineer, head.granted_by)
            row = GrantRow(*(getattr(head, name) for name in GrantRow._fields))
            out.append(Grantee(engineer_row(engineer), row, None if signer is None else engineer_row(signer)))
        return out


class RotationRoutes:
    """The rotation's routes (module docstring)."""

    def __init__(
        self, store: Store, authority: RotationDraftAuthority, seal: ServerSeal | None, layer: ServerLayer | None
    ) -> None:
        self.store, self.authority, self.seal, self.layer = store, authority, seal, layer

    def __repr__(self) -> str:
        return f"RotationRoutes({self.seal!r})"

    def _event(self, call: Call) -> ServerEvent:
        if self.seal is None:
            raise ConfigurationError(NO_SERVER_KEY, hint="start the server with --server-key FILE")
        assert call.recorded is not None
        return ServerEvent(self.seal, call.recorded, call.nonce)

    def start_draft(self, call: Call) -> StartDrafted:
        request = call.body
        if not isinstance(request, StartRequest):
            raise InvalidInput("the body is not this route's request")
        admin_only(call, request.caller)
        return self.authority.start_draft(request)

    def start(self, call: Call) -> Started:
        commit = call.body
        if not isinstance(commit, StartCommit):
            raise InvalidInput("the body is not this route's request")
        admin_only(call, commit.caller)
        return self.authority.start(commit, self._event(call))

    def open(self, call: Call) -> RotationBasis:
        request = call.body
        if not isinstance(request, OpenRequest):
            raise InvalidInput("the body is not this route's request")
        admin_only(call, request.caller)
        return self.authority.open(request)

    def rewrap_draft(self, call: Call) -> BatchDrafted:
        request = call.body
        if not isinstance(request, BatchRequest):
            raise InvalidInput("the body is not this route's request")
        admin_only(call, request.caller)
        batch, client_id, done = self.authority.rewrap_draft(request)
        if batch is None:
            assert done is not None
            return BatchDrafted(None, bytes(32), done)
        digest = batch_digest(batch)
        layered = [row for row in batch.rows if is_layered(row.wrapped_dek)]
        if layered:
            if self.layer is None:
                raise ConfigurationError(NO_SERVER_KEY, hint="start the server with its key file (its master key)")
            event = self._event(call)
            me = call.caller.me
            released = [list(r) for r in sorted((client_id, row.secret_id, row.version) for row in layered)]
            with self.store.transaction() as s:  # committed before any key leaves
                ServerJournal(UnitCore(self.authority.clock), event.seal).append(
                    s, REWRAP_RELEASE, event.request, engineer_id=me.id, key_generation=me.key_generation,
                    client_id=client_id, public={"rotation": batch.rotation_id, "released": released},
                )  # fmt: skip
            with self.store.read() as s:
                vault_id = call.caller.vault_id
                rows = tuple(
                    row._replace(
                        wrapped_dek=self.layer.unlayered(
                            s, vault_id, client_id, row.secret_id,
                            VersionRow(row.version, row.key_version, row.wrapped_dek, b"", b""),
                        ).wrapped_dek
                    )
                    for row in batch.rows
                )  # fmt: skip
            batch = dataclasses.replace(batch, rows=rows)
        return BatchDrafted(batch, digest, None)

    def rewrap(self, call: Call) -> BatchDone:
        commit = call.body
        if not isinstance(commit, BatchCommit) or not isinstance(commit.request, BatchRequest):
            raise InvalidInput("the body is not this route's request")
        admin_only(call, commit.request.caller)
        layer, vault_id = self.layer, call.caller.vault_id

        def layered(s: Session, client_id: int, key_version: int, done: Sequence[Rewrapped]) -> list[bytes]:
            if layer is None:
                return [row.wrapped_dek for row in done]
            return [
                layer.layered(s, vault_id, client_id, row.secret_id, row.version, key_version, row.wrapped_dek)
                for row in done
            ]

        return self.authority.rewrap(commit, self._event(call), layered)

    def finish(self, call: Call) -> Finished:
        request = call.body
        if not isinstance(request, FinishRequest):
            raise InvalidInput("the body is not this route's request")
        admin_only(call, request.caller)
        return self.authority.finish(request, self._event(call))

    def add_to(self, operations: Operations) -> None:
        operations.add("keys.start_draft", self.start_draft)
        # a commit carries a sealed copy per grantee, or a page of re-wrapped keys (SERVED_BATCH)
        operations.add("keys.start", self.start, writes=True, max_body=codec.ONE_VERSION_BYTES)
        operations.add("keys.open", self.open)
        operations.add("keys.rewrap_draft", self.rewrap_draft)
        operations.add("keys.rewrap", self.rewrap, writes=True, max_body=codec.ONE_VERSION_BYTES)
        operations.add("keys.finish", self.finish, writes=True)


def rotation_routes(
    store: Store, checks: RotationServerChecks, seal: ServerSeal | None, layer: ServerLayer | None
) -> RotationRoutes:
    """The rotation's routes over ``store``, their events signed by ``seal``, ``layer`` removed and put back."""
    return RotationRoutes(store, RotationDraftAuthority(store, checks, checks.clock), seal, layer)
