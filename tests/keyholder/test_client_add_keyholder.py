"""The keyholder of ``clients.add`` against a compromised authority (or a DBA).

A real ``clients.add`` of the admin runs through a transport that hands the draft (shown
to the keyholder inside the authority's unit of work) or the answer through a function
that changes it. A changed draft must be refused before anything is made and nothing
written; an answer that is not what the keyholder made must not be reported as done; a
recovery key swapped in the database must get no copy of the new client key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select, update

from vault.authority.client_requests import AddAnswer, AddDraft, NewClient
from vault.crypto import sealing
from vault.crypto.labels import LABEL_CLIENT_KEY_SEAL
from vault.errors import DecryptionFailed, Locked, UntrustedRecord
from vault.service import clientparts
from vault.storage import models as m
from vault.storage.rows import EngineerRow

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

SLUG, NAME = "northwind-traders", "Northwind Traders Ltd"


def _same(value: Any) -> Any:
    return value


class TamperingTransport:
    """Forwards to the real transport; the draft goes through ``draft``, the answer through
    ``answer``, the journal's question for the event's details through ``details``."""

    def __init__(
        self,
        real: Any,
        draft: Callable[[AddDraft], AddDraft] = _same,
        answer: Callable[[AddAnswer], AddAnswer] = _same,
        details: Callable[[int, str], tuple[int, str]] = lambda c, a: (c, a),
    ) -> None:
        self.real, self.draft, self.answer, self.details = real, draft, answer, details
        self.requests: list[Any] = []
        self.made: list[NewClient] = []

    def add(self, request: Any, seal: Any) -> AddAnswer:
        change, made, details = self.draft, self.made, self.details
        self.requests.append(request)

        class Seal:
            def make(self, draft: AddDraft) -> NewClient:
                made.append(seal.make(change(draft)))
                return made[-1]

            def private_details(self, client_id: int, action: str) -> Any:
                return seal.private_details(*details(client_id, action))

        return self.answer(self.real.add(request, Seal()))  # type: ignore[no-any-return]


def _use(admin: Any, transport: TamperingTransport) -> TamperingTransport:
    keyholder = clientparts.client_add_keyholder(admin.clients)
    transport.real = keyholder.transport
    keyholder.transport = transport
    admin.clients._add_keyholder = keyholder
    return transport


def _state(admin: Any) -> tuple[int, ...]:
    with admin.store.read() as s:
        return tuple(
            int(s.scalar(select(func.count()).select_from(table)) or 0)
            for table in (m.Client, m.ClientKey, m.ClientKeySeal, m.ClientPolicy, m.AuditEvent)
        )


@pytest.fixture
def admin(team: Any) -> Any:
    team.admin.clients.add("acme", "Acme Ltd")
    team.engineer("alice")
    return team.admin


def test_the_untampered_add_is_the_control(admin: Any) -> None:
    transport = _use(admin, TamperingTransport(None))
    info = admin.clients.add(SLUG, NAME)
    assert (info.slug, info.name, info.key_version, info.secrets) == (SLUG, NAME, 1, 0)
    assert admin.clients.show(SLUG).name == NAME
    (event,) = [e for e in admin.audit.log(client=SLUG) if e.action == "client-create"]
    assert event.details == {"slug": SLUG}, "the slug reaches the event's details, sealed"
    (request,) = transport.requests
    (made,) = transport.made
    sent = repr(request).encode() + request.slug_tag + request.org_pin
    for field in dataclasses.fields(made):
        sent += getattr(made, field.name) if isinstance(getattr(made, field.name), bytes) else b""
    assert SLUG.encode() not in sent and NAME.encode() not in sent, "slug and name cross only encrypted"


def _alice(draft: AddDraft, admin: Any) -> AddDraft:
    with admin.store.read() as s:
        row = s.scalars(select(m.Engineer).where(m.Engineer.name == "alice")).one()
        plain = EngineerRow(*(getattr(row, f) for f in EngineerRow._fields))
    return dataclasses.replace(draft, me=plain)


DRAFTS: dict[str, Callable[[AddDraft, Any], AddDraft]] = {
    # the authority answers with another engineer's row as the caller's
    "caller's row is another engineer's": _alice,
    # the caller's row demoted from admin by a DBA (the certificate no longer verifies)
    "caller's role rewritten": lambda d, a: dataclasses.replace(d, me=d.me._replace(role="engineer")),
    # a recovery key version this admin's bundle does not open: the copy would be sealed to it
    "another recovery key version": lambda d, a: dataclasses.replace(d, root_version=d.root_version + 1),
    "another vault": lambda d, a: dataclasses.replace(d, vault_id=b"\x00" * 16),
    "no client id": lambda d, a: dataclasses.replace(d, client_id=0),
}


@pytest.mark.parametrize("case", list(DRAFTS))
def test_a_tampered_draft_is_refused_before_anything_is_made(admin: Any, case: str) -> None:
    transport = _use(admin, TamperingTransport(None, draft=lambda d: DRAFTS[case](d, admin)))
    before = _state(admin)
    with pytest.raises((UntrustedRecord, Locked)):
        admin.clients.add(SLUG, NAME)
    assert transport.made == [] and _state(admin) == before
    assert not [slot for slot in admin.keyholder.client_keys if slot[0] > 1], "no key kept for a client not made"


def test_details_asked_for_another_client_are_refused_and_nothing_is_written(admin: Any) -> None:
    _use(admin, TamperingTransport(None, details=lambda c, a: (c + 1, a)))
    before = _state(admin)
    with pytest.raises(UntrustedRecord, match="details of an event"):
        admin.clients.add(SLUG, NAME)
    assert _state(admin) == before


ANSWERS: dict[str, Callable[[AddAnswer], AddAnswer]] = {
    "no event": lambda a: dataclasses.replace(a, seq=0),
    "another client": lambda a: dataclasses.replace(a, client_id=a.client_id + 1),
    "another slug tag": lambda a: dataclasses.replace(a, slug_tag=b"\x01" * 32),
    "key record signature swapped": lambda a: dataclasses.replace(
        a, stored=dataclasses.replace(a.stored, key_signature=b"\x02" * 64)
    ),
    "recovery copy rewritten": lambda a: dataclasses.replace(
        a, stored=dataclasses.replace(a.stored, recovery_copy=b"\x03" * 80)
    ),
    "record signed by another admin": lambda a: dataclasses.replace(a, key_signed_by=a.key_signed_by + 1),
}


@pytest.mark.parametrize("case", list(ANSWERS))
def test_an_answer_that_is_not_what_was_made_is_not_reported_done(admin: Any, case: str) -> None:
    transport = _use(admin, TamperingTransport(None, answer=ANSWERS[case]))
    with pytest.raises(UntrustedRecord, match="not the client this keyholder made"):
        admin.clients.add(SLUG, NAME)
    assert len(transport.made) == 1
    assert not [slot for slot in admin.keyholder.client_keys if slot[0] > 1], "no key kept for an answer refused"


def test_a_draft_naming_a_client_the_session_holds_is_refused_before_anything_is_made(admin: Any) -> None:
    """A compromised authority gives the new client the id of acme (whose key the session
    holds): nothing is signed for it and acme's key stays the one the session verified."""
    with admin.store.read() as s:
        acme = s.scalars(select(m.Client.id)).one()
    admin.clients.show("acme")
    kept = admin.keyholder.client_keys[(acme, 1)]
    transport = _use(admin, TamperingTransport(None, draft=lambda d: dataclasses.replace(d, client_id=acme)))
    before = _state(admin)
    with pytest.raises(UntrustedRecord, match="the id of a client this session holds"):
        admin.clients.add(SLUG, NAME)
    assert transport.made == [] and _state(admin) == before
    assert admin.keyholder.client_keys[(acme, 1)] is kept


def test_a_recovery_key_swapped_by_a_dba_gets_no_copy_of_the_new_client_key(admin: Any) -> None:
    """The DBA writes their own public key as the vault's recovery key: the admin's keyholder
    seals the new client key to the recovery key of its own root bundle, never to the row."""
    attacker = sealing.KeyPair.generate()
    with admin.store.transaction() as s:
        s.execute(update(m.RootKey).values(recovery_public=attacker.public))
    info = admin.clients.add(SLUG, NAME)
    assert info.slug == SLUG
    with admin.store.read() as s:
        client_id = max(s.scalars(select(m.Client.id)).all())
        (copy,) = s.scalars(select(m.ClientKeySeal).where(m.ClientKeySeal.client_id == client_id)).all()
        bundle = admin.keyholder.root
        context = (LABEL_CLIENT_KEY_SEAL, admin.vault_id(), client_id, 1, "recovery", copy.recipient_id)
        with pytest.raises(DecryptionFailed):
            sealing.open_sealed(attacker, 1, copy.blob, context)
        assert bundle is not None
        opened = sealing.open_sealed(bundle.recovery, 1, copy.blob, context)
        assert opened == admin.keyholder.client_keys[(client_id, 1)]


def test_a_root_rotation_landing_during_the_add_does_not_store_a_tag_of_the_old_root(team: Any) -> None:
    """admin2's role check reads the bundle; root-admin's root rotation commits right after
    it (which re-tags every slug under the new lookup key). The client admin2 adds must be
    stored under its tag of the root key the add names, so that it is found afterwards."""
    admin2 = team.engineer("admin2", role="admin")
    admin2.clients.add("acme", "Acme Ltd")  # admin2's bundle is open
    keyholder = clientparts.client_add_keyholder(admin2.clients)
    real = keyholder.lookup

    class RotatingLookup:
        def slug_tag(self, slug: str) -> bytes | None:
            tag = real.slug_tag(slug)
            team.admin.keys.rotate_root()  # lands between the role check and the bundle read
            return tag

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    keyholder.lookup = RotatingLookup()  # type: ignore[assignment]
    admin2.clients._add_keyholder = keyholder
    admin2.clients.add(SLUG, NAME)
    assert team.admin.clients.show(SLUG).name == NAME
    assert admin2.clients.show(SLUG).name == NAME
