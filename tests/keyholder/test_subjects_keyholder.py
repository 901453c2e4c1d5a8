"""The subjects' keyholder against an authority that returns tampered rows.

A real admin's ``vault.subjects.find`` / ``purge``, whose transport hands the rows the
authority shows the search through a function that changes them. The insider is a
compromised authority: it answers a search with another client's rows under this
client's id (blobs bound to their client do not open: nothing of them is shown under
the wrong client), slips in a version of another client's secret, swaps a client-key
record or its signer, or answers for another admin. Each is refused, or passed over where
an unreadable version always was; a refusal records no event. The first case is the control.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from vault import Vault
from vault.authority.subjects import SubjectRows
from vault.crypto.keyrecord import FLOOR as FAST_KDF
from vault.errors import DecryptionFailed, Locked, UntrustedRecord
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m

ADMIN, ADMIN_PASS = "root-admin", "admin passphrase of this module"
Tamper = Callable[[SubjectRows], SubjectRows]


def fixed_clock() -> Any:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return lambda: now


class TamperingTransport:
    def __init__(self, real: Any, tamper: Tamper) -> None:
        self.real, self.tamper = real, tamper

    def search(self, request: Any, seal: Any) -> SubjectRows:
        tamper = self.tamper

        class Seal:
            def search(self, draft: SubjectRows) -> int:
                return seal.search(tamper(draft))

        return tamper(self.real.search(request, Seal()))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("subjects-keyholder") / "vault.db"
    url, clock = f"sqlite:///{path}", fixed_clock()
    admin, _ = Vault.create(url, admin=ADMIN, passphrase=ADMIN_PASS, clock=clock, kdf_params=FAST_KDF)
    admin.engineers.unlock(ADMIN, ADMIN_PASS)
    admin.clients.add("acme", "Acme Ltd")
    admin.clients.add("beta", "Beta Ltd")
    admin.secrets.add("acme/fw01", password="subjects-keyholder-Pw-1", username="fw-admin")
    admin.secrets.add("beta/mail", password="subjects-keyholder-Pw-2", username="jane@example.com")
    admin.close()
    return path


@pytest.fixture
def admin(template: Path, tmp_path: Path) -> Iterator[Vault]:
    for suffix in ("", "-wal"):
        if Path(f"{template}{suffix}").exists():
            shutil.copy(f"{template}{suffix}", tmp_path / f"vault.db{suffix}")
    url = f"sqlite:///{tmp_path / 'vault.db'}"
    vault = Vault.open(url, engineer=ADMIN, clock=fixed_clock(), kdf_params=FAST_KDF, sessions=MemorySessionStore())
    vault.engineers.unlock(ADMIN, ADMIN_PASS)
    yield vault


def _tamper(vault: Vault, tamper: Tamper) -> None:
    holder = vault.subjects.keyholder
    holder.transport = TamperingTransport(holder.transport, tamper)
    vault.subjects.keys.client_keys.clear()  # the keys must come from the rows sent, verified


def _events(vault: Vault) -> int:
    with vault.core.store.transaction() as s:
        return int(s.scalar(select(func.count()).select_from(m.AuditEvent)) or 0)


def _client(r: SubjectRows, index: int, **changes: Any) -> SubjectRows:
    clients = list(r.clients)
    clients[index] = dataclasses.replace(clients[index], **changes)
    return dataclasses.replace(r, clients=tuple(clients))


def test_the_control_an_untampered_search_finds_the_person(admin: Vault) -> None:
    _tamper(admin, lambda r: r)
    (match,) = admin.subjects.find("jane@example")
    assert (match.client, match.secret, match.field) == ("beta", "mail", "username")


def test_another_clients_versions_answered_under_this_client_show_nothing(admin: Vault) -> None:
    """beta's version presented as acme's: its data key is bound to beta, so it does not open
    under acme, and the person is not reported as held by acme."""

    def move(r: SubjectRows) -> SubjectRows:
        acme, beta = r.clients
        return _client(r, 0, secret_ids=acme.secret_ids + beta.secret_ids, versions=acme.versions + beta.versions)

    _tamper(admin, lambda r: _client(move(r), 1, secret_ids=(), versions=()))
    assert admin.subjects.find("jane@example") == []


@pytest.mark.parametrize(
    ("change", "error"),
    [
        pytest.param(
            lambda r: _client(r, 0, versions=r.clients[0].versions + r.clients[1].versions),
            UntrustedRecord,
            id="a-version-of-another-clients-secret",
        ),
        pytest.param(lambda r: _client(r, 0, slug_blob=r.clients[1].slug_blob), DecryptionFailed, id="another-slug"),
        pytest.param(lambda r: _client(r, 0, name_blob=r.clients[1].name_blob), DecryptionFailed, id="another-name"),
        pytest.param(lambda r: _client(r, 0, keys=r.clients[1].keys), DecryptionFailed, id="another-clients-key"),
        pytest.param(
            lambda r: _client(
                r,
                0,
                keys=tuple(
                    dataclasses.replace(k, signer=k.signer._replace(role="engineer")) for k in r.clients[0].keys
                ),
            ),
            UntrustedRecord,
            id="a-key-record-signed-by-an-engineer",
        ),
        pytest.param(
            lambda r: _client(
                r,
                0,
                keys=tuple(
                    dataclasses.replace(k, record=dataclasses.replace(k.record, fingerprint=b"\x00" * 16))
                    for k in r.clients[0].keys
                ),
            ),
            UntrustedRecord,
            id="a-forged-key-fingerprint",
        ),
        pytest.param(
            lambda r: dataclasses.replace(r, clients=r.clients[::-1]), UntrustedRecord, id="clients-out-of-order"
        ),
        pytest.param(lambda r: dataclasses.replace(r, me=r.me._replace(id=r.me.id + 1)), Locked, id="another-admin"),
        pytest.param(lambda r: dataclasses.replace(r, vault_id=b"\x09" * 16), UntrustedRecord, id="another-vault"),
    ],
)
def test_a_forged_search_is_refused_and_records_nothing(admin: Vault, change: Tamper, error: type[Exception]) -> None:
    before = _events(admin)
    _tamper(admin, change)
    with pytest.raises(error):
        admin.subjects.find("jane@example")
    assert _events(admin) == before


def test_a_subject_purge_over_forged_rows_purges_nothing(admin: Vault) -> None:
    with admin.core.store.transaction() as s:
        before = int(s.scalar(select(func.count()).select_from(m.Secret)) or 0)
    _tamper(admin, lambda r: _client(r, 1, slug_blob=r.clients[0].slug_blob))
    with pytest.raises(DecryptionFailed):
        admin.subjects.purge("jane@example", request="REQ-900")
    with admin.core.store.transaction() as s:
        assert int(s.scalar(select(func.count()).select_from(m.Secret)) or 0) == before
        assert s.scalar(select(func.count()).select_from(m.PurgeReceipt)) == 0
