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
    def __init__(self, db_url: str | None = None, engineer: str | None = None, server: str | None = None) -> None:
        self.db_url, self.engineer, self.server = db_url, engineer, server

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LocalConfig) and (self.db_url, self.engineer, self.server) == (
            other.db_url,
            other.engineer,
            other.server,
        )

    def __repr__(self) -> str:
        return f"LocalConfig(db_url={self.db_url!r}, engineer={self.engineer!r}, server={self.server!r})"

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def load(cls) -> LocalConfig:
        path = os.path.join(_dir_names()[1], "config.json")
        if not os.path.exists(path):
            return cls()
        try:
            with open(path, encoding="utf-8") as file:
                data = json.load(file)
            return cls(db_url=data.get("db_url"), engineer=data.get("engineer"), server=data.get("server"))
        except (OSError, ValueError):
            raise ConfigurationError(f"the config file {path} is unreadable", hint="fix or delete it") from None

    def save(self) -> None:
        data = {"db_url": self.db_url, "engineer": self.engineer}
        if self.server is not None:
            data["server"] = self.server
        _write_private(config_path(), json.dumps(data, indent=2))


def resolve_db_url(explicit: str | None) -> str:
    """--db, then CREDVAULT_DB, then the config file, then the embedded default."""
    return explicit or os.environ.get("CREDVAULT_DB") or LocalConfig.load().db_url or default_db_url()


def resolve_server(explicit: str | None, explicit_db: str | None = None) -> str | None:
    """The team server to use, if any: --server, else none when --db is given, else
    CREDVAULT_SERVER, else none when CREDVAULT_DB is set, else the config file's ``server``."""
    if explicit:
        return explicit
    if explicit_db:
        return None
    env = os.environ.get("CREDVAULT_SERVER")
    if env:
        return env
    if os.environ.get("CREDVAULT_DB"):
        return None
    return LocalConfig.load().server or None


def resolve_target(explicit_db: str | None, explicit_server: str | None = None) -> str:
    """What the selected engineer's agent serves: the team server if one is selected, else the database."""
    return resolve_server(explicit_server, explicit_db) or resolve_db_url(explicit_db)


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
        memory = {
            "verified": _dump(self.verified),
            "seen": _dump(self.seen),
            "full": list(self.full) if self.full else None,
        }
        _write_private(self.path(self.vault_id), json.dumps(memory))

    def see(self, head: tuple[int, bytes]) -> None:
        if self.seen is None or head[0] >= self.seen[0]:
            self.seen = head


class OrgKeyMemory:
    """The newest organisation key this machine verified for each vault
    (``orgkey-<vault id>.json``, 0600). An unlock refuses a chain that no longer reaches
    it: a writer holding an old organisation seed (a removed admin) cut ``org_keys`` back
    and put back an older key record (issue 12, item 8). Optional: the library's ``Vault``
    works without a home directory; the CLI passes one to ``unlock``."""

    @staticmethod
    def path(vault_id: str) -> Path:
        return _dirs()[1] / f"orgkey-{vault_id}.json"

    def head(self, vault_id: str) -> tuple[int, bytes] | None:
        """(version, public key) of the newest organisation key verified here, if any."""
        path = self.path(vault_id)
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            head = _head(data["head"])
            if head is None or len(head[1]) != 32:
                raise ValueError
            return head
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            raise ConfigurationError(
                f"this machine's record of the organisation key {path} is unreadable",
                hint="fix it; deleting it makes this machine trust the key its key record pins",
            ) from None

    def remember(self, vault_id: str, head: tuple[int, bytes]) -> None:
        if self.head(vault_id) != head:
            _write_private(self.path(vault_id), json.dumps({"head": _dump(head)}))

    def forget(self, vault_id: str) -> None:
        """After a restore made here on purpose: the restored chain may end before the one seen."""
        self.path(vault_id).unlink(missing_ok=True)


def _head(value: list[object] | None) -> tuple[int, bytes] | None:
    if not value:
        return None
    return int(str(value[0])), bytes.fromhex(str(value[1]))


def _dump(head: tuple[int, bytes] | None) -> list[object] | None:
    return [head[0], head[1].hex()] if head else None


# -- which vault each database URL holds (pinned at first use) ------------------------------------


def pin_key(url: str) -> str:
    """The URL a pin is kept under: without its password, a SQLite path made absolute."""
    from urllib.parse import urlsplit, urlunsplit

    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:") and "?" not in url:
        return "sqlite:///" + os.path.abspath(os.path.expanduser(url[len("sqlite:///") :]))
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class VaultPins:
    """The vault id this machine has seen at each database URL (``pins.json``, 0600).

    The first vault used here is pinned silently; after that a URL whose vault id changed,
    or a URL never used while others are pinned, is refused until the user passes
    ``--trust-new-vault`` (the KeePass CVE-2023-24055 pattern: a config file or
    ``CREDVAULT_DB`` pointed at a clone).
    """

    def __init__(self, pins: dict[str, str] | None = None) -> None:
        self.pins = dict(pins or {})

    @staticmethod
    def path() -> Path:
        return _dirs()[1] / "pins.json"

    @classmethod
    def load(cls) -> VaultPins:
        path = cls.path()
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            pins = data["pins"]
            if not isinstance(pins, dict) or not all(isinstance(v, str) for v in pins.values()):
                raise ValueError
            return cls({str(k): v for k, v in pins.items()})
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigurationError(
                f"the vault pins file {path} is unreadable",
                hint="fix it; deleting it makes this machine trust the next vault it opens",
            ) from None

    def save(self) -> None:
        _write_private(self.path(), json.dumps({"pins": self.pins}, indent=2))

    def check(self, url: str, vault_id_hex: str, *, trust_new: bool = False) -> str | None:
        """Refuse a vault this machine did not expect at ``url``; pin it when trusted.

        Returns a warning to show when a pin was replaced or added with ``trust_new``.
        """
        key = pin_key(url)
        known = self.pins.get(key)
        if known == vault_id_hex:
            return None
        shown = _shown_url(key)
        warning: str | None
        if known is not None:
            if not trust_new:
                raise ConfigurationError(
                    f"the database at {shown} holds vault {vault_id_hex[:16]}, not the vault {known[:16]} "
                    "this machine pinned for it",
                    hint="someone may have pointed you at another database; if you replaced the vault yourself, "
                    "pass --trust-new-vault once",
                )
            warning = f"this machine now trusts vault {vault_id_hex[:16]} at {shown} (was {known[:16]})"
        elif self.pins and not trust_new:
            raise ConfigurationError(
                f"{shown} is not a database this machine has used (it knows {len(self.pins)} other)",
                hint="check --db, CREDVAULT_DB and the config file; if you mean to use this database, "
                "pass --trust-new-vault once",
            )
        else:
            warning = f"this machine now trusts vault {vault_id_hex[:16]} at {shown}" if self.pins else None
        self.pins[key] = vault_id_hex
        self.save()
        return warning


def _shown_url(url: str) -> str:
    from vault.service.validation import shown

    return shown(url, limit=200)


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (see ``write_private``), in a folder created 0700."""
    _private_dir(path.parent)
    write_private(str(path), text.encode("utf-8"))


def write_private(path: str, data: bytes) -> None:
    """Replace the file ``path`` with ``data`` atomically, never readable by others: through
    a new 0600 temporary file of its own (a random name, created exclusively, no symlink
    followed), so that two writers at once never share one and a stale file is never reused."""
    tmp = f"{path}.{os.urandom(6).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as file:  # closes fd; its write() writes all of data or raises
            file.write(data)
            file.flush()
            os.fsync(fd)
        os.replace(tmp, path)
    except BaseException:
        import contextlib  # here: every command's fast path imports this module, none writes

        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _private_dir(path: Path) -> None:
    """Create ``path`` (and parents) 0700; an existing directory is left as it is."""
    old = os.umask(0o077)
    try:
        path.mkdir(parents=True, exist_ok=True)
    finally:
        os.umask(old)
