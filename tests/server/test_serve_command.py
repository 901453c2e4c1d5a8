"""``credvault serve``: its option checks (TLS unless loopback), and the server it configures.

The command itself is run through the click CLI up to the point where it would listen; the
configuration it builds is the one the ``served`` fixture runs (``uvicorn_config``)."""

from __future__ import annotations

import gc
import logging
import os

import pytest
from click.testing import CliRunner
from server_harness import CertificateFiles
from vault.cli.main import cli

from vault.errors import ConfigurationError
from vault.server import running
from vault.server.running import ServeOptions, checked, is_loopback, split_bind


@pytest.mark.parametrize("bind", ["0.0.0.0:8443", "10.0.0.5:8443", "[::]:8443", "vault.example.net:8443"])
def test_serving_off_loopback_without_tls_is_refused(bind: str, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(running, "Store", lambda url: pytest.fail("the store was opened"))
    result = CliRunner().invoke(cli, ["serve", "--db", f"sqlite:///{tmp_path / 'v.db'}", "--bind", bind])
    assert result.exit_code == 1
    host = bind.rpartition(":")[0].strip("[]")
    assert f"credvault: error: refusing to serve on {host} without TLS" in result.stderr
    assert "hint: pass --tls-cert FILE --tls-key FILE" in result.stderr


def test_a_certificate_without_its_key_is_refused(test_ca: CertificateFiles, tmp_path) -> None:  # type: ignore[no-untyped-def]
    args = ["serve", "--db", f"sqlite:///{tmp_path / 'v.db'}", "--bind", "0.0.0.0:8443"]
    result = CliRunner().invoke(cli, [*args, "--tls-cert", str(test_ca.cert_file)])
    assert result.exit_code == 1
    assert "credvault: error: --tls-cert and --tls-key go together" in result.stderr


@pytest.mark.parametrize("bind", ["8443", ":8443", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:70000", "127.0.0.1:x"])
def test_a_bind_that_is_not_host_port_is_refused(bind: str) -> None:
    with pytest.raises(ConfigurationError):
        split_bind(bind)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("localhost.evil.example", False),
        ("127.0.0.1.nip.io", False),
    ],
)
def test_loopback_is_the_loopback_range_only(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_the_public_url_defaults_to_the_bind_address() -> None:
    assert checked(ServeOptions("sqlite://", bind="127.0.0.1:9000"))[2] == "http://127.0.0.1:9000"
    tls = ServeOptions("sqlite://", bind="0.0.0.0:9000", tls_cert="c", tls_key="k", public_url="https://v.example")
    assert checked(tls) == ("0.0.0.0", 9000, "https://v.example")
    assert checked(ServeOptions("sqlite://", bind="[::1]:9000"))[2] == "http://[::1]:9000"


def test_serve_runs_uvicorn_with_the_options_given(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """On loopback without TLS the command builds the app and hands uvicorn this configuration."""
    seen = {}

    class FakeServer:
        def __init__(self, config) -> None:  # type: ignore[no-untyped-def]
            seen["config"] = config

        def run(self) -> None:
            logging.getLogger("credvault.access").info("a line")

    monkeypatch.setattr(running.uvicorn, "Server", FakeServer)
    before = list(logging.getLogger("credvault.access").handlers)  # (another test's capture handlers, if any)
    log = tmp_path / "access.log"
    args = ["serve", "--db", f"sqlite:///{tmp_path / 'v.db'}", "--bind", "127.0.0.1:9443", "--access-log", str(log)]
    result = CliRunner().invoke(cli, [*args, "--max-body", "1000"])
    assert result.exit_code == 0, result.output
    config = seen["config"]
    assert (config.host, config.port, config.ssl_certfile, config.access_log, config.server_header) == (
        "127.0.0.1",
        9443,
        None,
        False,
        False,
    )
    assert log.read_text() == "a line\n"
    assert logging.getLogger("credvault.access").handlers == before  # its own removed once the server stopped


def test_a_trusted_proxy_that_is_not_a_cidr_is_refused_before_the_database_opens(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(running, "Store", lambda url: pytest.fail("the store was opened"))
    args = ["serve", "--db", f"sqlite:///{tmp_path / 'v.db'}", "--trusted-proxy", "10.0.0.0/8"]
    result = CliRunner().invoke(cli, [*args, "--trusted-proxy", "the-proxy"])
    assert result.exit_code == 1
    assert "credvault: error:" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("key", ["abc", "zz" * 32, "00" * 31, "00" * 33])
def test_an_organisation_key_that_is_not_64_hex_digits_is_refused(key: str, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(running, "Store", lambda url: pytest.fail("the store was opened"))
    result = CliRunner().invoke(cli, ["serve", "--db", f"sqlite:///{tmp_path / 'v.db'}", "--org-key", key])
    assert result.exit_code == 1
    assert "credvault: error: --org-key is the organisation signing key as 64 hex digits" in result.stderr


def test_the_organisation_key_given_is_the_one_pinned() -> None:
    key = bytes(range(32))
    assert running.org_pin(ServeOptions("sqlite://", org_key=key.hex().upper())) == key
    assert running.org_pin(ServeOptions("sqlite://")) is None


def test_serve_with_a_master_key_layers_every_data_key_before_it_listens(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A key file holding a master key: every stored data key has the server's layer before
    uvicorn starts: none is left that a database copy opens."""
    import base64
    import json
    import os

    from sqlalchemy import select

    from vault import Vault
    from vault.crypto.keyrecord import FLOOR
    from vault.crypto.labels import BLOB_DATA_KEY, BLOB_SERVER_LAYER
    from vault.storage import models as m

    url = f"sqlite:///{tmp_path / 'v.db'}"
    vault, _ = Vault.create(url, admin="root-admin", passphrase="pass", kdf_params=FLOOR)
    vault.engineers.unlock("root-admin", "pass")
    vault.clients.add("acme", "Acme Ltd")
    for name in ("fw01", "fw02"):
        vault.secrets.add(f"acme/{name}", password=f"pw of {name}")

    def types() -> list[int]:
        with vault.store.read() as s:
            return [bytes(w)[1] for w in s.scalars(select(m.SecretVersion.wrapped_dek))]

    assert types() == [BLOB_DATA_KEY, BLOB_DATA_KEY]
    b64 = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=").decode()  # noqa: E731
    key_file = tmp_path / "server-key.json"
    key_file.write_text(json.dumps({"version": 1, "signing_seed": b64(os.urandom(32)), "master_version": 1,
                                    "master_key": b64(os.urandom(32))}))  # fmt: skip
    key_file.chmod(0o600)
    seen: dict[str, list[int]] = {}

    class FakeServer:
        def __init__(self, config) -> None:  # type: ignore[no-untyped-def]
            pass

        def run(self) -> None:
            seen["types"] = types()

    monkeypatch.setattr(running.uvicorn, "Server", FakeServer)
    result = CliRunner().invoke(cli, ["serve", "--db", url, "--bind", "127.0.0.1:9443", "--server-key", str(key_file)])
    vault.close()
    assert result.exit_code == 0, result.output
    assert seen["types"] == [BLOB_SERVER_LAYER, BLOB_SERVER_LAYER]


@pytest.mark.parametrize(
    "url", ["https://vault.example.net/credvault", "https://vault.example.net:8443/?x=1", "ftp://vault.example.net"]
)
def test_a_public_url_with_a_path_or_another_scheme_is_refused_with_a_hint(url: str) -> None:
    with pytest.raises(ConfigurationError, match="public-url") as raised:
        checked(ServeOptions("sqlite:///x.db", bind="127.0.0.1:8443", public_url=url))
    assert raised.value.hint


def test_the_public_url_may_end_with_a_slash() -> None:
    assert checked(ServeOptions("sqlite:///x.db", bind="127.0.0.1:8443", public_url="https://v.example.net/"))[2]


@pytest.mark.parametrize(("pool", "threads"), [(["--db-pool", "3"], 3), ([], 40)])
def test_db_pool_bounds_the_connections_and_the_request_threads(tmp_path, monkeypatch, pool, threads) -> None:  # type: ignore[no-untyped-def]
    """``--db-pool 3``: the store keeps at most 3 connections (no overflow) and the app lets at most 3
    requests into the thread pool, set on the server's loop at its first request. Without it:
    ``default_pool()`` connections, all kept (none opened on demand and closed on its return),
    anyio's 40 threads."""
    import asyncio

    import anyio.to_thread
    import httpx

    seen: dict[str, object] = {}
    real_store = running.Store

    def store(url: str, **kwargs: object) -> object:
        made = real_store(url, **kwargs)  # type: ignore[arg-type]
        seen["store"] = made
        return made

    class FakeServer:
        def __init__(self, config) -> None:  # type: ignore[no-untyped-def]
            seen["app"] = config.app

        def run(self) -> None:
            async def first_request() -> tuple[int, float]:
                transport = httpx.ASGITransport(app=seen["app"])  # type: ignore[arg-type]
                async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:9443") as client:
                    status = (await client.get("/healthz")).status_code
                return status, anyio.to_thread.current_default_thread_limiter().total_tokens

            seen["answer"] = asyncio.run(first_request())
            pool = seen["store"].engine.pool  # type: ignore[attr-defined]
            seen["pool"] = (pool.size(), pool._max_overflow)

    monkeypatch.setattr(running, "Store", store)
    monkeypatch.setattr(running.uvicorn, "Server", FakeServer)
    args = ["serve", "--db", f"sqlite:///{tmp_path / 'v.db'}", "--bind", "127.0.0.1:9443", *pool]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert seen["answer"] == (200, threads)
    assert seen["pool"] == (3, 0) if pool else (running.default_pool(), 0)
    refused = CliRunner().invoke(cli, [*args[:5], "--db-pool", "0"])
    assert refused.exit_code == 2 and "--db-pool" in refused.output


def test_serve_with_a_rotated_key_file_signs_with_the_certified_version(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """After ``serve rotate-key`` and before an admin certifies the next version, a (re)started server
    signs with the version the vault holds active: it is ready, and its identity names version 1."""
    from server_harness import asgi_call

    from vault import Vault
    from vault.crypto.keyrecord import FLOOR
    from vault.server.keyfile import new_key_file, read_server_keys
    from vault.service.serverkeys import certify_server_key

    url = f"sqlite:///{tmp_path / 'v.db'}"
    vault, _ = Vault.create(url, admin="root-admin", passphrase="pass", kdf_params=FLOOR)
    vault.engineers.unlock("root-admin", "pass")
    key_file = tmp_path / "server-key.json"
    made = new_key_file(key_file)
    certify_server_key(vault, made.signing.version, made.signing.public)
    vault.close()
    assert CliRunner().invoke(cli, ["serve", "rotate-key", "--server-key", str(key_file)]).exit_code == 0
    assert read_server_keys(key_file).signing.version == 2
    seen: dict[str, object] = {}

    class FakeServer:
        def __init__(self, config) -> None:  # type: ignore[no-untyped-def]
            seen["app"] = config.app

        def run(self) -> None:
            seen["ready"] = asgi_call(seen["app"], "GET", "/readyz").status_code
            seen["version"] = asgi_call(seen["app"], "GET", "/v1/identity").json()["server_key"]["version"]

    monkeypatch.setattr(running.uvicorn, "Server", FakeServer)
    result = CliRunner().invoke(cli, ["serve", "--db", url, "--bind", "127.0.0.1:9443", "--server-key", str(key_file)])
    assert result.exit_code == 0, result.output
    assert (seen["ready"], seen["version"]) == (200, 1)


def test_settle_heap_moves_what_the_server_holds_out_of_the_collectors_generations() -> None:
    """``serve`` calls it once the app is built: a full collection then skips the loaded program."""
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        running.settle_heap()
        assert gc.get_freeze_count() > 10_000  # the modules, the app, the compiled schemas
        assert sum(gc.get_count()) < 100  # a collection ran just before
    finally:
        gc.unfreeze()


@pytest.mark.parametrize(("cores", "pool"), [(1, 4), (2, 4), (3, 6), (7, 14), (8, 15), (64, 15)])
def test_the_default_pool_is_twice_the_cores_between_4_and_15(cores: int, pool: int) -> None:
    assert running.default_pool(cores) == pool


def test_the_default_pool_counts_the_cores_this_process_may_run_on() -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    assert running.default_pool() == max(4, min(15, 2 * cores))
