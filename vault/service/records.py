"""What the public API returns: plain, immutable values with a JSON form.

None of these hold a key. The only values that carry a secret are returned by
``Vault.reveal`` as a plain ``str``, and ``InitResult.shares`` (printed once).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class _Record:
    def to_json(self) -> dict[str, Any]:
        return {k: _jsonable(v) for k, v in asdict(self).items()}  # type: ignore[call-overload]


@dataclass(frozen=True)
class EngineerInfo(_Record):
    name: str
    role: str
    status: str
    fingerprint: str | None
    key_generation: int
    created_at: dt.datetime


@dataclass(frozen=True)
class SessionInfo(_Record):
    engineer: str
    role: str
    expires_at: dt.datetime
    vault_id: str


@dataclass(frozen=True)
class ClientInfo(_Record):
    slug: str
    name: str
    key_version: int
    secrets: int
    created_at: dt.datetime


@dataclass(frozen=True)
class GrantInfo(_Record):
    engineer: str
    client: str
    granted_by: str
    created_at: dt.datetime
    until: dt.datetime | None
    state: str  # active, expired, revoked


@dataclass(frozen=True)
class SecretInfo(_Record):
    """A secret's metadata: never its password."""

    client: str
    name: str
    kind: str
    version: int
    username: str | None = None
    url: str | None = None
    host: str | None = None
    note: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None

    @property
    def ref(self) -> str:
        return f"{self.client}/{self.name}"


@dataclass(frozen=True)
class VersionInfo(_Record):
    version: int
    created_at: dt.datetime
    created_by: str
    key_version: int
    current: bool


@dataclass(frozen=True, repr=False)
class InitResult:
    """What ``init`` made. ``shares`` are secret: print them once, store none."""

    vault_id: str
    admin: str
    admin_fingerprint: str
    org_fingerprint: str
    db_url: str
    shares: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"InitResult(vault_id={self.vault_id!r}, admin={self.admin!r}, shares=<{len(self.shares)} redacted>)"
