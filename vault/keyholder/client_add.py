"""A new client, where the admin's keys are: make its key, seal, sign, encrypt, check the answer.

``ClientAddKeyholder.add(slug, name)`` sends an ``AddRequest`` naming the slug by its lookup
tag only (under this admin's root bundle). Inside the authority's unit of work it is shown
the draft (the caller's row, the new client's id, the recovery key version) and, only if the
draft verifies, makes the client: a fresh client key, its record signed by this admin
(``LABEL_SIG_CLIENT_KEY``), the key sealed to the recovery key of this admin's own root
bundle (never to a public key the authority names: a recovery key a DBA swapped in the
database seals nothing to them), the slug, name and lookup key encrypted under it and
bound to the client's id, and the default policy signed. The slug reaches the audit
event's details only sealed (``private_details``, asked by the journal).

The answer is the client's rows as stored: anything else than what this keyholder made
(a row rewritten, a signature swapped, another tag) is refused with ``UntrustedRecord``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from vault.authority.client_requests import (
    CLIENT_CREATE,
    DUPLICATE_CLIENT,
    NEW_CLIENT_POLICY,
    AddAnswer,
    AddDraft,
    AddRequest,
    NewClient,
)
from vault.authority.policy import DEFAULT_CHECKOUT_MINUTES, policy_fields
from vault.authority.requests import Caller, ClientKeyRow
from vault.crypto import blobs, sealing, signing
from vault.crypto.labels import LABEL_CLIENT_KEY_SEAL, LABEL_SIG_CLIENT_KEY, LABEL_SIG_POLICY
from vault.errors import AccessDenied, AlreadyExists, UntrustedRecord
from vault.keyholder.clients import ClientLookup, verified_caller
from vault.keyholder.grants import SigningKeys
from vault.keyholder.trust import client_key_fields
from vault.records import ClientInfo
from vault.storage.rows import ACTIVE, KeyCache


class AdminKeys(SigningKeys, Protocol):
    def recovery_public(self, slug: str) -> tuple[int, bytes, bytes]:
        """(version, public key) of the recovery key this admin's sealed root bundle opens to,
        and ``slug``'s lookup tag under that same bundle (one bundle: a root rotation landing
        between two reads cannot pair a tag of one root key with the version of another)."""


class ClientAddTransport(Protocol):
    def add(self, request: AddRequest, seal: Any) -> AddAnswer: ...


class _Policy(NamedTuple):
    reason_required: bool
    exclusive: bool
    rotate_after_checkout: bool
    checkout_minutes: int
    stale_days: int | None
    signed_by: int | None
    signed_at: int | None


class _Seal:
    """The keyholder's side of ``ClientAddSeal``: one client made, for one draft. Through a team
    server (``transport/https_client_add.py``) it also makes the client's audit-key ring
    (``audit_keys``) and seals the ``client-create`` details to the commit's request id under it
    (``seal_request``): in-process the journal does both inside the unit."""

    def __init__(
        self, make: Callable[[AddDraft], NewClient], slug: str, key_of: Callable[[int], bytes] | None = None
    ) -> None:
        self._make: Callable[[AddDraft], NewClient] | None = make
        self._slug: str | None = slug
        self._key_of = key_of
        self._ring: bytes | None = None
        self.draft: AddDraft | None = None
        self.made: NewClient | None = None

    def __repr__(self) -> str:
        return "ClientAddSeal(<redacted>)"

    def make(self, draft: AddDraft) -> NewClient:
        if self._make is None or self.made is not None:
            raise UntrustedRecord("this request has made its client already")
        made = self._make(draft)
        self.draft, self.made = draft, made
        return made

    def private_details(self, client_id: int, action: str) -> dict[str, Any]:
        """The slug, for the journal's sealing of this client's ``client-create`` (and no other event)."""
        if self._slug is None or self.draft is None or client_id != self.draft.client_id or action != CLIENT_CREATE:
            raise UntrustedRecord("the authority asked for details of an event this request did not make")
        return {"slug": self._slug}

    def audit_keys(self) -> bytes:
        """The new client's audit-key ring (one fresh generation), encrypted under its client key."""
        draft = self.draft
        if draft is None or self._key_of is None or self._ring is not None:
            raise UntrustedRecord("no client was made for an audit ring")
        self._ring = blobs.new_key()
        key = self._key_of(draft.client_id)
        return blobs.encrypt_client_field(key, 1, self._ring, draft.client_id, "audit-keys")

    def seal_request(self, request_id: bytes, action: str) -> tuple[int, bytes]:
        """The ``client-create`` details (the slug) sealed under the ring's first key to ``request_id``."""
        draft, ring = self.draft, self._ring
        if draft is None or ring is None or self._slug is None or action != CLIENT_CREATE:
            raise UntrustedRecord("the event to seal is not the one this request asked for")
        raw = json.dumps({"slug": self._slug}, sort_keys=True).encode("utf-8")
        return 1, blobs.encrypt_audit_detail_v3(ring, 1, raw, draft.client_id, request_id, action)

    def close(self) -> None:
        self._make, self._slug, self._key_of, self._ring = None, None, None, None


class ClientAddKeyholder:
    """``clients.add`` for the admin whose keys ``keys`` holds."""

    def __init__(
        self,
        transport: ClientAddTransport,
        keys: AdminKeys,
        lookup: ClientLookup,
        cache: KeyCache,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.transport, self.keys, self.lookup, self.cache, self.clock = transport, keys, lookup, cache, clock

    def __repr__(self) -> str:
        return "ClientAddKeyholder()"

    def add(self, slug: str, name: str) -> ClientInfo:
        me = self.keys.session()
        if self.lookup.slug_tag(slug) is None:  # not an admin (the role as the session verified it)
            raise AccessDenied(f"{me.name!r} is not an admin", hint="ask an admin to do this")
        root_version, recovery_public, slug_tag = self.keys.recovery_public(slug)
        request = AddRequest(Caller(me.engineer_id, me.key_generation), slug_tag, me.org_signing_public)
        slots: list[tuple[int, int]] = []

        def make(draft: AddDraft) -> NewClient:
            _checks, admin = verified_caller(me, draft, self.keys.sealing_public(), self.clock())
            if not admin:
                raise UntrustedRecord("the authority answered as if this engineer were an admin")
            if draft.root_version != root_version:
                raise UntrustedRecord("the authority names another recovery key than this admin's root bundle")
            if not isinstance(draft.client_id, int) or isinstance(draft.client_id, bool) or draft.client_id < 1:
                raise UntrustedRecord("the authority gave the new client no id")
            vault_id, client_id = draft.vault_id, draft.client_id
            if (client_id, 1) in self.cache:
                raise UntrustedRecord("the authority gave the new client the id of a client this session holds")
            key = blobs.new_key()
            signed_at = int(self.clock().timestamp())
            record = ClientKeyRow(
                client_id, 1, signing.client_key_fingerprint(key), signed_at, me.engineer_id, None, ACTIVE
            )
            context = (LABEL_CLIENT_KEY_SEAL, vault_id, client_id, 1, "recovery", root_version)
            reason, exclusive, rotate = NEW_CLIENT_POLICY
            terms = _Policy(reason, exclusive, rotate, DEFAULT_CHECKOUT_MINUTES, None, me.engineer_id, signed_at)
            made = NewClient(
                blobs.encrypt_client_field(key, 1, slug.encode("utf-8"), client_id, "slug"),
                blobs.encrypt_client_field(key, 1, name.encode("utf-8"), client_id, "name"),
                blobs.encrypt_client_field(key, 1, blobs.new_key(), client_id, "lookup-key"),
                record.fingerprint,
                signed_at,
                self.keys.sign(LABEL_SIG_CLIENT_KEY, *client_key_fields(vault_id, record)),
                sealing.seal(recovery_public, 1, key, context),
                self.keys.sign(LABEL_SIG_POLICY, *policy_fields(vault_id, client_id, terms)),
            )
            slots.append((client_id, 1))
            self.cache[(client_id, 1)] = key  # the journal seals the event's details under this client's keys
            return made

        seal = _Seal(make, slug, lambda client_id: self.cache[(client_id, 1)])
        try:
            answer = self.transport.add(request, seal)
        except AlreadyExists as error:
            self._forget(slots)
            if str(error) == DUPLICATE_CLIENT:
                raise AlreadyExists(f"client {slug!r} already exists") from None
            raise
        except BaseException:
            self._forget(slots)  # nothing committed: an id that may be given again holds no key here
            raise
        finally:
            seal.close()
        draft, made = seal.draft, seal.made
        if (
            draft is None
            or made is None
            or not isinstance(answer, AddAnswer)
            or answer.seq < 1
            or answer.client_id != draft.client_id
            or answer.slug_tag != slug_tag
            or answer.stored != made
            or (answer.key_signed_by, answer.policy_signed_by) != (me.engineer_id, me.engineer_id)
        ):
            self._forget(slots)  # a key no stored record is known to match is not kept
            raise UntrustedRecord("the authority's answer is not the client this keyholder made")
        return ClientInfo(slug, name, 1, 0, answer.created_at)

    def _forget(self, slots: list[tuple[int, int]]) -> None:
        for slot in slots:
            self.cache.pop(slot, None)
