"""A listing's release of data keys on a layered vault: the event first, then the layer off.

``checkouts.list`` answers each open checkout's current version, whose name the keyholder
opens under the version's data key. On a layered vault those data keys are under the
server's layer (docs/server.md §5), and a read that appends no event releases none ("no log,
no key"). ``ListingRelease.checkout_list`` is what the route does instead when the server
holds the master key and its signing key: it appends one format-3 ``checkout-list`` event in
a unit of its own, signed by the server and keeping the engineer's signed request, whose
public details name every version it releases (``released``: ``[client, secret, version]``,
sorted); only after that unit committed does it remove the layer, from those versions only.
A listing whose keys are all unlayered, or that lists nothing, appends nothing. The
engineer's listing shows only their own checkouts (``CheckoutListAuthority``), so an
engineer is released only the keys of versions they hold checked out.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

from vault.authority.checkout_events import UnitCore
from vault.authority.requests import ListResponse
from vault.authority.serverjournal import ServerJournal, ServerSeal
from vault.server.handlers import Call
from vault.server.layer import ServerLayer, is_layered
from vault.storage.engine import Store

CHECKOUT_LIST = "checkout-list"


class ListingRelease:
    """The release of a listing's data keys after its event (module docstring)."""

    def __init__(self, store: Store, layer: ServerLayer, seal: ServerSeal, clock: Callable[[], dt.datetime]) -> None:
        self.store, self.layer, self.journal = store, layer, ServerJournal(UnitCore(clock), seal)

    def __repr__(self) -> str:
        return f"ListingRelease({self.layer!r})"

    def checkout_list(self, call: Call, response: ListResponse) -> ListResponse:
        layered = [c for c in response.checkouts if is_layered(c.version.wrapped_dek)]
        if not layered or call.recorded is None:
            return response
        released = sorted({(c.client.id, c.secret.id, c.version.version) for c in layered})
        me = call.caller.me
        with self.store.transaction() as s:
            self.journal.append(
                s,
                CHECKOUT_LIST,
                call.recorded,
                engineer_id=me.id,
                key_generation=me.key_generation,
                public={"released": [list(row) for row in released]},
            )
        with self.store.read() as s:  # committed: the layer comes off the versions the event names
            checkouts = tuple(
                dataclasses.replace(
                    c, version=self.layer.unlayered(s, response.vault_id, c.client.id, c.secret.id, c.version)
                )
                for c in response.checkouts
            )
        return dataclasses.replace(response, checkouts=checkouts)
