"""A remote PostgreSQL server is judged by every address libpq may connect to: ``hostaddr``
(which libpq connects to instead of resolving ``host``) and every host of a multi-host URL."""

from __future__ import annotations

import pytest

from vault.errors import ConfigurationError
from vault.storage import engine as storage


@pytest.fixture(autouse=True)
def _no_libpq_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (storage.INSECURE_DB_ENV, "PGHOST", "PGHOSTADDR", "PGSSLMODE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://vault@localhost/credvault?hostaddr=203.0.113.5",
        "postgresql+psycopg://vault@localhost/credvault?host=localhost&host=db.example.net",
        "postgresql+psycopg://vault@/credvault?host=/var/run/postgresql,db.example.net",
        "postgresql+psycopg://vault@db.example.net/credvault?host=/var/run/postgresql",
        "postgresql+psycopg://vault@/credvault?host=127.0.0.1:5439&host=203.0.113.5:5432",
        "postgresql+psycopg://vault@/credvault?host=localhost:5432,db.example.net:5432",
    ],
)
def test_a_remote_address_behind_a_local_host_name_needs_verified_tls(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:  # before the fix: judged local, no TLS required
        storage.make_engine(url)
    assert "verify-full" in caught.value.hint
    storage.make_engine(url + "&sslmode=verify-full").dispose()


def test_the_libpq_hostaddr_variable_is_judged_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOSTADDR", "203.0.113.5")
    with pytest.raises(ConfigurationError):
        storage.make_engine("postgresql+psycopg://vault@localhost/credvault")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://vault@localhost/credvault?hostaddr=127.0.0.1",
        "postgresql+psycopg://vault@/credvault?host=/var/run/postgresql,localhost",
        "postgresql+psycopg://vault@localhost/credvault?host=localhost&host=::1",
        # a multi-host URL gives each host its port (deployment.md: a primary and a standby on loopback)
        "postgresql+psycopg://vault@/credvault?host=127.0.0.1:5439&host=127.0.0.1:5432",
        "postgresql+psycopg://vault@/credvault?host=localhost:5439,[::1]:5432",
    ],
)
def test_local_addresses_still_need_no_tls(url: str) -> None:
    storage.make_engine(url).dispose()


def test_pghost_does_not_count_when_the_url_names_its_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST", "db.example.net")  # libpq uses the URL's host, not this
    storage.make_engine("postgresql+psycopg://vault@localhost/credvault").dispose()
