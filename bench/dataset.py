"""The benchmark's data set: N secrets across C clients and E engineers, made quickly.

**What goes through the real API.** ``Vault.create`` (schema, vault, first admin),
``unlock``, and every engineer: ``invite_engineer`` → ``enroll_engineer`` →
``confirm_engineer``. Engineers' key records use ``keyrecord.FLOOR`` (OWASP's minimum,
19 MiB, t=2, p=1) instead of the default (64 MiB, t=3, p=4): 200 enrolments at the
default would spend minutes in Argon2 alone, and no workload reads a data-set
engineer's key record except to unlock once. (W2 enrols its own engineer at the
default parameters, because there the unlock cost is what is measured.)

**What goes through the fast path.** Clients, grants, secrets and their audit events.
For each, this module calls the same recipes, with the same arguments, in the same
order as the service does, and inserts the rows with ``executemany`` in large
transactions (the API commits, and fsyncs, once per call):

* a client as ``Clients.add``: slug tag (``signing.lookup_tag`` under the
  organisation lookup key), client key version 1 with its fingerprint and the admin's
  signature over ``_client_key_fields``, the key sealed to the recovery key
  (``sealing.seal`` with ``_seal_context``), slug/name/lookup-key blobs
  (``blobs.encrypt_client_field``), the audit-key ring of one fresh generation
  (``Journal.audit_ring``: purpose ``audit-keys``), the default policy, and a
  ``client-create`` event whose details are encrypted under audit key generation 1;
* a grant as ``Grants.grant``: the admin's signature over ``_grant_fields``, the
  client key sealed to the engineer, and a ``grant`` event;
* a secret as ``Secrets.add``: name tag under the client's lookup key, a fresh
  data key wrapped by ``blobs.wrap_data_key``, password and sorted-JSON metadata blobs
  by ``blobs.encrypt_secret_field``, and a ``secret-create`` event (optional: W3's
  one-client data sets leave them out, as rotation never reads the log);
* ``client_keys.encryptions`` counts what the service counts (three field blobs, one
  wrapped data key per secret);
* the audit events go through ``bench/auditgen.py`` (``chain.event_hash``,
  ``chain.sign_event``).

Ids are assigned here, in order; on PostgreSQL the id sequences are moved past them
afterwards, so later API inserts do not collide.

**The proof.** Every workload that uses a data set first has the real ``Vault`` read a
sample back (``check_sample``): admins through the slug tag, the recovery seal and
the signed client-key record; engineers through their signed grants and sealed copies;
each value and its metadata compared with what was generated. ``verify_audit`` checks
the generated events.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.engine import Engine

from bench import auditgen
from bench.fastpath import Recipe, Unit, make_unit
from bench.fastpath import client_slug as client_slug
from bench.fastpath import engineer_name as engineer_name
from bench.fastpath import expected_password as expected_password
from bench.fastpath import metadata_of as metadata_of
from bench.fastpath import passphrase as passphrase
from bench.fastpath import secret_name as secret_name
from bench.step import log
from vault import Vault
from vault.crypto import blobs, sealing
from vault.crypto.keyrecord import FLOOR
from vault.crypto.labels import (
    LABEL_CLIENT_KEY_SEAL,
    LABEL_ROOT_BUNDLE,
)
from vault.keyholder.keys import RootBundle
from vault.service.core import ACTIVE
from vault.service.sessions import MemorySessionStore, UnlockedSession
from vault.storage import models as m

ADMIN = "bench-admin"
SECRETS_PER_CLIENT = 100
GRANTS_PER_CLIENT = 3
SECRET_CHUNK = 5_000  # secrets per unit of work in a worker process
WINDOW = 20_000  # secrets (or their cost) per transaction


@dataclass(frozen=True)
class Shape:
    """How big a data set is; ``big_client`` puts that many secrets in client 0 (W5)."""

    secrets: int
    clients: int
    engineers: int
    grants_per_client: int = GRANTS_PER_CLIENT
    secret_events: bool = True
    big_client: int = 0

    @classmethod
    def for_scale(cls, scale: int) -> Shape:
        """1,000,000 → 10,000 clients and 200 engineers; smaller scales keep 100 secrets a client."""
        return cls(
            secrets=scale, clients=max(1, scale // SECRETS_PER_CLIENT), engineers=max(3, min(200, scale // 5000))
        )

    def secrets_of(self, c: int) -> int:
        if self.big_client:
            if c == 0:
                return self.big_client
            base, extra = divmod(self.secrets - self.big_client, self.clients - 1)
            return base + (1 if c - 1 < extra else 0)
        base, extra = divmod(self.secrets, self.clients)
        return base + (1 if c < extra else 0)

    def first_secret_id(self, c: int) -> int:
        """The id ``build`` gives secret 0 of client ``c`` (ids follow the clients in order)."""
        return 1 + sum(self.secrets_of(k) for k in range(c))

    def grantees(self, c: int) -> list[int]:
        """Engineers (by index) granted client ``c``: round-robin, so each holds about the same number."""
        if not self.engineers:
            return []
        return [(c + i) % self.engineers for i in range(min(self.grants_per_client, self.engineers))]

    def granted_clients(self, e: int) -> list[int]:
        return [c for c in range(self.clients) if e in self.grantees(c)]


@dataclass
class Manifest:
    """What workloads need to know about a built data set (no key material)."""

    url: str
    shape: Shape
    seed: str
    vault_id: str
    build_seconds: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)

    def ref(self, c: int, j: int) -> str:
        return f"{client_slug(c)}/{secret_name(j)}"

    def password(self, ref: str) -> str:
        return expected_password(bytes.fromhex(self.seed), ref)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["shape"] = asdict(self.shape)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        return cls(**{**data, "shape": Shape(**data["shape"])})


# -- the admin's keys, opened the way the service opens them -----------------------------


@dataclass(frozen=True, repr=False)
class AdminKeys:
    """An unlocked admin's ids and keys, for the fast path (never written anywhere)."""

    vault_id: bytes
    admin_id: int
    key_generation: int
    signing_seed: bytes
    bundle: RootBundle

    @classmethod
    def of(cls, vault: Vault, sessions: MemorySessionStore) -> AdminKeys:
        """From an unlocked admin: the session its store holds, and the root bundle sealed to it."""
        assert vault.engineer_name is not None
        text_ = sessions.get(vault.vault_id(), vault.engineer_name)
        if text_ is None:
            raise RuntimeError("the admin is not unlocked")
        session = UnlockedSession.from_text(text_)
        with vault.store.transaction() as s:
            root = s.scalars(
                select(m.RootKey).where(m.RootKey.state == ACTIVE).order_by(m.RootKey.version.desc())
            ).first()
            assert root is not None
            seal = s.get(m.RootSeal, (root.version, session.engineer_id))
            assert seal is not None
            raw = sealing.open_sealed(
                sealing.KeyPair(session.sealing_private),
                root.version,
                seal.blob,
                (LABEL_ROOT_BUNDLE, session.vault_id, root.version, session.engineer_id),
            )
        return cls(
            session.vault_id,
            session.engineer_id,
            session.key_generation,
            session.signing_seed,
            RootBundle(raw, root.version),
        )

    @classmethod
    def unlock(cls, url: str, name: str = ADMIN) -> tuple[Vault, AdminKeys]:
        sessions = MemorySessionStore()
        vault = Vault.open(url, engineer=name, sessions=sessions, kdf_params=FLOOR)
        vault.engineers.unlock(name, passphrase(name))
        return vault, cls.of(vault, sessions)

    def client_key(self, engine: Engine, client_id: int, version: int) -> bytes:
        """Client key ``version`` from its recovery seal, as ``_client_key`` opens it for an admin."""
        with engine.connect() as conn:
            blob = conn.execute(
                select(m.ClientKeySeal.blob).where(
                    m.ClientKeySeal.client_id == client_id,
                    m.ClientKeySeal.version == version,
                    m.ClientKeySeal.recipient_kind == "recovery",
                    m.ClientKeySeal.recipient_id == self.bundle.version,
                )
            ).scalar_one()
        context = (LABEL_CLIENT_KEY_SEAL, self.vault_id, client_id, version, "recovery", self.bundle.version)
        return sealing.open_sealed(self.bundle.recovery, version, blob, context)


# -- planning and writing -----------------------------------------------------------------


def _plan(shape: Shape, recipe: Recipe, engineers: list[tuple[int, str, bytes]], seq: int) -> Iterator[Unit]:
    """Every unit in the order of the real API calls: client, its grants, its secrets."""
    grant_id = secret_id = 1
    for c in range(shape.clients):
        count = shape.secrets_of(c)
        grantees = tuple(engineers[e] for e in shape.grantees(c)) if engineers else ()
        base = Unit(recipe, c, c + 1, blobs.new_key(), blobs.new_key(), blobs.new_key(), seq + 1, True)
        # add_client counts its three field blobs; add_secret counts the wrap of its data key
        header = replace(base, grantees=grantees, first_grant_id=grant_id, encryptions=3 + count)
        yield header
        seq += header.events
        grant_id += len(grantees)
        for j0 in range(0, count, SECRET_CHUNK):
            unit = replace(
                base,
                header=False,
                first_seq=seq + 1,
                secrets=(j0, min(count, j0 + SECRET_CHUNK)),
                first_secret_id=secret_id,
            )
            yield unit
            seq += unit.events
            secret_id += unit.secrets[1] - unit.secrets[0]


def _windows(units: Iterator[Unit]) -> Iterator[list[Unit]]:
    batch: list[Unit] = []
    cost = 0
    for u in units:
        batch.append(u)
        cost += u.cost
        if cost >= WINDOW:
            yield batch
            batch, cost = [], 0
    if batch:
        yield batch


TABLES = (
    ("clients", m.Client),
    ("client_keys", m.ClientKey),
    ("seals", m.ClientKeySeal),
    ("policies", m.ClientPolicy),
    ("grants", m.Grant),
    ("secrets", m.Secret),
    ("versions", m.SecretVersion),
)


def _write(engine: Engine, keys: AdminKeys, units: Iterator[Unit], workers: int) -> dict[str, int]:
    windows = _windows(units)
    seeds = {keys.admin_id: keys.signing_seed}
    return auditgen.write(engine, keys.vault_id, seeds, windows, make_unit, TABLES, workers)


def _fix_sequences(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        return
    with engine.begin() as conn:
        for table in ("clients", "grants", "secrets"):
            conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"))


def checkpoint(engine: Engine) -> None:
    """Fold SQLite's WAL into the main file, so that the file alone can be copied."""
    if engine.dialect.name == "sqlite" and engine.url.database:
        engine.dispose()  # SQLAlchemy's connections would hold the transaction the pragma needs
        conn = sqlite3.connect(engine.url.database, isolation_level=None)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()


def build(url: str, shape: Shape, *, workers: int = 2) -> Manifest:
    """Make a vault of ``shape`` at ``url`` (an empty database): see the module docstring."""
    import time

    start = time.perf_counter()
    seed = os.urandom(16)
    sessions = MemorySessionStore()
    admin, _ = Vault.create(url, admin=ADMIN, passphrase=passphrase(ADMIN), kdf_params=FLOOR, sessions=sessions)
    admin.engineers.unlock(ADMIN, passphrase(ADMIN))
    enrolling = Vault.open(url, kdf_params=FLOOR, sessions=MemorySessionStore())
    for i in range(shape.engineers):
        name = engineer_name(i)
        code = admin.engineers.invite(name)
        admin.engineers.confirm(name, enrolling.engineers.enroll(name, code, passphrase(name)))
    enrolling.close()
    log(f"{shape.engineers} engineers invited, enrolled and confirmed through the API")
    keys = AdminKeys.of(admin, sessions)
    engine = admin.store.engine
    with engine.connect() as conn:
        engineers = [
            (int(i), str(n), bytes(p))
            for i, n, p in conn.execute(
                select(m.Engineer.id, m.Engineer.name, m.Engineer.sealing_public)
                .where(m.Engineer.role == "engineer")
                .order_by(m.Engineer.name)
            )
        ]
        seq, _ = auditgen.read_head(conn)
    b = keys.bundle
    recipe = Recipe(
        keys.vault_id,
        keys.admin_id,
        keys.key_generation,
        keys.signing_seed,
        b.lookup_key,
        b.recovery.public,
        b.version,
        seed,
        dt.datetime.now(dt.UTC),
        shape.secret_events,
    )
    counts = _write(engine, keys, _plan(shape, recipe, engineers, seq), workers)
    _fix_sequences(engine)
    checkpoint(engine)
    admin.close()
    return Manifest(url, shape, seed.hex(), keys.vault_id.hex(), time.perf_counter() - start, counts)


def build_step(params: dict[str, Any]) -> dict[str, Any]:
    """Step entry: build a data set and save its manifest next to it."""
    shape = Shape(**params["shape"])
    manifest = build(params["url"], shape, workers=params.get("workers", os.cpu_count() or 2))
    Path(params["manifest"]).write_text(json.dumps(manifest.to_json()))
    return manifest.to_json()


def load(path: str | Path) -> Manifest:
    return Manifest.from_json(json.loads(Path(path).read_text()))


# -- the proof: the real API reads a sample back ------------------------------------------


def sample_refs(manifest: Manifest, k: int, *, clients: list[int] | None = None, rng_seed: int = 7) -> list[str]:
    rng = random.Random(rng_seed)
    pool = clients if clients is not None else list(range(manifest.shape.clients))
    out = []
    for _ in range(k):
        c = rng.choice(pool)
        n = manifest.shape.secrets_of(c)
        if n:
            out.append(manifest.ref(c, rng.randrange(n)))
    return out


def check_sample(vault: Vault, manifest: Manifest, refs: list[str], who: str) -> list[tuple[str, bool]]:
    """Reveal and show each ref through the API, compare with what was generated, and read
    the details of the client's latest audit events (generated ones included)."""
    bad = []
    for ref in refs:
        slug, name = ref.split("/")
        value = vault.checkouts.reveal(ref, reason="bench sample check")
        info = vault.secrets.show(ref)
        kind, metadata = metadata_of(int(slug[1:]), int(name[1:]))
        if (
            value != manifest.password(ref)
            or info.kind != kind
            or info.host != metadata["host"]
            or (info.url != metadata["url"] or info.name != name)
        ):
            bad.append(ref)
    checks = [(f"{who} reads back {len(refs)} sampled generated secrets through the API", not bad and bool(refs))]
    if refs:
        slug = refs[0].split("/")[0]
        entries = vault.audit.log(client=slug, limit=50)
        unreadable = [f"{e.seq} {e.action}" for e in entries if not e.readable]
        checks.append(
            (
                f"{who} reads the details of the last {len(entries)} audit events of {slug}"
                + (f" (unreadable: {', '.join(unreadable[:3])})" if unreadable else ""),
                any(e.details for e in entries) and not unreadable,
            )
        )
    return checks


def open_vault(manifest: Manifest, name: str, url: str | None = None) -> Vault:
    """A fresh ``Vault`` for ``name``, unlocked in memory."""
    vault = Vault.open(url or manifest.url, engineer=name, sessions=MemorySessionStore(), kdf_params=FLOOR)
    vault.engineers.unlock(name, passphrase(name))
    return vault
