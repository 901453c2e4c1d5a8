"""Unlocked sessions in a real OS keyring: GNOME Keyring's Secret Service on a private
D-Bus session (skipped where gnome-keyring or dbus-run-session is not installed).

The check runs in a child process started under ``dbus-run-session``, so that the
keyring daemon, its D-Bus bus and its login collection exist only for this test.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    not (shutil.which("dbus-run-session") and shutil.which("gnome-keyring-daemon")),
    reason="needs dbus-run-session and gnome-keyring-daemon (Debian: dbus, gnome-keyring)",
)

CHILD = textwrap.dedent(
    """
    import datetime as dt, sys
    import keyring
    from keyring.backends import SecretService
    from vault.errors import Locked, SessionExpired
    from vault.service.sessions import KeyringSessionStore, UnlockedSession, load_session

    keyring.set_keyring(SecretService.Keyring())
    store = KeyringSessionStore(service="credvault-test")
    now = dt.datetime.now(dt.timezone.utc)
    session = UnlockedSession(vault_id=b"v" * 16, engineer_id=7, name="alice", key_generation=1,
                              sealing_private=b"s" * 32, signing_seed=b"g" * 32, org_signing_public=b"o" * 32,
                              expires_at=now + dt.timedelta(minutes=15))
    store.put(session)
    back = load_session(store, b"v" * 16, "alice", now)
    assert back.sealing_private == b"s" * 32 and back.engineer_id == 7, "round trip"
    assert store.delete(b"v" * 16, "alice") is True
    try:
        load_session(store, b"v" * 16, "alice", now)
        raise SystemExit("a locked session was still readable")
    except Locked:
        pass
    store.put(session)
    try:
        load_session(store, b"v" * 16, "alice", now + dt.timedelta(minutes=16))
        raise SystemExit("an expired session was accepted")
    except SessionExpired:
        pass
    assert store.get(b"v" * 16, "alice") is None, "the expired entry must be deleted from the keyring"
    print("SECRET-SERVICE-OK")
    """
)


def test_sessions_round_trip_expire_and_lock_in_a_real_secret_service(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    runner = tmp_path / "run.sh"
    runner.write_text(
        "set -e\n"
        f"export HOME={tmp_path}\n"
        "eval \"$(printf 'credvault-test\\n' | gnome-keyring-daemon --unlock --components=secrets)\"\n"
        f"{sys.executable} {script}\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        ["dbus-run-session", "--", "sh", str(runner)], capture_output=True, text=True, timeout=60, check=False
    )
    assert "SECRET-SERVICE-OK" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
