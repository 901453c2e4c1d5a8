"""A client's key context by its slug, through the team server (``RemoteVault``'s checkouts).

A client is named by its slug; the server is asked only for ids. ``RemoteLookup`` finds the client a
slug names among the clients of the engineer's grants (their ids from the grant listing, each client's
context verified and its slug opened here, ``keyholder/contexts.py``), and remembers the id for the
session; an admin's is asked by the slug's lookup tag under their root bundle.
"""

from __future__ import annotations

from vault.authority.grant_requests import GrantListRequest, GrantListRows
from vault.authority.requests import Caller
from vault.errors import AccessDenied, GrantExpired, NotFound, UntrustedRecord
from vault.keyholder.checkouts import CheckoutKeyholder, ClientContext
from vault.service.remotekeys import RemoteKeys
from vault.transport.https_grants import HttpsGrantListTransport


class RemoteLookup:
    """A client's key context by its slug, through the server: the ids of the engineer's grants
    are only where to look; the context learned by id is verified and its slug opened here."""

    def __init__(self, keys: RemoteKeys, grants: HttpsGrantListTransport) -> None:
        self.keys, self.grants = keys, grants
        self.keyholder: CheckoutKeyholder | None = None  # set once the keyholder exists

    def __repr__(self) -> str:
        return "RemoteLookup()"

    def known(self, slug: str) -> int | None:
        return self.keys.slugs.get(slug)

    def context(self, slug: str) -> ClientContext:
        keyholder = self.keyholder
        assert keyholder is not None and keyholder.learner is not None
        if self.keys.recovery_version() is not None:  # an admin (their root bundle open): by the slug's tag
            return self._by_tag(slug)
        hinted = self.keys.slugs.pop(slug, None)
        refused, expired, untrusted = False, 0, None
        for client_id in self._candidates(hinted):
            self.keys.slugs[slug] = client_id
            try:
                found = keyholder.learner.learn(slug)
            except GrantExpired:
                if client_id == hinted:  # this slug's client (the hint came from its slug, opened here): say so
                    raise
                found, refused, expired = None, True, expired + 1  # its slug is not released any more
            except (AccessDenied, NotFound):
                found, refused = None, True  # another client's grant: not the one asked for, or not live
            except UntrustedRecord as error:  # a row that does not verify: said, if no other client is it
                found, untrusted = None, untrusted or error
            if found is not None:
                return found
            self.keys.slugs.pop(slug, None)
        if untrusted is not None:
            raise untrusted
        if self.is_admin():  # no grant names it: an admin names any client by its tag
            return self._by_tag(slug)
        if expired:  # the server releases nothing of a client whose grant expired, not even its name
            raise NotFound(
                f"no client {slug!r} among the clients you hold a live grant for; {expired} of your grants "
                "expired, and an expired grant's client cannot be named",
                hint="if it is one of them, ask an admin to renew it; `credvault grant list` shows your grants",
            )
        raise NotFound(
            f"no client {slug!r} among the clients you hold a {'live ' if refused else ''}grant for",
            hint="`credvault grant list` shows your grants; an admin grants access",
        )

    def is_admin(self) -> bool:
        """Whether the session's engineer is an admin: the server answers their root bundle's sealed
        copy (``engineers.root_seal``, opened and checked here) to admins only."""
        try:
            self.keys.open_recovery()
        except AccessDenied:
            return False  # an engineer: clients are named by the ids of their grants only
        return self.keys.recovery_version() is not None

    def _by_tag(self, slug: str) -> ClientContext:
        """An admin's context of ``slug``, asked by its lookup tag under their root bundle (every row
        verified, the slug opened and compared, as in-process)."""
        keyholder = self.keyholder
        assert keyholder is not None and keyholder.learner is not None
        self.keys.slugs.pop(slug, None)
        found = keyholder.learner.learn(slug)
        if found is None:
            raise NotFound(f"no client {slug!r}", hint="`credvault client list` shows the clients")
        return found

    def _candidates(self, first: int | None) -> list[int]:
        me = self.keys.me()
        request = GrantListRequest(
            Caller(me.engineer_id, me.key_generation), None, None, tuple(sorted(self.keys.client_keys)),
            me.org_signing_public,
        )  # fmt: skip
        rows: GrantListRows = self.grants.list(request)
        ids = [first] if first is not None else []
        for listed in sorted(rows.grants, key=lambda g: g.row.id, reverse=True):  # newest grant first
            row = listed.row
            if row.engineer_id == me.engineer_id and row.client_id not in ids:
                ids.append(row.client_id)
        return ids
