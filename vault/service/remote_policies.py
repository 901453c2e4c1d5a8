"""``RemoteVault.policies``: a client's policy through a team server (``policy show``).

The in-process ``PolicyKeyholder`` over ``HttpsPolicyTransport`` (``policies.get``, signed):
the client is named by the verified context the checkout keyholder learned for its slug
(``RemoteCheckouts.context``: the id among the engineer's grants, its slug opened here; an
admin's by the slug's tag), the server answers the stored policy with its signer's row, and the
keyholder decides what applies here, as in-process: a policy whose signature, signer (an active
admin certified under the organisation key the pin leads to) or bounds do not verify reads as
the strict policy. An engineer asking for a client they hold no live grant for gets ``NotFound``
(no grant names it; the server would answer 404). An admin's ``set`` is ``RemotePolicyWrites``'s
(``remote_admin2.py``: a draft and a signed commit), and so are ``unsigned`` (session 14) and
``adopt`` (session 15: a draft and a signed commit per client).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from vault.keyholder.policies import PolicyKeyholder
from vault.records import PolicyInfo
from vault.service import validation
from vault.service.remote_admin2 import RemotePolicyWrites
from vault.service.remote_nouns import _Noun, reported
from vault.service.remote_reads import Contexts
from vault.service.remotekeys import RemoteKeys
from vault.transport.https import HttpsTransport
from vault.transport.https_policies import HttpsPolicyTransport

__all__ = ["RemotePolicies"]


class _ContextLookup:
    """``ClientLookup``/``SlugOpener`` of the policies' keyholder over the learned client contexts."""

    def __init__(self, contexts: Contexts) -> None:
        self.contexts = contexts

    def __repr__(self) -> str:
        return "_ContextLookup()"

    def client(self, slug: str) -> tuple[int, bytes]:
        found = self.contexts(slug)
        return found.client_id, found.slug_blob

    def slugs(self, clients: Sequence[tuple[int, bytes]]) -> dict[int, str]:
        return {}  # an admin's listing of unsigned policies: not served here


class RemotePolicies(_Noun):
    """``policies.get`` and an admin's ``policies.set`` through the server (module docstring)."""

    def __init__(
        self,
        keys: RemoteKeys,
        https: HttpsTransport,
        contexts: Contexts,
        clock: Callable[[], dt.datetime],
        writes: RemotePolicyWrites,
    ) -> None:
        self.keys, self.https, self.writes = keys, https, writes
        lookup = _ContextLookup(contexts)
        self.keyholder = PolicyKeyholder(HttpsPolicyTransport(https), keys, lookup, lookup, clock)

    def __repr__(self) -> str:
        return "RemotePolicies()"

    def get(self, client: str) -> PolicyInfo:
        """As ``Vault.policies.get``: the policy that applies (``signed`` False: the stored one does
        not verify, the strict one applies)."""
        validation.client_slug(client)
        self.keys.me()
        with reported(self.https):
            return self.keyholder.get(client)

    def unsigned(self) -> list[PolicyInfo]:
        """As ``Vault.policies.unsigned``, through the server (an admin's: ``RemotePolicyWrites``)."""
        return self.writes.unsigned()

    def adopt(self, shown: Sequence[PolicyInfo]) -> list[PolicyInfo]:
        """As ``Vault.policies.adopt``, through the server (an admin's: ``RemotePolicyWrites``)."""
        return self.writes.adopt(shown)

    def set(self, client: str, **wanted: Any) -> PolicyInfo:
        """As ``Vault.policies.set``, through the server (an admin's: ``RemotePolicyWrites``)."""
        return self.writes.set(client, **wanted)
