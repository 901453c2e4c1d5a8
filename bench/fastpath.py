"""The fast path's recipes: the rows ``add_client``, ``grant`` and ``add_secret`` write.

Each function here calls the library's recipes with the arguments the service passes
(see ``bench/dataset.py`` for the list and for how the rows are checked), for one
unit of work: a client's header (client, key, seals, audit-key ring, policy, grants)
or a run of its secrets. Units run in worker processes and return plain rows; the
audit events they return are chained, signed and inserted by ``bench/auditgen.py``.
Generated names and values are deterministic, so a workload can check what it reads.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from bench import auditgen
from vault.crypto import blobs, sealing, signing
from vault.crypto.labels import (
    LABEL_CLIENT_KEY_SEAL,
    LABEL_SIG_CLIENT_KEY,
    LABEL_SIG_GRANT,
    LABEL_SIG_POLICY,
    LABEL_TAG_CLIENT_SLUG,
    LABEL_TAG_SECRET_NAME,
)
from vault.service import policies
from vault.service.core import ACTIVE

KINDS = ("equipment", "service", "other")


def passphrase(name: str) -> str:
    return f"bench passphrase of {name}"


def engineer_name(i: int) -> str:
    return f"eng{i:03d}"


def client_slug(c: int) -> str:
    return f"c{c:05d}"


def secret_name(j: int) -> str:
    return f"s{j:06d}"


def expected_password(seed: bytes, ref: str) -> str:
    return hmac.new(seed, ref.encode(), hashlib.sha256).hexdigest()[:24]


def metadata_of(c: int, j: int) -> tuple[str, dict[str, Any]]:
    """(kind, metadata) of secret ``j`` of client ``c``, shaped as ``secrets._metadata`` makes it."""
    kind = KINDS[j % len(KINDS)]
    host = f"10.{c // 256 % 256}.{c % 256}.{j % 250 + 1}" if kind == "equipment" else None
    url = f"https://svc{j}.{client_slug(c)}.example" if kind == "service" else None
    return kind, {"name": secret_name(j), "username": "admin", "url": url, "host": host, "note": None, "fields": {}}


# -- units of work (run in worker processes) ----------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """What every unit needs: the vault's and the admin's ids and keys, the time, the seed."""

    vault_id: bytes
    admin_id: int
    admin_generation: int
    admin_seed: bytes
    org_lookup_key: bytes
    recovery_public: bytes
    root_version: int
    seed: bytes
    now: dt.datetime
    secret_events: bool


@dataclass(frozen=True)
class Unit:
    """One client's header (client, key, seals, policy, grants), or a run of its secrets."""

    recipe: Recipe
    client: int
    client_id: int
    key: bytes
    lookup_key: bytes
    audit_key: bytes
    first_seq: int
    header: bool
    grantees: tuple[tuple[int, str, bytes], ...] = ()
    first_grant_id: int = 0
    encryptions: int = 0
    secrets: tuple[int, int] = (0, 0)
    first_secret_id: int = 0

    @property
    def events(self) -> int:
        if self.header:
            return 1 + len(self.grantees)
        return self.secrets[1] - self.secrets[0] if self.recipe.secret_events else 0

    @property
    def cost(self) -> int:
        return 5 * (1 + len(self.grantees)) if self.header else self.secrets[1] - self.secrets[0]


def _event(u: Unit, seq: int, action: str, details: dict[str, Any], secret_id: int | None = None) -> auditgen.Event:
    r = u.recipe
    raw = json.dumps(details, sort_keys=True).encode("utf-8")
    blob = blobs.encrypt_audit_detail(u.audit_key, 1, raw, u.client_id, seq, action)  # audit-key generation 1
    at_us = int(r.now.timestamp() * 1_000_000) + seq
    return auditgen.Event(seq, at_us, r.admin_id, r.admin_generation, action, u.client_id, secret_id, 1, blob, None)


def _header_rows(u: Unit) -> dict[str, list[Any]]:
    r, slug, cid = u.recipe, client_slug(u.client), u.client_id
    admin = signing.SigningKey(r.admin_seed)
    fingerprint = signing.client_key_fingerprint(u.key)
    signed_at = int(r.now.timestamp())
    out: dict[str, list[Any]] = {
        "clients": [],
        "client_keys": [],
        "seals": [],
        "policies": [],
        "grants": [],
        "events": [],
    }
    out["clients"].append(
        dict(
            id=cid,
            slug_tag=signing.lookup_tag(r.org_lookup_key, LABEL_TAG_CLIENT_SLUG, slug),
            current_key_version=1,
            slug_blob=blobs.encrypt_client_field(u.key, 1, slug.encode("utf-8"), cid, "slug"),
            name_blob=blobs.encrypt_client_field(u.key, 1, f"Bench client {u.client}".encode(), cid, "name"),
            lookup_key_blob=blobs.encrypt_client_field(u.key, 1, u.lookup_key, cid, "lookup-key"),
            audit_keys_blob=blobs.encrypt_client_field(u.key, 1, u.audit_key, cid, "audit-keys"),
            created_at=r.now,
        )
    )
    out["client_keys"].append(
        dict(
            client_id=cid,
            version=1,
            state=ACTIVE,
            fingerprint=fingerprint,
            signed_by=r.admin_id,
            signed_at=signed_at,
            signature=admin.sign(LABEL_SIG_CLIENT_KEY, r.vault_id, cid, 1, fingerprint, signed_at),
            encryptions=u.encryptions,
            created_at=r.now,
            retired_at=None,
        )
    )
    recovery_ctx = (LABEL_CLIENT_KEY_SEAL, r.vault_id, cid, 1, "recovery", r.root_version)
    out["seals"].append(
        dict(
            client_id=cid,
            version=1,
            recipient_kind="recovery",
            recipient_id=r.root_version,
            blob=sealing.seal(r.recovery_public, 1, u.key, recovery_ctx),
        )
    )
    policy: dict[str, Any] = dict(
        client_id=cid,
        reason_required=True,
        exclusive=False,
        rotate_after_checkout=False,
        checkout_minutes=120,
        stale_days=None,
        signed_by=r.admin_id,
        signed_at=signed_at,
        updated_at=r.now,
    )
    # Signed by the admin as `add_client` signs it (docs/format.md, "Signed policies and settings").
    signed = policies.policy_fields(r.vault_id, cid, SimpleNamespace(**policy))  # type: ignore[arg-type]
    policy["signature"] = admin.sign(LABEL_SIG_POLICY, *signed)
    out["policies"].append(policy)
    seq = u.first_seq
    out["events"].append(_event(u, seq, "client-create", {"slug": slug}))
    for n, (engineer_id, name, sealing_public) in enumerate(u.grantees):
        grant_id = u.first_grant_id + n
        out["grants"].append(
            dict(
                id=grant_id,
                engineer_id=engineer_id,
                client_id=cid,
                granted_by=r.admin_id,
                signed_at=signed_at,
                until=None,
                created_at=r.now,
                revoked_at=None,
                signature=admin.sign(
                    LABEL_SIG_GRANT, r.vault_id, grant_id, engineer_id, sealing_public, cid, signed_at, 0
                ),
            )
        )
        context = (LABEL_CLIENT_KEY_SEAL, r.vault_id, cid, 1, "engineer", engineer_id)
        out["seals"].append(
            dict(
                client_id=cid,
                version=1,
                recipient_kind="engineer",
                recipient_id=engineer_id,
                blob=sealing.seal(sealing_public, 1, u.key, context),
            )
        )
        seq += 1
        out["events"].append(_event(u, seq, "grant", {"engineer": name, "until": None, "reason": None}))
    return out


def _secret_rows(u: Unit) -> dict[str, list[Any]]:
    r, cid = u.recipe, u.client_id
    out: dict[str, list[Any]] = {"secrets": [], "versions": [], "events": []}
    seq = u.first_seq
    for n, j in enumerate(range(*u.secrets)):
        sid, name = u.first_secret_id + n, secret_name(j)
        kind, metadata = metadata_of(u.client, j)
        password = expected_password(r.seed, f"{client_slug(u.client)}/{name}")
        dek = blobs.new_key()
        out["secrets"].append(
            dict(
                id=sid,
                client_id=cid,
                name_tag=signing.lookup_tag(u.lookup_key, LABEL_TAG_SECRET_NAME, name),
                kind=kind,
                current_version=1,
                must_change=False,
                last_used_at=None,
                created_at=r.now,
                updated_at=r.now,
            )
        )
        out["versions"].append(
            dict(
                secret_id=sid,
                version=1,
                key_version=1,
                created_by=r.admin_id,
                created_at=r.now,
                wrapped_dek=blobs.wrap_data_key(u.key, 1, dek, cid, sid, 1),
                password_blob=blobs.encrypt_secret_field(dek, 1, password.encode("utf-8"), cid, sid, 1, "password"),
                metadata_blob=blobs.encrypt_secret_field(
                    dek, 1, json.dumps(metadata, sort_keys=True).encode("utf-8"), cid, sid, 1, "metadata"
                ),
            )
        )
        if r.secret_events:
            out["events"].append(_event(u, seq, "secret-create", {"secret": name, "kind": kind}, sid))
            seq += 1
    return out


def make_unit(u: Unit) -> dict[str, list[Any]]:
    return _header_rows(u) if u.header else _secret_rows(u)
