"""An admin's root rotation on the team server: ``keys.root_draft``, ``keys.root_page`` and
``keys.rotate_root``.

docs/server.md (session 15, helper C); the authority is ``authority/root_drafts.py``. Every route
refuses an engineer who is not an admin, and a body whose caller is not the request's signer (403,
``grant_routes.admin_only``), before the authority reads any row; the commit's format-3
``root-key-rotate`` event is appended in its unit with a ``ServerEvent`` (the server's seal, the signed
request kept, the nonce remembered). A draft or a page writes nothing.

The rotation's checks here (``RootServerChecks``) are signatures and public keys only, under the
organisation key the server trusts (``PinnedOrganisation``: its pin, then the signed chain): the
roster is every engineer certificate and key-generation certificate that verifies under it, the
server keys every stored one whose certificate does. The admin's keyholder verifies each again under
the organisation key its own pin leads to. What the in-process roster adds (``service/rootrotation.py``:
only certificates the signed audit chain vouches for, a key row a holder of the old organisation
seed planted left out) the server cannot make, having no chain verifier: the admin's machine makes it
from the whole chain it verified (``service/remote_root.py``), and the plan may leave those rows out,
each named in its refusals (``root_drafts.verified_plan``; docs/threat-model.md C82).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault import validation
from vault.authority.certificates import verify_engineer_key
from vault.authority.checkout_events import ServerEvent
from vault.authority.root_draft_values import ROOT_BODY, RootCommit, RootDrafted, RootPageDrafted, RootPageRequest
from vault.authority.root_drafts import RootDraftAuthority
from vault.authority.root_rotation_requests import RootRotated, RootRotateRequest
from vault.authority.server_keys import ServerKeyRow, certified_key, stored_rows
from vault.authority.serverjournal import ServerSeal
from vault.errors import ConfigurationError, InvalidInput, VaultError
from vault.server.checks import ServerChecks
from vault.server.grant_routes import admin_only
from vault.server.handlers import Call, Operations
from vault.server.problems import NO_SERVER_KEY
from vault.storage import models as m
from vault.storage.engine import Store


class RootServerChecks(ServerChecks):
    """``RootChecks`` on the server (module docstring)."""

    def __repr__(self) -> str:
        return "RootServerChecks()"

    def roster(self, s: Session) -> tuple[Sequence[m.Engineer], Sequence[m.EngineerKey], Sequence[str]]:
        vault_id, org = self.organisation.trusted(s)
        certified: list[m.Engineer] = []
        refused: list[str] = []
        names: dict[int, str] = {}
        for row in s.scalars(select(m.Engineer).order_by(m.Engineer.id)):
            names[row.id] = row.name
            if row.certificate is None:
                continue
            try:
                self.certificate(s, row)
            except VaultError:
                refused.append(f"the certificate of engineer {validation.shown(row.name)}")
                continue
            certified.append(row)
        keys: list[m.EngineerKey] = []
        for key in s.scalars(select(m.EngineerKey).order_by(m.EngineerKey.engineer_id, m.EngineerKey.generation)):
            name = names.get(key.engineer_id, "")
            try:
                verify_engineer_key(vault_id, org, key, key.certificate, name)
            except VaultError:
                refused.append(f"key generation {key.generation} of engineer {validation.shown(name)}")
                continue
            keys.append(key)
        return certified, keys, refused

    def server_keys(self, s: Session) -> Sequence[ServerKeyRow]:
        vault_id, org = self.organisation.trusted(s)
        return [row for row in stored_rows(s) if certified_key(s, row.version, vault_id, org) is not None]


class RootRoutes:
    """The root rotation's routes (module docstring)."""

    def __init__(self, authority: RootDraftAuthority, seal: ServerSeal | None) -> None:
        self.authority, self.seal = authority, seal

    def __repr__(self) -> str:
        return f"RootRoutes({self.seal!r})"

    def draft(self, call: Call) -> RootDrafted:
        request = call.body
        if not isinstance(request, RootRotateRequest):
            raise InvalidInput("the body is not this route's request")
        admin_only(call, request.caller)
        return self.authority.draft(request)

    def page(self, call: Call) -> RootPageDrafted:
        request = call.body
        if not isinstance(request, RootPageRequest):
            raise InvalidInput("the body is not this route's request")
        admin_only(call, request.caller)
        return self.authority.client_page(request)

    def rotate(self, call: Call) -> RootRotated:
        commit = call.body
        if not isinstance(commit, RootCommit):
            raise InvalidInput("the body is not this route's request")
        admin_only(call, commit.caller)
        if self.seal is None:
            raise ConfigurationError(NO_SERVER_KEY, hint="start the server with --server-key FILE")
        assert call.recorded is not None
        return self.authority.rotate(commit, ServerEvent(self.seal, call.recorded, call.nonce))

    def add_to(self, operations: Operations) -> None:
        operations.add("keys.root_draft", self.draft)
        operations.add("keys.root_page", self.page)
        operations.add("keys.rotate_root", self.rotate, writes=True, max_body=ROOT_BODY)


def root_routes(store: Store, checks: ServerChecks, seal: ServerSeal | None) -> RootRoutes:
    """The root rotation's routes over ``store``, its event signed by ``seal``."""
    root_checks = RootServerChecks(checks.organisation, checks.clock)
    return RootRoutes(RootDraftAuthority(store, root_checks, checks.clock), seal)
