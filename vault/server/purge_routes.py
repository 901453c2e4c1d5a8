"""An admin's client purge on the team server: ``purge.client_draft``, ``purge.client``, and the
check of a receipt (``purge.verify_receipt``, any engineer's); an admin's purge of one secret
(``purge.secret_draft``, ``purge.secret``: ``authority/purge_secret_drafts.py``).

docs/server.md §4 rule 2 and §5 ("a purge destroys it for the purged client"); the authorities
are ``authority/purge_drafts.py`` (its values ``authority/purge_draft_values.py``) and
``authority/purge_receipts.py``. The draft and the commit refuse an engineer who is not an admin
and a body whose caller is not the request's signer (403, ``grant_routes.admin_only``) before the
authority reads any row of the client; the commit deletes the client's rows (its server client
keys among them: the server's layer of its data keys is destroyed with them) and appends the
format-3 ``purge-client`` event with a ``ServerEvent`` in the same unit. The check is a read, as
in-process: the receipt, its signer, what survives and its event, for the engineer's keyholder
to judge; nothing written (its nonce by the authenticator).

A secret's draft is a write: its ``purge-secret-draft`` event commits first, then (with the server
layer) the versions it answers have their layer removed, for those versions only, so that the
admin's keyholder can fingerprint their data keys. Its commit deletes the versions (their layered
data keys) and appends ``purge-secret``.

A data subject's search and purge (``authority/purge_subject_drafts.py``): ``purge.subject_search``
is a write per page, its ``subject-search`` event committed before the layer comes off the data keys
the page answers (those only); ``purge.subject_draft`` reserves a client's receipt and releases
nothing; ``purge.subject`` deletes that client's matching secrets and appends ``purge-subject``.

``purge.vacuum`` (an admin's ``--vacuum``): once a purge committed, its host scrubs the database
(``authority/purge_vacuum.py``); no event, nothing read but the caller and the receipt's existence.
"""

from __future__ import annotations

import dataclasses

from vault.authority.checkout_events import ServerEvent
from vault.authority.purge_draft_values import PurgeClientCommit, PurgeClientDraftRequest, PurgeDraft
from vault.authority.purge_drafts import PurgeDraftAuthority
from vault.authority.purge_receipts import ReceiptAuthority
from vault.authority.purge_requests import PurgedVersion, PurgeRows, ReceiptRequest, ReceiptRows
from vault.authority.purge_secret_drafts import SecretPurgeDraftAuthority
from vault.authority.purge_secret_values import PurgeSecretCommit, PurgeSecretDraft, PurgeSecretDraftRequest
from vault.authority.purge_subject_drafts import SubjectPurgeDraftAuthority
from vault.authority.purge_subject_values import (
    PurgeSubjectCommit,
    PurgeSubjectDraft,
    PurgeSubjectDraftRequest,
    SubjectPage,
    SubjectSearchRequest,
)
from vault.authority.purge_vacuum import VacuumAuthority, VacuumDone, VacuumRequest
from vault.authority.serverjournal import ServerSeal
from vault.authority.subjects import SubjectVersion
from vault.errors import ConfigurationError, InvalidInput
from vault.server.checks import ServerChecks
from vault.server.grant_routes import admin_only
from vault.server.handlers import Call, Operations, signer_only
from vault.server.layer import ServerLayer, is_layered
from vault.server.problems import NO_SERVER_KEY
from vault.storage.engine import Store
from vault.storage.rows import VersionRow


class PurgeRoutes:
    """The purges' routes: a client's, a secret's and a subject's drafts and commits, a receipt's check
    (module docstring)."""

    def __init__(
        self,
        authority: PurgeDraftAuthority,
        receipts: ReceiptAuthority,
        seal: ServerSeal | None,
        secrets: SecretPurgeDraftAuthority | None = None,
        layer: ServerLayer | None = None,
        subjects: SubjectPurgeDraftAuthority | None = None,
    ) -> None:
        self.authority, self.receipts, self.seal, self.secrets, self.layer = authority, receipts, seal, secrets, layer
        self.subjects = subjects
        self.vacuums = VacuumAuthority(authority.store, authority.checks)

    def __repr__(self) -> str:
        return f"PurgeRoutes({self.seal!r})"

    def client_draft(self, call: Call) -> PurgeDraft:
        request = call.body
        if not isinstance(request, PurgeClientDraftRequest):
            raise InvalidInput("the body is not this route's request")
        admin_only(call, request.caller)
        return self.authority.client_draft(request)

    def client(self, call: Call) -> PurgeRows:
        request = call.body
        if not isinstance(request, PurgeClientCommit):
            raise InvalidInput("the body is not this route's request")
        admin_only(call, request.caller)
        if self.seal is None:
            raise ConfigurationError(NO_SERVER_KEY, hint="start the server with --server-key FILE")
        assert call.recorded is not None
        return self.authority.client(request, ServerEvent(self.seal, call.recorded, call.nonce))

    def secret_draft(self, call: Call) -> PurgeSecretDraft:
        request = call.body
        if not isinstance(request, PurgeSecretDraftRequest) or self.secrets is None:
            raise InvalidInput("the body is not this route's request")
        admin_only(call, request.caller)
        draft = self.secrets.secret_draft(request, self._event(call))  # returns once its event committed
        if self.layer is None:
            return draft
        rows, part = draft.rows, draft.rows.parts[0]
        with self.secrets.store.read() as s:

            def opened(secret_id: int, row: VersionRow) -> VersionRow:
                if not is_layered(row.wrapped_dek):
                    return row
                assert self.layer is not None
                return self.layer.unlayered(s, rows.vault_id, part.client_id, secret_id, row)

            versions = tuple(
                dataclasses.replace(v, wrapped_dek=opened(v.secret_id, _as_row(v)).wrapped_dek) for v in part.versions
            )
            current = opened(part.secret_ids[0], draft.current)
        part = dataclasses.replace(part, versions=versions)
        return dataclasses.replace(draft, rows=dataclasses.replace(rows, parts=(part,)), current=current)

    def secret(self, call: Call) -> PurgeRows:
        request = call.body
        if not isinstance(request, PurgeSecretCommit) or self.secrets is None:
            raise InvalidInput("the body is not this route's request")
        admin_only(call, request.caller)
        return self.secrets.secret(request, self._event(call))

    def subject_search(self, call: Call) -> SubjectPage:
        request = call.body
        if not isinstance(request, SubjectSearchRequest) or self.subjects is None:
            raise InvalidInput("the body is not this route's request")
        admin_only(call, request.caller)
        page = self.subjects.search(request, self._event(call))  # returns once its event committed
        if self.layer is None:
            return page
        rows = page.rows
        with self.subjects.store.read() as s:

            def opened(client_id: int, v: SubjectVersion) -> SubjectVersion:
                if not is_layered(v.wrapped_dek):
                    return v
                assert self.layer is not None
                row = VersionRow(v.version, v.key_version, v.wrapped_dek, b"", b"")
                inner = self.layer.unlayered(s, rows.vault_id, client_id, v.secret_id, row)
                return dataclasses.replace(v, wrapped_dek=inner.wrapped_dek)

            clients = tuple(
                dataclasses.replace(c, versions=tuple(opened(c.client_id, v) for v in c.versions)) for c in rows.clients
            )
        return dataclasses.replace(page, rows=dataclasses.replace(rows, clients=clients))

    def subject_draft(self, call: Call) -> PurgeSubjectDraft:
        request = call.body
        if not isinstance(request, PurgeSubjectDraftRequest) or self.subjects is None:
            raise InvalidInput("the body is not this route's request")
        admin_only(call, request.caller)
        return self.subjects.subject_draft(request)

    def subject(self, call: Call) -> PurgeRows:
        request = call.body
        if not isinstance(request, PurgeSubjectCommit) or self.subjects is None:
            raise InvalidInput("the body is not this route's request")
        admin_only(call, request.caller)
        return self.subjects.subject(request, self._event(call))

    def _event(self, call: Call) -> ServerEvent:
        if self.seal is None:
            raise ConfigurationError(NO_SERVER_KEY, hint="start the server with --server-key FILE")
        assert call.recorded is not None
        return ServerEvent(self.seal, call.recorded, call.nonce)

    def verify_receipt(self, call: Call) -> ReceiptRows:
        request = call.body
        if not isinstance(request, ReceiptRequest):
            raise InvalidInput("the body is not this route's request")
        signer_only(call, request.caller)
        return self.receipts.check(request)

    def vacuum(self, call: Call) -> VacuumDone:
        request = call.body
        if not isinstance(request, VacuumRequest):
            raise InvalidInput("the body is not this route's request")
        admin_only(call, request.caller)
        return self.vacuums.vacuum(request)

    def add_to(self, operations: Operations) -> None:
        operations.add("purge.client_draft", self.client_draft)
        operations.add("purge.client", self.client, writes=True)
        operations.add("purge.verify_receipt", self.verify_receipt)
        operations.add("purge.secret_draft", self.secret_draft, writes=True)
        operations.add("purge.secret", self.secret, writes=True)
        operations.add("purge.subject_search", self.subject_search, writes=True)
        operations.add("purge.subject_draft", self.subject_draft)
        operations.add("purge.subject", self.subject, writes=True)
        operations.add("purge.vacuum", self.vacuum)  # after a purge's commit, on the server's host


def _as_row(v: PurgedVersion) -> VersionRow:
    return VersionRow(v.version, v.key_version, v.wrapped_dek, b"", b"")


def purge_routes(
    store: Store, checks: ServerChecks, seal: ServerSeal | None, layer: ServerLayer | None = None
) -> PurgeRoutes:
    """The purges' write routes and a receipt's check over ``store``, their events signed by ``seal``
    (a secret's draft answered with its data keys taken from under ``layer``)."""
    return PurgeRoutes(
        PurgeDraftAuthority(store, checks, checks.clock), ReceiptAuthority(store, checks), seal,
        SecretPurgeDraftAuthority(store, checks, checks.clock), layer,
        SubjectPurgeDraftAuthority(store, checks, checks.clock),
    )  # fmt: skip
