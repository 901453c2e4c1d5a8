"""``audit verify``'s keyholder against an authority that lies (and ``report at-risk``'s check).

Each attack is an insider's: a DBA or a compromised authority answers the verifier's
requests with rows it edited — an event's body rewritten (with the chain re-hashed after
it or not: the DBA cannot sign), a row deleted from the middle, rows reordered, a signature
of another signer, a page that repeats rows or goes back, an empty page that says more
follows, the stream ended before the head it named, a lower head named to a machine that
saw a later one, the anchor of an incremental check rewritten. The verification must fail
naming the first bad event, and never report success over fewer events than the head
names; serial and parallel verifications agree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from vault.authority.audit_requests import EventPage, EventQuery, PageRequest
from vault.authority.audit_verify_requests import VERIFY, ChainPoints, PointsRequest
from vault.authority.requests import Caller
from vault.crypto import chain
from vault.errors import IntegrityError
from vault.records import AuditVerification

PAGE = 4
Edit = Callable[[PageRequest, EventPage], EventPage]


class Tampering:
    """The real chain transport, ``edit`` applied to the pages (all, or the ``index``-th)
    and ``points`` to the head it names."""

    def __init__(self, real: Any, edit: Edit, index: int | None = None, points: Any = None) -> None:
        self.real, self.edit, self.index, self.points_edit, self.calls = real, edit, index, points, 0

    def page(self, request: PageRequest) -> EventPage:
        page = self.real.page(request)
        self.calls += 1
        return self.edit(request, page) if self.index is None or self.calls - 1 == self.index else page

    def points(self, request: PointsRequest) -> ChainPoints:
        points = self.real.points(request)
        return points if self.points_edit is None else self.points_edit(points)


def _lying(
    monkeypatch: pytest.MonkeyPatch, vault: Any, edit: Edit, index: int | None = None, points: Any = None
) -> Tampering:
    verifier = vault.audit.chain_check.verifier
    tampering = Tampering(verifier.transport, edit, index, points)
    monkeypatch.setattr(verifier, "transport", tampering)
    monkeypatch.setattr(verifier, "page_size", PAGE)
    return tampering


def _at(seq: int, edit: Callable[[list[Any], int], list[Any]]) -> Edit:
    """An edit of the page that holds event ``seq`` (its index in the page given)."""

    def edited(_request: PageRequest, page: EventPage) -> EventPage:
        events = list(page.events)
        where = [i for i, e in enumerate(events) if e.seq == seq]
        return dataclasses.replace(page, events=tuple(edit(events, where[0]))) if where else page

    return edited


def _rehashed(vault_id: bytes, events: list[Any], prev: bytes) -> list[Any]:
    """``events`` re-hashed and re-linked from ``prev`` on, as a DBA would (unsigned)."""
    out = []
    for e in events:
        fields = (e.at_us, e.engineer_id, e.key_generation, e.action, e.client_id, e.secret_id, e.key_version)
        digest = chain.event_hash(vault_id, e.seq, *fields, e.details_blob, e.details_json, prev_hash=prev)
        out.append(e._replace(prev_hash=prev, hash=digest))
        prev = digest
    return out


def _failed(result: AuditVerification, seq: int | None, match: str, head: int) -> None:
    assert not result.ok, result
    assert result.problem is not None and any(m in result.problem for m in match.split("|")), result.problem
    if seq is not None:
        assert result.first_bad_seq == seq, result
    assert result.checked < head  # never "verified" over fewer events than the head names


def _events(world: Any) -> list[Any]:
    """The honest chain, as the real authority pages it."""
    honest = world.admin.audit.chain_check.verifier.transport
    me = world.admin.audit.keys.me()
    query = EventQuery(VERIFY, Caller(me.engineer_id, me.key_generation))
    head = world.admin.audit.head()[0]
    out: list[Any] = []
    while len(out) < head:
        page = honest.page(PageRequest(query, after=len(out), until=head, size=500))
        out.extend(page.events)
    return out


@pytest.fixture
def chain_of(audit_world: Any) -> tuple[Any, list[Any], int]:
    events = _events(audit_world)
    return audit_world, events, len(events)


# -- control -------------------------------------------------------------------------------------------


def test_the_honest_chain_verifies_through_pages(audit_world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    tampering = _lying(monkeypatch, audit_world.admin, lambda _r, page: page)
    head, digest = audit_world.admin.audit.head()
    for vault in (audit_world.admin, audit_world.alice):  # any engineer may verify the whole chain
        if vault is not audit_world.admin:
            tampering = _lying(monkeypatch, vault, lambda _r, page: page)
        result = vault.audit.verify(workers=1)
        assert (result.ok, result.checked, result.head_seq, result.head_hash) == (True, head, head, digest.hex())
        assert tampering.calls >= head // PAGE  # it really went page by page
    since = audit_world.admin.audit.verify(since=(head - 5, _events(audit_world)[head - 6].hash))
    assert (since.ok, since.checked, since.first_seq) == (True, 5, head - 4)


# -- the chain's rows ------------------------------------------------------------------------------------


def test_an_events_body_rewritten_is_named(chain_of: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    world, events, head = chain_of
    target = next(e.seq for e in events if e.action == "reveal")
    edit = _at(target, lambda ev, i: [*ev[:i], ev[i]._replace(at_us=ev[i].at_us + 1), *ev[i + 1 :]])
    _lying(monkeypatch, world.admin, edit)
    _failed(world.admin.audit.verify(workers=1), target, "its contents were changed", head)


def test_a_body_rewritten_with_the_chain_rehashed_fails_on_its_signature(
    chain_of: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DBA re-hashes every event after the rewritten one and names the new head: only the
    signature, which the DBA cannot make, gives it away."""
    world, events, head = chain_of
    vault_id = world.admin.core.vault_id()
    target = next(e.seq for e in events if e.action == "reveal")
    forged = _rehashed(vault_id, [events[target - 1]._replace(client_id=2), *events[target:]], events[target - 2].hash)
    by_seq = {e.seq: e for e in forged}

    def swap(_r: PageRequest, page: EventPage) -> EventPage:
        return dataclasses.replace(page, events=tuple(by_seq.get(e.seq, e) for e in page.events))

    _lying(monkeypatch, world.admin, swap, points=lambda p: dataclasses.replace(p, head_hash=forged[-1].hash))
    _failed(world.admin.audit.verify(workers=1), target, "its signature is invalid", head)


def test_a_row_deleted_from_the_middle_is_named(chain_of: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    world, _, head = chain_of
    target = head // 2
    _lying(monkeypatch, world.admin, _at(target, lambda ev, i: [*ev[:i], *ev[i + 1 :]]))
    _failed(world.admin.audit.verify(workers=1), target, f"event {target} is missing", head)


def test_rows_reordered_are_named(chain_of: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    world, _, head = chain_of
    target = PAGE + 1  # the first event of the second page, swapped with the one after it
    _lying(monkeypatch, world.admin, _at(target, lambda ev, i: [*ev[:i], ev[i + 1], ev[i], *ev[i + 2 :]]))
    _failed(world.admin.audit.verify(workers=1), target, "is missing|out of order", head)


def test_a_signature_of_another_signer_is_refused(chain_of: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bob's valid signature (of his own event) put on an event of alice's."""
    world, events, head = chain_of
    alice_id = world.alice.audit.keys.me().engineer_id
    target = next(e for e in events if e.engineer_id == alice_id and e.action == "reveal")
    other = next(e for e in events if e.signature and e.engineer_id not in (None, alice_id) and e.action != "enroll")
    edit = _at(target.seq, lambda ev, i: [*ev[:i], ev[i]._replace(signature=other.signature), *ev[i + 1 :]])
    _lying(monkeypatch, world.admin, edit)
    _failed(world.admin.audit.verify(workers=1), target.seq, "its signature is invalid", head)


def test_an_event_moved_to_another_signer_with_the_chain_rehashed_is_refused(
    chain_of: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DBA says bob made alice's reveal (re-hashed: the stored signature is alice's)."""
    world, events, head = chain_of
    vault_id = world.admin.core.vault_id()
    alice, bob = world.alice.audit.keys.me(), world.bob.audit.keys.me()
    target = next(e for e in events if e.engineer_id == alice.engineer_id and e.action == "reveal")
    moved = target._replace(engineer_id=bob.engineer_id, key_generation=bob.key_generation)
    forged = _rehashed(vault_id, [moved, *events[target.seq :]], events[target.seq - 2].hash)
    by_seq = {e.seq: e for e in forged}

    def swap(_r: PageRequest, page: EventPage) -> EventPage:
        return dataclasses.replace(page, events=tuple(by_seq.get(e.seq, e) for e in page.events))

    _lying(monkeypatch, world.admin, swap, points=lambda p: dataclasses.replace(p, head_hash=forged[-1].hash))
    _failed(world.admin.audit.verify(workers=1), target.seq, "its signature is invalid", head)


# -- the pages -------------------------------------------------------------------------------------------


def test_a_page_that_repeats_rows_is_refused(chain_of: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    world, _, head = chain_of
    _lying(monkeypatch, world.admin, _at(PAGE + 1, lambda ev, i: [ev[i], *ev]), index=1)
    _failed(world.admin.audit.verify(workers=1), PAGE + 2, "out of order", head)


def test_a_page_that_goes_back_in_the_log_is_refused(chain_of: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second request answered with the first page's rows again, labelled as asked."""
    world, events, head = chain_of
    _lying(monkeypatch, world.admin, lambda _r, page: dataclasses.replace(page, events=tuple(events[:PAGE])), 1)
    _failed(world.admin.audit.verify(workers=1), PAGE + 1, "goes back", head)


def test_an_empty_page_that_says_more_follows_is_refused(chain_of: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    world, _, head = chain_of
    _lying(monkeypatch, world.admin, lambda _r, page: dataclasses.replace(page, events=(), more=True), index=1)
    _failed(world.admin.audit.verify(workers=1), PAGE + 1, "an empty page that says more follows", head)


def test_a_page_of_another_vault_is_refused(chain_of: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    world, _, head = chain_of
    _lying(monkeypatch, world.admin, lambda _r, page: dataclasses.replace(page, vault_id=b"\x01" * 16), index=1)
    _failed(world.admin.audit.verify(workers=1), PAGE + 1, "another vault", head)


def test_a_page_not_the_one_asked_for_is_refused(chain_of: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    world, _, head = chain_of
    _lying(monkeypatch, world.admin, lambda _r, page: dataclasses.replace(page, until=page.until - 1), index=1)
    _failed(world.admin.audit.verify(workers=1), PAGE + 1, "not the page asked for", head)


# -- the end of the chain -----------------------------------------------------------------------------------


def test_a_stream_that_ends_before_the_head_named_does_not_verify(
    chain_of: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The authority stops early: a last page cut to one event and marked as the last."""
    world, _, head = chain_of
    _lying(monkeypatch, world.admin, lambda _r, page: dataclasses.replace(page, events=page.events[:1], more=False), 1)
    result = world.admin.audit.verify(workers=1)
    _failed(result, PAGE + 2, "recorded head does not match its last event", head)
    assert (result.checked, result.head_seq) == (PAGE + 1, PAGE + 1)


def test_a_lower_head_named_to_a_machine_that_saw_a_later_one_is_truncation(
    chain_of: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The authority names an earlier head (and pages up to it, consistently): this machine
    remembers the real head, so the tail it left out is reported, not a success."""
    world, events, head = chain_of
    early = events[head - 4]

    def lower(p: ChainPoints) -> ChainPoints:
        return dataclasses.replace(p, head_seq=early.seq, head_hash=early.hash, newest=early.seq)

    _lying(monkeypatch, world.admin, lambda _r, page: page, points=lower)
    result = world.admin.audit.verify(known_head=(head, events[-1].hash), workers=1)
    _failed(result, early.seq + 1, "the tail was truncated", head)


def test_events_past_the_head_named_do_not_verify(chain_of: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    world, _, head = chain_of
    _lying(monkeypatch, world.admin, lambda _r, page: page, points=lambda p: dataclasses.replace(p, newest=head + 1))
    result = world.admin.audit.verify(workers=1)
    assert not result.ok and result.first_bad_seq == head + 1
    assert result.problem == f"event {head + 1}: events lie beyond the chain's recorded head"


def test_a_rewritten_anchor_fails_an_incremental_check(chain_of: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The event this machine verified last, given back re-hashed over a changed body: its
    hash is no longer the one remembered."""
    world, events, head = chain_of
    anchor, before = events[head - 6], events[head - 7]
    vault_id = world.admin.core.vault_id()
    forged = _rehashed(vault_id, [anchor._replace(at_us=anchor.at_us + 1)], before.hash)[0]
    assert forged.hash != anchor.hash

    def points(p: ChainPoints) -> ChainPoints:
        return dataclasses.replace(p, events=tuple(forged if e.seq == anchor.seq else e for e in p.events))

    _lying(monkeypatch, world.admin, lambda _r, page: page, points=points)
    result = world.admin.audit.verify(since=(anchor.seq, anchor.hash), workers=1)
    assert (result.ok, result.checked, result.first_bad_seq) == (False, 0, anchor.seq)
    assert "the event this machine verified last is missing or changed" in str(result.problem)


def test_an_anchor_with_another_signers_signature_fails_an_incremental_check(
    chain_of: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hash does not cover the signature: the anchor's own signature is checked again."""
    world, events, head = chain_of
    anchor = events[head - 6]
    other = next(e for e in events if e.signature and e.engineer_id != anchor.engineer_id and e.action != "enroll")
    swapped = anchor._replace(signature=other.signature)

    def points(p: ChainPoints) -> ChainPoints:
        return dataclasses.replace(p, events=tuple(swapped if e.seq == anchor.seq else e for e in p.events))

    _lying(monkeypatch, world.admin, lambda _r, page: page, points=points)
    result = world.admin.audit.verify(since=(anchor.seq, anchor.hash), workers=1)
    assert (result.ok, result.checked, result.first_bad_seq) == (False, 0, anchor.seq)
    assert result.problem == f"event {anchor.seq}: its signature is invalid (the anchor)"


def test_an_anchor_that_does_not_link_fails_an_incremental_check(
    chain_of: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event before the anchor given back changed: the anchor does not link to it."""
    world, events, head = chain_of
    anchor, before = events[head - 6], events[head - 7]

    def points(p: ChainPoints) -> ChainPoints:
        changed = before._replace(hash=bytes(32))
        return dataclasses.replace(p, events=tuple(changed if e.seq == before.seq else e for e in p.events))

    _lying(monkeypatch, world.admin, lambda _r, page: page, points=points)
    result = world.admin.audit.verify(since=(anchor.seq, anchor.hash), workers=1)
    assert not result.ok and result.first_bad_seq == anchor.seq
    assert result.problem == f"event {anchor.seq}: it does not link to the event before it (the anchor)"


# -- in parallel, and for report at-risk ------------------------------------------------------------------


@pytest.mark.parametrize("attack", ["deleted", "reordered", "signature"])
def test_worker_processes_name_the_same_first_bad_event(
    chain_of: Any, monkeypatch: pytest.MonkeyPatch, attack: str
) -> None:
    world, events, head = chain_of
    monkeypatch.setattr(chain, "PARALLEL_THRESHOLD", 5)
    target = head - 3
    edits: dict[str, Callable[[list[Any], int], list[Any]]] = {
        "deleted": lambda ev, i: [*ev[:i], *ev[i + 1 :]],
        "reordered": lambda ev, i: [*ev[:i], ev[i + 1], ev[i], *ev[i + 2 :]],
        "signature": lambda ev, i: [*ev[:i], ev[i]._replace(signature=events[0].signature), *ev[i + 1 :]],
    }
    _lying(monkeypatch, world.admin, _at(target, edits[attack]))
    serial, parallel = world.admin.audit.verify(workers=1), world.admin.audit.verify(workers=2)
    assert not serial.ok and serial.first_bad_seq == target and parallel == serial


def test_report_at_risk_refuses_a_tampered_chain(chain_of: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    world, _, head = chain_of
    _lying(monkeypatch, world.admin, _at(head // 2, lambda ev, i: [*ev[:i], *ev[i + 1 :]]))
    with pytest.raises(IntegrityError, match=f"event {head // 2} is missing"):
        world.admin.reports.at_risk("alice")
