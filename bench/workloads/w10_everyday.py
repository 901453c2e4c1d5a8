"""W10: everyday CLI commands with a session unlocked and the agent running, against ``pass show``.

An engineer enrolled here with the default Argon2id parameters, holding a grant for one
client of the main data set, runs ``credvault unlock`` once and ``credvault agent
start`` once (``bench/clitools.py``: a private ``CREDVAULT_HOME``, a file-backed
keyring), then each of these commands, each as its own process, timed from the parent:

``whoami``, ``client list``, ``secret list CLIENT``, ``secret show REF``, ``checkout REF
--show``, ``checkout REF`` to the clipboard, ``audit log --limit 20``, ``checkin REF``
(after an untimed ``checkout --show``, so that there is something to check in) and
``secret add REF --password-stdin`` (a new name each run, the value on standard input).

The command is the console script as ``pip install .`` installs it (``--quick``: the
project's .venv one). The clipboard is the file backend the tests use
(``CREDVAULT_CLIPBOARD_FILE``): this machine has no X server or Xvfb, so a real
clipboard tool cannot run; the detached clearer each clipboard checkout starts is part
of the command. Whatever the CLI does for each command (through the agent or in its own
process) is what is measured.

With ``--quick`` each command runs once, and that run is the sample.

Baseline: ``pass show`` in the same run (``clitools.pass_show``). Target: each command
≤ 2× ``pass show`` (median against median).

Checks: every run exits 0 and prints what it should (the value, the names); the
clipboard file holds the value after each clipboard checkout; the audit log gained
exactly one ``checkout`` event per checkout run, one ``checkin`` per checkin and one
``secret-create`` per ``secret add``; the library reads back every value ``secret add``
stored.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench import dataset
from bench.clitools import CliUser, console_script, pass_show, pass_summary
from bench.report import MET, NOT_MET, Outcome, Row
from bench.step import log
from bench.suite import Context
from bench.timing import summary
from vault import Vault
from vault.service.sessions import MemorySessionStore
from vault.storage import models as m

ENGINEER = "cli-w10"
ACTIONS = ("checkout", "checkin", "secret-create")

# one run: (arguments, standard input, a check of the output)
Run = tuple[list[str], str | None, Callable[[str], bool]]


def _events(admin: Any, since: int) -> dict[str, int]:
    with admin.store.transaction() as s:
        rows = s.execute(
            select(m.AuditEvent.action, func.count())
            .where(m.AuditEvent.seq > since, m.AuditEvent.action.in_(ACTIONS))
            .group_by(m.AuditEvent.action)
        ).all()
    return {str(a): int(n) for a, n in rows}


def _commands(mf: dataset.Manifest, user: CliUser) -> list[tuple[str, Callable[[int], Run]]]:
    slug = dataset.client_slug(0)
    ref = mf.ref(0, 0)
    name = ref.split("/")[1]
    password = mf.password(ref)
    listed = mf.shape.secrets_of(0)

    def printed(text: str) -> Callable[[str], bool]:
        return lambda out: text in out

    def on_clipboard(_out: str) -> bool:
        try:
            return user.clipboard.read_text(encoding="utf-8") == password
        except OSError:
            return False

    def clear_clipboard() -> None:
        user.clipboard.write_text("")

    def clipboard_run(i: int) -> Run:
        clear_clipboard()  # so that the check sees this run's copy, not the last one's
        return ["checkout", ref, "-r", f"bench W10 clip {i}", "--clear-after", "5"], None, on_clipboard

    def added(i: int) -> str:
        return f"{slug}/w10-added-{i:03d}"

    return [
        ("whoami", lambda i: (["whoami"], None, printed(ENGINEER))),
        ("client list", lambda i: (["client", "list"], None, printed(slug))),
        (f"secret list {slug} ({listed} secrets)", lambda i: (["secret", "list", slug], None, printed(name))),
        ("secret show", lambda i: (["secret", "show", ref], None, printed(name))),
        ("checkout --show", lambda i: (["checkout", ref, "-r", f"bench W10 {i}", "--show"], None, printed(password))),
        ("checkout to the clipboard (file backend)", clipboard_run),
        ("audit log --limit 20", lambda i: (["audit", "log", "--limit", "20"], None, printed("checkout"))),
        ("checkin (after an untimed checkout)", lambda i: (["checkin", ref], None, lambda out: True)),
        (
            "secret add --password-stdin",
            lambda i: (
                ["secret", "add", added(i), "--kind", "other", "--password-stdin"],
                f"w10-value-{i}-{mf.seed[:8]}\n",
                lambda out: True,
            ),
        ),
    ]


def measure(params: dict[str, Any]) -> dict[str, Any]:
    mf = dataset.load(params["manifest"])
    reps = params["reps"]
    admin = dataset.open_vault(mf, dataset.ADMIN)
    code = admin.engineers.invite(ENGINEER)
    enrolling = Vault.open(mf.url, sessions=MemorySessionStore())  # default Argon2id parameters, as a user
    admin.engineers.confirm(ENGINEER, enrolling.engineers.enroll(ENGINEER, code, dataset.passphrase(ENGINEER)))
    enrolling.close()
    admin.grants.grant(ENGINEER, dataset.client_slug(0))
    ref, password = mf.ref(0, 0), mf.password(mf.ref(0, 0))
    head = admin.audit.head()[0]
    checks: list[tuple[str, bool]] = []
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="cvbench-w10-") as tmp_name:
        tmp = Path(tmp_name)
        command, installed = console_script(tmp, params["installed"])
        user = CliUser(tmp, mf.url, ENGINEER, dataset.passphrase(ENGINEER), command)
        checks += [(f"W10: {c}", ok) for c, ok in user.start()]
        runs = {"checkout": 0, "checkin": 0, "secret-create": 0}
        for label, make in _commands(mf, user):
            log(f"credvault {' '.join(make(0)[0])}")
            times: list[float] = []
            ok, peak = True, None
            for i in range(reps + 1):  # the first run warms the page cache (not counted)
                args, stdin, looks_right = make(i)
                if args[0] == "checkin":  # something to check in, untimed
                    _s, c0, out0, _r = user.run("checkout", ref, "-r", "bench W10 before checkin", "--show")
                    ok = ok and c0 == 0 and password in out0
                    runs["checkout"] += 1
                if i:
                    seconds, code_, out, _rss = user.run(*args, stdin=stdin)
                    times.append(seconds)
                else:  # the first run (untimed unless --quick) gives the command's own peak RSS
                    seconds, code_, out, peak = user.peak_rss(*args, stdin=stdin)
                    if not reps:  # --quick: this one run is the only sample
                        times.append(seconds)
                ok = ok and code_ == 0 and looks_right(out)
                if code_ != 0:
                    log(f"{label}: exit {code_}: {out.strip()[-200:]}")
                if args[0] == "checkout":
                    runs["checkout"] += 1
                elif args[0] == "checkin":
                    runs["checkin"] += 1
                elif args[:2] == ["secret", "add"]:
                    runs["secret-create"] += 1
            checks.append((f"W10: every `{label}` run exited 0 and printed or did what it should", ok))
            figures[label] = {"summary": summary(times), "peak": peak}
        user.stop()
        added = [f"{dataset.client_slug(0)}/w10-added-{i:03d}" for i in range(reps + 1)]
        stored = [admin.checkouts.reveal(r, reason="bench W10 read-back") for r in added]
        expected = [f"w10-value-{i}-{mf.seed[:8]}" for i in range(reps + 1)]
        checks.append((f"W10: the library reads back the {len(added)} values `secret add` stored", stored == expected))
        written = _events(admin, head)
        checks.append(
            (
                f"W10: the audit log gained one event per command run ({runs} expected, {written} written)",
                all(written.get(a, 0) == n for a, n in runs.items()),
            )
        )
        baseline = pass_show(max(1, reps), ref, password, tmp)
        if baseline["available"]:
            checks.append(("W10: `pass show` printed the value", baseline["ok"]))
    admin.close()
    return {
        "checks": checks,
        "commands": figures,
        "installed": installed,
        "agent": user.agent,
        "pass": pass_summary(baseline),
    }


def run(ctx: Context) -> Outcome:
    out = Outcome()
    manifest = ctx.main_dataset(out)
    if manifest is None:
        return out
    params = {"manifest": manifest, "reps": ctx.plan.w10_reps, "installed": ctx.plan.w10_installed}
    result = ctx.step(out, "W10 everyday CLI commands", "bench.workloads.w10_everyday:measure", params)
    if result is None:
        return out
    v = result.value
    pass_ms = v["pass"]["summary"]["median"] * 1000 if v["pass"].get("available") else None
    pass_what = "pass show" if pass_ms is not None else v["pass"].get("why", "pass unavailable")
    where = "installed copy" if v["installed"] else ".venv console script"
    session = "agent running" if v["agent"] else "keyring session, no agent"
    met: list[str] = []
    slow: list[str] = []
    for label, f in v["commands"].items():
        ms = f["summary"]["median"] * 1000
        verdict = "not measurable"
        if pass_ms is not None:
            verdict = MET if ms <= 2 * pass_ms else NOT_MET
            (met if verdict == MET else slow).append(f"`{label}` {ms / pass_ms:.1f}×")
        out.rows.append(
            Row(
                "W10",
                f"`credvault {label}`, {session}, {where}: median",
                ms,
                "ms",
                pass_ms,
                pass_what,
                "≤ 2× pass",
                verdict,
                f["peak"],
                f"n={f['summary']['n']}",
            )
        )
    if pass_ms is None:
        out.notes.append(f"**Target (≤ 2× `pass show`): not measurable here** ({pass_what}).")
    else:
        out.notes.append(
            f"**Target (each everyday command ≤ 2× `pass show`): met by {len(met)} of {len(met) + len(slow)}.** "
            f"`pass show` takes {pass_ms:.0f} ms (gpg-agent warm). Met: {', '.join(met) or 'none'}. Not met: "
            f"{', '.join(slow) or 'none'}. Each command is its own process of the {where} "
            f"({'the session held by `credvault agent`' if v['agent'] else 'no agent: the keyring session'}); "
            "its wall time is measured from the parent, start-up and imports included; the peak RSS column is the "
            "largest of the command's processes."
        )
    out.notes.append(
        "The clipboard checkout copies to the file backend `CREDVAULT_CLIPBOARD_FILE` (what the tests use): this "
        "machine has no X server or Xvfb, so xclip cannot run; a real clipboard tool adds its own process. The "
        "detached clearer that the command starts is included; its sleep is not. `checkin` is timed after an "
        "untimed `checkout --show` of the same secret; `secret add` stores a new secret each run, its value read "
        "from standard input."
    )
    return out
