"""The clipboard: checkout copies the value, a detached clearer empties it later, if still ours.

Most tests use the file backend (CREDVAULT_CLIPBOARD_FILE), which behaves like a
clipboard that anything may overwrite. Where Xvfb and xclip exist, one test runs the
same cycle on a real X clipboard on a private display; elsewhere it is skipped.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import secrets
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_workspace import MemoryKeyring, Snapshots, Workspace, ok
from vault.cli import clipboard, clipclear
from vault.cli.clipboard import Clipboard, clear_if_ours, fingerprint

from vault import Vault

SECRET = "fw-Passw0rd-stdin"
REF = "acme/fw01-admin"
REAL_POPEN = subprocess.Popen
REAL_SPAWN = clipboard.spawn_detached
CLIPBOARD_ENV = ("CREDVAULT_CLIPBOARD_FILE", "DISPLAY", "WAYLAND_DISPLAY")


# -- a vault built once per module, copied into each test --------------------------------------


def admin_only(ws: Workspace) -> None:
    ws.init()
    ok(ws.admin("client", "add", "acme", "--name", "Acme Ltd"))
    ok(ws.admin("secret", "add", REF, "--kind", "equipment", "--password-stdin", input=SECRET + "\n"))


@pytest.fixture
def ready(snapshots: Snapshots, tmp_path: Path, fake_keyring: MemoryKeyring) -> Workspace:
    return snapshots.clone(admin_only, tmp_path, fake_keyring)


@pytest.fixture
def board_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file standing in for the clipboard, for this process and the clearers it starts."""
    for name in CLIPBOARD_ENV:
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "clipboard.txt"
    monkeypatch.setenv("CREDVAULT_CLIPBOARD_FILE", str(path))
    return path


class Clearer:
    """A clearer started by ``clipboard.spawn_detached``: its pid, argv and standard input."""

    def __init__(self, pid: int, args: list[str], stdin: bytes) -> None:
        self.pid, self.args, self.stdin = pid, args, stdin
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"clearer {self.pid} still running")
            time.sleep(0.05)
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, 9)


def _set_subreaper(on: bool) -> None:
    """Make this process the reaper of its orphaned descendants (Linux ``PR_SET_CHILD_SUBREAPER``)."""
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(36, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


@pytest.fixture
def subreaper() -> Iterator[None]:
    """The clearer is started by a double fork and left to init; while a test runs, this
    process stands in for init (a subreaper), so that it can wait for the clearer and read
    its exit status as the tests below do."""
    _set_subreaper(True)
    yield
    _set_subreaper(False)


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch, subreaper: None) -> Iterator[list[Clearer]]:
    """The clearer processes started during the test (reaped, or killed, at the end)."""
    started: list[Clearer] = []

    def spy(args: list[str], stdin: bytes) -> int:
        pid = REAL_SPAWN(args, stdin)
        started.append(Clearer(pid, args, stdin))
        return pid

    monkeypatch.setattr(clipboard, "spawn_detached", spy)
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=5)


def head(ws: Workspace) -> tuple[int, bytes]:
    vault = Vault.open(ws.url)
    try:
        return vault.audit.head()
    finally:
        vault.close()


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


# -- checkout to the clipboard, and the detached clearer ---------------------------------------


def test_checkout_copies_to_the_clipboard_and_a_detached_clearer_empties_it_later(
    ready: Workspace, board_file: Path, spawned: list[Clearer]
) -> None:
    before, _ = head(ready)
    result = ok(ready.admin("checkout", REF, "--reason", "T-1", "--clear-after", "5"))
    copied_at = time.monotonic()
    [clearer] = spawned
    assert clearer.poll() is None  # the command has returned; its clearer sleeps on
    assert os.getsid(clearer.pid) == clearer.pid  # in a session of its own: no hangup or Ctrl-C reaches it
    cmdline = Path(f"/proc/{clearer.pid}/cmdline").read_bytes().split(b"\0")
    assert b"vault.cli.clipclear" in cmdline and b"5" in cmdline
    assert SECRET.encode() not in b" ".join(cmdline)
    assert SECRET.encode() not in Path(f"/proc/{clearer.pid}/environ").read_bytes()

    assert SECRET not in result.output
    assert "clipboard" in result.stderr and "5 s" in result.stderr
    assert board_file.read_text(encoding="utf-8") == SECRET
    assert [e.action for e in ready.library().audit.log() if e.seq > before].count("checkout") == 1
    assert wait_until(lambda: board_file.read_text(encoding="utf-8") == "")
    assert time.monotonic() - copied_at > 4  # not before its time
    assert clearer.wait(timeout=5) == 0


def test_the_clearer_leaves_a_clipboard_overwritten_since_alone(board_file: Path, spawned: list[Clearer]) -> None:
    board = clipboard.find()
    assert board is not None
    clipboard.copy_with_clear(board, SECRET, 1)  # what checkout does, with a delay the CLI would refuse
    assert board_file.read_text(encoding="utf-8") == SECRET
    board_file.write_text("something the engineer copied later", encoding="utf-8")
    [clearer] = spawned
    assert clearer.wait(timeout=15) == 3  # "not ours": nothing cleared
    assert board_file.read_text(encoding="utf-8") == "something the engineer copied later"


def test_the_clearer_gets_neither_the_value_on_its_command_line_nor_on_its_input(
    ready: Workspace, board_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[list[str], bytes]] = []

    def fake(args: list[str], stdin: bytes) -> int:
        calls.append((args, stdin))
        return 0

    monkeypatch.setattr(clipboard, "spawn_detached", fake)
    ok(ready.admin("checkout", REF, "--reason", "T-1", "--clear-after", "7"))
    [(args, stdin)] = calls
    assert args == [sys.executable, "-P", "-m", "vault.cli.clipclear", "7"]
    sent = stdin.decode("ascii")
    assert SECRET not in sent
    key_hex, digest = sent.split()
    assert sent.endswith("\n") and len(bytes.fromhex(key_hex)) == 32
    assert digest == fingerprint(bytes.fromhex(key_hex), SECRET)
    # a fresh random key each time: the digest says nothing without it
    ok(ready.admin("checkout", REF, "--reason", "T-1", "--clear-after", "7"))
    assert calls[1][1].split()[0].decode() != key_hex


CHILD = """
import os, sys
data = sys.stdin.read()
try:
    os.fstat({fd})
    inherited = "open"
except OSError:
    inherited = "closed"
with open({out!r}, "w") as f:
    f.write(repr((data, inherited, os.getsid(0) == os.getpid(), os.readlink("/proc/self/fd/1"))))
"""


def test_spawn_detached_passes_stdin_only_and_starts_a_session(tmp_path: Path, subreaper: None) -> None:
    """The clearer's start: its input on a pipe, its output to /dev/null, in a session of its
    own, and no descriptor of ours, even one marked inheritable (as close_fds=True)."""
    for high in (False, True):  # below and above the descriptors spawn_detached opens for itself
        out = tmp_path / f"child-{high}.txt"
        read_end, write_end = os.pipe()
        os.set_inheritable(write_end, True)
        held = os.dup2(write_end, 900, inheritable=True) if high else write_end
        try:
            script = CHILD.format(fd=held, out=str(out))
            child = Clearer(clipboard.spawn_detached([sys.executable, "-c", script], b"key digest\n"), [], b"")
            assert child.wait(timeout=15) == 0
        finally:
            for end in {read_end, write_end, held}:
                os.close(end)
        assert out.read_text() == repr(("key digest\n", "closed", True, os.devnull))


def test_spawn_detached_raises_when_the_program_cannot_start(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        clipboard.spawn_detached([str(tmp_path / "no-such-program")], b"x\n")


@pytest.mark.parametrize("seconds", ["4", "601", "soon"])
def test_clear_after_out_of_range_is_a_usage_error_and_nothing_is_recorded(
    ready: Workspace, board_file: Path, seconds: str
) -> None:
    before = head(ready)
    result = ready.admin("checkout", REF, "--reason", "T-1", "--clear-after", seconds)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and SECRET not in result.output
    assert head(ready) == before
    assert not board_file.exists()


def test_show_and_json_do_not_touch_the_clipboard(ready: Workspace, board_file: Path, spawned: list[Clearer]) -> None:
    ok(ready.admin("checkout", REF, "--reason", "T-1", "--show"))
    ok(ready.admin("checkout", REF, "--reason", "T-1", "--json"))
    assert not board_file.exists()
    assert spawned == []


# -- clear_if_ours and the clearer's entry point, with a fake clipboard ------------------------------


@pytest.fixture
def fake_board(tmp_path: Path) -> Clipboard:
    return Clipboard("file", path=tmp_path / "board.txt")


def test_clear_if_ours_clears_our_value(fake_board: Clipboard) -> None:
    key = secrets.token_bytes(32)
    fake_board.copy(SECRET)
    assert fake_board.paste() == SECRET
    assert clear_if_ours(fake_board, key, fingerprint(key, SECRET)) is True
    assert fake_board.paste() == ""


def test_clear_if_ours_leaves_another_value_alone(fake_board: Clipboard) -> None:
    key = secrets.token_bytes(32)
    fake_board.copy("copied by the user afterwards")
    assert clear_if_ours(fake_board, key, fingerprint(key, SECRET)) is False
    assert fake_board.paste() == "copied by the user afterwards"


def test_clear_if_ours_needs_the_same_key(fake_board: Clipboard) -> None:
    fake_board.copy(SECRET)
    digest = fingerprint(secrets.token_bytes(32), SECRET)
    assert clear_if_ours(fake_board, secrets.token_bytes(32), digest) is False
    assert fake_board.paste() == SECRET


def test_clear_if_ours_on_an_empty_clipboard_writes_nothing(fake_board: Clipboard) -> None:
    key = secrets.token_bytes(32)
    assert clear_if_ours(fake_board, key, fingerprint(key, SECRET)) is False
    assert fake_board.path is not None and not os.path.exists(fake_board.path)


def test_the_file_clipboard_is_private(fake_board: Clipboard) -> None:
    fake_board.copy(SECRET)
    assert fake_board.path is not None
    assert os.stat(fake_board.path).st_mode & 0o777 == 0o600


def run_clearer(monkeypatch: pytest.MonkeyPatch, argv: list[str], stdin: str) -> tuple[int, list[float]]:
    slept: list[float] = []
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    monkeypatch.setattr(clipclear.time, "sleep", slept.append)
    return clipclear.main(argv), slept


def test_clearer_main_clears_after_sleeping(board_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = secrets.token_bytes(32)
    board_file.write_text(SECRET, encoding="utf-8")
    code, slept = run_clearer(monkeypatch, ["clipclear", "30"], f"{key.hex()} {fingerprint(key, SECRET)}\n")
    assert (code, slept, board_file.read_text(encoding="utf-8")) == (0, [30], "")


def test_clearer_main_reports_a_value_that_is_not_ours(board_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = secrets.token_bytes(32)
    board_file.write_text("other", encoding="utf-8")
    code, _ = run_clearer(monkeypatch, ["clipclear", "30"], f"{key.hex()} {fingerprint(key, SECRET)}\n")
    assert (code, board_file.read_text(encoding="utf-8")) == (3, "other")


@pytest.mark.parametrize(
    ("argv", "stdin"),
    [
        (["clipclear"], "00 11\n"),
        (["clipclear", "x"], "00 11\n"),
        (["clipclear", "5"], "not-hex 11\n"),
        (["c", "5"], ""),
    ],
)
def test_clearer_main_refuses_bad_input(
    board_file: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], stdin: str
) -> None:
    board_file.write_text(SECRET, encoding="utf-8")
    code, slept = run_clearer(monkeypatch, argv, stdin)
    assert (code, slept, board_file.read_text(encoding="utf-8")) == (2, [], SECRET)


def test_clearer_main_without_a_clipboard(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CLIPBOARD_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(clipboard.sys, "platform", "linux")
    key = secrets.token_bytes(32)
    code, slept = run_clearer(monkeypatch, ["clipclear", "5"], f"{key.hex()} {fingerprint(key, SECRET)}\n")
    assert (code, slept) == (1, [])


def test_the_clipboard_file_setting_wins_over_a_display(board_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-9")
    board = clipboard.find()
    assert board is not None and (board.name, board.path) == ("file", str(board_file))


def test_no_clipboard_without_a_display(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CLIPBOARD_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(clipboard.sys, "platform", "linux")
    assert clipboard.find() is None


# -- the real X clipboard, on a private Xvfb display -------------------------------------------------


@pytest.fixture(scope="session")
def x_tools() -> None:
    """Xvfb and xclip, installed with apt-get only when CREDVAULT_TEST_INSTALL_X=1 (as root)."""
    missing = [tool for tool in ("Xvfb", "xclip") if shutil.which(tool) is None]
    may_install = os.environ.get("CREDVAULT_TEST_INSTALL_X") == "1" and shutil.which("apt-get") and os.geteuid() == 0
    if missing and may_install:
        for args in (["apt-get", "update"], ["apt-get", "install", "-y", "xvfb", "xclip"]):
            subprocess.run(args, check=False, capture_output=True, timeout=900)
        missing = [tool for tool in ("Xvfb", "xclip") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"no real clipboard to test here ({', '.join(missing)} missing)")


@pytest.fixture
def x_display(x_tools: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private Xvfb server; DISPLAY points at it and no other clipboard is configured."""
    read_end, write_end = os.pipe()
    server = REAL_POPEN(
        ["Xvfb", "-displayfd", str(write_end), "-nolisten", "tcp", "-screen", "0", "320x240x24"],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    try:
        number = b""
        deadline = time.monotonic() + 15
        while not number.endswith(b"\n") and time.monotonic() < deadline:
            ready, _, _ = select.select([read_end], [], [], 0.5)
            if ready:
                chunk = os.read(read_end, 16)
                if not chunk:
                    break
                number += chunk
        if not number.strip().isdigit():
            pytest.skip("Xvfb did not start")
        for name in CLIPBOARD_ENV:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("DISPLAY", f":{number.strip().decode()}")
        yield os.environ["DISPLAY"]
    finally:
        os.close(read_end)
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=5)


def test_real_x_clipboard_copy_paste_and_clear_if_ours(
    ready: Workspace, x_display: str, spawned: list[Clearer]
) -> None:
    board = clipboard.find()
    assert board is not None and board.name == "xclip"
    key = secrets.token_bytes(32)
    board.copy(SECRET)
    assert board.paste() == SECRET
    board.copy("someone else's text")
    assert clear_if_ours(board, key, fingerprint(key, SECRET)) is False
    assert board.paste() == "someone else's text"
    board.copy(SECRET)
    assert clear_if_ours(board, key, fingerprint(key, SECRET)) is True
    assert board.paste() == ""

    result = ok(ready.admin("checkout", REF, "--reason", "T-1", "--clear-after", "5"))
    assert SECRET not in result.output
    assert board.paste() == SECRET
    assert wait_until(lambda: board.paste() == "")
    [clearer] = spawned
    assert clearer.wait(timeout=5) == 0


def test_spawn_detached_from_a_process_with_its_standard_descriptors_closed(tmp_path: Path) -> None:
    """Found in review: with fd 0 closed (`credvault checkout x <&-`) the pipe became fd 0, the
    dup2 onto 0 did nothing, close-on-exec stayed: the clearer started without its input and
    never cleared. Here 0, 1 and 2 are closed in the caller; the child still gets its line."""
    out = tmp_path / "child.txt"
    child = f"import sys; open({str(out)!r}, 'w').write(sys.stdin.read())"
    parent = (
        "import ctypes, os, sys\n"
        "from vault.cli import clipboard\n"
        "assert ctypes.CDLL(None).prctl(36, 1, 0, 0, 0) == 0  # a subreaper: the clearer is left to init\n"
        "for fd in (0, 1, 2): os.close(fd)\n"
        f"pid = clipboard.spawn_detached([sys.executable, '-c', {child!r}], b'key digest\\n')\n"
        "os._exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n"
    )
    import subprocess

    done = subprocess.run([sys.executable, "-c", parent], timeout=30, check=False)
    assert done.returncode == 0
    assert out.read_text() == "key digest\n"


def test_a_clearer_that_cannot_start_takes_the_value_off_and_is_a_clean_error(
    fake_board: Clipboard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in review: a failed clearer start left the value on the clipboard and, on the
    fast path (which reports only VaultError), printed a traceback."""
    from vault.errors import VaultError

    def cannot(_args: list[str], _stdin: bytes) -> int:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(clipboard, "spawn_detached", cannot)
    with pytest.raises(VaultError, match="clearer did not start") as raised:
        clipboard.copy_with_clear(fake_board, SECRET, 30)
    assert fake_board.paste() == "" and raised.value.hint and SECRET not in str(raised.value)


def test_spawn_detached_leaks_no_descriptor_when_fork_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: a failed fork() left the two pipes open in the caller."""

    def no_fork() -> int:
        raise OSError(11, "Resource temporarily unavailable")

    before = sorted(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(clipboard.os, "fork", no_fork)
    with pytest.raises(OSError, match="temporarily"):
        clipboard.spawn_detached([sys.executable, "-c", "pass"], b"x\n")
    assert sorted(os.listdir("/proc/self/fd")) == before


ZOMBIES = """
import os, sys, time
from vault.cli import clipboard

board = clipboard.Clipboard("file", path={board!r})
other = os.fork()  # a child of the caller's own (the agent has some): not the clearer's to wait for
if other == 0:
    time.sleep(1.5)
    os._exit(7)
started = []
real = clipboard.spawn_detached

def spy(argv, stdin):
    started.append(real(argv, stdin))
    return started[-1]

clipboard.spawn_detached = spy
for i in range({copies}):
    clipboard.copy_with_clear(board, "value %d" % i, 1)

def state(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1])
    except (FileNotFoundError, ProcessLookupError):
        return "gone", 0

deadline = time.monotonic() + 30
while time.monotonic() < deadline and any(state(p)[0] not in ("Z", "X", "gone") for p in started):
    time.sleep(0.1)
me = os.getpid()
zombies = [p for p in started if state(p)[1] == me]
status = os.waitpid(other, 0)[1]  # still ours to wait for: nothing reaped it behind our back
try:
    left = os.waitpid(-1, os.WNOHANG)
except ChildProcessError:
    left = None
print(repr((len(started), sorted(state(p)[0] for p in started), zombies, os.waitstatus_to_exitcode(status), left)))
"""


def test_many_copies_in_one_long_lived_process_leave_no_zombie_child(tmp_path: Path) -> None:
    """Found in review: each copy forked a clearer that nobody waited for, one zombie per copy
    in a long-lived caller (the agent, a program using the library). The clearer is now left
    to init: after N copies whose clearers have all ended, the caller has no child left but
    its own, which it still waits for itself."""
    board = tmp_path / "clipboard.txt"
    script = ZOMBIES.format(board=str(board), copies=5)
    env = {**os.environ, "CREDVAULT_CLIPBOARD_FILE": str(board)}  # the clearers' clipboard
    run = [sys.executable, "-c", script]
    done = subprocess.run(run, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert done.returncode == 0, done.stderr
    count, states, zombies, other, left = ast.literal_eval(done.stdout)
    assert count == 5 and "R" not in states and "S" not in states, states  # every clearer has ended
    assert zombies == [], f"clearers left as zombie children of the caller: {zombies}"
    assert other == 7  # the caller's own child was not waited for by the clipboard
    assert left is None  # no child at all remains to be reaped
    assert board.read_text(encoding="utf-8") == ""  # and the last clearer did its work
