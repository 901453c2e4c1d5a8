"""W16's team load: engineers checking out through two ``credvault serve`` processes on PostgreSQL.

The step (``team_step``) takes a PostgreSQL data set (``bench/dataset.py``, event format 2 up
to then), has its admin certify a server key, writes the server key file (0600) and a TLS
certificate, and starts two ``credvault serve`` subprocesses on loopback (each its own port,
TLS, ``--server-key``, ``--org-key`` read from the database: what an operator would pass).
Then:

* **Statements.** One checkout through an in-process copy of the same app, with every SQL
  statement it runs recorded (``capture``): the authentication read (rolled back), then the
  checkout's unit (the nonce, the caller, the target, the locks, the event, the head, the hold,
  the last-use update, the commit). The baseline replays exactly these texts with raw psycopg.
* **Through the servers.** N engineer processes (forked, as W7's), engineer i on server
  i mod 2, each with its own ``HttpsTransport`` and kept-alive connection, check out random
  secrets of their grants for the window; every acknowledged checkout (a value returned and
  equal to the data set's) is counted, every failure by class.
* **Checks** (before the baseline writes anything): one ``checkout`` event per acknowledged
  checkout since the start (no lost event, none extra), the seqs contiguous from the head
  before, and ``audit verify`` accepting the whole chain.
* **Raw psycopg.** The same N processes, for the same window, each replaying the captured
  statements in its own psycopg connection with its own engineer's ids and random secrets of
  its grants: the head read ``FOR UPDATE`` gives the next seq, the event row carries random
  bytes for its hash and signature (no Python of credvault, no HTTP, no crypto). Its events
  are junk for ``audit verify``: it runs after the checks, on the same database.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event, func, select
from sqlalchemy.engine import make_url

from bench import dataset
from bench.server_checkout import make_certificates
from bench.step import log
from bench.timing import median, percentile
from vault.crypto.serverkey import ServerSigningKey
from vault.errors import VaultError
from vault.service.checkouts import https_checkout_keyholder
from vault.service.serverkeys import certify_server_key
from vault.storage import models as m
from vault.transport.https import HttpsTransport

REASON = "bench team load over the server"
# (SQL text, parameters, the psycopg pipeline it was sent in: 0 for none, else 1, 2, … in order), or
# ("COMMIT" | "ROLLBACK", None, 0)
Statement = tuple[str, Any, int]


# -- the servers ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def credvault_command() -> list[str]:
    """The ``credvault`` console script next to this interpreter (else the click CLI as a module)."""
    script = Path(sys.executable).with_name("credvault")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from vault.cli.fast import main; main()"]


class Served(list[str]):
    """The servers' base URLs, and their process ids (for their CPU time, ``CpuProbe``)."""

    pids: list[int]


@contextmanager
def serve_processes(url: str, folder: Path, count: int, key: ServerSigningKey, org_key: bytes) -> Iterator[Served]:
    """``count`` ``credvault serve`` subprocesses over ``url``; their base URLs, once each answers."""
    key_file = folder / "server-key.json"
    seed = base64.urlsafe_b64encode(key.key.seed).rstrip(b"=").decode("ascii")
    key_file.write_text(json.dumps({"version": key.version, "signing_seed": seed}))
    key_file.chmod(0o600)
    ca, cert, tls_key = make_certificates(folder)
    procs: list[subprocess.Popen[bytes]] = []
    urls = Served()
    try:
        for i in range(count):
            port = _free_port()
            args = ["serve", "--db", url, "--bind", f"127.0.0.1:{port}", "--tls-cert", str(cert)]
            args += ["--tls-key", str(tls_key), "--server-key", str(key_file), "--org-key", org_key.hex()]
            err = (folder / f"serve-{i}.log").open("wb")
            procs.append(subprocess.Popen(credvault_command() + args, stdout=err, stderr=err))
            urls.append(f"https://127.0.0.1:{port}")
        for proc, base in zip(procs, urls, strict=True):
            _wait_healthy(proc, base, ca)
        urls.pids = [proc.pid for proc in procs]
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_healthy(proc: subprocess.Popen[bytes], base: str, ca: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"credvault serve exited with status {proc.returncode}")
        try:
            if httpx.get(f"{base}/healthz", verify=str(ca), timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("credvault serve did not answer /healthz in time")


# -- where the CPU goes ---------------------------------------------------------------------------


def _ticks(pid: int) -> int:
    """User + system CPU of ``pid`` in clock ticks (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of proc(5)


def _backends(database: str) -> list[int]:
    """PostgreSQL's backends connected to ``database`` (their process titles name it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            except OSError:
                continue
            if title.startswith("postgres: ") and f" {database} " in title:
                found.append(int(entry.name))
    return found


class CpuProbe:
    """CPU seconds of the servers' processes and of the data set's PostgreSQL backends over a window
    (``/proc/<pid>/stat``); the engineers' processes report their own (``time.process_time``)."""

    def __init__(self, database: str, servers: list[int] | None = None) -> None:
        self.database, self.servers = database, servers or []
        self._start: dict[str, dict[int, int]] = {}

    def _now(self) -> dict[str, dict[int, int]]:
        return {
            "server": {pid: _ticks(pid) for pid in self.servers},
            "postgres": {pid: _ticks(pid) for pid in _backends(self.database)},
        }

    def start(self) -> None:
        self._start = self._now()

    def stop(self) -> dict[str, float]:
        """CPU seconds of each group since ``start`` (a backend new since then: all of its own)."""
        end, hz = self._now(), os.sysconf("SC_CLK_TCK")
        return {
            group: sum(t - self._start[group].get(pid, 0) for pid, t in ticks.items()) / hz
            for group, ticks in end.items()
        }


# -- the engineers -------------------------------------------------------------------------------


def _refs(mf: dataset.Manifest, index: int) -> list[str]:
    return [mf.ref(c, j) for c in mf.shape.granted_clients(index) for j in range(mf.shape.secrets_of(c))]


def _engineer(index: int, manifest: dict[str, Any], base: str, ca: str, seconds: float, barrier: Any, out: Any) -> None:
    """One engineer process: checkouts through the server at ``base`` for ``seconds``."""
    mf = dataset.Manifest.from_json(manifest)
    rng = random.Random(index)
    refs = _refs(mf, index)
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    wrong = warm = 0
    try:
        vault = dataset.open_vault(mf, dataset.engineer_name(index))
        https = HttpsTransport(base, vault.keyholder, ca_file=ca)
        holder = https_checkout_keyholder(vault.checkouts, https)

        def checkout(ref: str) -> str:
            found = holder.checkout(ref, reason=REASON, field="password", version=None, hold=True, hold_for=None)
            return str(found.value)

        wrong += checkout(refs[0]) != mf.password(refs[0])  # context, tags, connection: not timed, counted
        warm = 1
    except VaultError as error:
        failures[type(error).__name__] += 1
        barrier.wait()
        out.put({"latencies": [], "failures": dict(failures), "wrong": wrong, "warm": warm, "window": 0.0})
        barrier.wait()  # the CPU probe has read every process (``_team``)
        return
    barrier.wait()
    start, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        ref = rng.choice(refs)
        t0 = time.perf_counter()
        try:
            value = checkout(ref)
        except (VaultError, httpx.HTTPError) as error:
            failures[type(error).__name__] += 1
            continue
        latencies.append(time.perf_counter() - t0)
        wrong += value != mf.password(ref)
    window, cpu = time.perf_counter() - start, time.process_time() - cpu
    https.close()
    vault.close()
    out.put({"latencies": latencies, "failures": dict(failures), "wrong": wrong, "warm": warm, "window": window,
             "cpu": cpu})  # fmt: skip
    barrier.wait()


def _team(
    count: int, target: Callable[..., None], args: Callable[[int], tuple[Any, ...]], probe: CpuProbe
) -> dict[str, Any]:
    """``count`` forked processes running ``target(i, *args(i), barrier, queue)``; their results,
    with the CPU seconds each group of processes spent in the window (``cpu``). The barrier is
    passed twice: at the window's start, and once each process has put its result (so that its
    database connection is still open when the probe reads its backend's CPU)."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(count + 1), ctx.Queue()
    procs = [ctx.Process(target=target, args=(i, *args(i), barrier, results)) for i in range(count)]
    for p in procs:
        p.start()
    barrier.wait()
    started = time.perf_counter()
    probe.start()
    collected = [results.get() for _ in procs]
    cpu = probe.stop() | {"engineers": sum(r.get("cpu", 0.0) for r in collected)}
    barrier.wait()  # each process waits for the probe before it closes anything
    wall = time.perf_counter() - started
    for p in procs:
        p.join()
    latencies = [x for r in collected for x in r["latencies"]]
    failures: Counter[str] = Counter()
    for r in collected:
        failures.update(r["failures"])
    window = max((r["window"] for r in collected), default=wall) or wall
    return {
        "processes": count,
        "done": len(latencies),
        "acknowledged": len(latencies) + sum(r.get("warm", 0) for r in collected),
        "wrong": sum(r.get("wrong", 0) for r in collected),
        "failures": dict(failures),
        "rate": len(latencies) / window if window else 0.0,
        "median": median(latencies) if latencies else None,
        "p99": percentile(latencies, 99) if latencies else None,
        "seconds": window,
        "cpu": cpu,
    }


# -- the statements of one checkout, and their raw replay -----------------------------------------


def capture(url: str, key: ServerSigningKey, mf: dataset.Manifest, folder: Path) -> list[Statement]:
    """The SQL of one checkout through the server's app (``bench.server_checkout``'s set-up, in
    this process): the authentication read and the checkout's unit, texts and parameters."""
    import uvicorn

    from vault.server.app import build_app
    from vault.server.running import ServeOptions, uvicorn_config
    from vault.storage.engine import Store
    from vault.wire.nonces import DbNonceStore

    ca, cert, tls_key = make_certificates(folder)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    base = f"https://127.0.0.1:{port}"
    store = Store(url)
    app = build_app(store, public_url=base, nonce_store=DbNonceStore(store), server_key=key)
    options = ServeOptions(url, bind=f"127.0.0.1:{port}", tls_cert=str(cert), tls_key=str(tls_key))
    server = uvicorn.Server(uvicorn_config(app, options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    seen: list[Statement] = []

    pipelines: list[Any] = [None]  # the last pipeline seen (kept alive: compared by identity)

    def statement(conn: Any, _cur: Any, text: str, parameters: Any, _x: Any, _many: bool) -> None:
        pipeline = getattr(conn.connection.driver_connection, "_pipeline", None)  # psycopg's, while in one
        if pipeline is not None and pipeline is not pipelines[-1]:
            pipelines.append(pipeline)
        block = len(pipelines) - 1 if pipeline is not None else 0
        seen.append((text, dict(parameters) if isinstance(parameters, dict) else parameters, block))

    vault = dataset.open_vault(mf, dataset.engineer_name(0))
    https = HttpsTransport(base, vault.keyholder, ca_file=str(ca))
    holder = https_checkout_keyholder(vault.checkouts, https)
    ref = _refs(mf, 0)[0]
    try:
        for _ in range(2):  # the client context and the connection: not part of a kept session's checkout
            holder.checkout(ref, reason=REASON, field="password", version=None, hold=True, hold_for=None)
        event.listen(store.engine, "before_cursor_execute", statement)
        event.listen(store.engine, "commit", lambda _conn: seen.append(("COMMIT", None, 0)))
        event.listen(store.engine, "rollback", lambda _conn: seen.append(("ROLLBACK", None, 0)))
        holder.checkout(ref, reason=REASON, field="password", version=None, hold=True, hold_for=None)
    finally:
        https.close()
        vault.close()
        server.should_exit = True
        thread.join(20)
        store.close()
    return seen


def round_trips(statements: list[Statement], pipelined: bool) -> list[list[Statement]]:
    """The statements grouped by round trip: one each, or (``pipelined``) each run of statements
    the server sent in pipeline mode together, as it sent them."""
    groups: list[list[Statement]] = []
    for one in statements:
        if pipelined and one[2] and groups and groups[-1][-1][2] == one[2]:
            groups[-1].append(one)
        else:
            groups.append([one])
    return groups


class Replay:
    """One engineer's raw replay of the captured statements (module docstring), in ``conn``:
    one round trip per statement, or (``pipelined``) in the server's round trips."""

    def __init__(
        self,
        conn: Any,
        statements: list[Statement],
        engineer_id: int,
        targets: list[tuple[Any, ...]],
        pipelined: bool = False,
    ):
        self.conn, self.engineer_id, self.targets = conn, engineer_id, targets
        self.groups = round_trips(statements, pipelined)
        self.count = 0

    def checkout(self, rng: random.Random) -> None:
        import datetime as dt

        secret_id, client_id, tag = rng.choice(self.targets)
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        self.count += 1
        self.seq, self.head_hash, self.mine = 0, b"", []
        self.digest = os.urandom(32)
        for group in self.groups:
            sent: list[tuple[str, Any]] = []
            with self.conn.pipeline() if len(group) > 1 else contextlib.nullcontext():
                for text, captured, _ in group:
                    if text in ("COMMIT", "ROLLBACK"):
                        (self.conn.commit if text == "COMMIT" else self.conn.rollback)()
                        continue
                    if text.startswith("UPDATE checkouts"):
                        for checkout in self.mine:
                            self.conn.execute(text, dict(captured) | {"checkout": checkout, "at": now})
                        continue
                    p = self._parameters(text, dict(captured), secret_id, client_id, tag, now)
                    sent.append((text, self.conn.execute(text, p)))
            for text, found in sent:
                self._read(text, found)

    def _parameters(self, text: str, p: dict[str, Any], secret_id: int, client_id: int, tag: bytes, now: Any) -> Any:
        if text.startswith("INSERT INTO request_nonces"):
            p |= {"keyid": f"e:{self.engineer_id}:1", "nonce": os.urandom(16).hex(), "created_at": int(time.time())}
        elif text.startswith("SELECT secrets.id"):
            p["secret"] = secret_id
        elif text.startswith("SELECT checkouts.id"):
            p |= {"secret": secret_id, "now": now}
        elif text.startswith("SELECT clients.id"):
            p |= {"tag": tag, "client": client_id}
        elif text.startswith("INSERT INTO audit_events"):
            p |= {"seq": self.seq, "engineer_id": self.engineer_id, "client_id": client_id, "secret_id": secret_id}
            p |= {"prev_hash": self.head_hash, "hash": self.digest, "signature": os.urandom(64)}
            p |= {"request_id": os.urandom(16), "at_us": int(time.time() * 1e6)}
        elif text.startswith("UPDATE audit_head"):  # its parameters' names: the ORM's or a Core statement's
            p |= {name: self.seq for name in ("seq", "new_seq") if name in p}
            p |= {name: self.digest for name in ("hash", "new_hash") if name in p}
        elif text.startswith("INSERT INTO checkouts"):
            p |= {"secret_id": secret_id, "client_id": client_id, "engineer_id": self.engineer_id}
            p |= {"event_seq": self.seq, "started_at": now}
        elif text.startswith("UPDATE secrets"):
            p |= {"secret": secret_id, "at": now}
        for name in ("me", "id_1") if "engineers" in text else ():
            if name in p:
                p[name] = self.engineer_id
        if "client" in p and text.startswith("SELECT vault_info.vault_id, vault_info.org_signing_public"):
            p["client"] = client_id if p["client"] else 0
        return p

    def _read(self, text: str, found: Any) -> None:
        if text.startswith("SELECT audit_head"):
            row = found.fetchone()
            names = [column.name for column in found.description]
            self.seq, self.head_hash = row[names.index("seq")] + 1, bytes(row[names.index("hash")])
        elif text.startswith("SELECT checkouts.id"):
            self.mine = [r[0] for r in found.fetchall() if r[1] == self.engineer_id]
        elif found.description is not None:
            found.fetchall()


def _replayer(
    index: int,
    conninfo: str,
    statements: list[Statement],
    who: tuple[int, list[Any]],
    seconds: float,
    pipelined: bool,
    barrier: Any,
    out: Any,
) -> None:
    import psycopg

    engineer_id, targets = who
    rng = random.Random(index)
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    with psycopg.connect(conninfo) as conn:
        replay = Replay(conn, statements, engineer_id, [tuple(t) for t in targets], pipelined)
        replay.checkout(rng)
        barrier.wait()
        start, cpu = time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            try:
                replay.checkout(rng)
            except psycopg.Error as error:
                conn.rollback()
                failures[type(error).__name__] += 1
                continue
            latencies.append(time.perf_counter() - t0)
        window, cpu = time.perf_counter() - start, time.process_time() - cpu
        out.put({"latencies": latencies, "failures": dict(failures), "window": window, "cpu": cpu})
        barrier.wait()  # the connection (its backend's CPU) until the probe has read it


def _conninfo(url: str) -> str:
    u = make_url(url)
    return f"host={u.host} port={u.port or 5432} user={u.username} dbname={u.database}"


# -- the step ------------------------------------------------------------------------------------


def _who(admin: Any, mf: dataset.Manifest, count: int) -> dict[int, tuple[int, list[Any]]]:
    """Engineer i: (their id, [(secret id, client id, name tag)] of the secrets they hold grants to)."""
    with admin.store.read() as s:
        ids = dict(s.execute(select(m.Engineer.name, m.Engineer.id)).tuples().all())
        secrets = s.execute(select(m.Secret.id, m.Secret.client_id, m.Secret.name_tag)).tuples().all()
    by_client: dict[int, list[Any]] = {}
    for secret_id, client_id, tag in secrets:
        by_client.setdefault(client_id, []).append((secret_id, client_id, bytes(tag)))
    ordered = sorted(by_client)  # the data set makes clients in order: client c has the (c+1)-th id
    out = {}
    for i in range(count):
        targets = [t for c in mf.shape.granted_clients(i) for t in by_client[ordered[c]]]
        out[i] = (ids[dataset.engineer_name(i)], targets)
    return out


def team_step(params: dict[str, Any]) -> dict[str, Any]:
    mf = dataset.load(params["manifest"])
    count, seconds, servers = params["engineers"], params["seconds"], params.get("servers", 2)
    folder = Path(tempfile.mkdtemp(prefix="cvbench-w16-", dir=params.get("workdir")))
    try:
        admin = dataset.open_vault(mf, dataset.ADMIN)
        key = ServerSigningKey.generate(1)
        certify_server_key(admin, 1, key.public)
        with admin.store.read() as s:
            org_key = bytes(s.scalar(select(m.VaultInfo.org_signing_public)))
        who = _who(admin, mf, count)
        admin.close()
        statements = capture(mf.url, key, mf, folder)
        log(f"captured {len(statements)} statements of one checkout through the server")
        admin = dataset.open_vault(mf, dataset.ADMIN)
        head = admin.audit.head()[0]
        admin.close()  # nothing open is inherited by the forked engineers
        ca = str(folder / "ca.pem")
        database = str(make_url(mf.url).database)
        with serve_processes(mf.url, folder, servers, key, org_key) as urls:
            log(f"{servers} credvault serve processes answer; {count} engineers for {seconds:g} s")
            probe = CpuProbe(database, urls.pids)
            served = _team(count, _engineer, lambda i: (mf.to_json(), urls[i % servers], ca, seconds), probe)
        log(f"CPU ms per checkout through the servers: {_per_checkout(served)}")
        checks = _checks(mf, head, served)
        conninfo = _conninfo(mf.url)
        log(f"raw psycopg replay: {count} processes for {seconds:g} s")
        raw = _team(count, _replayer, lambda i: (conninfo, statements, who[i], seconds, False), CpuProbe(database))
        log(f"CPU ms per raw replay: {_per_checkout(raw)}")
        trips = len(round_trips(statements, True))
        log(f"raw psycopg replay in the server's {trips} round trips (pipelined as it sends them)")
        args = lambda i: (conninfo, statements, who[i], seconds, True)  # noqa: E731
        piped = _team(count, _replayer, args, CpuProbe(database))
        log(f"CPU ms per pipelined raw replay: {_per_checkout(piped)}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    writes = [t.split(" (")[0] for t, _, _ in statements if t.startswith(("INSERT", "UPDATE"))]
    checks.append(
        (
            f"W16: the replayed transaction holds the writes of one checkout ({len(statements)} statements: "
            f"{', '.join(writes)})",
            any(w.startswith("INSERT INTO audit_events") for w in writes)
            and any(w.startswith("INSERT INTO checkouts") for w in writes),
        )
    )
    return {
        "checks": checks,
        "served": served,
        "raw": raw,
        "raw_pipelined": piped,
        "servers": servers,
        "statements": len(statements),
        "round_trips": trips,
    }


def _per_checkout(team: dict[str, Any]) -> dict[str, float]:
    """Each group's CPU milliseconds per checkout of the window (``_team``'s ``cpu``)."""
    done = max(team["done"], 1)
    return {group: round(seconds * 1000 / done, 2) for group, seconds in team["cpu"].items()}


def _checks(mf: dataset.Manifest, head: int, served: dict[str, Any]) -> list[tuple[str, bool]]:
    admin = dataset.open_vault(mf, dataset.ADMIN)
    try:
        with admin.store.read() as s:
            seqs = list(s.scalars(select(m.AuditEvent.seq).where(m.AuditEvent.seq > head).order_by(m.AuditEvent.seq)))
            events = s.scalar(
                select(func.count())
                .select_from(m.AuditEvent)
                .where(m.AuditEvent.seq > head, m.AuditEvent.action == "checkout")
            )
        verified = admin.audit.verify()
    finally:
        admin.close()
    acknowledged, failures = served["acknowledged"], served["failures"]
    return [
        (
            f"W16: {served['processes']} engineers over the servers, no failed checkout ({failures or 'none'})",
            not failures,
        ),
        (
            f"W16: every checkout through the servers returned the generated value ({served['wrong']} wrong)",
            not served["wrong"],
        ),
        (
            f"W16: zero lost events: {acknowledged:,} acknowledged checkouts, {events:,} checkout events",
            events == acknowledged,
        ),
        (
            f"W16: seq contiguous after {head:,} ({len(seqs):,} events)",
            seqs == list(range(head + 1, head + 1 + len(seqs))),
        ),
        (f"W16: `audit verify` accepts the whole chain afterwards ({verified.checked:,} events)", verified.ok),
    ]
