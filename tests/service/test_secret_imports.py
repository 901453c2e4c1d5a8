"""``vault.service.imports``: reading a CSV or Bitwarden file and checking every row before
anything is written (``credvault secret import``). Pure: no vault, no database."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vault.errors import InvalidInput, StoreUnavailable
from vault.service import imports, imports_names
from vault.service.imports import ImportPlan, Parsed, Progress

HEADER = "name,kind,username,password,url,host,note\n"
PASSWORDS = ("Sup3r-secret-fw", "Other-secret-365", "Hidden-field-val", "JBSWY3DPEHPK3PXP")


def _csv(*lines: str, header: str = HEADER) -> Parsed:
    return imports.parse((header + "".join(line + "\n" for line in lines)).encode(), "csv")


def _plan(parsed: Parsed, existing: tuple[str, ...] = (), skip: bool = False) -> ImportPlan:
    return imports.check(parsed, "acme", set(existing), skip_existing=skip)


def _reasons(plan: ImportPlan) -> list[str]:
    return [str(problem) for problem in plan.problems]


def _no_password_in(plan: ImportPlan) -> None:
    text = "\n".join(_reasons(plan)) + repr(plan)
    for password in PASSWORDS:
        assert password not in text


# -- CSV ---------------------------------------------------------------------------------------


def test_a_good_csv_becomes_rows_with_their_metadata() -> None:
    parsed = _csv(
        f'fw01,equipment,admin,{PASSWORDS[0]},,10.0.0.1,"rack 4\nshelf 2"',
        f"m365,service,ops@acme.example,{PASSWORDS[1]},https://portal.office.com,,",
    )
    plan = _plan(parsed)
    assert plan.problems == ()
    fw, m365 = plan.to_add
    assert (fw.where, fw.name, fw.kind, fw.username, fw.host, fw.url, fw.note) == (
        "line 2", "fw01", "equipment", "admin", "10.0.0.1", None, "rack 4\nshelf 2",
    )  # fmt: skip
    assert (m365.where, m365.password, m365.host) == ("line 4", PASSWORDS[1], None)
    assert m365.url == "https://portal.office.com"
    assert [plan.ref(row) for row in plan.to_add] == ["acme/fw01", "acme/m365"]
    _no_password_in(plan)


def test_a_header_after_blank_lines_is_named_by_its_own_line() -> None:
    with pytest.raises(InvalidInput, match=r"^line 3: unknown column 3 "):
        imports.parse(b"\n\nname,password,x\n", "csv")


def test_columns_may_come_in_any_order_and_case_and_kind_defaults_to_other() -> None:
    parsed = imports.parse(f"\ufeffPassword, NAME\n{PASSWORDS[0]},router\n\n".encode(), "csv")
    (row,) = _plan(parsed).to_add
    assert (row.name, row.password, row.kind, row.username) == ("router", PASSWORDS[0], "other", None)


@pytest.mark.parametrize(
    ("header", "says"),
    [
        ("name,password,colour\n", "line 1: unknown column 3 (counted from 1)"),
        ("name,password,\x1b[31mx,url,y\n", "line 1: unknown columns 3, 5 (counted from 1)"),
        ("name,username\n", "line 1 is not a header: it names no 'password' column"),
        ("password,url\n", "line 1 is not a header: it names no 'name' column"),
        ("name,password,name\n", "line 1: column 'name' is given twice"),
        ("", "the file is empty"),
        ("\n\n", "the file is empty"),
        ('"name,password\n', "line 1: not readable as CSV from here"),
    ],
)
def test_a_bad_header_refuses_the_file_naming_why(header: str, says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        imports.parse(header.encode(), "csv")
    assert str(caught.value).startswith(says), caught.value


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (f",,,{PASSWORDS[0]},,,", "line 2: no name"),
        ("fw01,,,,,,", "line 2: no password"),
        (f"fw 01,,,{PASSWORDS[0]},,,", "line 2: the name is not one a secret may have: 1-128 letters"),
        (f"fw/01,,,{PASSWORDS[0]},,,", "line 2: the name is not one a secret may have"),
        (f"\x1b[2Jfw,,,{PASSWORDS[0]},,,", "line 2: the name is not one a secret may have"),
        (f"fw01,printer,,{PASSWORDS[0]},,,", "line 2: the kind is not one of: equipment, service, other"),
        (f"fw01,,,{PASSWORDS[0]},https://a.example,10.0.0.1,", "line 2: both a url and a host are given"),
        (f"fw01,,adm\x07in,{PASSWORDS[0]},,,", "line 2: the username contains control characters"),
        (f"fw01,,,{PASSWORDS[0]}\x00,,,", "line 2: the password contains a NUL character"),
        (f"fw01,,,{PASSWORDS[0]},,", "line 2: has 6 cells, the header names 7"),
        (f'fw01,,,"{PASSWORDS[0]}"x,,,', "line 2: not readable as CSV from here"),
    ],
)
def test_each_bad_row_is_named_by_its_line_and_reason_never_its_password(line: str, says: str) -> None:
    plan = _plan(_csv(f"good,,,{PASSWORDS[1]},,,", line))
    (reason,) = _reasons(plan)
    assert reason.startswith(says.replace("line 2", "line 3")), reason
    _no_password_in(plan)


def test_cells_out_of_place_are_never_quoted() -> None:
    """A file without a header, or with its columns misnamed: a password in the name or kind
    column, or on the first line, is not echoed back."""
    with pytest.raises(InvalidInput) as caught:
        imports.parse(f"fw01,equipment,{PASSWORDS[0]}\n".encode(), "csv")
    assert str(caught.value) == "line 1 is not a header: it names no 'name' column"
    with pytest.raises(InvalidInput) as caught:  # the header's line break lost
        imports.parse(f"name,password,note{PASSWORDS[1]},{PASSWORDS[0]}\n".encode(), "csv")
    assert str(caught.value) == "line 1: unknown columns 3, 4 (counted from 1)"
    plan = _plan(imports.parse(f"kind,password,name\n{PASSWORDS[0]},fw01,{PASSWORDS[1]} x\n".encode(), "csv"))
    assert len(plan.problems) == 2
    _no_password_in(plan)


def test_every_bad_row_is_reported_not_only_the_first() -> None:
    plan = _plan(_csv(",,,x,,,", "a b,weird,,,,,", f"ok,,,{PASSWORDS[0]},,,", "ok,,,again,,,"))
    assert _reasons(plan) == [
        "line 2: no name",
        "line 3: the name is not one a secret may have: 1-128 letters, digits, '.', '_', '@', '+' or '-'"
        " (e.g. fw01-admin; no spaces)",
        "line 3: no password",
        "line 3: the kind is not one of: equipment, service, other",
        "line 5: the name is also on line 4",
    ]


def test_a_field_over_the_librarys_limit_is_a_row_error() -> None:
    long = "x" * (64 * 1024 + 1)
    plan = _plan(_csv(f"a,,,{long},,,", f"b,,,{PASSWORDS[0]},,,{long}", f"c,,,{PASSWORDS[1]},,,"))
    assert _reasons(plan) == [
        "line 2: the password is longer than 64 KiB",
        "line 3: the note is longer than 64 KiB",
    ]
    assert [row.name for row in plan.to_add] == ["c"]


def test_a_cell_over_csvs_own_limit_stops_the_reading_there() -> None:
    plan = _plan(_csv(f"a,,,{PASSWORDS[0]},,,", "b,,,x,,," + "y" * 200_000))
    assert _reasons(plan) == ["line 3: not readable as CSV from here (a cell is too long)"]


def test_names_the_client_has_are_refused_unless_skipped() -> None:
    parsed = _csv(f"fw01,,,{PASSWORDS[0]},,,", f"fw02,,,{PASSWORDS[1]},,,")
    assert _reasons(_plan(parsed, ("fw01",))) == ["line 2: acme/fw01 already exists (--skip-existing leaves it)"]
    plan = _plan(parsed, ("fw01",), skip=True)
    assert ([r.name for r in plan.to_add], [r.name for r in plan.existing], plan.problems) == (["fw02"], ["fw01"], ())


def test_a_bad_row_is_reported_even_if_its_name_exists() -> None:
    plan = _plan(_csv("fw01,weird,,x,,,"), ("fw01",), skip=True)
    assert _reasons(plan) == ["line 2: the kind is not one of: equipment, service, other"]


# -- the file as a whole -------------------------------------------------------------------------


def test_a_file_over_the_size_bound_is_refused() -> None:
    with pytest.raises(InvalidInput, match="larger than 10 MiB"):
        imports.parse(b"name,password\n" + b"a" * imports.MAX_BYTES, "csv")


def test_a_file_over_the_row_bound_is_refused_in_both_formats() -> None:
    lines = "".join(f"s{n},pw\n" for n in range(imports.MAX_ROWS + 1))
    with pytest.raises(InvalidInput, match="more than 10000 secrets"):
        imports.parse(("name,password\n" + lines).encode(), "csv")
    assert len(imports.parse(("name,password\n" + lines[: lines.rindex("s")]).encode(), "csv").rows) == imports.MAX_ROWS
    items = [{"type": 1, "name": f"s{n}", "login": {"password": "pw"}} for n in range(imports.MAX_ROWS + 1)]
    with pytest.raises(InvalidInput, match="more than 10000 secrets"):
        imports.parse(json.dumps({"encrypted": False, "items": items}).encode(), "bitwarden")


@pytest.mark.parametrize("fmt", imports.FORMATS)
def test_text_that_is_not_utf8_is_a_clean_error(fmt: str) -> None:
    with pytest.raises(InvalidInput, match="not UTF-8 text") as caught:
        imports.parse("name,password\nfw01,café\n".encode("latin-1"), fmt)
    assert "caf" not in str(caught.value) and "caf" not in caught.value.hint


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(InvalidInput, match="unknown format 'keepass'"):
        imports.parse(b"", "keepass")


# -- KeePassXC ---------------------------------------------------------------------------------

KEEPASSXC_HEADER = '"Group","Title","Username","Password","URL","Notes","TOTP","Icon","Last Modified","Created"\n'


def test_a_keepassxc_export_becomes_rows_its_group_icon_and_dates_not_imported() -> None:
    """KeePassXC's CSV export as it writes it (every cell quoted): Title is the name, Notes the note,
    TOTP the sensitive field ``totp``; a title with a space is a name to fix (``--fix-names``)."""
    text = KEEPASSXC_HEADER + (
        f'"Root/Acme","fw01-admin","admin","{PASSWORDS[0]}","","rack 4","{PASSWORDS[1]}","0",'
        '"2026-01-02T03:04:05Z","2025-01-02T03:04:05Z"\n'
        f'"Root/Acme","Acme VPN","ops","{PASSWORDS[2]}","https://vpn.acme.example","","","0","",""\n'
    )
    parsed = imports.parse(text.encode(), "keepassxc")
    fw01, vpn = parsed.rows
    assert (fw01.name, fw01.username, fw01.password, fw01.note, fw01.kind) == (
        "fw01-admin", "admin", PASSWORDS[0], "rack 4", "other",
    )  # fmt: skip
    assert fw01.sensitive_fields == {"totp": PASSWORDS[1]} and fw01.public_fields == {} and fw01.fields == {}
    assert (vpn.url, vpn.sensitive_fields) == ("https://vpn.acme.example", {})
    assert [p.where for p in _plan(parsed).problems] == ["line 3"]  # "Acme VPN": not a name as it is
    assert [r.name for r in _plan(imports_names.fix_names(parsed)).to_add] == ["fw01-admin", "Acme-VPN"]
    _no_password_in(_plan(parsed))


@pytest.mark.parametrize(
    ("header", "says"),
    [
        ('"Group","Username","Password"\n', "names no 'title' column"),
        ('"Title","Password","Colour"\n', "unknown column 3"),
        ('"name","password"\n', "names no 'title' column"),  # a csv file is not a KeePassXC export
    ],
)
def test_a_keepassxc_header_it_does_not_write_is_refused(header: str, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        imports.parse((header + '"a","b","c"\n').encode(), "keepassxc")


# -- Bitwarden ---------------------------------------------------------------------------------


def _login(name: Any = "Acme-VPN", **login: Any) -> dict[str, Any]:
    return {"type": 1, "name": name, "notes": None, "login": {"password": PASSWORDS[0], **login}}


def _bitwarden(*items: Any, encrypted: Any = False) -> Parsed:
    document = {"encrypted": encrypted, "folders": [], "items": list(items)}
    return imports.parse(json.dumps(document).encode(), "bitwarden")


def test_a_bitwarden_login_becomes_a_row_with_url_fields_and_totp() -> None:
    item = _login(
        username="ops@acme.example",
        uris=[{"match": None, "uri": "https://vpn.acme.example"}, {"uri": "https://vpn2.acme.example"}],
        totp=PASSWORDS[3],
    )
    item["notes"] = "two gateways"
    item["fields"] = [
        {"name": "vlan", "value": "20", "type": 0},
        {"name": "recovery", "value": PASSWORDS[2], "type": 1},
        {"name": "remember", "value": "true", "type": 2},
        {"name": "linked", "value": None, "type": 3, "linkedId": 100},
    ]
    plan = _plan(_bitwarden(item))
    (row,) = plan.to_add
    assert (row.where, row.name, row.password, row.kind) == ("item 1 ('Acme-VPN')", "Acme-VPN", PASSWORDS[0], "other")
    assert (row.username, row.url, row.note) == ("ops@acme.example", "https://vpn.acme.example", "two gateways")
    assert row.fields == {"vlan": "20", "remember": "true"}
    assert row.sensitive_fields == {"recovery": PASSWORDS[2], "totp": PASSWORDS[3]}
    assert row.public_fields == {"uri-2": "https://vpn2.acme.example"}
    _no_password_in(plan)


def test_fix_names_makes_titles_and_field_names_ones_secret_add_takes_and_lists_each() -> None:
    """A real export's titles ("Acme VPN", "Xero (accounts)") and field names ("API key") are not names
    `secret add` takes: refused as they are, made into ones it takes with --fix-names, each listed."""
    vpn, xero = _login("Acme VPN"), _login("Xéro (accounts) ")
    vpn["fields"] = [{"name": "API key", "value": "k", "type": 0}, {"name": "2fa code", "value": "c", "type": 1}]
    parsed = _bitwarden(vpn, xero, _login("…"))
    assert {p.where.split(" (")[0] for p in _plan(parsed).problems} == {"item 1", "item 2", "item 3"}  # as they are
    fixed = imports_names.fix_names(parsed)
    plan = _plan(fixed)
    assert [row.name for row in plan.to_add] == ["Acme-VPN", "Xero-accounts"]
    assert plan.to_add[0].fields == {"API-key": "k"} and plan.to_add[0].sensitive_fields == {"f-2fa-code": "c"}
    assert [p.where for p in plan.problems] == ["item 3 ('?')"]  # nothing is left of the title: named, not fixed
    assert fixed.renamed == (
        "item 1: named Acme-VPN", "item 1: field 'API key' named API-key", "item 1: field '2fa code' named f-2fa-code",
        "item 2: named Xero-accounts",
    )  # fmt: skip


def test_names_fix_names_makes_the_same_are_refused_as_a_name_twice_and_no_field_is_lost() -> None:
    twice = _login("Acme VPN")
    twice["fields"] = [{"name": "API key", "value": "1", "type": 0}, {"name": "API-key", "value": "2", "type": 0}]
    plan = _plan(imports_names.fix_names(_bitwarden(twice, _login("Acme-VPN"))))
    assert plan.to_add == () and any("also on item 1" in p.reason for p in plan.problems)
    assert any(p.where.startswith("item 1") and "field" in p.reason for p in plan.problems)  # 'API key' kept, refused


def test_bitwarden_items_that_are_not_logins_are_left_out_and_named() -> None:
    note = {"type": 2, "name": "Wifi notes", "secureNote": {"type": 0}}
    odd = {"type": True, "name": "odd"}
    parsed = _bitwarden(_login(), note, odd)
    assert [row.name for row in parsed.rows] == ["Acme-VPN"]
    assert parsed.left_out == (
        "item 2 ('Wifi notes'): a secure note, not a login",
        "item 3 ('odd'): another item, not a login",
    )


@pytest.mark.parametrize(
    ("item", "says"),
    [
        (_login(password=None), "item 1 ('Acme-VPN'): no password"),
        (_login(name=None), "item 1: no name"),
        (_login(name="Acme VPN"), "item 1 ('Acme VPN'): the name is not one a secret may have"),
        (_login(password=12345), "item 1 ('Acme-VPN'): its login.password is not text"),
        (_login(uris="https://x"), "item 1 ('Acme-VPN'): its login.uris is not a list of objects"),
        ({"type": 1, "name": "x"}, "item 1 ('x'): it has no login"),
        ("a string", "item 1: is not an object"),
        ({**_login(), "fields": [{"name": "API key", "value": "v", "type": 1}]}, "item 1 ('Acme-VPN'): bad field name"),
        ({**_login(), "fields": [{"name": "password", "value": "v", "type": 0}]}, "item 1 ('Acme-VPN'): bad field"),
        ({**_login(), "fields": [{"name": "", "value": "v", "type": 0}]}, "item 1 ('Acme-VPN'): a custom field has no"),
        ({**_login(), "fields": {"a": 1}}, "item 1 ('Acme-VPN'): its fields are not a list"),
        (
            {**_login(totp="x"), "fields": [{"name": "totp", "value": "v", "type": 1}]},
            "item 1 ('Acme-VPN'): field 'totp' is given twice",
        ),
        (
            {**_login(), "fields": [{"name": "a", "value": "v", "type": 0}, {"name": "a", "value": "w", "type": 1}]},
            "item 1 ('Acme-VPN'): field 'a' is given twice",
        ),
        ({**_login(), "notes": "bell\x07"}, "item 1 ('Acme-VPN'): the note contains control characters"),
    ],
)
def test_each_bad_bitwarden_item_is_named_by_its_number_and_reason(item: Any, says: str) -> None:
    plan = _plan(_bitwarden(_login(name="first"), item))
    (reason,) = _reasons(plan)
    assert reason.startswith(says.replace("item 1", "item 2")), reason
    _no_password_in(plan)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (b"name,password\n", "the file is not JSON"),
        (b"[1, 2]", "not a Bitwarden export"),
        (b'{"encrypted": true, "data": "2.abc"}', "the Bitwarden export is encrypted"),
        (b'{"encrypted": false, "items": {}}', "not a Bitwarden export"),
        (b"[" * 100_000 + b"]" * 100_000, "the file is not JSON"),
    ],
)
def test_a_file_that_is_not_an_unencrypted_bitwarden_export_is_refused(text: bytes, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        imports.parse(text, "bitwarden")


# -- adding --------------------------------------------------------------------------------------


class _Secrets:
    """A ``vault.secrets`` stand-in that records each add and fails at the ``fail_at``-th."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.added: list[tuple[str, str, dict[str, Any]]] = []
        self.fail_at = fail_at

    def add(self, ref: str, *, password: str, **metadata: Any) -> object:
        if self.fail_at is not None and len(self.added) + 1 == self.fail_at:
            raise StoreUnavailable("the database failed")
        self.added.append((ref, password, metadata))
        return None


def test_add_planned_adds_each_row_through_secrets_add_with_its_metadata() -> None:
    plan = _plan(_csv(f"fw01,equipment,admin,{PASSWORDS[0]},,10.0.0.1,", f"m365,,,{PASSWORDS[1]},,,"))
    secrets, seen = _Secrets(), []
    imports.add_planned(secrets, plan, Progress(report=lambda done, total: seen.append((done, total))))
    assert [(ref, pw) for ref, pw, _ in secrets.added] == [("acme/fw01", PASSWORDS[0]), ("acme/m365", PASSWORDS[1])]
    assert secrets.added[0][2] == {
        "kind": "equipment", "username": "admin", "url": None, "host": "10.0.0.1", "note": None,
        "fields": {}, "sensitive_fields": None, "public_fields": None,
    }  # fmt: skip
    assert seen == [(1, 2), (2, 2)]


def test_an_import_stopped_half_way_counts_what_was_added_and_skip_existing_adds_the_rest() -> None:
    parsed = _csv(*(f"s{n},,,pw-{n},,," for n in range(5)))
    secrets, progress = _Secrets(fail_at=3), Progress()
    with pytest.raises(StoreUnavailable):
        imports.add_planned(secrets, _plan(parsed), progress)
    assert progress.added == 2 and [ref for ref, _, _ in secrets.added] == ["acme/s0", "acme/s1"]
    stored = {ref.split("/")[1] for ref, _, _ in secrets.added}
    again = _plan(parsed, tuple(stored), skip=True)
    secrets.fail_at = None
    imports.add_planned(secrets, again, Progress())
    assert [ref for ref, _, _ in secrets.added] == [f"acme/s{n}" for n in range(5)]  # each once


def test_a_plan_with_problems_adds_nothing() -> None:
    secrets = _Secrets()
    with pytest.raises(InvalidInput, match="nothing is imported"):
        imports.add_planned(secrets, _plan(_csv("a,,,pw,,,", ",,,pw,,,")), Progress())
    assert secrets.added == []


def test_a_rows_repr_never_shows_its_password_or_fields() -> None:
    (row,) = _bitwarden(_login(totp=PASSWORDS[3], username="u")).rows
    assert PASSWORDS[0] not in repr(row) and PASSWORDS[3] not in repr(row)


# -- fuzzing: only InvalidInput, and no password quoted, whatever the file ---------------------------

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CSV_SEED = (
    HEADER + f'fw01,equipment,admin,{PASSWORDS[0]},,10.0.0.1,"rack\n4"\nxero,service,,{PASSWORDS[1]},https://x,,\n'
)
BITWARDEN_SEED = json.dumps(
    {"encrypted": False, "items": [{**_login(totp=PASSWORDS[3], uris=[{"uri": "https://x"}]), "fields": [
        {"name": "enable", "value": PASSWORDS[2], "type": 1}, {"name": "vlan", "value": "2", "type": 0}]}]}
)  # fmt: skip


@st.composite
def _mutated(draw: st.DrawFn, seed: str) -> str:
    """``seed`` with a few characters replaced, inserted or deleted (quotes, commas, line breaks likely)."""
    text = list(seed)
    chars = st.one_of(st.sampled_from(list(',"\n\r{}[]:\\ \x00\x1b')), st.characters())
    for _ in range(draw(st.integers(1, 5))):
        at = draw(st.integers(0, len(text) - 1))
        op = draw(st.sampled_from(["replace", "insert", "delete"]))
        if op == "delete":
            del text[at]
        elif op == "insert":
            text.insert(at, draw(chars))
        else:
            text[at] = draw(chars)
    return "".join(text)


def _only_invalid_input(data: bytes, fmt: str, quoted_passwords: bool) -> None:
    try:
        plan = _plan(imports.parse(data, fmt), ("xero",))
    except InvalidInput as error:
        text = f"{error} {error.hint}"
    else:
        text = "\n".join(_reasons(plan)) + repr(plan)
    if not quoted_passwords:
        assert not any(password[:8] in text for password in PASSWORDS), text


@FUZZ
@given(_mutated(CSV_SEED))
def test_a_mutated_csv_fails_only_with_invalid_input_and_quotes_no_password(text: str) -> None:
    _only_invalid_input(text.encode("utf-8", "surrogatepass"), "csv", quoted_passwords=False)


@FUZZ
@given(_mutated(BITWARDEN_SEED))
def test_a_mutated_bitwarden_export_fails_only_with_invalid_input(text: str) -> None:
    _only_invalid_input(text.encode("utf-8", "surrogatepass"), "bitwarden", quoted_passwords=True)


@FUZZ
@given(st.binary(max_size=400), st.sampled_from(imports.FORMATS))
def test_random_bytes_fail_only_with_invalid_input(data: bytes, fmt: str) -> None:
    _only_invalid_input(data, fmt, quoted_passwords=True)
