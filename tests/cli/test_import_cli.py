"""`credvault secret import`: on SQLite, PostgreSQL and through a real team server (``ready_any_engine``),
and through the agent (``short_workspace``). What was stored is checked through the library: the
secrets, their fields and passwords, and one ``secret-create`` event per secret; a refusal writes
nothing; no password is ever printed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_workspace import ADMIN, ENGINEER, Workspace, assert_clean_error, ok
from click.testing import Result
from sqlalchemy import func, select

from vault.errors import StoreUnavailable
from vault.service.remote_nouns import RemoteSecrets
from vault.service.secrets import Secrets
from vault.storage import models as m

PASSWORDS = [f"Imp0rt-secret-{n}-xyz" for n in range(6)]
TOTP = "JBSWY3DPEHPK3PXP"
ROWS = [
    f'sw01,equipment,admin,{PASSWORDS[0]},,10.0.0.2,"rack 4\nshelf 2"',
    f"xero,service,ops@acme.example,{PASSWORDS[1]},https://login.xero.com,,",
    f"printer,,,{PASSWORDS[2]},,,",
]


def _csv(tmp: Path, *rows: str, name: str = "import.csv") -> str:
    path = tmp / name
    path.write_text("name,kind,username,password,url,host,note\n" + "".join(r + "\n" for r in rows), encoding="utf-8")
    path.chmod(0o600)
    return str(path)


def _created(ws: Workspace) -> tuple[int, int]:
    """(secrets stored, secret-create events) in the vault's database."""
    vault = ws.open()
    try:
        with vault.store.transaction() as s:
            secrets = int(s.scalar(select(func.count()).select_from(m.Secret)))
            events = select(func.count()).select_from(m.AuditEvent).where(m.AuditEvent.action == "secret-create")
            return secrets, int(s.scalar(events))
    finally:
        vault.close()


def _no_password(*outputs: str) -> None:
    for text in outputs:
        for password in [*PASSWORDS, TOTP]:
            assert password not in text


def test_an_import_stores_each_row_as_an_add(ready_any_engine: Workspace, tmp_path: Path) -> None:
    ws = ready_any_engine
    before = _created(ws)
    result = ok(ws.admin("secret", "import", _csv(tmp_path, *ROWS), "--client", "acme"))
    assert "Added 3 secret(s) to acme." in result.stdout
    assert "holds passwords in plain text" in result.stderr
    item = {
        "type": 1,
        "name": "vpn",
        "notes": None,
        "login": {"username": "vpn-admin", "password": PASSWORDS[3], "totp": TOTP, "uris": [{"uri": "https://vpn"}]},
        "fields": [{"name": "vlan", "value": "20", "type": 0}, {"name": "enable", "value": PASSWORDS[4], "type": 1}],
    }
    note = {"type": 2, "name": "wifi", "notes": "left out"}
    export = json.dumps({"encrypted": False, "items": [item, note]})
    bitwarden = ok(ws.admin("secret", "import", "-", "--client", "acme", "--format", "bitwarden", input=export))
    assert "Added 1 secret(s) to acme." in bitwarden.stdout and "item 2 ('wifi'): a secure note" in bitwarden.stderr
    _no_password(result.output, bitwarden.output)
    assert _created(ws) == (before[0] + 4, before[1] + 4)

    admin = ws.library()
    sw01, xero, vpn = (admin.secrets.show(f"acme/{name}") for name in ("sw01", "xero", "vpn"))
    assert (sw01.kind, sw01.username, sw01.host, sw01.note, sw01.version) == (
        "equipment", "admin", "10.0.0.2", "rack 4\nshelf 2", 1,
    )  # fmt: skip
    assert (xero.kind, xero.url) == ("service", "https://login.xero.com")
    assert admin.secrets.show("acme/printer").kind == "other"
    assert (vpn.username, vpn.url, vpn.fields) == ("vpn-admin", "https://vpn", {"vlan": "20"})
    assert vpn.sensitive_fields == ("enable", "totp")
    for ref, password in (("acme/sw01", PASSWORDS[0]), ("acme/printer", PASSWORDS[2]), ("acme/vpn", PASSWORDS[3])):
        assert admin.checkouts.reveal(ref, reason="test") == password
    assert admin.checkouts.reveal("acme/vpn", reason="test", field="totp") == TOTP
    created = [e for e in admin.audit.log(client="acme") if e.action == "secret-create"]
    assert {e.secret for e in created} >= {"sw01", "xero", "printer", "vpn"}
    assert {e.engineer for e in created} == {ADMIN}

    titled = json.dumps({"encrypted": False, "items": [{**item, "name": "Acme VPN (site 2)"}]})
    refused = ws.admin("secret", "import", "-", "--client", "acme", "--format", "bitwarden", input=titled)
    assert_clean_error(refused, *PASSWORDS)  # a title `secret add` refuses, as it is
    assert "--fix-names makes each name above into one a secret may have" in refused.stderr
    fixed = ok(ws.admin("secret", "import", "-", "--client", "acme", "--format", "bitwarden", "--fix-names",
                        input=titled))  # fmt: skip
    assert "item 1: named Acme-VPN-site-2" in fixed.stderr and "Added 1 secret(s)" in fixed.stdout
    assert ws.library().checkouts.reveal("acme/Acme-VPN-site-2", reason="test") == PASSWORDS[3]

    keepassxc = (
        '"Group","Title","Username","Password","URL","Notes","TOTP","Icon","Last Modified","Created"\n'
        f'"Root","core switch","admin","{PASSWORDS[5]}","","","{TOTP}","0","",""\n'
    )
    kept = ok(ws.admin("secret", "import", "-", "--client", "acme", "--format", "keepassxc", "--fix-names",
                       input=keepassxc))  # fmt: skip
    _no_password(kept.output)
    assert ws.library().checkouts.reveal("acme/core-switch", reason="test", field="totp") == TOTP


def test_a_refused_import_writes_nothing(ready_any_engine: Workspace, tmp_path: Path) -> None:
    ws = ready_any_engine
    before = _created(ws)
    bad = _csv(tmp_path, ROWS[0], f"bad name,weird,,{PASSWORDS[1]},,,", f",,,{PASSWORDS[2]},,,", ROWS[0])
    refused = ws.admin("secret", "import", bad, "--client", "acme")
    assert_clean_error(refused, *PASSWORDS)
    assert "line 4: the name is not one a secret may have" in refused.stderr
    assert "line 4: the kind is not one of: equipment, service, other" in refused.stderr
    assert "line 5: no name" in refused.stderr and "line 6: the name is also on line 2" in refused.stderr
    assert "3 row(s) of the file cannot be imported: nothing was written" in refused.stderr

    exists = _csv(tmp_path, ROWS[1], f"fw01-admin,,,{PASSWORDS[3]},,,", name="exists.csv")
    taken = ws.admin("secret", "import", exists, "--client", "acme")
    assert_clean_error(taken, *PASSWORDS)
    assert "line 3: acme/fw01-admin already exists (--skip-existing leaves it)" in taken.stderr

    latin = tmp_path / "latin.csv"
    latin.write_bytes("name,password\nx,café\n".encode("latin-1"))
    for args, says in [
        ((str(latin), "--client", "acme"), "the file is not UTF-8 text"),
        ((exists, "--client", "acme", "--format", "bitwarden"), "the file is not JSON"),
        ((exists, "--client", "nope"), "no client"),
        ((str(tmp_path / "missing.csv"), "--client", "acme"), "cannot read"),
    ]:
        result = ws.admin("secret", "import", *args)
        assert_clean_error(result, *PASSWORDS)
        assert says in result.stderr, result.stderr
    header = ws.admin("secret", "import", "-", "--client", "acme", input="name,password,colour\nx,y,z\n")
    assert_clean_error(header)
    assert "line 1: unknown column 3 (counted from 1)" in header.stderr
    huge = tmp_path / "huge.csv"
    huge.write_bytes(b"name,password\n" + b"x" * (10 * 1024 * 1024))
    assert "larger than 10 MiB" in ws.admin("secret", "import", str(huge), "--client", "acme").stderr

    dry = ok(ws.admin("secret", "import", _csv(tmp_path, *ROWS, name="dry.csv"), "--client", "acme", "--dry-run"))
    assert "would add acme/sw01 (equipment)" in dry.stdout and "Nothing was written (--dry-run)." in dry.stdout
    _no_password(dry.output)
    denied = ws.as_engineer(ENGINEER, "secret", "import", "-", "--client", "acme", input="name,password\nx,y\n")
    assert denied.exit_code == 1 and "credvault: error:" in denied.stderr  # no grant: no client to read
    assert _created(ws) == before


def _import_failing(ws: Workspace, patch: pytest.MonkeyPatch, count: int, error: BaseException, *args: str) -> Result:
    """``secret import ARGS`` with ``secrets.add`` (in-process or remote) raising ``error`` at its ``count``-th call."""
    calls = {"n": 0}

    def wrap(original: Any) -> Any:
        def add(self: Any, ref: str, **kwargs: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == count:
                raise error
            return original(self, ref, **kwargs)

        return add

    with patch.context() as patched:
        patched.setattr(Secrets, "add", wrap(Secrets.add))
        patched.setattr(RemoteSecrets, "add", wrap(RemoteSecrets.add))
        return ws.admin("secret", "import", *args)


def test_an_import_stopped_half_way_is_finished_by_skip_existing(
    ready_any_engine: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = ready_any_engine
    before = _created(ws)
    rows = [*ROWS, f"nas,,,{PASSWORDS[4]},,,", f"ups,,,{PASSWORDS[5]},,,"]
    file = _csv(tmp_path, *rows)
    failed = _import_failing(ws, monkeypatch, 3, StoreUnavailable("the database failed"), file, "--client", "acme")
    assert_clean_error(failed, *PASSWORDS)
    assert "The import stopped: 2 of 5 secret(s) were added to acme and stay." in failed.stderr
    interrupted = _import_failing(ws, monkeypatch, 1, KeyboardInterrupt(), file, "--client", "acme", "--skip-existing")
    assert interrupted.exit_code == 130 and "credvault: error: interrupted" in interrupted.stderr  # Ctrl-C
    assert "The import stopped: nothing was added." in interrupted.stderr
    for stopped in (failed, interrupted):
        assert "Run the same command again with --skip-existing to add the rest" in stopped.stderr
        _no_password(stopped.output)
    assert _created(ws) == (before[0] + 2, before[1] + 2)

    assert_clean_error(ws.admin("secret", "import", file, "--client", "acme"))  # two exist: refused
    ok(ws.admin("grant", ENGINEER, "acme"))
    rest = ok(ws.as_engineer(ENGINEER, "secret", "import", "-", "--client", "acme", "--skip-existing",
                             input="name,kind,username,password,url,host,note\n" + "\n".join(rows)))  # fmt: skip
    assert "Added 3 secret(s) to acme; 2 the client already has left as they are." in rest.stdout
    _no_password(rest.output)
    assert _created(ws) == (before[0] + 5, before[1] + 5)
    admin = ws.library()
    creators = {e.secret: e.engineer for e in admin.audit.log(client="acme") if e.action == "secret-create"}
    assert {name: creators[name] for name in ("sw01", "xero", "printer", "nas", "ups")} == {
        "sw01": ADMIN, "xero": ADMIN, "printer": ENGINEER, "nas": ENGINEER, "ups": ENGINEER,
    }  # fmt: skip
    assert all(s.version == 1 for s in admin.secrets.list("acme"))  # nothing added twice


def test_an_import_through_the_agent_is_on_record_as_adds(short_workspace: Workspace, tmp_path: Path) -> None:
    """No keyring session and no passphrase file: the list and each add can only go through the agent."""
    ws = short_workspace
    ws.init()
    ok(ws.admin("client", "add", "acme", "--name", "Acme Ltd"))
    ok(ws.admin("lock"))
    ok(ws.admin("agent", "start", "--passphrase-file", ws.passfiles[ADMIN]))
    result = ok(ws.admin("secret", "import", _csv(tmp_path, *ROWS), "--client", "acme"))
    assert "Added 3 secret(s) to acme." in result.stdout
    _no_password(result.output)
    assert _created(ws) == (3, 3)
    assert ws.library().checkouts.reveal("acme/xero", reason="test") == PASSWORDS[1]


def test_the_commands_formats_and_size_bound_are_the_librarys() -> None:
    """Named again in the command so that its --help imports nothing: they must not drift apart."""
    from vault.cli import secret_import

    from vault.service import imports

    assert (secret_import.FORMATS, secret_import.MAX_BYTES) == (imports.FORMATS, imports.MAX_BYTES)
