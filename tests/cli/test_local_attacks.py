"""Attacks from the engineer's own machine, through the CLI (issue 12, items 13–15)."""

from __future__ import annotations

import json
import time

from cli_workspace import ADMIN, Workspace, assert_clean_error, ok
from memory_keyring import MemoryKeyring

# -- item 13: the unlocked session ------------------------------------------------------------------


def test_a_longer_expiry_written_into_the_keyring_is_refused(ready: Workspace, fake_keyring: MemoryKeyring) -> None:
    key, data = ready.session_text(fake_keyring, ADMIN)
    data["expires_at"] = int(time.time()) + 30 * 86_400
    fake_keyring.items[key] = json.dumps(data)
    assert_clean_error(ready.admin("whoami"))
    assert key not in fake_keyring.items


def test_a_keyring_copy_taken_before_lock_opens_nothing_after_it(
    ready: Workspace, fake_keyring: MemoryKeyring
) -> None:
    key, _ = ready.session_text(fake_keyring, ADMIN)
    stolen = fake_keyring.items[key]
    ok(ready.admin("lock"))
    fake_keyring.items[key] = stolen
    result = ready.admin("client", "list")
    assert_clean_error(result)
    assert "acme" not in result.stdout
    assert key not in fake_keyring.items  # the stale copy was dropped on sight
