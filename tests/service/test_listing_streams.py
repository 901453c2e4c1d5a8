"""Issue 13: listings are set-based and streamed, read without the write lock, and an
engineer's grants are indexed once per Vault object.

* a listing issues the same SELECTs for 200 secrets as for 20 (one query per page);
* ``audit export`` of 20,000 events streams: its peak memory is a small fraction of the
  list's, under a fixed bound;
* on SQLite a listing holds no write lock while it reads: a checkout in another
  connection goes through meanwhile (and the old, locking transaction would block it);
* a checkout by an engineer holding 1,000 grants runs the statements it runs with 10;
* the index never outlives a grant: revoked or expired while cached, it is refused at once.
"""

from __future__ import annotations

import contextlib
import json
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, insert, select

from vault import Vault
from vault.authority.journal import Journal
from vault.authority.secret_list import SecretListAuthority
from vault.errors import AccessDenied, NotFound, StoreBusy, VaultError
from vault.storage import models as m

REASON = "T-13 listing"
ADMIN, ADMIN_PASS = "root-admin", "admin passphrase ✓"


@contextlib.contextmanager
def _statements(vault: Vault) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(vault.store.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(vault.store.engine, "before_cursor_execute", count)


def _selects(seen: list[str]) -> int:
    return sum(1 for text in seen if text.lstrip().upper().startswith("SELECT"))


# -- set-based: a constant number of statements ------------------------------------------------


def test_listing_200_secrets_issues_the_selects_of_listing_20(team, reopen) -> None:  # type: ignore[no-untyped-def]
    team.admin.clients.add("acme", "Acme Ltd")
    for i in range(20):
        team.admin.secrets.add(f"acme/s{i:03}", password=f"pw-{i}")
    counts = {}
    for total in (20, 200):
        for i in range(len(team.admin.secrets.list("acme")), total):
            team.admin.secrets.add(f"acme/s{i:03}", password=f"pw-{i}")
        fresh = reopen(team.admin)  # no key cached: both listings start alike
        for scope in ("acme", None):
            with _statements(fresh) as seen:
                listed = fresh.secrets.list(scope)
            assert len(listed) == total and {s.name for s in listed} == {f"s{i:03}" for i in range(total)}
            counts[(total, scope)] = (_selects(seen), len(seen))
    assert counts[(200, "acme")] == counts[(20, "acme")], counts
    assert counts[(200, None)] == counts[(20, None)], counts
    assert counts[(200, "acme")][1] < 40  # not one statement per secret


def test_client_list_and_status_count_secrets_in_one_statement(team, reopen) -> None:  # type: ignore[no-untyped-def]
    counts = {}
    for n in (3, 12):
        for i in range(len(team.admin.clients.list()), n):
            team.admin.clients.add(f"c{i:02}", f"Client {i}")
            team.admin.secrets.add(f"c{i:02}/s", password="pw")
        fresh = reopen(team.admin)
        fresh.clients.list()  # the client keys unsealed once (a cost per client, not per statement)
        fresh.reports.status()
        with _statements(fresh) as seen:
            clients = fresh.clients.list()
        with _statements(fresh) as seen_status:
            report = fresh.reports.status()
        assert [c.secrets for c in clients] == [1] * n and report.clients == n
        counts[n] = (len(seen), len(seen_status))
    assert counts[12] == counts[3], counts


# -- streaming: bounded memory -----------------------------------------------------------------


def _many_events(vault: Vault, n: int, *, checkouts_of: int | None = None) -> None:
    """``n`` signed, chained events, every other one with details sealed under a client's
    audit key, written in one transaction (the values of ``Journal.append``, inserted in bulk).
    ``checkouts_of``: every event a checkout of that secret (of acme) by the vault's engineer,
    its details (field, version, reason) sealed."""
    with vault.store.transaction() as s:
        client = vault.clients.client(s, "acme")
        vault.journal.append(s, "client-view", client_id=client.id, details={"n": -1})  # makes the audit-key ring
        s.flush()
        me = s.get(m.Engineer, vault.keyholder.me().engineer_id)
        audit_key = vault.journal.audit_keys.current_audit_key(s, client)
        head = s.get(m.AuditHead, 1)
        assert head is not None and me is not None
        seq, running, values = head.seq, head.hash, []
        for i in range(n):
            seq += 1
            detailed = i % 2 == 1 or checkouts_of is not None
            details = {"n": i, "pad": "x" * 64}
            if checkouts_of is not None:
                details = {"field": "password", "version": 1, "reason": f"T-{i} {'x' * 64}"}
            row = vault.journal._event_values(
                vault.core.vid(s),
                seq,
                running,
                ("checkout" if checkouts_of is not None else "client-view") if detailed else "secret-list",
                me,
                client.id if detailed else None,
                checkouts_of,
                details if detailed else None,
                audit_key if detailed else None,
                None if detailed else {"clients": i},
                vault.keyholder.me().signing_seed,
            )
            values.append(row)
            running = row["hash"]
        s.execute(insert(m.AuditEvent), values)
        head.seq, head.hash = seq, running


def test_audit_export_of_20000_events_streams_in_bounded_memory(team) -> None:  # type: ignore[no-untyped-def]
    team.admin.clients.add("acme", "Acme Ltd")
    _many_events(team.admin, 20_000)
    head = team.admin.audit.head()[0]
    tracemalloc.start()
    try:
        lines = 0
        last = None
        for line in team.admin.audit.export():
            lines += 1
            last = line
        streamed = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        listed = team.admin.audit.log()
        whole = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert lines == head == len(listed) and last is not None and json.loads(last)["seq"] == head
    assert any(e.details and e.details.get("pad") == "x" * 64 and e.readable for e in listed[-2:])  # opened
    assert streamed < 4 * 2**20, streamed  # a few pages, not 20,000 entries
    assert streamed * 4 < whole, (streamed, whole)


def test_audit_log_with_a_limit_reads_the_newest_events(team) -> None:  # type: ignore[no-untyped-def]
    team.admin.clients.add("acme", "Acme Ltd")
    _many_events(team.admin, 1_205)
    head = team.admin.audit.head()[0]
    for limit in (1, 7, 600, 1_203, head, head + 50):
        got = [e.seq for e in team.admin.audit.log(limit=limit)]
        assert got == list(range(max(1, head - limit + 1), head + 1))
    views = [e.seq for e in team.admin.audit.log(client="acme", limit=3)]
    assert views == [e.seq for e in team.admin.audit.log() if e.client == "acme"][-3:]
    assert views[-1] >= head - 1 and len(views) == 3


# -- reads take no write lock ------------------------------------------------------------------


def _other_connection(team, monkeypatch) -> Vault:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CREDVAULT_LOCK_TIMEOUT", "0.3")  # a blocked writer fails fast
    other = team.open(ADMIN)  # its own engine: another connection to the same database
    other.engineers.unlock(ADMIN, ADMIN_PASS)
    return other


def test_a_checkout_in_another_connection_is_not_blocked_by_a_running_listing(team, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """SQLite: the listing's deferred transaction takes no write lock; PostgreSQL: the
    listing holds no audit-head lock while it decrypts (its event is appended after)."""
    team.admin.clients.add("acme", "Acme Ltd")
    team.admin.secrets.add("acme/fw01", password="pw-1")
    other = _other_connection(team, monkeypatch)
    during: list[str] = []
    read_pages = SecretListAuthority.pages

    def listing_that_waits(self: Any, request: Any) -> Any:
        for page in read_pages(self, request):  # a page read and handed on: the listing's transaction is open
            during.append(other.checkouts.checkout("acme/fw01", reason=REASON).value)
            yield page

    monkeypatch.setattr(SecretListAuthority, "pages", listing_that_waits)
    before = team.admin.audit.head()[0]
    assert [s.name for s in team.admin.secrets.list("acme")] == ["fw01"]
    assert during == ["pw-1"]
    actions = [e.action for e in team.admin.audit.log() if e.seq > before]
    assert actions == ["checkout", "secret-list"]  # the listing's event after, in its own write
    other.close()


def test_the_locking_transaction_of_old_would_block_that_checkout(team, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The control: what a listing held before (SQLite's write lock from BEGIN IMMEDIATE; on
    PostgreSQL the audit head, locked by an append made before the decryption loop) makes
    the same checkout fail, so the test above would fail if listings still held it."""
    team.admin.clients.add("acme", "Acme Ltd")
    team.admin.secrets.add("acme/fw01", password="pw-1")
    other = _other_connection(team, monkeypatch)
    with team.admin.store.transaction() as s:
        s.execute(select(m.AuditHead.seq).where(m.AuditHead.id == 1).with_for_update()).all()
        with pytest.raises(StoreBusy):
            other.checkouts.checkout("acme/fw01", reason=REASON)
    other.close()


def test_a_read_unit_writes_nothing(team) -> None:  # type: ignore[no-untyped-def]
    team.admin.clients.add("acme", "Acme Ltd")
    with team.admin.store.read() as s:
        client = s.scalars(select(m.Client)).one()
        client.created_at = team.clock().replace(year=2000)  # changed through the ORM: discarded
    with team.admin.store.read() as s:
        assert s.scalars(select(m.Client)).one().created_at.year != 2000


def test_a_listing_is_not_returned_when_its_event_cannot_be_written(team, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    team.admin.clients.add("acme", "Acme Ltd")
    team.admin.secrets.add("acme/fw01", password="pw-1")

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise StoreBusy("the database is locked by another session: nothing was changed")

    monkeypatch.setattr(Journal, "append", broken)
    for call in (lambda: team.admin.secrets.list("acme"), team.admin.clients.list):
        with pytest.raises(StoreBusy):
            call()
    with pytest.raises(StoreBusy):
        team.admin.reports.access(ADMIN)


# -- grant lookups: 10 grants or 1,000 ---------------------------------------------------------


def _granted(team, name: str, slugs: list[str]) -> Vault:  # type: ignore[no-untyped-def]
    vault = team.engineer(name)
    for slug in slugs:
        team.admin.grants.grant(name, slug)
    return vault


@pytest.mark.parametrize("many", [200, pytest.param(1_000, marks=pytest.mark.slow)])
def test_a_checkout_with_1000_grants_runs_the_statements_of_one_with_10(team, reopen, many) -> None:  # type: ignore[no-untyped-def]
    """1,000 grants in the slow run (about a minute per engine to set up), 200 in every run."""
    slugs = [f"c{i:04}" for i in range(many)]
    for slug in slugs:
        team.admin.clients.add(slug, slug)
    target = slugs[-1]  # the last one: a lookup that walked the grants would pay for all of them
    team.admin.secrets.add(f"{target}/fw01", password="pw-1")
    few = _granted(team, "few", slugs[-10:])
    lots = _granted(team, "lots", slugs)
    counts = {}
    for who, vault in (("few", few), ("lots", lots)):
        fresh = reopen(vault)
        runs = []
        for _ in range(3):  # the first finds the client (the index), then the fast path
            with _statements(fresh) as seen:
                assert fresh.checkouts.checkout(f"{target}/fw01", reason=REASON).value == "pw-1"
            runs.append(len(seen))
        counts[who] = runs
        assert len(fresh.clients.list()) == (10 if who == "few" else many)
    assert counts["lots"] == counts["few"], counts


def test_a_grant_revoked_while_the_index_holds_it_is_refused_at_once(team) -> None:  # type: ignore[no-untyped-def]
    for slug in ("acme", "beta"):
        team.admin.clients.add(slug, slug)
        team.admin.secrets.add(f"{slug}/fw01", password=f"pw-{slug}")
    alice = _granted(team, "alice", ["acme", "beta"])
    for _ in range(2):
        assert alice.checkouts.checkout("acme/fw01", reason=REASON).value == "pw-acme"
    assert [c.slug for c in alice.clients.list()] == ["acme", "beta"]  # the index holds both grants
    team.admin.grants.revoke("alice", "acme")
    with pytest.raises((NotFound, AccessDenied)):
        alice.checkouts.checkout("acme/fw01", reason=REASON)
    with pytest.raises((NotFound, AccessDenied)):
        alice.secrets.list("acme")
    assert [c.slug for c in alice.clients.list()] == ["beta"]
    assert [s.client for s in alice.secrets.list()] == ["beta"]
    assert alice.checkouts.checkout("beta/fw01", reason=REASON).value == "pw-beta"


def test_a_grant_that_expires_while_the_index_holds_it_is_refused(team) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt

    team.admin.clients.add("acme", "Acme Ltd")
    team.admin.secrets.add("acme/fw01", password="pw-1")
    alice = team.engineer("alice")
    team.admin.grants.grant("alice", "acme", until=team.clock() + dt.timedelta(minutes=2))
    assert [c.slug for c in alice.clients.list()] == ["acme"]
    assert alice.checkouts.checkout("acme/fw01", reason=REASON).value == "pw-1"
    team.clock.advance(minutes=3)  # the grant has ended; alice's session has not
    assert alice.clients.list() == []
    with pytest.raises(VaultError):
        alice.checkouts.checkout("acme/fw01", reason=REASON)


def test_an_edited_grant_row_is_verified_again_not_taken_from_the_index(team, db) -> None:  # type: ignore[no-untyped-def]
    """A writer of the database who changes a grant the index verified (here: its end) gets
    a row whose signature no longer verifies: the index does not vouch for it."""
    from sqlalchemy import update

    from vault.errors import UntrustedRecord

    team.admin.clients.add("acme", "Acme Ltd")
    team.admin.secrets.add("acme/fw01", password="pw-1")
    alice = _granted(team, "alice", ["acme"])
    assert [c.slug for c in alice.clients.list()] == ["acme"]
    db.run(update(m.Grant).where(m.Grant.engineer_id == db.engineer_id("alice")).values(until=2**40))
    with pytest.raises(UntrustedRecord):
        alice.clients.list()


def test_audit_log_of_20000_events_streams_in_bounded_memory(team) -> None:  # type: ignore[no-untyped-def]
    admin = team.admin
    admin.clients.add("acme", "Acme Ltd")
    _many_events(admin, 20_000)
    head = admin.audit.head()[0]
    tracemalloc.start()
    try:
        count, last = 0, None
        for entry in admin.audit.log(stream=True):
            count, last = count + 1, entry
        streamed = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        listed = admin.audit.log()
        whole = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == head == len(listed) and last == listed[-1]
    assert last.details is not None and last.details.get("pad") == "x" * 64 and last.readable  # opened
    assert streamed < 4 * 2**20, streamed  # a few pages, not 20,000 entries
    assert streamed * 4 < whole, (streamed, whole)


def test_report_access_of_20000_reveals_streams_in_bounded_memory(team) -> None:  # type: ignore[no-untyped-def]
    admin = team.admin
    admin.clients.add("acme", "Acme Ltd")
    secret_id = _secret_id(admin, admin.secrets.add("acme/fw01", password="pw-1").name)
    _many_events(admin, 20_000, checkouts_of=secret_id)
    tracemalloc.start()
    try:
        count, last = 0, None
        for record in admin.reports.access(ADMIN, stream=True):
            count, last = count + 1, record
        streamed = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        listed = admin.reports.access(ADMIN)
        whole = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == len(listed) == 20_000 and last == listed[-1]
    assert (last.client, last.secret, last.version, last.changed_since) == ("acme", "fw01", 1, False)
    assert last.reason == f"T-19999 {'x' * 64}"
    assert streamed < 4 * 2**20, streamed
    assert streamed * 4 < whole, (streamed, whole)


def _secret_id(vault: Vault, name: str) -> int:
    """The id of the vault's one secret (``name``, for the message)."""
    with vault.store.read() as s:
        found = list(s.scalars(select(m.Secret.id)))
    assert len(found) == 1, (name, found)
    return found[0]


def test_a_streamed_report_is_audited_before_its_first_record(team) -> None:  # type: ignore[no-untyped-def]
    admin = team.admin
    admin.clients.add("acme", "Acme Ltd")
    admin.secrets.add("acme/fw01", password="pw-1")
    admin.checkouts.checkout("acme/fw01", reason=REASON)
    before = admin.audit.head()[0]
    records = admin.reports.access(ADMIN, stream=True)
    assert admin.audit.head()[0] == before  # nothing read, nothing appended before the first next()
    first = next(records)
    [event] = admin.audit.log(limit=1)  # another unit, while the report's read is still open
    assert event.seq == before + 1 and event.action == "report-access"
    assert event.details == {"engineer": ADMIN}
    assert first.seq < event.seq and first.reason == REASON
    assert list(records) == []
    # an unknown engineer (or a refused caller) is refused before any event is appended
    with pytest.raises(NotFound):
        next(admin.reports.access("nobody", stream=True))
    assert admin.audit.head()[0] == before + 1


def test_a_fresh_vault_object_opens_only_the_named_clients_key(team, reopen, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The session's slug hints are shared by the Vault objects of this process: a fresh one
    (a command served in-process) opens the key of the client it names, not of every client
    the engineer holds a grant for; and what it opens is checked as always."""
    from vault.crypto import sealing

    opened: dict[int, int] = {}
    for n in (3, 30):
        slugs = [f"g{n:02}-{i:02}" for i in range(n)]
        for slug in slugs:
            team.admin.clients.add(slug, slug)
        target, first = f"{slugs[-1]}/fw01", f"{slugs[0]}/fw01"
        team.admin.secrets.add(target, password="pw-1")
        team.admin.secrets.add(first, password="pw-0")
        vault = team.engineer(f"eng{n}")
        for slug in slugs:
            team.admin.grants.grant(f"eng{n}", slug)
        assert vault.checkouts.checkout(first, reason=REASON).value == "pw-0"  # learns every client of the session
        fresh = reopen(vault)
        calls = []
        real = sealing.open_sealed

        def counted(*args: Any, real: Any = real, calls: list[int] = calls, **kwargs: Any) -> Any:
            calls.append(1)
            return real(*args, **kwargs)

        monkeypatch.setattr(sealing, "open_sealed", counted)
        assert fresh.checkouts.checkout(target, reason=REASON).value == "pw-1"
        monkeypatch.undo()
        opened[n] = len(calls)
        team.admin.grants.revoke(f"eng{n}", slugs[-1])  # the hint does not outlive the grant
        with pytest.raises((NotFound, AccessDenied)):
            reopen(vault).checkouts.checkout(target, reason=REASON)
    assert opened[30] == opened[3] <= 2, opened
