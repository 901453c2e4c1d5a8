"""No client data reaches the database in clear: a byte scan of the raw SQLite file, its
WAL and shared-memory files, and a dump of every row on both engines find none of it."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text

from vault import Vault
from vault.crypto.keyrecord import FLOOR

ADMIN_PASS = "admin passphrase Zq81 ✓"
ENGINEER_PASS = "engineer passphrase Wv03 ✓"
PLAINTEXTS = [
    # client slug and display name
    "contoso-plc",
    "Contoso Widgets International",
    # secret names
    "edge-router-7",
    "payroll-db-svc",
    # usernames, hosts, URLs
    "netadmin-kx42",
    "svc_payroll_q9",
    "edge7.contoso-widgets.example",
    "10.213.77.41",
    "https://payroll.contoso-widgets.example/admin",
    # notes and custom fields
    "Reset via console port in cabinet B4",
    "second line of the note Q3",
    "ilo-license-key",
    "LIC-9Q7Z-KK2M-0042",
    # passwords, including superseded versions
    "Ro7ter!Pass-one",
    "Ro7ter!Pass-two",
    "Payr0ll-Db-Pw-\u00e9\u00e8",
    "Gen-Pw-Δλ-991",
    # passphrases are never stored either
    ADMIN_PASS,
    ENGINEER_PASS,
]


def populate(url: str) -> Vault:
    admin, _ = Vault.create(url, admin="root-admin", passphrase=ADMIN_PASS, kdf_params=FLOOR)
    admin.engineers.unlock("root-admin", ADMIN_PASS)
    admin.clients.add("contoso-plc", "Contoso Widgets International")
    admin.secrets.add(
        "contoso-plc/edge-router-7",
        password="Ro7ter!Pass-one",
        kind="equipment",
        username="netadmin-kx42",
        host="edge7.contoso-widgets.example",
        note="Reset via console port in cabinet B4\nsecond line of the note Q3",
        fields={"ilo-license-key": "LIC-9Q7Z-KK2M-0042"},
    )
    admin.secrets.update("contoso-plc/edge-router-7", password="Ro7ter!Pass-two", host="10.213.77.41")
    admin.secrets.add(
        "contoso-plc/payroll-db-svc",
        password="Payr0ll-Db-Pw-\u00e9\u00e8",
        kind="service",
        username="svc_payroll_q9",
        url="https://payroll.contoso-widgets.example/admin",
    )
    admin.secrets.update("contoso-plc/payroll-db-svc", password="Gen-Pw-Δλ-991")
    code = admin.engineers.invite("erin")
    erin = Vault.open(url, engineer="erin", kdf_params=FLOOR)
    admin.engineers.confirm("erin", erin.engineers.enroll("erin", code, ENGINEER_PASS))
    erin.engineers.unlock("erin", ENGINEER_PASS)
    admin.grants.grant("erin", "contoso-plc")
    assert erin.checkouts.reveal("contoso-plc/edge-router-7", reason="T-9") == "Ro7ter!Pass-two"
    assert erin.secrets.show("contoso-plc/payroll-db-svc").username == "svc_payroll_q9"
    erin.close()
    return admin


def leaks(raw: bytes) -> list[str]:
    return [p for p in PLAINTEXTS if p.encode("utf-8") in raw or p.encode("utf-16-le") in raw]


def test_the_raw_sqlite_file_and_its_wal_hold_no_plaintext(sqlite_url):
    admin = populate(sqlite_url)
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    try:
        files = [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]
        assert Path(f"{path}-wal") in files, "the vault should be in WAL mode with a live WAL"
        assert Path(f"{path}-wal").stat().st_size > 0
        for file in files:  # while the vault is open: the data is still in the WAL
            assert leaks(file.read_bytes()) == [], f"plaintext in {file.name}"
    finally:
        admin.close()
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):  # after the checkpoint on close
        if file.exists():
            assert leaks(file.read_bytes()) == [], f"plaintext in {file.name} after close"
    assert (
        b"erin" in path.read_bytes() or b"erin" in Path(f"{path}-wal").read_bytes()
    )  # the scan does see plain columns


def test_no_row_of_any_table_holds_plaintext(db_url):
    admin = populate(db_url)
    try:
        engine = admin.store.engine
        cells = 0
        with engine.connect() as conn:
            for table in inspect(engine).get_table_names():
                quoted = engine.dialect.identifier_preparer.quote(table)
                for row in conn.execute(text(f"SELECT * FROM {quoted}")):
                    for value in row:
                        cells += 1
                        raw = (
                            bytes(value)
                            if isinstance(value, (bytes, bytearray, memoryview))
                            else str(value).encode("utf-8")
                        )
                        assert leaks(raw) == [], f"plaintext in {table}: {leaks(raw)}"
        assert cells > 100
    finally:
        admin.close()
