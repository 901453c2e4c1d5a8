"""What the agent's tests share besides their fixtures (tests/service/conftest.py: home, admin, served)."""

from __future__ import annotations

import datetime as dt

ADMIN = "root-admin"  # as tests/conftest.py
PASSWORD = "agent-Secret-pw ✓"


class Clock:
    """A clock that stands still until a test moves ``now``."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now
