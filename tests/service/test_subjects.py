"""A person's access and erasure requests, and retention.

One person (an email address and a name) appears in usernames, notes and custom fields
of several clients, in old and current versions, in different case and Unicode forms.
``subject_find`` and ``subject_report`` find every place; ``purge_subject`` removes only
the matching secrets, with one verifying receipt per client; ``report_stale`` flags
secrets unused for longer than their client's setting and deletes nothing.

The tests share one vault per engine (``world``) and run in file order: the purge comes
after the searches, and the clock moves only in the last tests.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from served import make_test_ca, served_team
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from vault import Vault
from vault.crypto.keyrecord import FLOOR
from vault.errors import AccessDenied, InvalidInput, NotFound
from vault.service.sessions import MemorySessionStore
from vault.storage import engine as storage

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
ADMIN, ADMIN_PASS = "root-admin", "admin passphrase ✓"
REASON = "T-1 test"
EMAIL = "jane.mueller@example.org"
PERSON = "Jane Q. Müller"
PASSWORDS = {
    "acme/mailbox-jm": "Mailbox-Pw-7Qx",
    "acme/firewall": "Firewall-Pw-2Lk",
    "acme/janet-mailbox": "Janet-Pw-9Zr",
    f"globex/{EMAIL}": "Named-After-Her-Pw",
    "globex/vpn-jm": "Vpn-Token-Pw-4Ws",
    "globex/printer": "Printer-Pw-8Hh",
    "initech/crm": "Crm-Pw-3Jd",
    "initech/backup-nas": "Nas-Pw-6Pp",
}


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class World:
    url: str
    admin: Vault
    eve: Vault
    clock: Clock
    vaults: list[Vault] = field(default_factory=list)
    served: bool = False  # through a team server (``served.only_local``)


def _database(engine: str, tmp: Path, pg_template: str | None) -> tuple[str, Callable[[], None]]:
    if engine == "sqlite":
        url = f"sqlite:///{tmp / 'vault.db'}"
        store = storage.Store(url)
        storage.upgrade(store)
        store.close()
        return url, lambda: None
    if pg_template is None:
        pytest.skip("no PostgreSQL server reachable (set CREDVAULT_TEST_PG)")
    base = os.environ.get("CREDVAULT_TEST_PG", PG_URL)
    name = f"credvault_subjects_{uuid.uuid4().hex[:12]}"
    server = create_engine(make_url(base), isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))

    def drop() -> None:
        with server.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()

    return make_url(base).set(database=name).render_as_string(hide_password=False), drop


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres), "https"]
)  # fmt: skip
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pg_template: str | None):  # type: ignore[no-untyped-def]
    """The vault, on SQLite, PostgreSQL, then through a team server (over SQLite: the admin on the
    server's host, every data key under the server's layer, eve a ``RemoteVault``)."""
    engine = "sqlite" if request.param == "https" else request.param
    tmp = tmp_path_factory.mktemp(f"subjects-{request.param}")
    url, drop = _database(engine, tmp, pg_template)
    clock = Clock()
    admin, _ = Vault.create(url, admin=ADMIN, passphrase=ADMIN_PASS, clock=clock, kdf_params=FLOOR)
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    if request.param != "https":
        eve = _populate(admin, lambda code: Vault.open(url, engineer="eve", clock=clock, kdf_params=FLOOR,
                                                       sessions=MemorySessionStore()))  # fmt: skip
        yield World(url, admin, eve, clock)
        eve.close()
    else:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("CREDVAULT_HOME", str(tmp / "engineer-home"))
            with served_team(url, admin, clock, {ADMIN: ADMIN_PASS}, make_test_ca(tmp), FLOOR) as team:
                yield World(url, admin, _populate(admin, lambda code: team.open("eve")), clock, served=True)
    admin.close()
    drop()


def _populate(admin: Vault, eves: Callable[[str], Vault]) -> Vault:
    """Three clients, the person in several places, and eve (her vault from ``eves``) granted acme."""
    for slug, name in (("acme", "Acme Ltd"), ("globex", "Globex Corp"), ("initech", "Initech")):
        admin.clients.add(slug, name)
    pw = PASSWORDS
    admin.secrets.add("acme/mailbox-jm", password=pw["acme/mailbox-jm"], kind="service", username=EMAIL)
    admin.secrets.update("acme/mailbox-jm", username="reception@acme.example")  # she is only in version 1
    admin.secrets.add("acme/firewall", password=pw["acme/firewall"], username="fwadmin", note="Managed by Acme IT")
    admin.secrets.add("acme/janet-mailbox", password=pw["acme/janet-mailbox"], username="janet.mueller@example.org")
    admin.secrets.add(f"globex/{EMAIL}", password=pw[f"globex/{EMAIL}"], username="jm")
    nfd_note = unicodedata.normalize("NFD", "VPN token issued to JANE Q. MÜLLER, desk 4")
    admin.secrets.add("globex/vpn-jm", password=pw["globex/vpn-jm"], username="vpnuser7", note=nfd_note)
    admin.secrets.add("globex/printer", password=pw["globex/printer"], note="Second floor printer")
    admin.secrets.add(
        "initech/crm", password=pw["initech/crm"], username="crm-svc", fields={"owner": "Jane.Mueller@Example.ORG"}
    )
    admin.secrets.add("initech/backup-nas", password=pw["initech/backup-nas"], username="nas-admin")
    code = admin.engineers.invite("eve")
    eve = eves(code)
    admin.engineers.confirm("eve", eve.engineers.enroll("eve", code, "pass of eve"))
    eve.engineers.unlock("eve", "pass of eve")
    admin.grants.grant("eve", "acme")
    return eve


def _where(matches: list) -> set[tuple]:  # type: ignore[type-arg]
    return {(x.client, x.secret, x.version, x.field) for x in matches}


# -- finding a person -----------------------------------------------------------------------------


def test_subject_find_finds_one_person_across_clients_fields_and_versions(world):
    admin = world.admin
    by_email = {("acme", "mailbox-jm", 1, "username"), ("globex", EMAIL, 1, "name"), ("initech", "crm", 1, "owner")}
    for query in (EMAIL, EMAIL.upper(), f"  {EMAIL}  ", "Jane.Mueller@EXAMPLE.org"):
        assert _where(admin.subjects.find(query)) == by_email, query
    match = next(x for x in admin.subjects.find(EMAIL) if x.field == "owner")
    assert match.value == "Jane.Mueller@Example.ORG"  # the value as stored
    by_name = {("globex", "vpn-jm", 1, "note")}
    for query in (PERSON, unicodedata.normalize("NFD", PERSON), PERSON.upper(), "jane q. müller"):
        assert _where(admin.subjects.find(query)) == by_name, ascii(query)
    assert admin.subjects.find("nobody.nowhere@example.org") == []
    # "janet.mueller@…" is another person: never a match for her address
    assert "janet-mailbox" not in {x.secret for x in admin.subjects.find(EMAIL)}
    events = [e for e in admin.audit.log() if e.action == "subject-find"]
    assert len(events) == 11 and events[-1].details == {"matches": 3} and events[-1].engineer == ADMIN


def test_subject_report_returns_the_matches_and_is_logged(world):
    admin = world.admin
    head = admin.audit.head()[0]
    report = admin.subjects.report(EMAIL)
    assert report["generated_by"] == ADMIN
    assert report["matches"] == [x.to_json() for x in admin.subjects.find(EMAIL)]
    assert {(x["client"], x["secret"]) for x in report["matches"]} == {
        ("acme", "mailbox-jm"),
        ("globex", EMAIL),
        ("initech", "crm"),
    }
    written = json.dumps(report, ensure_ascii=False)
    assert not [p for p in PASSWORDS.values() if p in written]  # passwords are not reproduced
    logged = [e for e in admin.audit.log() if e.seq > head and e.action == "subject-report"]
    assert len(logged) == 1 and logged[0].engineer == ADMIN
    assert logged[0].details == {"matches": 3, "by": ADMIN}
    assert admin.audit.verify().ok


def test_short_queries_and_non_admins_are_refused(world):
    admin, eve = world.admin, world.eve
    for query in ("", "ab", "  a  ", "é"):
        for call in (
            admin.subjects.find,
            admin.subjects.report,
            lambda q: admin.subjects.purge(q, request="DSR-7"),
        ):
            with pytest.raises(InvalidInput):
                call(query)
    assert admin.subjects.find("Ab1") == []  # three characters are enough
    assert _where(admin.subjects.find(EMAIL))
    for call in (
        lambda: eve.subjects.find(EMAIL),
        lambda: eve.subjects.report(EMAIL),
        lambda: eve.subjects.purge(EMAIL, request="DSR-7"),
    ):
        with pytest.raises(AccessDenied):
            call()
    assert _where(admin.subjects.find(EMAIL))  # nothing was purged


# -- erasing a person (changes the world) ---------------------------------------------------------


def test_purge_subject_removes_only_the_matching_secrets_with_one_receipt_per_client(world):
    admin = world.admin
    with pytest.raises(NotFound):
        admin.subjects.purge("nobody.nowhere@example.org", request="DSR-7")
    matched = {f"{x.client}/{x.secret}" for x in admin.subjects.find(EMAIL)}
    assert matched == {"acme/mailbox-jm", f"globex/{EMAIL}", "initech/crm"}
    receipts = admin.subjects.purge(EMAIL, request="DSR-7")
    assert len(receipts) == 3  # one per client
    assert {r.kind for r in receipts} == {"subject"} and {r.request for r in receipts} == {"DSR-7"}
    assert all(admin.purge.verify_receipt(r.id).ok for r in receipts)
    assert sorted(r.counts["versions"] for r in receipts) == [1, 1, 2]
    assert all(len(r.fingerprints) == r.counts["versions"] for r in receipts)
    for ref in matched:
        with pytest.raises(NotFound):
            admin.checkouts.reveal(ref, reason=REASON)
    for ref, password in PASSWORDS.items():
        if ref not in matched:
            assert admin.checkouts.reveal(ref, reason=REASON) == password, ref
    assert world.eve.checkouts.reveal("acme/firewall", reason=REASON) == PASSWORDS["acme/firewall"]
    assert admin.subjects.find(EMAIL) == []
    assert _where(admin.subjects.find(PERSON)) == {("globex", "vpn-jm", 1, "note")}  # not asked for: stays
    assert {c.slug for c in admin.clients.list()} == {"acme", "globex", "initech"}  # clients stay
    assert admin.audit.verify().ok
    with pytest.raises(NotFound):
        admin.subjects.purge(EMAIL, request="DSR-7")


def test_after_a_subject_purge_the_audit_log_no_longer_names_the_person(world):
    admin = world.admin
    assert admin.subjects.find(EMAIL) == []  # purged by the test before
    shown = [e.seq for e in admin.audit.log() if e.details and EMAIL in json.dumps(e.details).lower()]
    assert shown == []


# -- retention (moves the clock) ---------------------------------------------------------------------


def test_report_stale_lists_secrets_unused_past_the_client_setting_and_deletes_nothing(world):
    admin, eve, clock = world.admin, world.eve, world.clock
    admin.policies.set("acme", stale_days=30)
    assert admin.policies.get("acme").stale_days == 30
    assert admin.reports.stale() == []
    clock.now += dt.timedelta(days=31)
    admin.engineers.unlock(ADMIN, ADMIN_PASS)  # the sessions expired meanwhile
    eve.engineers.unlock("eve", "pass of eve")
    assert eve.checkouts.reveal("acme/firewall", reason=REASON) == PASSWORDS["acme/firewall"]  # used today
    before = {(s.client, s.name) for s in admin.secrets.list()}
    stale = admin.reports.stale()
    # (the module's shared vault may hold other unused acme secrets from earlier tests: they are stale too)
    rows = {(x.client, x.secret): (x.days_unused, x.stale_days) for x in stale}
    assert rows[("acme", "janet-mailbox")] == (31, 30)
    assert ("acme", "firewall") not in rows
    assert {client for client, _ in rows} == {"acme"}
    # globex and initech have no setting, however old their secrets; nothing was deleted
    assert {(s.client, s.name) for s in admin.secrets.list()} == before
    admin.policies.set("acme", stale_days=0)  # 0 turns the flag off
    assert admin.reports.stale() == []


def test_only_an_admin_may_list_stale_secrets(world):
    with pytest.raises(AccessDenied):
        world.eve.reports.stale()
