"""What a pending confirmation's plan carries between the two halves (review finding 1).

The insider is whoever sees what the authority answers (a compromised team server, a
logger of its responses, an engineer reading its wire): the plan of a pending
confirmation must name grants by ids and ciphertext only. The confirming admin's
keyholder opens each client slug itself, so ``pending_confirmation`` still shows them.
"""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import select
from test_attack_enrolment import _client_with_secret, _enrol

from vault.authority.engineer_requests import PENDING
from vault.errors import UntrustedRecord
from vault.storage import models as m


def _pending(shared):  # type: ignore[no-untyped-def]
    admin = shared.admin
    acme, acme_id = _client_with_secret(shared, "acme-pw")
    name = shared.engineer("alice").engineer_name
    admin.grants.grant(name, acme)
    code = admin.engineers.rotate(name)
    _enrol(shared, name, code)
    return admin, acme, acme_id, name


def test_the_authoritys_pending_answer_carries_plaintext_slugs(shared):  # type: ignore[no-untyped-def]
    admin, acme, acme_id, name = _pending(shared)
    kh = admin.engineers._engineer_keyholder()
    answer = kh.transport.confirm(kh._confirm_request(PENDING, name, None, False), None)
    assert acme not in repr(answer.pending.plan)
    assert acme.encode() not in repr(answer.pending.plan).encode()
    (row,) = answer.pending.plan.carried  # ids and the slug as stored
    assert row.client_id == acme_id and isinstance(row.slug_blob, bytes) and acme.encode() not in row.slug_blob
    # the admin still reads the slug: their keyholder opened it
    shown = admin.engineers.pending_confirmation(name)
    assert [g.client for g in shown.carried] == [acme]


def test_a_confirmation_request_carries_no_slug(shared, monkeypatch):  # type: ignore[no-untyped-def]
    """Confirming with what was shown sends no slug either: the keyholder compares it itself."""
    admin, acme, _, name = _pending(shared)
    shown = admin.engineers.pending_confirmation(name)
    kh = admin.engineers._engineer_keyholder()
    honest, sent = kh.transport.confirm, []

    def recording(request, seal):  # type: ignore[no-untyped-def]
        sent.append(request)
        return honest(request, seal)

    monkeypatch.setattr(kh.transport, "confirm", recording)
    assert admin.engineers.confirm(name, shown.fingerprint, shown=shown).status == "active"
    (request,) = sent
    assert request.shown is True and acme not in repr(request)


def test_a_plan_whose_carried_slug_is_another_clients_is_refused(shared, monkeypatch):  # type: ignore[no-untyped-def]
    """A compromised authority shows the admin another client's slug blob for a carried grant
    (the admin would read a client they did not mean to carry): it does not open, refused."""
    admin, _, _, name = _pending(shared)
    _, other_id = _client_with_secret(shared, "other-pw")
    blob = shared.db.scalar(select(m.Client.slug_blob).where(m.Client.id == other_id))
    kh = admin.engineers._engineer_keyholder()
    honest = kh.transport.confirm

    def tampering(request, seal):  # type: ignore[no-untyped-def]
        answer = honest(request, seal)
        if answer.pending is None:
            return answer
        plan = answer.pending.plan
        swapped = tuple(dataclasses.replace(r, slug_blob=blob) for r in plan.carried)
        pending = dataclasses.replace(answer.pending, plan=dataclasses.replace(plan, carried=swapped))
        return dataclasses.replace(answer, pending=pending)

    monkeypatch.setattr(kh.transport, "confirm", tampering)
    with pytest.raises(UntrustedRecord):
        admin.engineers.pending_confirmation(name)
