"""An admin's grant and revoke through a team server, with no database on this machine.

``RemoteVault.grants.grant/revoke`` run the in-process ``GrantKeyholder`` unchanged over
``HttpsGrantTransport`` (``transport/https_grant_writes.py``: a draft, then a signed commit).
What the keyholder needs off the database comes from the server and is verified here:

* the admin's root bundle (``RemoteKeys.open_recovery``: the copy sealed to them, fetched by
  ``root_seal``, opened with their key and believed only under the pinned organisation key),
  which names a client by its slug tag and opens the client keys' recovery copies;
* the client's context (``AdminLookup``: the checkout keyholder's context learned by slug tag,
  every row verified and the slug opened to the one asked for), whose audit-key ring the
  event's details are sealed under (``AdminLookup.ring``);
* the engineer's certified keys and the ledger, in the server's draft (verified by the seal).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from vault.authority.certificates import trusted_org_key
from vault.authority.grant_draft_requests import RootSealAnswer, RootSealRequest
from vault.authority.requests import Caller
from vault.errors import NotFound, UntrustedRecord
from vault.keyholder import clients as client_keyholder
from vault.service.remotekeys import RemoteKeys
from vault.transport.https_calls import Calls, answer_of


class LearnedContext(Protocol):
    """The checkout keyholder's verified context (``keyholder.checkouts.ClientContext``)."""

    @property
    def client_id(self) -> int: ...
    @property
    def slug(self) -> str: ...
    @property
    def slug_tag(self) -> bytes | None: ...
    @property
    def slug_blob(self) -> bytes: ...
    @property
    def ring(self) -> bytes: ...
    @property
    def lookup_key(self) -> bytes: ...


def root_seal(https: Calls, keys: RemoteKeys) -> Callable[[], tuple[int, bytes, bytes]]:
    """``RemoteKeys.recovery_source`` through ``https``: the session's admin's sealed root bundle and
    the organisation key it must hold: the pinned one, or (after a root rotation) the current one
    the signed chain leads to from it (``trusted_org_key``: each link signed by the key before)."""

    def fetch() -> tuple[int, bytes, bytes]:
        me = keys.me()
        request = RootSealRequest(Caller(me.engineer_id, me.key_generation), me.org_signing_public)
        answer = answer_of(https, "engineers.root_seal", request, RootSealAnswer)
        if answer.vault_id != me.vault_id:
            raise UntrustedRecord("the server answered a root seal of another vault")
        current = answer.org_signing_public or me.org_signing_public
        org = trusted_org_key(me.vault_id, me.org_signing_public, current, answer.org_chain)
        return answer.root_version, answer.blob, org

    return fetch


class Learner(Protocol):
    def learn(self, slug: str) -> LearnedContext | None: ...


class Learns(Protocol):
    """The checkout keyholder, as ``fresh_contexts`` uses it: its context learner."""

    @property
    def learner(self) -> Learner | None: ...


def fresh_contexts(keyholder: Learns) -> Callable[[str], LearnedContext]:
    """A client's context learned afresh for each admin's write (one read of the server, every row
    verified; a context kept from before a key rotation would show the slug blob of an old key)."""

    def learn(slug: str) -> LearnedContext:
        learner = keyholder.learner
        found = learner.learn(slug) if learner is not None else None
        if found is None:
            raise NotFound(f"no client {slug!r}", hint="`credvault client list` shows them")
        return found

    return learn


class AdminLookup:
    """``ClientLookup`` of the grants keyholder for an admin through the server (module docstring)."""

    def __init__(self, keys: RemoteKeys, contexts: Callable[[str], LearnedContext]) -> None:
        self.keys, self.contexts = keys, contexts
        self._rings: dict[int, bytes] = {}
        self._lookup_keys: dict[int, bytes] = {}

    def __repr__(self) -> str:
        return "AdminLookup()"

    def context(self, slug: str) -> client_keyholder.ClientContext:
        self.keys.open_recovery()
        learned = self.contexts(slug)
        if len(self._rings) >= 1024:
            self._rings.clear()
            self._lookup_keys.clear()
        self._rings[learned.client_id] = learned.ring
        self._lookup_keys[learned.client_id] = learned.lookup_key
        return client_keyholder.ClientContext(learned.client_id, learned.slug, learned.slug_tag, learned.slug_blob)

    def slug_tag(self, slug: str) -> bytes | None:
        self.keys.open_recovery()
        return self.keys.slug_tag(slug)

    def lookup_key(self, client_id: int) -> bytes:
        """The lookup key of a client this lookup found (its context verified), else refused."""
        key = self._lookup_keys.get(client_id)
        if key is None:
            raise UntrustedRecord("the server drafted for a client this lookup did not find")
        return key

    def ring(self, client_id: int) -> bytes:
        """The audit-key ring of a client this lookup found (its context verified), else refused."""
        ring = self._rings.get(client_id)
        if ring is None:
            raise UntrustedRecord("the server drafted for a client this lookup did not find")
        return ring
