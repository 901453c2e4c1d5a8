"""The roster of a root rotation through the team server, vouched for by the signed audit chain, on the
admin's machine: an admin's removal's (docs/server.md, session 17, helper I) and, since session 18, an
admin's ``rotate root`` (``service/remote_root.py``; threat row C82).

Until the removal's root rotation commits, the removed admin holds the current organisation seed: with
it they can certify a row no admin made (an engineer row of their own, an admin's row with keys they
hold, a server key), and the server, which has no chain verifier, puts every certificate that
verifies under the current organisation key in the rotation's roster (``server/root_routes.py``). A
rotation that re-certified such a row under the new key, or sealed the new bundle to it, would hand the
removed admin back what the removal takes away. In-process the roster is only what the chain vouches
for (``service/rootrotation._Roster``); here the same decision is made from the chain this machine
verified itself, whole (``RemoteChain.verify_whole``), before the plan is made:

* each engineer row and key generation: the chain certified it (``signers.chain_lifetimes``: a
  confirmation, or ``vault-init``, by an admin the chain made), the certifying event names the keys
  shown (its fingerprint, when it names one), and, for an active row, the chain has not retired it; an
  active admin must be one the chain made an admin;
* each server key: a ``server-key-certify`` (or ``-recover``) event of the chain names its version and
  public key;
* in a removal, the admin removed is in the roster as disabled (the certificate this machine signed for
  the removal): a draft showing them otherwise is refused, so that no seal of the new bundle reaches them.

What fails is left out of the plan and named in its refusals (never re-certified, never sealed to);
the server accepts a plan that certifies some of the rows it drafted (``root_drafts.verified_plan``),
as long as every signature it carries verifies and it names a refusal for each row
it leaves out.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from vault.authority.root_rotation_requests import RootDraft
from vault.crypto import signing
from vault.errors import UntrustedRecord
from vault.keyholder import auditchain
from vault.keyholder.signers import KeyEvents, chain_lifetimes
from vault.storage.models import KEY_EVENT_ACTIONS
from vault.storage.rows import ACTIVE, ROLE_ADMIN

CERTIFYING = ("vault-init", "engineer-confirm")
SERVER_CERTIFYING = ("server-key-certify", "server-key-recover")
DISABLED = "disabled"
NOT_VOUCHED = "the audit chain does not vouch for it"


def _details(text: str | None) -> dict[str, Any]:
    try:
        found = json.loads(text) if text else {}
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


class ChainEvents:
    """The events of a verified chain a roster needs, kept as ``observe`` is shown them in order."""

    def __init__(self) -> None:
        self.first_action: str | None = None
        self.keys: list[tuple[int, int | None, int, str, str | None]] = []
        self.servers: list[dict[str, Any]] = []

    def __repr__(self) -> str:
        return f"ChainEvents(keys={len(self.keys)})"

    def extend(self, later: ChainEvents) -> None:
        """The events of ``later``, observed after these (the next part of the same chain)."""
        self.first_action = self.first_action or later.first_action
        self.keys.extend(later.keys)
        self.servers.extend(later.servers)

    def observe(self, e: Any) -> None:
        if e.seq == 1:
            self.first_action = e.action
        if e.action in KEY_EVENT_ACTIONS:
            self.keys.append((e.seq, e.engineer_id, e.key_generation, e.action, e.details_json))
        if e.action in SERVER_CERTIFYING:
            self.servers.append(_details(e.details_json))


def chain_admins(chain: ChainEvents, certified: dict[tuple[int, int], tuple[bytes, str]]) -> frozenset[int]:
    """The engineers the verified chain made admins and has not removed (``signers.chain_lifetimes``, over
    the certified keys): the removal keyholder refuses a row that says engineer for one of them
    (``keyholder/removal.py``: a removed admin's row rewritten as an engineer's would keep their root key)."""
    older = chain.first_action not in (None, "vault-init")
    _keys, _problems, admins = chain_lifetimes(certified, chain.keys, older, lambda: set())
    return frozenset(admins)


def vouched_draft(draft: RootDraft, chain: ChainEvents, leaving: int | None = None) -> RootDraft:
    """``draft`` with only the rows the chain vouches for (module docstring); the others named in its
    refusals. ``leaving``: the admin a removal removes; refused (``UntrustedRecord``) if not shown disabled."""
    shown = [row for row in draft.engineers if row.id == leaving]
    if leaving is not None and (len(shown) != 1 or shown[0].status != DISABLED):
        raise UntrustedRecord("the root rotation's roster does not show the admin removed as disabled")
    names = dict(draft.names)
    certified: dict[tuple[int, int], tuple[bytes, str]] = {}
    for row in draft.engineers:
        if row.signing_public is not None:
            certified[(row.id, row.key_generation)] = (row.signing_public, row.name)
    for key in draft.keys:
        certified[(key.engineer_id, key.generation)] = (key.signing_public, names.get(key.engineer_id, ""))
    older = chain.first_action not in (None, "vault-init")
    admins_now = {row.id for row in draft.engineers if row.role == ROLE_ADMIN and row.status == ACTIVE}
    events: KeyEvents = chain.keys
    lifetimes, problems, chain_admins = chain_lifetimes(certified, events, older, lambda: admins_now)
    by_seq = {event[0]: event for event in chain.keys}

    def vouched(engineer_id: int, generation: int, sealing: bytes | None, public: bytes | None) -> bool:
        start = lifetimes.get((engineer_id, generation), (b"", auditchain.NEVER, 0))[1]
        if start == auditchain.NEVER or sealing is None or public is None:
            return False
        seq = max(start - 1, 1)  # the confirmation that certified it (vault-init: event 1)
        if seq in problems:
            return False
        event = by_seq.get(seq)
        named = _details(event[4]).get("fingerprint") if event is not None and event[3] in CERTIFYING else None
        return named in (None, signing.engineer_fingerprint(sealing, public))

    refused = list(draft.refused)
    engineers = []
    for row in draft.engineers:
        ok = vouched(row.id, row.key_generation, row.sealing_public, row.signing_public)
        if ok and row.status == ACTIVE:
            end = lifetimes[(row.id, row.key_generation)][2]
            ok = end == auditchain.NEVER and (row.role != ROLE_ADMIN or row.id in chain_admins)
        if ok:
            engineers.append(row)
        else:
            refused.append(f"the certificate of engineer {row.name!r}: {NOT_VOUCHED}")
    keys = []
    for key in draft.keys:
        if vouched(key.engineer_id, key.generation, key.sealing_public, key.signing_public):
            keys.append(key)
        else:
            name = names.get(key.engineer_id, "")
            refused.append(
                f"key generation {key.generation} of engineer {name!r}: the audit chain does not vouch for it"
            )
    servers = []
    for server in draft.server_keys:
        if {"version": server.version, "signing_public": server.signing_public.hex()} in chain.servers:
            servers.append(server)
        else:
            refused.append(f"the certificate of server key {server.version}: {NOT_VOUCHED}")
    kept_names = tuple((i, n) for i, n in draft.names if any(k.engineer_id == i for k in keys))
    return dataclasses.replace(
        draft, engineers=tuple(engineers), keys=tuple(keys), names=kept_names, refused=tuple(refused),
        server_keys=tuple(servers),
    )  # fmt: skip
