"""An admin's root rotation through a team server, with no database on this machine.

``RemoteVault.keys.rotate_root`` (``credvault --server URL rotate root``) runs the in-process
``RootRotationKeyholder`` unchanged over ``HttpsRootTransport`` (``transport/https_root.py``: a draft,
the pages of clients, one commit). Everything the keyholder is shown is verified here under what this
admin already trusts: their own row under the organisation key their pin leads to by signed links, the
root bundle opened from the copy sealed to them (it must hold the recovery key the server names and the
current organisation key), each roster certificate, each client-key version's record signed by an
active admin and its recovery copy opened with the old recovery key. The new bundle, the new
organisation key, the certificates, the seals and the recovery shares are made here; the shares are
shown once and never sent.

The roster the new organisation key re-certifies and the new bundle is sealed to is only what the
signed audit chain vouches for, as in-process (``service/rootrotation._Roster``): before each draft the
whole chain is verified here (``VerifiedChain``: every event's hash, link and signature), and the draft's
rows it does not vouch for are left out of the plan and named in its refusals
(``keyholder/removal_roster.vouched_draft``): a row a holder of the current organisation seed who is not
an admin certified (a DBA's ally, a demoted admin) is never carried over to the new key, nor sealed to.
A chain that does not verify refuses the rotation before anything is sent (threat row C82).

The old root bundle this session held is forgotten afterwards (it is destroyed on the server). A commit
refused as stale (409: a client, the roster or a root key changed between the draft and the commit) is
drafted again with a new bundle, ``STALE_RETRIES`` times at most. If the commit's answer is lost (the
connection fails after the server committed) the new bundle is still sealed to this admin on the
server, but the recovery shares made here are lost: ``rotate root --shares K-of-N`` makes new ones.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Protocol

from vault.authority.root_rotation_requests import ClientPage, Resealed, RootDraft, RootPlan, RootRotated
from vault.errors import ConcurrentChange, IntegrityError, UntrustedRecord
from vault.keyholder.keys import RootBundle
from vault.keyholder.removal_roster import ChainEvents, vouched_draft
from vault.keyholder.root_rotation import RootResult, RootRotationKeyholder
from vault.records import AuditVerification, RootRotation
from vault.service.remotekeys import RemoteKeys
from vault.transport.https import HttpsTransport
from vault.transport.https_root import HttpsRootTransport

STALE_RETRIES = 3
ON_HOST = "run `credvault --server-key FILE rotate root` on the server's host, or repair the chain first"


class WholeChain(Protocol):
    def verify_whole(
        self, observe: Callable[[Any], None], *, since: tuple[int, bytes] | None = None
    ) -> AuditVerification: ...


class VerifiedChain:
    """The whole chain as verified on this machine, and the events of it a root rotation's roster needs
    (``removal_roster.ChainEvents``): before an admin's removal or root rotation is drafted."""

    def __init__(self, events: ChainEvents, verified: AuditVerification) -> None:
        self.events, self.verified = events, verified

    def __repr__(self) -> str:
        return f"VerifiedChain(ok={self.verified.ok})"


class SessionChain:
    """The chain verified whole here the first time a ``RemoteVault`` needs it, then from the head verified
    last (its anchor checked again, as ``audit verify --since``): an admin offboarding several people in one
    agent session pays for the whole chain once. Only the events of a chain that verifies are kept."""

    def __init__(self, chain: WholeChain) -> None:
        self.chain = chain
        self.events = ChainEvents()
        self.seen: tuple[int, bytes] | None = None  # the head verified last

    def __repr__(self) -> str:
        return f"SessionChain(seen={self.seen[0] if self.seen else None})"

    def verify(self) -> VerifiedChain:
        new = ChainEvents()
        check = self.chain.verify_whole(new.observe, since=self.seen)
        if not check.ok:
            return VerifiedChain(new, check)  # what was verified up to ``seen`` stays; this refuses
        self.events.extend(new)
        self.seen = (check.head_seq, bytes.fromhex(check.head_hash))
        return VerifiedChain(self.events, check)


class _VouchedSeal:
    """The keyholder's seal, shown only the rows of the draft the verified chain vouches for."""

    def __init__(self, seal: Any, chain: ChainEvents) -> None:
        self.seal, self.chain = seal, chain

    def __repr__(self) -> str:
        return "VouchedSeal(<redacted>)"

    def plan(self, draft: RootDraft) -> RootPlan:
        if not isinstance(draft, RootDraft):
            raise UntrustedRecord("the server's answer is not a root draft")
        return self.seal.plan(vouched_draft(draft, self.chain))  # type: ignore[no-any-return]

    def reseal(self, page: ClientPage) -> Resealed:
        return self.seal.reseal(page)  # type: ignore[no-any-return]


class VouchedRootTransport:
    """``HttpsRootTransport`` whose seal plans for the vouched rows only (module docstring)."""

    def __init__(self, https: HttpsRootTransport, chain: ChainEvents) -> None:
        self.https, self.chain = https, chain

    def __repr__(self) -> str:
        return "VouchedRootTransport()"

    def rotate_root(self, request: Any, seal: Any, unit: Any = None) -> RootRotated:
        return self.https.rotate_root(request, _VouchedSeal(seal, self.chain), unit)


class RemoteRootKeys:
    """The ``Keys`` the root rotation's keyholder reads: this session's, and no bundle held (it opens
    the one sealed to this admin from the draft, and is no older than it)."""

    def __init__(self, keys: RemoteKeys) -> None:
        self.keys, self.client_keys = keys, keys.client_keys
        self.root: RootBundle | None = None

    def __repr__(self) -> str:
        return "RemoteRootKeys(<redacted>)"

    def me(self) -> Any:
        return self.keys.me()

    def session_sealing_public(self, me: Any) -> bytes:
        return self.keys.sealing_public()

    def my_keypair(self) -> Any:
        return self.keys.my_keypair()


class RemoteRootRotation:
    """``keys.rotate_root`` through the server (module docstring)."""

    def __init__(
        self, keys: RemoteKeys, https: HttpsTransport, clock: Callable[[], dt.datetime], chain: SessionChain
    ) -> None:
        self.keys, self.https, self.clock, self.chain = keys, https, clock, chain

    def __repr__(self) -> str:
        return "RemoteRootRotation()"

    def rotate_root(self, *, shares: tuple[int, int] | None = None) -> RootRotation:
        """As ``Vault.keys.rotate_root``, through the server."""
        self.keys.me()
        done = self._again(shares)
        self.keys.forget()  # the old bundle is destroyed on the server; nothing learned under it is kept
        answer = done.answer
        return RootRotation(
            root_version=answer.root_version, org_version=answer.org_version, clients=answer.clients,
            admins=answer.admins, shares=done.shares, threshold=done.threshold, refused=answer.refused,
            warnings=done.warnings,
        )  # fmt: skip

    def _again(self, shares: tuple[int, int] | None) -> RootResult:
        for attempt in range(STALE_RETRIES + 1):
            transport = VouchedRootTransport(HttpsRootTransport(self.https), self._verified())
            keyholder = RootRotationKeyholder(transport, RemoteRootKeys(self.keys), self.clock)  # type: ignore[arg-type]
            try:
                return keyholder.rotate(shares=shares)
            except ConcurrentChange:
                if attempt == STALE_RETRIES:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _verified(self) -> ChainEvents:
        """The chain verified here, again for each draft (a retry's draft may show rows certified since)."""
        chain = self.chain.verify()
        if not chain.verified.ok:
            raise IntegrityError(
                f"the audit chain does not verify ({chain.verified.problem}): the roster of the new root key cannot "
                "be checked against it",
                hint=ON_HOST,
            )
        return chain.events
