"""An admin's grant, revoke and new client on the team server: ``grants.grant_draft``/``grant``,
``revoke_draft``/``revoke``, ``clients.add_draft``/``add``.

docs/server.md §4 rule 2; the authorities are ``authority/grant_drafts.py`` (its values
``authority/grant_draft_requests.py``) and ``authority/client_add_drafts.py``. Each handler
refuses an engineer who is not an admin and a body whose caller is not the request's signer
(403) before the authority reads any row of the target; the commits append their format-3
``grant``/``revoke``/``client-create`` event with a
``ServerEvent`` (the server's seal, the signed request kept, the nonce remembered in the
commit's unit). The drafts append nothing: a grant draft's id reservation is written in its
own unit, the nonce by the authenticator.

``engineers.root_seal`` answers an admin the copy of the current root bundle sealed to them
(ciphertext under their own sealing key, as the in-process keyholder reads it from the
database): what an admin's keyholder off the database opens to name clients by their slug
tags and to open the client keys' recovery copies. It appends nothing, as in-process.
"""

from __future__ import annotations

from vault.authority.checkout_events import ServerEvent
from vault.authority.client_add import ClientAddAuthority
from vault.authority.client_add_drafts import ClientAddDraftAuthority
from vault.authority.client_add_values import ClientCommit, ClientDraft
from vault.authority.client_requests import AddAnswer, AddRequest
from vault.authority.clients import authorise, checked_caller
from vault.authority.grant_draft_requests import (
    GrantCommit,
    GrantDraft,
    GrantDraftRequest,
    RevokeCommit,
    RevokeDraftRequest,
    RootSealAnswer,
    RootSealRequest,
)
from vault.authority.grant_drafts import GrantDraftAuthority
from vault.authority.grant_requests import GrantRows
from vault.authority.grants import GrantAuthority
from vault.authority.policies_caller import org_chain
from vault.authority.serverjournal import ServerSeal
from vault.errors import AccessDenied, ConfigurationError
from vault.server.checks import ServerChecks
from vault.server.handlers import Call, Operations, signer_only
from vault.server.problems import NO_SERVER_KEY
from vault.storage import models as m
from vault.storage.engine import Store
from vault.storage.rows import ROLE_ADMIN

RECONFIRM = "another admin can re-confirm you"


def admin_only(call: Call, named: object) -> None:
    """The request is signed by an admin, for themself; else 403 before anything of the target is read."""
    me = call.caller.me
    if me.role != ROLE_ADMIN:
        raise AccessDenied(f"{me.name!r} is not an admin", hint="ask an admin to do this")
    signer_only(call, named)


class GrantRoutes:
    """The grants' write routes and an admin's root seal (module docstring)."""

    def __init__(
        self, authority: GrantDraftAuthority, seal: ServerSeal | None, clients: ClientAddDraftAuthority | None = None
    ) -> None:
        self.authority, self.seal, self.clients = authority, seal, clients

    def __repr__(self) -> str:
        return f"GrantRoutes({self.seal!r})"

    def grant_draft(self, call: Call) -> GrantDraft:
        request = call.body
        assert isinstance(request, GrantDraftRequest)
        admin_only(call, request.caller)
        return self.authority.grant_draft(request)

    def grant(self, call: Call) -> GrantRows:
        request = call.body
        assert isinstance(request, GrantCommit)
        admin_only(call, request.caller)
        return self.authority.grant(request, self._event(call))

    def revoke_draft(self, call: Call) -> GrantDraft:
        request = call.body
        assert isinstance(request, RevokeDraftRequest)
        admin_only(call, request.caller)
        return self.authority.revoke_draft(request)

    def revoke(self, call: Call) -> GrantRows:
        request = call.body
        assert isinstance(request, RevokeCommit)
        admin_only(call, request.caller)
        return self.authority.revoke(request, self._event(call))

    def root_seal(self, call: Call) -> RootSealAnswer:
        request = call.body
        assert isinstance(request, RootSealRequest)
        admin_only(call, request.caller)
        caller = checked_caller(request.caller, request.org_pin)
        with self.authority.store.read() as s:
            read = authorise(s, self.authority.checks, caller)  # certified, active, this key generation
            version = read.root_version
            row = s.get(m.RootSeal, (version, read.me.id)) if version is not None else None
            if version is None or row is None:
                raise AccessDenied(f"no copy of the recovery key is sealed to {read.me.name!r}", hint=RECONFIRM)
            chain = org_chain(s, request.org_pin, read.org_signing_public)  # the pin to the current key
            return RootSealAnswer(read.vault_id, version, row.blob, read.org_signing_public, chain)

    def add_client_draft(self, call: Call) -> ClientDraft:
        request = call.body
        assert isinstance(request, AddRequest) and self.clients is not None
        admin_only(call, request.caller)
        return self.clients.add_draft(request)

    def add_client(self, call: Call) -> AddAnswer:
        request = call.body
        assert isinstance(request, ClientCommit) and self.clients is not None
        admin_only(call, request.caller)
        return self.clients.add(request, self._event(call))

    def _event(self, call: Call) -> ServerEvent:
        if self.seal is None:
            raise ConfigurationError(NO_SERVER_KEY, hint="start the server with --server-key FILE")
        assert call.recorded is not None
        return ServerEvent(self.seal, call.recorded, call.nonce)

    def add_to(self, operations: Operations) -> None:
        operations.add("grants.grant_draft", self.grant_draft)
        operations.add("grants.grant", self.grant, writes=True)
        operations.add("grants.revoke_draft", self.revoke_draft)
        operations.add("grants.revoke", self.revoke, writes=True)
        operations.add("engineers.root_seal", self.root_seal)
        if self.clients is not None:
            operations.add("clients.add_draft", self.add_client_draft)
            operations.add("clients.add", self.add_client, writes=True)


def grant_routes(store: Store, checks: ServerChecks, seal: ServerSeal | None) -> GrantRoutes:
    """The grants' write routes over ``store``, checked by ``checks``, their events signed by ``seal``."""
    authority = GrantAuthority(store, checks, _NoRecorder(), checks.clock)
    clients = ClientAddDraftAuthority(ClientAddAuthority(store, checks, _NoRecorder(), checks.clock))
    return GrantRoutes(GrantDraftAuthority(authority), seal, clients)


class _NoRecorder:
    """The in-process journal's place: through the server every event is format 3 (``ServerEvent``)."""

    def append(self, *_: object, **__: object) -> int:
        raise ConfigurationError("the team server appends format-3 events only")
