"""An admin's removal through a team server, with no database on this machine: what it makes here.

``RemoteVault.engineers.remove(ADMIN)`` (``credvault --server URL engineer remove ADMIN``) runs the
removal of ``remote_engineers.py`` (the revocations and the disabled certificate signed here, a new key
made here for every client) and, for an admin, what the in-process removal does in the same unit of
work (``service/offboarding.py``, ``authority/engineer_removal.py``): the records they signed adopted
(client-key versions, grants, policies, settings) and the root key rotated, so that once the removal
commits their copy of the recovery key and organisation seed opens and signs nothing current
(docs/server.md, session 17, helper I). ``AdminRemovalHands`` is the transport's ``admin_hands``:

* ``adopt``: the in-process rules of ``keyholder/adoption.py`` (as an admin's re-key through the
  server), over the removal's draft: what verifies under the admin's certified key is re-signed here,
  the rest set aside;
* ``root``: the root rotation's draft, answered after the removal's writes (``engineers.
  remove_root_draft``), checked against the whole audit chain verified here before the removal was
  drafted (``VerifiedChain``: ``RemoteChain.verify_whole``, every event's hash, link and signature; the
  same verification gives every removal's keyholder the admins the chain made, so that a removed
  admin's row rewritten as an engineer's is refused, as in-process): only what it vouches for is re-certified and
  sealed to (``keyholder/removal_roster.py``); then the in-process root keyholder's hands
  (``root_rotation.RootHands``) make the new bundle and organisation key and re-seal every page.
  A chain that does not verify refuses the removal before anything is sent (the host can remove then);
* ``committed``: once the server answered the commit, the new bundle is this session's; afterwards
  ``RemoteEngineers.remove`` opens the copy the server now holds for this admin and requires it to be
  the bundle made here.

The recovery shares, when the vault uses them, are made here and shown once (``last_root_rotation``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from vault.authority.adoption_draft_values import AdoptionDraft, AdoptionMade
from vault.authority.engineer_requests import RekeyDraft, RemovalDraft
from vault.authority.removal_draft_values import RemovalRoot, RemovalRootDraft
from vault.authority.root_draft_values import RootPageCommit
from vault.crypto import shamir
from vault.errors import IntegrityError
from vault.keyholder.adoption import adoption_made
from vault.keyholder.removal_roster import vouched_draft
from vault.keyholder.root_rotation import RootHands
from vault.records import RootRotation
from vault.service.remote_root import RemoteRootKeys, VerifiedChain
from vault.service.remotekeys import RemoteKeys

HOST = "run `credvault --server-key FILE engineer remove {name}` on the server's host"


class AdminRemovalHands:
    """The adoption and the root rotation of an admin's removal, made here (module docstring)."""

    def __init__(
        self, owner: Any, keys: RemoteKeys, chain: VerifiedChain, clock: Callable[[], dt.datetime], name: str
    ) -> None:
        self.owner, self.keys, self.chain, self.clock, self.name = owner, keys, chain, clock, name
        self.rotation: RootHands | None = None
        self.result: RootRotation | None = None
        self.names: dict[int, str] = {}
        self.skipped: tuple[str, ...] = ()  # what the adoption set aside, named as in-process
        self.made: tuple[int, bytes] | None = None  # the new bundle's version and recovery key, once committed

    def __repr__(self) -> str:
        return "AdminRemovalHands(<redacted>)"

    def adopt(self, removal: RemovalDraft, draft: AdoptionDraft) -> AdoptionMade:
        owner = self.owner
        org = owner.verified_me(removal.identity, admin=True)
        bundle = owner.root_bundle(removal.identity, removal.root, org)
        rekey = RekeyDraft(removal.identity, removal.root, removal.engineer, True)  # the engineer who signed
        made = adoption_made(owner.keys, owner.clock(), rekey, org, bundle, draft)
        grantees = {g.grant.id: g.engineer.name for g in draft.grants}
        self.skipped = tuple(f"client #{c} key version {v}" for c, v in made.skipped_keys) + tuple(
            f"grant #{g} to {grantees.get(g, '?')}" for g in made.skipped_grants
        )
        return made

    def root(self, removal: RemovalDraft, drafted: RemovalRootDraft) -> RemovalRoot:
        events, verified = self.chain.events, self.chain.verified
        if not verified.ok:
            raise IntegrityError(
                f"the audit chain does not verify ({verified.problem}): the roster of the new root key cannot be "
                "checked against it",
                hint=HOST.format(name=self.name),
            )
        draft = vouched_draft(drafted.root.draft, events, removal.engineer.id)
        self.names = {row.id: row.name for row in draft.engineers}
        rotation = RootHands(RemoteRootKeys(self.keys), self.clock, None)  # type: ignore[arg-type]
        plan = rotation.plan(draft)
        pages: list[RootPageCommit] = []
        for page in drafted.pages:  # each verified and re-sealed here (``RootHands.reseal``: a client twice refused)
            pages.append(RootPageCommit(page.digest, rotation.reseal(page.page)))  # type: ignore[arg-type]
        self.rotation = rotation
        return RemovalRoot(drafted.root.digest, plan, tuple(pages))

    def committed(self) -> None:
        """The server answered the commit: the new bundle is this session's (``EngineerRemoval.check``
        reads it), its shares made here."""
        rotation = self.rotation
        assert rotation is not None and rotation.new is not None and rotation.plan_made is not None  # made by ``root``
        new, plan = rotation.new, rotation.plan_made
        self.owner.keys.root = new
        shares: tuple[str, ...] = ()
        if rotation.policy is not None:
            k, n = rotation.policy
            shares = tuple(
                shamir.encode_share(rotation.vault_id, k, x, y) for x, y in shamir.split(new.to_bytes(), k, n)
            )
        admins = tuple(sorted(self.names[engineer_id] for engineer_id, _ in plan.root_seals))
        self.made = (new.version, new.recovery.public)
        self.result = RootRotation(
            root_version=plan.root_version, org_version=plan.org_version, clients=0, admins=admins, shares=shares,
            threshold=rotation.policy[0] if rotation.policy else None, refused=plan.refused,
            warnings=tuple(rotation.warnings),
        )  # fmt: skip
        rotation.close()

    def check_held(self) -> None:
        """The copy of the root bundle the server now holds for this admin is the one made here (the
        keys learned under the old one forgotten first)."""
        self.keys.forget()
        self.keys.open_recovery()
        if self.made is None or self.keys.recovery() != self.made:
            raise IntegrityError(
                f"the removal of admin {self.name!r} did not leave the root key made here current",
                hint="run `credvault rotate root` now",
            )
