"""A keyring backend kept in one file: how W2 gives the CLI an unlocked session.

The benchmark machine has no desktop keyring (no Secret Service on D-Bus), but the
target of W2 is "CLI checkout with an unlocked session", which the CLI reads from the
OS keyring. W2 therefore runs the CLI with ``PYTHON_KEYRING_BACKEND`` naming this
class and ``CREDVAULT_BENCH_KEYRING`` naming a file in the benchmark's temporary
directory (mode 0600, deleted afterwards). It costs a file read where a real keyring
costs a D-Bus round trip (and the import of ``secretstorage``), so W2 also reports
that import separately. Benchmark use only: the file is plaintext.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from keyring.backend import KeyringBackend

ENV = "CREDVAULT_BENCH_KEYRING"


class FileKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    @staticmethod
    def _path() -> Path:
        return Path(os.environ[ENV])

    def _load(self) -> dict[str, str]:
        path = self._path()
        return json.loads(path.read_text()) if path.exists() else {}

    def _save(self, items: dict[str, str]) -> None:
        path = self._path()
        path.write_text(json.dumps(items))
        path.chmod(0o600)

    def get_password(self, service: str, username: str) -> str | None:
        return self._load().get(f"{service}\0{username}")

    def set_password(self, service: str, username: str, password: str) -> None:
        items = self._load()
        items[f"{service}\0{username}"] = password
        self._save(items)

    def delete_password(self, service: str, username: str) -> None:
        items = self._load()
        items.pop(f"{service}\0{username}", None)
        self._save(items)
