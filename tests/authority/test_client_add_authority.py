"""The authority of ``clients.add``, run with no key of its own.

``ClientAddAuthority`` is driven alone: public-key checks by the stand-in (rows only), a
recorder that notes events, and a seal standing in for the admin's keyholder (it signs
with the admin's signing key, as the keyholder would, and encrypts under a throwaway key).
It must refuse anyone but an admin before any row of a client is read, refuse ill-typed
request fields before any SQL, refuse a duplicate slug tag before the seal is asked, store
exactly what the seal made and nothing if what it made is forged (a signature not the
caller's, a field under another key version).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from standins import Checks, recorded_statements

from vault.authority.client_add import ClientAddAuthority
from vault.authority.client_requests import DUPLICATE_CLIENT, AddDraft, AddRequest, NewClient
from vault.authority.policy import DEFAULT_CHECKOUT_MINUTES, policy_fields
from vault.authority.requests import Caller
from vault.crypto import blobs, signing
from vault.crypto.labels import LABEL_SIG_CLIENT_KEY, LABEL_SIG_POLICY, LABEL_TAG_CLIENT_SLUG
from vault.errors import AccessDenied, AlreadyExists, InvalidInput
from vault.storage import models as m
from vault.storage.rows import ROLE_ADMIN

READS_A_CLIENT = re.compile(r"\b(clients|client_keys|client_key_seals|client_policies)\b", re.IGNORECASE)
PIN = b"\x00" * 32
COPY = b"\x01fake recovery copy"


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, int | None, Any]] = []
        self.sealed_with: Any = None

    def append(self, s: Any, action: str, *, client_id: Any, details: Any = None, sealed_with: Any = None) -> int:
        self.events.append((action, client_id, details))
        self.sealed_with = sealed_with
        return 4000 + len(self.events)


class _Terms:
    reason_required, exclusive, rotate_after_checkout = True, False, False
    checkout_minutes, stale_days = DEFAULT_CHECKOUT_MINUTES, None

    def __init__(self, by: int, at: int) -> None:
        self.signed_by, self.signed_at = by, at


class KeylessSeal:
    """Makes a client as the admin's keyholder would: signatures by ``signer`` (the admin's
    signing key unless a test forges), fields under a key of ``version``."""

    def __init__(self, signer: signing.SigningKey, version: int = 1) -> None:
        self.signer, self.version = signer, version
        self.drafts: list[AddDraft] = []

    def make(self, draft: AddDraft) -> NewClient:
        self.drafts.append(draft)
        key, cid, at = blobs.new_key(), draft.client_id, int(draft.created_at.timestamp())
        fp = signing.client_key_fingerprint(key)

        def field(value: bytes, purpose: str) -> bytes:
            return blobs.encrypt_client_field(key, self.version, value, cid, purpose)

        return NewClient(
            field(b"acme", "slug"),
            field(b"Acme Ltd", "name"),
            field(blobs.new_key(), "lookup-key"),
            fp,
            at,
            self.signer.sign(LABEL_SIG_CLIENT_KEY, draft.vault_id, cid, 1, fp, at),
            COPY,
            self.signer.sign(LABEL_SIG_POLICY, *policy_fields(draft.vault_id, cid, _Terms(draft.me.id, at))),
        )

    def private_details(self, client_id: int, action: str) -> dict[str, Any]:
        return {"slug": "acme"}


class PolicyForgingSeal(KeylessSeal):
    """The key record signed by the caller, the default policy by another key (an insider
    who wants a laxer policy stored as the admin's)."""

    def make(self, draft: AddDraft) -> NewClient:
        made = super().make(draft)
        at = int(draft.created_at.timestamp())
        forged = _forged_signer(None).sign(
            LABEL_SIG_POLICY, *policy_fields(draft.vault_id, draft.client_id, _Terms(draft.me.id, at))
        )
        return dataclasses.replace(made, policy_signature=forged)


def _tag(team: Any, slug: str) -> bytes:
    with team.admin.store.read() as s:
        return signing.lookup_tag(team.admin.keyholder.root_bundle(s).lookup_key, LABEL_TAG_CLIENT_SLUG, slug)


def _callers(team: Any) -> dict[str, Caller]:
    with team.admin.store.read() as s:
        rows = s.scalars(select(m.Engineer)).all()
        out = {e.name: Caller(e.id, e.key_generation) for e in rows}
        out["admin"] = next(Caller(e.id, e.key_generation) for e in rows if e.role == ROLE_ADMIN)
    return out


def _state(team: Any) -> tuple[int, ...]:
    with team.admin.store.read() as s:
        return tuple(
            int(s.scalar(select(func.count()).select_from(table)) or 0)
            for table in (m.Client, m.ClientKey, m.ClientKeySeal, m.ClientPolicy, m.AuditEvent)
        )


def _authority(team: Any) -> tuple[ClientAddAuthority, Recorder]:
    recorder = Recorder()
    return ClientAddAuthority(team.admin.store, Checks(None), recorder, team.clock), recorder


@pytest.fixture
def statements(team: Any) -> Iterator[list[str]]:
    with recorded_statements(team.admin.store.engine) as seen:
        yield seen


def test_an_engineer_is_refused_before_any_row_of_a_client_is_read(team: Any, statements: list[str]) -> None:
    team.engineer("alice")
    callers, tag, before = _callers(team), _tag(team, "acme"), _state(team)
    authority, recorder = _authority(team)
    seal = KeylessSeal(team.admin.keyholder.my_signing_key())
    statements.clear()
    with pytest.raises(AccessDenied, match="not an admin"):
        authority.add(AddRequest(callers["alice"], tag, PIN), seal)
    assert statements, "the authority read nothing"
    assert not [st for st in statements if READS_A_CLIENT.search(st)], statements
    assert seal.drafts == [] and recorder.events == [] and _state(team) == before


FORGED = {
    "not an add request": lambda c, t: ("client-create", c, t),
    "caller not a Caller": lambda c, t: AddRequest((c.engineer_id, c.key_generation), t, PIN),  # type: ignore[arg-type]
    "caller id zero": lambda c, t: AddRequest(Caller(0, 0), t, PIN),
    "slug given in place of its tag": lambda c, t: AddRequest(c, b"acme", PIN),
    "slug tag as text": lambda c, t: AddRequest(c, "acme", PIN),  # type: ignore[arg-type]
    "short pin": lambda c, t: AddRequest(c, t, b"\x00"),
    # another event in the admin's name: a client's creation journalled as a revoke
    "action revoke": lambda c, t: dataclasses.replace(AddRequest(c, t, PIN), action="revoke"),
}


@pytest.mark.parametrize("case", list(FORGED))
def test_a_forged_request_field_is_refused_before_any_sql(team: Any, statements: list[str], case: str) -> None:
    request = FORGED[case](_callers(team)["admin"], _tag(team, "acme"))
    authority, recorder = _authority(team)
    seal = KeylessSeal(team.admin.keyholder.my_signing_key())
    statements.clear()
    with pytest.raises(InvalidInput):
        authority.add(request, seal)
    assert statements == [] and seal.drafts == [] and recorder.events == []


def test_a_duplicate_slug_tag_is_refused_before_the_keyholder_is_asked(team: Any) -> None:
    team.admin.clients.add("acme", "Acme Ltd")
    before = _state(team)
    authority, recorder = _authority(team)
    seal = KeylessSeal(team.admin.keyholder.my_signing_key())
    with pytest.raises(AlreadyExists, match=DUPLICATE_CLIENT):
        authority.add(AddRequest(_callers(team)["admin"], _tag(team, "acme"), PIN), seal)
    assert seal.drafts == [] and recorder.events == [] and _state(team) == before


def test_the_client_is_stored_exactly_as_the_keyholder_made_it(team: Any) -> None:
    authority, recorder = _authority(team)
    seal = KeylessSeal(team.admin.keyholder.my_signing_key())
    caller, tag = _callers(team)["admin"], _tag(team, "acme")
    answer = authority.add(AddRequest(caller, tag, PIN), seal)
    (draft,) = seal.drafts
    assert answer.seq == 4001 and answer.client_id == draft.client_id and answer.slug_tag == tag
    assert draft.me.id == caller.engineer_id and draft.root_version >= 1
    assert recorder.events == [("client-create", draft.client_id, {})], "the slug is never in the authority's details"
    assert recorder.sealed_with is seal, "the journal seals the keyholder's details (the slug)"
    with team.admin.store.read() as s:
        client = s.get(m.Client, draft.client_id)
        key = s.get(m.ClientKey, (draft.client_id, 1))
        copy = s.get(m.ClientKeySeal, (draft.client_id, 1, "recovery", draft.root_version))
        policy = s.get(m.ClientPolicy, draft.client_id)
        assert client is not None and key is not None and copy is not None and policy is not None
        assert (client.slug_blob, client.name_blob, client.lookup_key_blob) == (
            answer.stored.slug_blob,
            answer.stored.name_blob,
            answer.stored.lookup_key_blob,
        )
        assert (key.signature, key.signed_by, key.encryptions, copy.blob) == (
            answer.stored.key_signature,
            caller.engineer_id,
            3,
            COPY,
        )
        assert (policy.signature, policy.signed_by, policy.exclusive) == (
            answer.stored.policy_signature,
            caller.engineer_id,
            False,
        )


def _forged_signer(team: Any) -> signing.SigningKey:
    return signing.SigningKey(b"\x42" * 32)


@pytest.mark.parametrize(
    "seal_of",
    [
        # a record and policy signed by a key that is not the caller's (an insider's own key)
        lambda team: KeylessSeal(_forged_signer(team)),
        # the fields under a key version the new client does not have
        lambda team: KeylessSeal(team.admin.keyholder.my_signing_key(), version=2),
        # the key record the caller's, the policy signed by another key
        lambda team: PolicyForgingSeal(team.admin.keyholder.my_signing_key()),
    ],
    ids=["signatures not the caller's", "fields under version 2", "policy not the caller's"],
)
def test_a_forged_new_client_is_refused_and_nothing_is_written(team: Any, seal_of: Any) -> None:
    before = _state(team)
    authority, recorder = _authority(team)
    with pytest.raises(InvalidInput):
        authority.add(AddRequest(_callers(team)["admin"], _tag(team, "acme"), PIN), seal_of(team))
    assert recorder.events == [] and _state(team) == before
