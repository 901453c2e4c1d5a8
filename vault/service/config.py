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
from dataclasses import dataclass
from pathlib import Path

from vault.errors import ConfigurationError

APP = "credvault"


def _dirs() -> tuple[Path, Path]:
    home = os.environ.get("CREDVAULT_HOME")
    if home:
        base = Path(home).expanduser()
        return base, base
    import platformdirs

    return Path(platformdirs.user_data_dir(APP)), Path(platformdirs.user_config_dir(APP))


def default_db_url() -> str:
    data, _ = _dirs()
    return f"sqlite:///{data / 'vault.db'}"


def config_path() -> Path:
    return _dirs()[1] / "config.json"


@dataclass
class LocalConfig:
    db_url: str | None = None
    engineer: str | None = None

    @classmethod
    def load(cls) -> LocalConfig:
        path = config_path()
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
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
