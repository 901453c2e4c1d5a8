"""Secrets: every field round-trips, versions, size limits, and hostile names."""

from __future__ import annotations

import pytest
from served import only_local
from sqlalchemy import select

from vault.crypto import blobs
from vault.errors import AlreadyExists, InvalidInput, NotFound
from vault.server.layer import is_layered
from vault.storage import models as m
from vault.storage.rows import VersionRow


@pytest.fixture
def shared(shared3):  # type: ignore[no-untyped-def]
    """The module's vault in each of ``shared3``'s modes (SQLite, PostgreSQL, through a team server)."""
    return shared3


PASSWORD = "pä$$ wörd ✓ 🔑 עברית 'q\" \\ `x` <>&"
USERNAME = "admin@acme.example"
URL = "https://fw01.acme.example:8443/login?a=1&b=ü"
NOTE = "line one\nline two ✓\n\tindented\n"
FIELDS = {"serial": "SN-1234-ü", "pin_code": "0042", "Wifi-PSK": "correct horse ✓"}
LIMIT = 64 * 1024

# Control and look-alike characters that must never reach a terminal or a log line.
RAW_CONTROL = ("\u202e", "\u200b", "\n", "\r", "\x1b", "\x00", "\t", "\u2028")


def assert_safe_message(error: Exception) -> None:
    text = f"{error} {getattr(error, 'hint', '')}"
    for ch in RAW_CONTROL:
        assert ch not in text, f"raw control character {ch!r} in the message {text!r}"
    assert all(ch.isprintable() for ch in text), repr(text)


def test_every_field_round_trips(shared, reveal):
    admin, c = shared.admin, shared.client()
    admin.secrets.add(
        f"{c}/fw01-admin", password=PASSWORD, kind="equipment", username=USERNAME, url=URL, note=NOTE, fields=FIELDS
    )
    admin.secrets.add(f"{c}/sw01", password="x", kind="service", host="10.0.0.1")
    info = admin.secrets.show(f"{c}/fw01-admin")
    assert (info.client, info.name, info.kind, info.version) == (c, "fw01-admin", "equipment", 1)
    assert (info.username, info.url, info.host, info.note) == (USERNAME, URL, None, NOTE)
    assert (info.fields, info.sensitive_fields) == ({"serial": FIELDS["serial"]}, ("Wifi-PSK", "pin_code"))
    assert reveal(admin, f"{c}/fw01-admin") == PASSWORD
    assert reveal(admin, f"{c}/fw01-admin", "username") == USERNAME
    assert reveal(admin, f"{c}/fw01-admin", "url") == URL
    assert reveal(admin, f"{c}/fw01-admin", "note") == NOTE
    for key, value in FIELDS.items():
        assert reveal(admin, f"{c}/fw01-admin", key) == value
    with pytest.raises(NotFound):
        reveal(admin, f"{c}/fw01-admin", "host")
    other = admin.secrets.show(f"{c}/sw01")
    assert (other.kind, other.host, other.url, other.username, other.note, other.fields) == (
        "service",
        "10.0.0.1",
        None,
        None,
        None,
        {},
    )
    assert reveal(admin, f"{c}/sw01", "host") == "10.0.0.1"
    assert [(s.name, s.kind) for s in admin.secrets.list(c)] == [("fw01-admin", "equipment"), ("sw01", "service")]
    assert {f"{c}/fw01-admin", f"{c}/sw01"} <= {s.ref for s in admin.secrets.list()}
    assert admin.clients.show(c).secrets == 2


def test_an_engineer_with_a_grant_reads_the_same_values(shared, reveal):
    admin, c = shared.admin, shared.client()
    admin.secrets.add(
        f"{c}/fw01-admin", password=PASSWORD, username=USERNAME, host="fw01.acme.example", note=NOTE, fields=FIELDS
    )
    alice = shared.engineer("alice")
    admin.grants.grant(alice.engineer_name, c)
    assert reveal(alice, f"{c}/fw01-admin") == PASSWORD
    assert reveal(alice, f"{c}/fw01-admin", "Wifi-PSK") == FIELDS["Wifi-PSK"]
    mine, theirs = alice.secrets.show(f"{c}/fw01-admin"), admin.secrets.show(f"{c}/fw01-admin")
    assert (mine.username, mine.host, mine.note, mine.fields) == (
        theirs.username,
        theirs.host,
        theirs.note,
        theirs.fields,
    )


def test_a_field_of_exactly_64_kib_is_accepted(shared, reveal):
    admin, c = shared.admin, shared.client()
    big = "é" * (LIMIT // 2)  # 65 536 bytes of UTF-8
    assert len(big.encode()) == LIMIT
    admin.secrets.add(f"{c}/big", password="p" * LIMIT, note=big, username="u" * LIMIT, fields={"blob": "f" * LIMIT})
    assert reveal(admin, f"{c}/big") == "p" * LIMIT
    assert reveal(admin, f"{c}/big", "note") == big
    assert reveal(admin, f"{c}/big", "blob") == "f" * LIMIT
    assert admin.secrets.show(f"{c}/big").username == "u" * LIMIT


def test_an_engineer_writes_and_reads_fields_of_exactly_64_kib(shared, reveal):
    """Through a team server the versions travel in requests and answers: a field of 64 KiB is
    written and read back whole (the server's and the engineer's body limits let one version pass)."""
    admin, c = shared.admin, shared.client()
    alice = shared.engineer("alice")
    admin.grants.grant(alice.engineer_name, c)
    big = "é" * (LIMIT // 2)
    alice.secrets.add(f"{c}/big", password="p" * LIMIT, note=big, username="u" * LIMIT, fields={"blob": "f" * LIMIT})
    alice.secrets.update(f"{c}/big", password="q" * LIMIT, fields={"blob": "g" * LIMIT})
    assert reveal(alice, f"{c}/big") == "q" * LIMIT
    assert reveal(alice, f"{c}/big", "blob") == "g" * LIMIT
    assert reveal(alice, f"{c}/big", version=1) == "p" * LIMIT
    info = alice.secrets.show(f"{c}/big")
    assert (info.version, info.username, info.note) == (2, "u" * LIMIT, big)
    assert [h.version for h in alice.secrets.history(f"{c}/big")] == [1, 2]
    assert reveal(admin, f"{c}/big", "note") == big


def test_a_field_one_byte_over_64_kib_is_refused_and_nothing_is_written(shared):
    admin, c = shared.admin, shared.client()
    admin.secrets.add(f"{c}/fw01", password="pw-1", note="n")
    before = shared.db.counts()
    over = "x" * (LIMIT + 1)
    attempts = [
        dict(password=over),
        dict(password="pw", note=over),
        dict(password="pw", username=over),
        dict(password="pw", url=over),
        dict(password="pw", host=over),
        dict(password="pw", fields={"serial": over}),
        dict(password="pw", note="é" * (LIMIT // 2) + "x"),
    ]
    for kwargs in attempts:
        with pytest.raises(InvalidInput):
            admin.secrets.add(f"{c}/too-big", **kwargs)
        with pytest.raises(InvalidInput):
            admin.secrets.update(f"{c}/fw01", **kwargs)
    assert shared.db.counts() == before


def test_update_makes_a_new_version_with_a_new_data_key_and_keeps_other_fields(shared, reveal):
    admin, c = shared.admin, shared.client()
    client_id = shared.db.newest_client_id()
    admin.secrets.add(
        f"{c}/fw01",
        password="pw-1",
        kind="equipment",
        username="u1",
        host="10.0.0.1",
        note="n1",
        fields={"serial": "S1"},
    )
    updated = admin.secrets.update(f"{c}/fw01", password="pw-2")
    assert updated.version == 2
    assert (updated.username, updated.host, updated.note, updated.fields, updated.kind) == (
        "u1",
        "10.0.0.1",
        "n1",
        {"serial": "S1"},
        "equipment",
    )
    admin.secrets.update(f"{c}/fw01", username="u3", fields={"rack": "R9"})
    info = admin.secrets.show(f"{c}/fw01")
    assert (info.version, info.username, info.host, info.note) == (3, "u3", "10.0.0.1", "n1")
    assert info.fields == {"serial": "S1", "rack": "R9"}
    assert reveal(admin, f"{c}/fw01") == "pw-2"  # a metadata change keeps the password
    assert reveal(admin, f"{c}/fw01", version=1) == "pw-1"
    assert reveal(admin, f"{c}/fw01", "username", version=1) == "u1"

    (secret_id,) = shared.db.secret_ids(client_id)
    versions = [
        r[0]
        for r in shared.db.all(
            select(m.SecretVersion).where(m.SecretVersion.secret_id == secret_id).order_by(m.SecretVersion.version)
        )
    ]
    assert [v.version for v in versions] == [1, 2, 3]
    assert len({v.wrapped_dek for v in versions}) == 3
    assert len({v.password_blob for v in versions}) == 3
    layer = admin.core.host_layer  # through a team server: every data key stored under its layer
    assert all(is_layered(v.wrapped_dek) for v in versions) == (layer is not None)
    with admin.store.transaction() as s:  # unwrap each data key with the client key
        client_key = admin.keyholder.client_key(s, client_id, 1)
        if layer is not None:  # removed with the server's master key, as the server does after an event
            vault_id = admin.core.vid(s)
            versions = [
                layer.unlayered(
                    s, vault_id, client_id, secret_id, VersionRow(v.version, v.key_version, v.wrapped_dek, b"", b"")
                )
                for v in versions
            ]
        deks = {blobs.unwrap_data_key(client_key, 1, v.wrapped_dek, client_id, secret_id, v.version) for v in versions}
    assert len(deks) == 3, "every version must have its own data key"

    history = admin.secrets.history(f"{c}/fw01")
    assert [(h.version, h.current, h.created_by, h.key_version) for h in history] == [
        (1, False, "root-admin", 1),
        (2, False, "root-admin", 1),
        (3, True, "root-admin", 1),
    ]


def test_update_with_nothing_new_is_refused(shared):
    admin, c = shared.admin, shared.client()
    admin.secrets.add(f"{c}/fw01", password="pw-1", username="u1")
    before = shared.db.counts()
    with pytest.raises(InvalidInput):
        admin.secrets.update(f"{c}/fw01", username="u1")
    assert shared.db.counts() == before


def test_url_and_host_together_are_refused(shared):
    admin, c = shared.admin, shared.client()
    admin.secrets.add(f"{c}/fw01", password="pw-1", host="10.0.0.1")
    before = shared.db.counts()
    with pytest.raises(InvalidInput):
        admin.secrets.add(f"{c}/fw02", password="pw", url="https://x.example", host="10.0.0.2")
    with pytest.raises(InvalidInput):
        admin.secrets.update(f"{c}/fw01", url="https://x.example")
    assert shared.db.counts() == before
    switched = admin.secrets.update(f"{c}/fw01", url="https://x.example", host=None)
    assert (switched.url, switched.host) == ("https://x.example", None)


BAD_SECRET_NAMES = [
    "\u202eexe.txt",
    "fw\u200b01",
    "fw\n01",
    "\x1b[31mred",
    "x'; drop table secrets;--",
    "../x",
    "a/b",
    "x\\y",
    "café",
    " fw01",
    "fw01\x00",
    "",
    "a" * 129,
    "fw01\u2028",
]
BAD_SLUGS = [
    "\u202eacme",
    "ac\u200bme",
    "acme\n",
    "\x1b[31macme",
    "x'; drop table clients;--",
    "../acme",
    "a/b",
    "Acme",
    "acme_ltd",
    "-acme",
    "",
    "a" * 64,
    "acmé",
    "acme ",
]
BAD_ENGINEERS = [
    "\u202ebob",
    "bo\u200bb",
    "bob\n",
    "\x1b[31mbob",
    "bob'; drop table engineers;--",
    "../bob",
    "Bob",
    "1bob",
    "",
    "b" * 33,
]


def test_bad_secret_references_are_refused_without_echoing_control_characters(shared, reveal):
    admin, c = shared.admin, shared.client()
    admin.secrets.add(f"{c}/fw01", password="pw-1")
    refs = [f"{c}/{name}" for name in BAD_SECRET_NAMES] + ["../x", f"/{c}", c, f"{c.upper()}/fw01", f"{c}/fw01/x"]
    before = shared.db.counts()
    for ref in refs:
        for call in (
            lambda: admin.secrets.add(ref, password="pw"),
            lambda: admin.secrets.update(ref, password="pw"),
            lambda: admin.secrets.show(ref),
            lambda: reveal(admin, ref),
            lambda: admin.secrets.history(ref),
        ):
            with pytest.raises(InvalidInput) as caught:
                call()
            assert_safe_message(caught.value)
    assert shared.db.counts() == before


def test_bad_client_slugs_and_engineer_names_are_refused(shared):
    admin, c = shared.admin, shared.client()
    before = shared.db.counts()
    for slug in BAD_SLUGS:
        for call in (
            lambda: admin.clients.add(slug, "Name"),
            lambda: admin.clients.show(slug),
            lambda: admin.secrets.list(slug),
        ):
            with pytest.raises(InvalidInput) as caught:
                call()
            assert_safe_message(caught.value)
    for name in BAD_ENGINEERS:
        for call in (lambda: admin.engineers.invite(name), lambda: admin.grants.grant(name, c)):
            with pytest.raises(InvalidInput) as caught:
                call()
            assert_safe_message(caught.value)
    assert shared.db.counts() == before


def test_control_characters_in_values_are_refused(shared):
    admin, c = shared.admin, shared.client()
    before = shared.db.counts()
    for bad in ("\x1b[31mred", "a\u202eb", "a\u200bb", "a\x00b", "a\rb", "a\u2028b"):
        for call in (
            lambda: admin.clients.add(shared.name("globex"), f"Globex {bad}"),
            lambda: admin.secrets.add(f"{c}/fw01", password="pw", username=bad),
            lambda: admin.secrets.add(f"{c}/fw01", password="pw", host=bad),
            lambda: admin.secrets.add(f"{c}/fw01", password="pw", url=bad),
            lambda: admin.secrets.add(f"{c}/fw01", password="pw", note=bad),
            lambda: admin.secrets.add(f"{c}/fw01", password="pw", fields={"serial": bad}),
            lambda: admin.secrets.add(f"{c}/fw01", password="pw", fields={f"s{bad}": "v"}),
        ):
            with pytest.raises(InvalidInput) as caught:
                call()
            assert_safe_message(caught.value)
            assert bad not in str(caught.value)
    for reserved in ("password", "username", "name"):
        with pytest.raises(InvalidInput):
            admin.secrets.add(f"{c}/fw01", password="pw", fields={reserved: "v"})
    with pytest.raises(InvalidInput):
        admin.secrets.add(f"{c}/fw01", password="")
    with pytest.raises(InvalidInput):
        admin.secrets.add(f"{c}/fw01", password="pw", kind="router")
    assert shared.db.counts() == before


def test_a_duplicate_secret_or_client_is_refused(shared, reveal):
    admin, c = shared.admin, shared.client()
    admin.secrets.add(f"{c}/fw01", password="pw-1")
    before = shared.db.counts()
    with pytest.raises(AlreadyExists):
        admin.secrets.add(f"{c}/fw01", password="pw-2")
    with pytest.raises(AlreadyExists):
        admin.clients.add(c, "Acme again")
    assert shared.db.counts() == before
    assert reveal(admin, f"{c}/fw01") == "pw-1"
    other = shared.client("globex", "Globex")
    admin.secrets.add(f"{other}/fw01", password="pw-3")  # the same name in another client is fine
    assert reveal(admin, f"{other}/fw01") == "pw-3"
    assert reveal(admin, f"{c}/fw01") == "pw-1"


def test_unknown_secrets_and_versions_are_not_found(shared, reveal):
    admin, c = shared.admin, shared.client()
    admin.secrets.add(f"{c}/fw01", password="pw-1")
    for call in (
        lambda: admin.secrets.show(f"{c}/nope"),
        lambda: reveal(admin, f"{c}/nope"),
        lambda: reveal(admin, f"{c}/fw01", version=7),
        lambda: admin.secrets.show("nosuch-client/fw01"),
    ):
        with pytest.raises(NotFound):
            call()


# -- sensitive custom fields (issue 12, item 16) ------------------------------------------------

SEED, ENABLE, RECOVERY = "JBSWY3DPEHPK3PXP", "en-4ble ✓", "1111-2222-3333"


def _sensitive_secret(shared):  # type: ignore[no-untyped-def]
    """A client with a secret holding an MFA seed, an enable secret, a recovery code and a
    VLAN, and an engineer holding a grant for it."""
    c = shared.client()
    ref = f"{c}/fw01"
    shared.admin.secrets.add(
        ref,
        password="pw",
        kind="equipment",
        fields={"mfa-seed": SEED, "vlan": "20"},
        sensitive_fields={"enable": ENABLE, "rescue": RECOVERY},
    )
    alice = shared.engineer("alice")
    shared.admin.grants.grant(alice.engineer_name, c)
    return ref, alice


def test_secret_show_and_list_never_return_a_sensitive_field(shared):
    ref, alice = _sensitive_secret(shared)
    c = ref.split("/")[0]
    for info in (alice.secrets.show(ref), *alice.secrets.list(c), *shared.admin.secrets.list(c)):
        assert info.fields == {"vlan": "20"}
        assert info.sensitive_fields == ("enable", "mfa-seed", "rescue")
        dumped = f"{info!r} {info.to_json()}"
        for value in (SEED, ENABLE, RECOVERY):
            assert value not in dumped


def test_a_subject_search_finds_a_sensitive_field_without_reproducing_its_value(shared):
    ref, _alice = _sensitive_secret(shared)
    c = ref.split("/")[0]
    matches = shared.admin.subjects.find(RECOVERY[:9])
    assert [(x.secret, x.field) for x in matches if x.client == c] == [("fw01", "rescue")]  # found: can be purged
    report = shared.admin.subjects.report(RECOVERY[:9])
    assert [x["field"] for x in report["matches"] if x["client"] == c] == ["rescue"]
    dumped = f"{matches!r} {[x.to_json() for x in matches]} {report}"
    for value in (SEED, ENABLE, RECOVERY):
        assert value not in dumped


def test_a_sensitive_field_is_revealed_by_checkout_logged_and_counted_at_risk(shared):
    ref, alice = _sensitive_secret(shared)
    assert alice.checkouts.checkout(ref, field="mfa-seed", reason="T-1 token reset", hold=False).value == SEED
    assert alice.checkouts.checkout(ref, field="enable", reason="T-2 enable", hold=False).value == ENABLE
    name = alice.engineer_name
    access = shared.admin.reports.access(name)
    assert {(r.secret, r.field, r.reason) for r in access} == {
        ("fw01", "mfa-seed", "T-1 token reset"),
        ("fw01", "enable", "T-2 enable"),
    }
    assert {r.field for r in shared.admin.reports.at_risk(name)} == {"mfa-seed", "enable"}
    shared.admin.secrets.update(ref, fields={"mfa-seed": "NEWSEED234567"})  # rotated on the token server
    assert {r.field for r in shared.admin.reports.at_risk(name)} == {"enable"}


def test_marks_override_the_name_and_survive_updates(shared):
    c = shared.client()
    ref = f"{c}/sw01"
    shared.admin.secrets.add(ref, password="pw", public_fields={"pin-colour": "blue"}, sensitive_fields={"vlan": "7"})
    info = shared.admin.secrets.show(ref)
    assert (info.fields, info.sensitive_fields) == ({"pin-colour": "blue"}, ("vlan",))
    shared.admin.secrets.update(ref, fields={"vlan": "8", "pin-colour": "red"})  # plain --field keeps the marks
    info = shared.admin.secrets.show(ref)
    assert (info.fields, info.sensitive_fields) == ({"pin-colour": "red"}, ("vlan",))
    shared.admin.secrets.update(ref, public_fields={"vlan": "8"}, sensitive_fields={"pin-colour": "red"})
    info = shared.admin.secrets.show(ref)
    assert (info.fields, info.sensitive_fields) == ({"vlan": "8"}, ("pin-colour",))
    with pytest.raises(InvalidInput, match="twice"):
        shared.admin.secrets.update(ref, fields={"vlan": "9"}, sensitive_fields={"vlan": "9"})


def test_fields_stored_before_the_marks_are_classified_by_name_and_old_views_count_as_reveals(shared):
    """A version written by the code before item 16 has no marks; a `secret show` logged
    then printed every field, so the reports count it as a reveal of the sensitive ones."""
    ref, alice = _sensitive_secret(shared)
    c = ref.split("/")[0]
    old_ref = f"{c}/legacy"
    shared.admin.secrets.add(old_ref, password="pw", fields={"recovery-codes": RECOVERY, "rack": "R4"})
    with shared.admin.store.transaction() as s:
        client, secret, _slug = shared.admin.secrets.secret(s, old_ref)
        metadata = shared.admin.secrets.open(s, client, secret, shared.admin.secrets.version(s, secret, None)).metadata
        assert "sensitive_fields" not in metadata and "public_fields" not in metadata  # the old layout
    info = alice.secrets.show(old_ref)
    assert (info.fields, info.sensitive_fields) == ({"rack": "R4"}, ("recovery-codes",))
    assert shared.admin.reports.at_risk(alice.engineer_name) == []  # a view now reveals nothing
    only_local(
        shared, "an event of the old code appended by hand in alice's in-process vault: her RemoteVault has no journal"
    )
    with alice.store.transaction() as s:  # what the old show_secret logged: no details
        client, secret, _slug = alice.secrets.secret(s, old_ref)
        alice.journal.append(s, "secret-view", client_id=client.id, secret_id=secret.id)
    [record] = shared.admin.reports.at_risk(alice.engineer_name)
    assert (record.secret, record.field, record.version, record.changed_since) == ("legacy", "recovery-codes", 1, False)
