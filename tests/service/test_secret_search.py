"""``secrets.search``: what it finds, what it never compares, who finds what, and what goes on record.

Every case runs on SQLite, on PostgreSQL and through a team server (``shared3``: the engineers are
``RemoteVault`` objects, the search runs on their side over ``secrets.list_page``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select, update

from vault.errors import IntegrityError, InvalidInput, NotFound
from vault.records import SearchMatch
from vault.service.secret_search import MAX_QUERY
from vault.storage import models as m

PASSWORD = "Sup3r-Secret-Passw0rd-ÄÖ"
SEED = "JBSWY3DPEHPK3PXP-seed"


@pytest.fixture
def shared(shared3):  # type: ignore[no-untyped-def]
    return shared3


def _client_with_secrets(shared: Any) -> str:
    """A client with a firewall (host, username, note, public and sensitive fields) and a service (URL)."""
    c = shared.client("srch")
    shared.admin.secrets.add(
        f"{c}/fw01-admin",
        password=PASSWORD,
        kind="equipment",
        host="10.0.0.1",
        username="NetAdmin",
        note="Rack 4, Straße 12",
        fields={"serial": "SN-4711-QX", "pin_code": "99887766"},
        sensitive_fields={"mfa": SEED},
        public_fields={"vpn_key_id": "kid-public-42"},
    )
    shared.admin.secrets.add(f"{c}/xero", password="other-pw", kind="service", url="https://login.XERO.com/acme")
    return c


def _events(shared: Any) -> int:
    return int(shared.db.scalar(select(func.count()).select_from(m.AuditEvent)))


def test_each_non_sensitive_field_is_searched_case_insensitively(shared: Any) -> None:
    c = _client_with_secrets(shared)
    search = shared.admin.secrets.search
    cases = {
        "FW01": ("fw01-admin", ("name",)),
        "netadmin": ("fw01-admin", ("username",)),
        "10.0.0.1": ("fw01-admin", ("host",)),
        "xero.com": ("xero", ("url",)),
        "STRASSE": ("fw01-admin", ("note",)),  # casefolded: ß is ss
        "sn-4711": ("fw01-admin", ("field serial",)),
        "KID-PUBLIC": ("fw01-admin", ("field vpn_key_id",)),  # public by mark, though named like a key
    }
    for query, (name, matched) in cases.items():
        kind = "equipment" if name == "fw01-admin" else "service"
        assert search(query, c) == [SearchMatch(c, name, kind, 1, matched)], query
    both = search("a", c)  # every field that holds it is named
    assert [(x.name, x.matched) for x in both] == [
        ("fw01-admin", ("name", "username", "note")),
        ("xero", ("url",)),
    ]


def test_a_password_or_a_sensitive_field_is_never_compared(shared: Any) -> None:
    c = _client_with_secrets(shared)
    for query in (PASSWORD, PASSWORD.lower(), "Passw0rd", SEED, "99887766", "other-pw"):
        assert shared.admin.secrets.search(query, c) == [], query
        assert shared.admin.secrets.search(query) == [], query


def test_an_engineer_finds_only_what_their_live_grants_show(shared: Any) -> None:
    c, other = _client_with_secrets(shared), _client_with_secrets(shared)
    bob = shared.engineer("bob")
    assert bob.secrets.search("10.0.0.1") == []  # no grant at all
    shared.admin.grants.grant(bob.engineer_name, c)
    assert [(x.client, x.name) for x in bob.secrets.search("10.0.0.1")] == [(c, "fw01-admin")]
    with pytest.raises(NotFound):
        bob.secrets.search("10.0.0.1", other)  # a client named without a grant: as `secret list`
    shared.admin.grants.revoke(bob.engineer_name, c)
    assert bob.secrets.search("10.0.0.1") == []
    with pytest.raises(NotFound):
        bob.secrets.search("10.0.0.1", c)
    assert {x.client for x in shared.admin.secrets.search("10.0.0.1")} >= {c, other}  # an admin: every client


def test_a_search_is_on_record_as_the_listing_it_read_never_with_its_query(shared: Any) -> None:
    c = _client_with_secrets(shared)
    bob = shared.engineer("bob")
    shared.admin.grants.grant(bob.engineer_name, c)
    query = "Rack 4, Straße"
    before = _events(shared)
    assert [x.name for x in bob.secrets.search(query)] == ["fw01-admin"]
    assert [x.name for x in bob.secrets.search(query, c)] == ["fw01-admin"]
    rows = shared.db.all(select(m.AuditEvent).where(m.AuditEvent.seq > before).order_by(m.AuditEvent.seq))
    assert [r[0].action for r in rows] == ["secret-list", "secret-list"]
    assert rows[0][0].engineer_id == rows[1][0].engineer_id == shared.db.engineer_id(bob.engineer_name)
    assert (rows[0][0].client_id, rows[1][0].client_id) == (None, shared.db.newest_client_id())
    assert json.loads(rows[0][0].details_json)["clients"] == 1  # how many clients were searched
    needles = {v.encode() for v in (query, query.casefold(), "Rack 4")}
    for table, row in shared.db.rows():  # nowhere in the database, not in an event's details or request
        for value in row.values():
            raw = value if isinstance(value, bytes) else str(value).encode()
            assert not any(n in raw for n in needles), (table, row)


@pytest.mark.parametrize(
    "query",
    ["", "   ", "x" * (MAX_QUERY + 1), "fw\x1b[31m", "fw\n01", "a\x00b", "\u202efw"],
    ids=["empty", "blank", "too-long", "escape", "newline", "nul", "bidi"],
)
def test_a_bad_query_is_refused_before_anything_is_read(shared: Any, query: str) -> None:
    c = _client_with_secrets(shared)
    bob = shared.engineer("bob")
    shared.admin.grants.grant(bob.engineer_name, c)
    before = _events(shared)
    for vault in (shared.admin, bob):
        with pytest.raises(InvalidInput) as refused:
            vault.secrets.search(query)
        assert query.strip() == "" or query not in str(refused.value)  # never echoed
    assert _events(shared) == before


def test_the_longest_query_allowed_is_searched(shared: Any) -> None:
    c = _client_with_secrets(shared)
    assert shared.admin.secrets.search("q" * MAX_QUERY, c) == []
    assert [x.name for x in shared.admin.secrets.search("  XERO  ", c)] == ["xero"]  # stripped


def test_a_search_over_a_tampered_listing_fails_closed_as_the_listing_does(shared: Any) -> None:
    """A metadata blob moved from one secret to another (a writer of the database): the search is
    refused as ``secret list`` is, never answered with that secret left out or read as the other."""
    c = _client_with_secrets(shared)
    bob = shared.engineer("bob")
    shared.admin.grants.grant(bob.engineer_name, c)
    fw, xero = shared.db.secret_ids(shared.db.newest_client_id())
    version = m.SecretVersion
    blobs = dict(
        shared.db.all(select(version.secret_id, version.metadata_blob).where(version.secret_id.in_((fw, xero))))
    )
    moved = update(version).where(version.secret_id == xero).values(metadata_blob=blobs[fw])
    shared.db.run(moved)
    try:
        for vault in (bob, shared.admin):
            with pytest.raises(IntegrityError):
                vault.secrets.search("10.0.0.1", c)
            with pytest.raises(IntegrityError):
                vault.secrets.list(c)
    finally:
        shared.db.run(update(version).where(version.secret_id == xero).values(metadata_blob=blobs[xero]))
    assert [x.name for x in bob.secrets.search("10.0.0.1", c)] == ["fw01-admin"]
