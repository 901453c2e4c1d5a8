"""An engineer's audit log through the team server (``RemoteVault.audit``), checked on their machine.

On the ``keyed`` team: alice (no database, ``remote_alice``) checks out and in through the server;
her log through the server is her in-process log (the same events, hashes checked, details opened
for her granted clients), filters included; the head and a checkpoint are the in-process ones (the
checkpoint verifies in-process). Then a compromised server (``Between``, re-signing what it
changes with the server key) alters, reorders, repeats or injects events in a page, or the rows of
``audit.signers`` (a forged engineer key, an organisation key off the pinned chain, another vault,
a dropped key event, a forged server key): each is refused (``IntegrityError`` / ``UntrustedRecord``)
before anything is shown, and the refusal is on record (``answer-refused``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from server_harness import Keyed, caller_of, database_state, envelope, events, signed_post, ticking, without_nonces
from test_refused_answers_https import Between

from vault.authority.audit_requests import EventPage
from vault.authority.audit_signers import SignerRows, SignersRequest
from vault.authority.certificates import certificate_fields
from vault.crypto import serverkey, signing
from vault.crypto.labels import LABEL_SIG_ENGINEER
from vault.errors import IntegrityError, UntrustedRecord
from vault.service.remote import RemoteVault
from vault.service.remote_audit import _Checked
from vault.wire import codec
from vault.wire.httpsig_response import sign_response

PAGE, SIGNERS = "/v1/audit/log", "/v1/audit/signers"
Change = Callable[[object], object]


def compared(entries: list) -> list[tuple]:  # type: ignore[type-arg]
    """What both sides show alike (the secret's name is not read through the server: ``(secret #id)``)."""
    return [(e.seq, e.at, e.engineer, e.action, e.client, e.client_id, e.secret_id, e.details, e.readable)
            for e in entries]  # fmt: skip


def test_an_engineers_log_through_the_server_is_the_in_process_log(
    keyed: Keyed, remote_alice: Callable[..., RemoteVault]
) -> None:
    alice = remote_alice(lambda inner: inner)
    alice.checkouts.checkout("acme/fw01", reason="T-4400 remote audit")
    alice.checkouts.checkin("acme/fw01")
    alice.checkouts.reveal("excl/sw01", field="username", reason="T-4401")
    before = len(events(keyed.served))
    over = alice.audit.log()
    local = keyed.served.alice.audit.log()
    assert len(over) >= 3 and compared(over) == compared(local)
    assert {e.engineer for e in over} == {"alice"}
    assert any(e.details and e.details.get("reason") == "T-4400 remote audit" and e.readable for e in over)
    assert all(e.secret == f"(secret #{e.secret_id})" for e in over if e.secret_id is not None)
    assert compared(alice.audit.log(client="excl")) == compared(keyed.served.alice.audit.log(client="excl"))
    assert compared(alice.audit.log(limit=2)) == compared(local[-2:])
    assert alice.audit.log(engineer="bob") == []
    exported = [json.loads(line) for line in alice.audit.export()]
    assert [e["seq"] for e in exported] == [e.seq for e in over]
    assert len(events(keyed.served)) == before  # reading the log appends no event, as in-process


def test_the_head_and_a_checkpoint_through_the_server_are_the_in_process_ones(
    keyed: Keyed, remote_alice: Callable[..., RemoteVault]
) -> None:
    alice = remote_alice(lambda inner: inner)
    assert alice.audit.head() == keyed.served.admin.audit.head()
    line = alice.audit.checkpoint()
    assert line.split(":")[3] == str(keyed.served.admin.audit.head()[0])
    assert keyed.served.admin.audit.verify(checkpoints=[line]).ok


# --- a compromised server ---------------------------------------------------------------------------


def resigned(
    keyed: Keyed, operation: str, change: Change
) -> Callable[[httpx.Request, httpx.Response | None], httpx.Response]:
    """The server's answer to ``operation``, its body changed by ``change`` and signed again with the server key."""

    def answer(request: httpx.Request, response: httpx.Response | None) -> httpx.Response:
        assert response is not None and response.status_code == 200, response
        opened = codec.open_envelope(response.content, f"{operation}.response", max_bytes=1 << 22)
        content = codec.envelope(f"{operation}.response", change(opened.body), opened.request_id)
        signed = sign_response(200, content, request.headers["signature"].removeprefix("cv="), keyed.key)
        return httpx.Response(200, headers={"content-type": "application/json", **signed}, content=content)

    return answer


def through(remote_alice: Callable[..., RemoteVault], path: str, answer: object) -> RemoteVault:
    return remote_alice(lambda inner: Between(inner, path, answer))  # type: ignore[arg-type]


def _events(page: object, events_: tuple) -> EventPage:  # type: ignore[type-arg]
    assert isinstance(page, EventPage)
    return dataclasses.replace(page, events=events_)


def _altered(page: object) -> EventPage:
    assert isinstance(page, EventPage) and page.events
    first = page.events[0]
    return _events(
        page, (first._replace(action="reveal" if first.action != "reveal" else "checkout"), *page.events[1:])
    )


PAGE_ATTACKS: dict[str, Change] = {
    "an event altered": _altered,
    "two events reordered": lambda p: _events(p, (p.events[1], p.events[0], *p.events[2:])),  # type: ignore[attr-defined]
    "an event repeated": lambda p: _events(p, (p.events[0], *p.events)),  # type: ignore[attr-defined]
    "an event of another vault": lambda p: dataclasses.replace(p, vault_id=bytes(16)),  # type: ignore[type-var]
}


@pytest.mark.parametrize("attack", sorted(PAGE_ATTACKS))
def test_a_page_changed_by_the_server_is_refused_and_on_record(
    keyed: Keyed, remote_alice: Callable[..., RemoteVault], attack: str
) -> None:
    honest = remote_alice(lambda inner: inner)
    honest.checkouts.reveal("acme/fw01", reason="T-4402")
    honest.checkouts.reveal("acme/fw02", reason="T-4403")
    alice = through(remote_alice, PAGE, resigned(keyed, "audit.log", PAGE_ATTACKS[attack]))
    before = len(events(keyed.served))
    with pytest.raises(IntegrityError, match="does not verify"):
        alice.audit.log()
    refused = events(keyed.served)[before:]
    assert [e.action for e in refused] == ["answer-refused"]
    assert json.loads(refused[0].details_json)["operation"] == "audit.log"


def test_an_event_of_another_engineer_slipped_into_a_page_is_refused(
    keyed: Keyed, remote_alice: Callable[..., RemoteVault]
) -> None:
    """The server answers alice a page holding an event of the admin's (as they are in the chain)."""
    admins = [e for e in events(keyed.served) if e.engineer_id == keyed.served.admin.keyholder.me().engineer_id]

    def slipped(page: object) -> EventPage:
        assert isinstance(page, EventPage)
        from vault.storage.repositories.audit import ChainedRow

        row = admins[-1]
        other = ChainedRow(*(getattr(row, name) for name in ChainedRow._fields))
        merged = tuple(sorted((*page.events, other), key=lambda e: e.seq))
        return _events(page, merged)

    alice = through(remote_alice, PAGE, resigned(keyed, "audit.log", slipped))
    with pytest.raises(IntegrityError, match="not of the engineer asked for"):
        alice.audit.log()


def _forged_engineer(rows: object) -> SignerRows:
    """alice's row with the signing key of someone the organisation never certified."""
    assert isinstance(rows, SignerRows)
    forged = signing.SigningKey(bytes(32)).public
    engineers = tuple(r._replace(signing_public=forged) if r.name == "alice" else r for r in rows.engineers)
    return dataclasses.replace(rows, engineers=engineers, keys=())


def _off_chain(rows: object) -> SignerRows:
    """Every certificate made again under an organisation key of the server's own, named as the
    vault's current one, with no signed link from the key alice's record pins."""
    assert isinstance(rows, SignerRows)
    org = signing.SigningKey(bytes(range(32)))
    engineers = tuple(
        r._replace(certificate=org.sign(LABEL_SIG_ENGINEER, *certificate_fields(rows.vault_id, r)))
        if r.certificate is not None else r
        for r in rows.engineers
    )  # fmt: skip
    servers = tuple(
        k._replace(certificate=serverkey.certify(org, rows.vault_id, k.version, k.signing_public, k.certified_at))
        for k in rows.server_keys
    )
    return dataclasses.replace(
        rows, org_signing_public=org.public, org_chain=(), engineers=engineers, keys=(), server_keys=servers
    )


def _confirm_dropped(rows: object) -> SignerRows:
    """The ``engineer-confirm`` that certified alice's key dropped: her key has no lifetime."""
    assert isinstance(rows, SignerRows)
    kept = tuple(
        e for e in rows.key_events if not (e.action == "engineer-confirm" and '"alice"' in (e.details_json or ""))
    )
    assert len(kept) < len(rows.key_events)
    return dataclasses.replace(rows, key_events=kept)


SIGNER_ATTACKS: dict[str, tuple[Change, type[Exception]]] = {
    "alice's key forged": (_forged_engineer, UntrustedRecord),
    "an organisation key off the pinned chain": (_off_chain, UntrustedRecord),
    "the confirmation of alice's key dropped": (_confirm_dropped, IntegrityError),
}


@pytest.mark.parametrize("attack", sorted(SIGNER_ATTACKS))
def test_signers_changed_by_the_server_are_refused(
    keyed: Keyed, remote_alice: Callable[..., RemoteVault], attack: str
) -> None:
    honest = remote_alice(lambda inner: inner)
    honest.checkouts.reveal("acme/fw01", reason="T-4404")
    change, error = SIGNER_ATTACKS[attack]
    alice = through(remote_alice, SIGNERS, resigned(keyed, "audit.signers", change))
    with pytest.raises(error):
        alice.audit.log()
    with pytest.raises(error):
        alice.audit.checkpoint()


def test_the_signers_are_answered_to_their_signer_only(keyed: Keyed) -> None:
    """bob, with his own certified key, signs a request naming alice: 403, nothing written."""
    served = keyed.served
    state = without_nonces(database_state(served.db_url))
    body = envelope("audit.signers", SignersRequest(caller_of(served.alice)))
    response = signed_post(served, SIGNERS, body, served.bob)
    assert response.status_code == 403, response.text
    own = signed_post(served, SIGNERS, envelope("audit.signers", SignersRequest(caller_of(served.bob))), served.bob)
    assert own.status_code == 200, own.text
    assert without_nonces(database_state(served.db_url)) == state


@pytest.fixture
def remote_admin(keyed: Keyed, module_team, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RemoteVault:  # type: ignore[no-untyped-def]
    """The ``keyed`` team's admin on a machine with no database (``RemoteVault``)."""
    from server_harness import remote_engineer

    monkeypatch.setenv("CREDVAULT_HOME", str(tmp_path / "home"))
    name = keyed.served.admin.keyholder.me().name
    admin: RemoteVault = remote_engineer(keyed, keyed.served.admin, name, module_team.passphrases[name])
    return admin


def test_an_admins_log_through_the_server_is_the_in_process_log(
    keyed: Keyed, remote_admin: RemoteVault, remote_alice: Callable[..., RemoteVault]
) -> None:
    """Every engineer's events, every client named by its slug and its details opened on the
    admin's machine, filters included; the head and a checkpoint are theirs as an engineer's."""
    remote_alice(lambda inner: inner).checkouts.reveal("excl/sw02", reason="T-4460 admin log")
    local = keyed.served.admin.audit.log()
    over = remote_admin.audit.log()
    assert compared(over) == compared(local)
    assert {"alice", keyed.served.admin.keyholder.me().name} <= {e.engineer for e in over}
    assert {"acme", "excl"} <= {e.client for e in over}
    assert any(e.details and e.details.get("reason") == "T-4460 admin log" and e.readable for e in over)
    assert compared(remote_admin.audit.log(client="excl")) == compared(keyed.served.admin.audit.log(client="excl"))
    assert compared(remote_admin.audit.log(engineer="alice", limit=3)) == compared(
        keyed.served.admin.audit.log(engineer="alice", limit=3)
    )
    exported = [json.loads(line) for line in remote_admin.audit.export(engineer="bob")]
    assert [e["seq"] for e in exported] == [e.seq for e in keyed.served.admin.audit.log(engineer="bob")]
    assert keyed.served.admin.audit.verify(checkpoints=[remote_admin.audit.checkpoint()]).ok


def test_a_signer_row_that_does_not_verify_is_left_out(keyed: Keyed, remote_alice: Callable[..., RemoteVault]) -> None:
    """The rows as the server answered them, bob's signing key (or his archived keys) replaced:
    bob's slots are not believed (his events would be refused), the others are; his name is not
    shown from a row whose certificate does not verify."""
    alice = remote_alice(lambda inner: inner)
    honest = alice.audit.signers.checked(refresh=True)
    bob = keyed.served.bob.keyholder.me()
    slot = (bob.engineer_id, bob.key_generation)
    assert slot in honest.certified
    forged = signing.SigningKey(bytes(32)).public
    mine = bob.engineer_id
    engineers = tuple(r._replace(signing_public=forged) if r.id == mine else r for r in honest.rows.engineers)
    keys = tuple(
        dataclasses.replace(k, signing_public=forged) if k.engineer_id == mine else k for k in honest.rows.keys
    )
    rows = dataclasses.replace(honest.rows, engineers=engineers, keys=keys)
    checked = _Checked(rows, honest.org, honest.checks)
    assert slot not in checked.certified and all(eid != bob.engineer_id for eid, _ in checked.certified)
    assert set(checked.certified) == {s for s in honest.certified if s[0] != bob.engineer_id}


def test_a_long_log_streams_in_pages_through_the_server(keyed: Keyed, remote_alice: Callable[..., RemoteVault]) -> None:
    """Pages of the log are one request each, every one checked; a page whose events keep their
    requests' bodies is past the codec's 64 KiB default and still read (the log's own limit)."""
    alice = remote_alice(lambda inner: inner)
    for n in range(60):  # format-3 events, each keeping its request (~1 KiB)
        alice.checkouts.reveal("acme/fw01", reason=f"T-45{n:02d} a long log")
    local = compared(keyed.served.alice.audit.log())
    assert compared(alice.audit.log()) == local and len(local) > 60
    sent: list[bytes] = []

    class Counting(httpx.BaseTransport):
        def __init__(self, inner: httpx.BaseTransport) -> None:
            self.inner = inner

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = self.inner.handle_request(request)
            if request.url.path == PAGE:
                sent.append(response.read())
            return response

    counted = remote_alice(Counting)
    assert compared(counted.audit.log()) == local
    assert max(len(body) for body in sent) > 64 * 1024
    counted.audit.keyholder.size = 7
    sent.clear()
    assert compared(counted.audit.log(since=local[0][1])) == local
    assert len(sent) >= len(local) // 7


# --- audit verify through the server ------------------------------------------------------------------

CHAIN, POINTS = "/v1/audit/chain", "/v1/audit/points"


def admin_through(keyed: Keyed, admin: RemoteVault, passphrase: str, path: str, answer: object) -> RemoteVault:
    """The admin again (their key record joined by ``remote_admin``), a man in the middle on ``path``."""
    import ssl

    from vault.service.sessions import MemorySessionStore

    served = keyed.served
    name = admin.engineer_name
    assert name is not None
    inner = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=str(served.ca.ca_file)))
    vault = RemoteVault(
        admin.pin, engineer=name, sessions=MemorySessionStore(), clock=ticking(served.alice.clock),
        transport=Between(inner, path, answer),  # type: ignore[arg-type]
    )  # fmt: skip
    vault.engineers.unlock(name, passphrase)
    return vault


def verified(result: object) -> tuple:  # type: ignore[type-arg]
    from vault.records import AuditVerification

    assert isinstance(result, AuditVerification)
    return (result.ok, result.checked, result.first_seq, result.head_seq, result.head_hash, result.first_bad_seq,
            result.problem)  # fmt: skip


def test_an_admins_verify_through_the_server_is_the_in_process_one(
    keyed: Keyed, remote_admin: RemoteVault, remote_alice: Callable[..., RemoteVault]
) -> None:
    """The whole chain streamed in pages and checked on the admin's machine; a checkpoint verified
    there; an incremental verify from the head it verified; reading it appends nothing."""
    alice = remote_alice(lambda inner: inner)
    alice.checkouts.reveal("acme/fw02", reason="T-4470 verify")
    before = len(events(keyed.served))
    over = remote_admin.audit.verify()
    assert over.ok and remote_admin.audit.whole_chain
    assert verified(over) == verified(keyed.served.admin.audit.verify())
    line = alice.audit.checkpoint()
    assert remote_admin.audit.verify(checkpoints=[line]).ok
    head = (over.head_seq, bytes.fromhex(over.head_hash))
    again = remote_admin.audit.verify(since=head, known_head=head)
    assert again.ok and again.checked == 0 and again.head_seq == over.head_seq
    assert len(events(keyed.served)) == before


def test_a_dba_rewrite_is_named_by_the_admins_verify_through_the_server_as_in_process(
    keyed: Keyed, remote_admin: RemoteVault, remote_alice: Callable[..., RemoteVault]
) -> None:
    """A DBA changes one of alice's events in the database (the server honest): the admin's verify
    through the server names the same event with the same problem as the in-process one."""
    from sqlalchemy import update

    from vault.storage import models as m

    remote_alice(lambda inner: inner).checkouts.reveal("acme/fw01", reason="T-4471 to be rewritten")
    target = events(keyed.served)[-1]
    assert target.action == "reveal"
    with keyed.store.transaction() as s:
        s.execute(update(m.AuditEvent).where(m.AuditEvent.seq == target.seq).values(action="checkout"))
    try:
        local = keyed.served.admin.audit.verify()
        over = remote_admin.audit.verify()
        assert not over.ok and over.first_bad_seq == target.seq
        assert verified(over) == verified(local)
    finally:
        with keyed.store.transaction() as s:
            s.execute(update(m.AuditEvent).where(m.AuditEvent.seq == target.seq).values(action="reveal"))
    assert remote_admin.audit.verify().ok


def test_a_chain_page_changed_by_the_server_is_named_by_the_admins_verify(
    keyed: Keyed,
    remote_admin: RemoteVault,
    module_team,  # type: ignore[no-untyped-def]
) -> None:
    """A compromised server re-signs a page of the chain with one event altered: not verified, at it."""
    first: list[int] = []

    def altered(page: object) -> EventPage:
        changed = _altered(page)
        first.append(changed.events[0].seq)
        return changed

    passphrase = module_team.passphrases[remote_admin.engineer_name]
    admin = admin_through(keyed, remote_admin, passphrase, CHAIN, resigned(keyed, "audit.chain", altered))
    result = admin.audit.verify()
    assert not result.ok and result.first_bad_seq == first[0]


def test_an_engineers_verify_through_the_server_checks_her_own_events_and_the_head(
    keyed: Keyed, remote_alice: Callable[..., RemoteVault]
) -> None:
    """alice's verify through the server: her own events checked as her log is, and the head's event;
    not the whole chain (said), a head behind one she saw refused, a tampered event of hers named."""
    from sqlalchemy import update

    from vault.storage import models as m

    alice = remote_alice(lambda inner: inner)
    alice.checkouts.reveal("acme/fw01", reason="T-4480 own verify")
    mine = [e for e in events(keyed.served) if e.engineer_id == keyed.served.alice.keyholder.me().engineer_id]
    result = alice.audit.verify()
    assert result.ok and not alice.audit.whole_chain
    assert (result.checked, result.first_seq) == (len(mine), mine[0].seq)
    assert (result.head_seq, bytes.fromhex(result.head_hash)) == keyed.served.admin.audit.head()
    ahead = alice.audit.verify(known_head=(result.head_seq + 5, bytes(32)))
    assert not ahead.ok and "head is behind" in (ahead.problem or "")
    other = alice.audit.verify(known_head=(mine[-1].seq, bytes(32)))
    assert not other.ok and other.first_bad_seq == mine[-1].seq
    with keyed.store.transaction() as s:
        s.execute(update(m.AuditEvent).where(m.AuditEvent.seq == mine[-1].seq).values(action="checkout"))
    try:
        bad = alice.audit.verify()
        assert not bad.ok and f"event {mine[-1].seq}" in (bad.problem or "")
    finally:
        with keyed.store.transaction() as s:
            s.execute(update(m.AuditEvent).where(m.AuditEvent.seq == mine[-1].seq).values(action="reveal"))


def test_an_engineer_is_never_sent_the_chain_nor_other_clients_events(
    keyed: Keyed, remote_alice: Callable[..., RemoteVault]
) -> None:
    """Attack: alice, with her own certified key, asks ``audit.points`` and ``audit.chain`` herself
    (403, no row, nothing written); her verify through the server receives no event but her own,
    no count of the chain but the head (which ``audit.head`` answers anyone)."""
    from vault.authority.audit_requests import EventQuery, PageRequest
    from vault.authority.audit_verify_requests import VERIFY, PointsRequest

    served = keyed.served
    state = without_nonces(database_state(served.db_url))
    caller = caller_of(served.alice)
    asks = {
        POINTS: envelope("audit.points", PointsRequest(VERIFY, caller)),
        CHAIN: envelope("audit.chain", PageRequest(EventQuery(VERIFY, caller), after=0, until=10**6, size=100)),
    }
    for path, body in asks.items():
        response = signed_post(served, path, body, served.alice)
        assert response.status_code == 403, response.text
        refusal = {"code", "detail", "error", "hint", "status", "title", "type"}
        assert set(response.json()) <= refusal  # a refusal, no row
    assert without_nonces(database_state(served.db_url)) == state
    received: list[bytes] = []

    class Recording(httpx.BaseTransport):
        def __init__(self, inner: httpx.BaseTransport) -> None:
            self.inner = inner

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = self.inner.handle_request(request)
            received.append(request.url.path.encode() + b" " + response.read())
            return response

    alice = remote_alice(Recording)
    assert alice.audit.verify().ok
    assert not any(r.startswith((CHAIN.encode(), POINTS.encode())) for r in received)
    me = served.alice.keyholder.me().engineer_id
    for raw in received:
        path, _, content = raw.partition(b" ")
        if path.decode() != PAGE:
            continue
        page = codec.open_envelope(content, "audit.log.response", max_bytes=1 << 22).body
        assert isinstance(page, EventPage) and all(e.engineer_id == me for e in page.events)


def test_an_admins_log_names_no_client_by_another_clients_row(
    keyed: Keyed,
    remote_admin: RemoteVault,
    remote_alice: Callable[..., RemoteVault],
    module_team,  # type: ignore[no-untyped-def]
) -> None:
    """A compromised server answers the admin's context of one client (by id) with another client's
    row: as it is, refused (another client than asked); with its id changed to the one asked, its
    slug does not open under that id (associated data), so the client is named by its id only."""
    from vault.authority.checkout_context import ContextResponse

    passphrase = module_team.passphrases[remote_admin.engineer_name]
    remote_alice(lambda inner: inner).checkouts.reveal("acme/fw01", reason="T-4490 a swapped context")
    acme = next(e.client_id for e in keyed.served.admin.audit.log(client="acme"))
    excl = next(e.client_id for e in keyed.served.admin.audit.log(client="excl"))
    with keyed.store.read() as s:
        from vault.storage import models as m

        row = s.get(m.Client, excl)
        assert row is not None
        excl_blobs = (row.slug_blob, row.lookup_key_blob, row.audit_keys_blob)

    def swapped(keep_id: bool) -> Change:
        def change(answer: object) -> ContextResponse:
            assert isinstance(answer, ContextResponse)
            if answer.client.id != acme:
                return answer
            slug, lookup, ring = excl_blobs
            other = answer.client._replace(slug_blob=slug, lookup_key_blob=lookup, audit_keys_blob=ring)
            return dataclasses.replace(answer, client=other if keep_id else other._replace(id=excl))

        return change

    def through_context(keep_id: bool) -> RemoteVault:
        answer = resigned(keyed, "checkouts.context", swapped(keep_id))
        return admin_through(keyed, remote_admin, passphrase, "/v1/checkouts/context", answer)

    with pytest.raises(UntrustedRecord, match="another client"):
        through_context(False).audit.log(engineer="alice")
    renamed = through_context(True)
    shown = renamed.audit.log(engineer="alice")
    named = {e.client for e in shown if e.client_id == acme}
    assert named == {f"(client #{acme})"}
