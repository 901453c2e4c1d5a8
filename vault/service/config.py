"""Where this machine's vault is: the database URL and the default engineer.

The embedded default is a SQLite file in the platform's data directory. ``--db URL``
or ``CREDVAULT_DB`` points elsewhere (a PostgreSQL server for a team). The local
config file remembers the URL chosen at ``init`` or ``enroll`` and the engineer who
last unlocked, so that later commands need neither. ``CREDVAULT_HOME`` moves both the
data and the config directory (tests, several vaults on one machine).
"""

from __future__ import annotations

import json
import os

from vault.errors import ConfigurationError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from pathlib import Path

APP = "credvault"


def _dir_names() -> tuple[str, str]:
    """The data and config directories as strings: resolving the database and the engineer
    for a checkout (cli/fast.py) needs no pathlib, whose import costs it milliseconds."""
    home = os.environ.get("CREDVAULT_HOME")
    if home:
        base = os.path.expanduser(home)
        return base, base
    import platformdirs

    return platformdirs.user_data_dir(APP), platformdirs.user_config_dir(APP)


def _dirs() -> tuple[Path, Path]:
    from pathlib import Path

    data, conf = _dir_names()
    return Path(data), Path(conf)


def default_db_url() -> str:
    return f"sqlite:///{os.path.join(_dir_names()[0], 'vault.db')}"


def config_path() -> Path:
    return _dirs()[1] / "config.json"


class LocalConfig:
    # A plain class, not a dataclass: the checkout fast path (cli/fast.py) reads this
    # file, and importing dataclasses (and with it inspect) costs it several milliseconds.
    def __init__(self, db_url: str | None = None, engineer: str | None = None) -> None:
        self.db_url, self.engineer = db_url, engineer

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LocalConfig) and (self.db_url, self.engineer) == (other.db_url, other.engineer)

    def __repr__(self) -> str:
        return f"LocalConfig(db_url={self.db_url!r}, engineer={self.engineer!r})"

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def load(cls) -> LocalConfig:
        path = os.path.join(_dir_names()[1], "config.json")
        if not os.path.exists(path):
            return cls()
        try:
            with open(path, encoding="utf-8") as file:
                data = json.load(file)
            return cls(db_url=data.get("db_url"), engineer=data.get("engineer"))
        except (OSError, ValueError):
            raise ConfigurationError(f"the config file {path} is unreadable", hint="fix or delete it") from None

    def save(self) -> None:
        path = config_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"db_url": self.db_url, "engineer": self.engineer}, indent=2), encoding="utf-8")
        os.chmod(tmp, 0o600)
        tmp.replace(path)


def resolve_db_url(explicit: str | None) -> str:
    """--db, then CREDVAULT_DB, then the config file, then the embedded default."""
    return explicit or os.environ.get("CREDVAULT_DB") or LocalConfig.load().db_url or default_db_url()


def resolve_engineer(explicit: str | None) -> str | None:
    return explicit or os.environ.get("CREDVAULT_ENGINEER") or LocalConfig.load().engineer


class AuditMemory:
    """What this machine remembers of a vault's audit chain: the last head it verified
    (incremental verification starts there) and the furthest head it has seen (a log
    that later ends before it was truncated), and when and up to which event it last
    verified the whole log (``full``: (epoch seconds, seq); a full verify is due again
    after a while, see cli/audit.py)."""

    def __init__(
        self,
        vault_id: str,
        verified: tuple[int, bytes] | None = None,
        seen: tuple[int, bytes] | None = None,
        full: tuple[int, int] | None = None,
    ) -> None:
        self.vault_id, self.verified, self.seen, self.full = vault_id, verified, seen, full

    @staticmethod
    def path(vault_id: str) -> Path:
        return _dirs()[1] / f"audit-{vault_id}.json"

    @classmethod
    def load(cls, vault_id: str) -> AuditMemory:
        path = cls.path(vault_id)
        if not path.exists():
            return cls(vault_id)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            full = data.get("full")
            return cls(
                vault_id,
                _head(data.get("verified")),
                _head(data.get("seen")),
                (int(full[0]), int(full[1])) if full else None,
            )
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            raise ConfigurationError(
                f"the audit memory {path} is unreadable",
                hint="fix or delete it, then run `credvault audit verify --full`",
            ) from None

    def save(self) -> None:
        path = self.path(self.vault_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "verified": _dump(self.verified),
                    "seen": _dump(self.seen),
                    "full": list(self.full) if self.full else None,
                }
            ),
            encoding="utf-8",
        )
        tmp.replace(path)

    def see(self, head: tuple[int, bytes]) -> None:
        if self.seen is None or head[0] >= self.seen[0]:
            self.seen = head


def _head(value: list[object] | None) -> tuple[int, bytes] | None:
    if not value:
        return None
    return int(str(value[0])), bytes.fromhex(str(value[1]))


def _dump(head: tuple[int, bytes] | None) -> list[object] | None:
    return [head[0], head[1].hex()] if head else None
