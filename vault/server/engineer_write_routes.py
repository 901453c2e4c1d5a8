"""An admin's writes on another engineer through the team server: ``engineers.rotate_draft`` /
``engineers.rotate`` (a re-key after a lost laptop) and ``engineers.remove_draft`` / ``engineers.remove``.

docs/server.md (session 14, helper B); the authorities are ``authority/rekey_drafts.py`` and
``authority/removal_drafts.py``; an admin's removal drafts its root rotation after the commit's writes
(``engineers.remove_root_draft``, the commit without its root: ``authority/removal_root.py``, session 17)
and its commit carries it (``ROOT_BODY``). Every route refuses an engineer who is not an admin and a body whose
caller is not the request's signer (403, ``grant_routes.admin_only``) before the authority reads any
row of the engineer acted on; a commit appends its format-3 events with a ``ServerEvent`` (the
server's seal, the signed request kept, the nonce remembered in the commit's unit). A draft writes
nothing.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from vault.authority.checkout_events import ServerEvent
from vault.authority.engineer_requests import EngineerAnswer, RemovalAnswer, RemoveRequest, RotateRequest
from vault.authority.record_signatures import client_key_fields
from vault.authority.rekey_draft_values import RekeyCommit, RekeyDraftAnswer
from vault.authority.rekey_drafts import RekeyDraftAuthority
from vault.authority.removal_draft_values import RemovalCommit, RemovalDraftAnswer, RemovalRootDraft
from vault.authority.removal_drafts import RemovalDraftAuthority
from vault.authority.removal_root import RemovalRootAuthority
from vault.authority.root_draft_values import ROOT_BODY
from vault.authority.serverjournal import ServerSeal
from vault.crypto import signing
from vault.crypto.labels import LABEL_SIG_CLIENT_KEY
from vault.errors import ConfigurationError, InvalidInput, UntrustedRecord
from vault.server.checks import ServerChecks
from vault.server.grant_routes import admin_only
from vault.server.handlers import Call, Operations
from vault.server.problems import NO_SERVER_KEY
from vault.server.root_routes import RootServerChecks
from vault.server.secret_routes import SecretServerChecks
from vault.storage import models as m
from vault.storage.engine import Store


class RemovalChecks(SecretServerChecks):
    """``RotationChecks`` of a removal's client-key starts on the server (``authority/removal_drafts.py``
    gives the grantees): a client-key record signed by a certified active admin, public keys only."""

    def __repr__(self) -> str:
        return "RemovalChecks()"

    def client_key_record(self, s: Session, record: m.ClientKey) -> None:
        signer = self.admin(s, s.get(m.Engineer, record.signed_by))
        vault_id, _ = self.organisation.trusted(s)
        if signer.signing_public is None or record.signature is None:
            raise UntrustedRecord("a client-key record is not signed")
        signing.verify(signer.signing_public, record.signature, LABEL_SIG_CLIENT_KEY,
                       *client_key_fields(vault_id, record), what=f"client key version {record.version}")  # fmt: skip


REMOVAL_BODY = 8 * 1024 * 1024  # a new key per client (about 1 KiB each, more with many grantees)


class EngineerWriteRoutes:
    """``engineers.rotate_draft``/``rotate`` and ``engineers.remove_draft``/``remove`` (module docstring)."""

    def __init__(self, rekeys: RekeyDraftAuthority, removals: RemovalDraftAuthority, seal: ServerSeal | None) -> None:
        self.rekeys, self.removals, self.seal = rekeys, removals, seal

    def __repr__(self) -> str:
        return f"EngineerWriteRoutes({self.seal!r})"

    def _event(self, call: Call) -> ServerEvent:
        if self.seal is None:
            raise ConfigurationError(NO_SERVER_KEY, hint="start the server with --server-key FILE")
        assert call.recorded is not None
        return ServerEvent(self.seal, call.recorded, call.nonce)

    def rotate_draft(self, call: Call) -> RekeyDraftAnswer:
        request = call.body
        if not isinstance(request, RotateRequest):
            raise InvalidInput("the body is not this route's request")
        admin_only(call, request.caller)
        return self.rekeys.rotate_draft(request)

    def rotate(self, call: Call) -> EngineerAnswer:
        request = call.body
        if not isinstance(request, RekeyCommit):
            raise InvalidInput("the body is not this route's request")
        admin_only(call, request.caller)
        return self.rekeys.rotate(request, self._event(call))

    def remove_draft(self, call: Call) -> RemovalDraftAnswer:
        request = call.body
        if not isinstance(request, RemoveRequest):
            raise InvalidInput("the body is not this route's request")
        admin_only(call, request.caller)
        return self.removals.remove_draft(request)

    def remove_root_draft(self, call: Call) -> RemovalRootDraft:
        request = call.body
        if not isinstance(request, RemovalCommit):
            raise InvalidInput("the body is not this route's request")
        admin_only(call, request.caller)
        return self.removals.remove_root_draft(request)

    def remove(self, call: Call) -> RemovalAnswer:
        request = call.body
        if not isinstance(request, RemovalCommit):
            raise InvalidInput("the body is not this route's request")
        admin_only(call, request.caller)
        return self.removals.remove(request, self._event(call))

    def add_to(self, operations: Operations) -> None:
        operations.add("engineers.rotate_draft", self.rotate_draft)
        operations.add("engineers.rotate", self.rotate, writes=True, max_body=REMOVAL_BODY)  # an adoption's signatures
        operations.add("engineers.remove_draft", self.remove_draft)
        operations.add("engineers.remove_root_draft", self.remove_root_draft, max_body=REMOVAL_BODY)
        operations.add("engineers.remove", self.remove, writes=True, max_body=ROOT_BODY)  # an admin's: the root too


def engineer_write_routes(store: Store, checks: ServerChecks, seal: ServerSeal | None) -> EngineerWriteRoutes:
    """The engineer writes' routes over ``store``, checked by ``checks``, their events signed by ``seal``."""
    roots = RemovalRootAuthority(store, RootServerChecks(checks.organisation, checks.clock), checks.clock)
    removals = RemovalDraftAuthority(store, RemovalChecks(checks.organisation, checks.clock), checks.clock, roots)
    return EngineerWriteRoutes(RekeyDraftAuthority(store, checks, checks.clock), removals, seal)
