"""``secret search`` against ``secret list`` over the same 10,000 secrets (not part of ``run.py``).

    .venv/bin/python -m bench.search [--secrets 10000] [--clients 10] [--reps 7] [--cli-reps 5] [--served]

The data set is the benchmark's own (``dataset.build``: generated names, hosts ``10.0.C.J`` on
equipment, URLs on services; three engineers, each granted every client). Measured in one
process, each the median of ``--reps`` runs after one untimed: the admin's ``secrets.list()``
and ``secrets.search(...)`` over every client (a query matching about 1 in 250 secrets, and one
matching none), the same with one client named, and an engineer's over their granted clients;
the peak of Python's allocations during one listing and one search (``tracemalloc``); then the
CLI as a user runs it, with the agent started (``bench/clitools.py``): ``secret list`` and
``secret search`` over every client. ``--served``: also the engineer's and the admin's
``RemoteVault`` through a team server on loopback TLS (the test suite's ``tests/served.py``:
uvicorn in this process, the admin on the host with the key file), list against search.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import sys
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

from bench import dataset
from bench.clitools import CliUser, console_script
from bench.dataset import Shape
from bench.timing import repeat, summary


def _peak_kib(fn: Any) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 1024
    finally:
        tracemalloc.stop()


def _served(manifest: dataset.Manifest, tmp: Path, query: str, reps: int) -> dict[str, Any]:
    """The engineer's and the admin's ``RemoteVault`` through a team server: list against search."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from served import make_test_ca, served_team  # the suite's third mode, reused here

    from vault.crypto.keyrecord import FLOOR

    os.environ["CREDVAULT_HOME"] = str(tmp / "served-home")
    admin = dataset.open_vault(manifest, dataset.ADMIN)
    name = dataset.engineer_name(0)
    words = {n: dataset.passphrase(n) for n in (dataset.ADMIN, name)}
    out: dict[str, Any] = {}
    with served_team(manifest.url, admin, lambda: dt.datetime.now(dt.UTC), words, make_test_ca(tmp), FLOOR) as team:
        for who in (name, dataset.ADMIN):
            remote = team.remote(who)
            assert len(remote.secrets.list()) == manifest.shape.secrets
            found = remote.secrets.search(query)
            assert found and all(x.matched == ("host",) for x in found)
            out[f"{who} list (all)"] = summary(repeat(remote.secrets.list, reps, warmup=1))
            search = functools.partial(remote.secrets.search, query)
            out[f"{who} search (all, {len(found)} found)"] = summary(repeat(search, reps))
    admin.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secrets", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--cli-reps", type=int, default=5)
    parser.add_argument("--served", action="store_true")
    args = parser.parse_args()
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="cvbench-search-") as tmp_name:
        tmp = Path(tmp_name)
        url = f"sqlite:///{tmp / 'search.db'}"
        shape = Shape(secrets=args.secrets, clients=args.clients, engineers=3, grants_per_client=3)
        manifest = dataset.build(url, shape)
        out["build_s"] = round(manifest.build_seconds, 1)
        slug = dataset.client_slug(0)
        some, none = "10.0.3.", "no-such-thing"  # hosts 10.0.<client>.<1..250>: client 3's equipment
        admin = dataset.open_vault(manifest, dataset.ADMIN)
        engineer = dataset.open_vault(manifest, dataset.engineer_name(0))
        found = admin.secrets.search(some)
        assert found and all(x.matched == ("host",) for x in found), "the search finds the generated hosts"
        assert len(admin.secrets.list()) == args.secrets
        assert admin.secrets.search(none) == []
        timings = {
            "admin list (all)": lambda: admin.secrets.list(),
            f"admin search (all, {len(found)} found)": lambda: admin.secrets.search(some),
            "admin search (all, none found)": lambda: admin.secrets.search(none),
            f"admin list ({slug})": lambda: admin.secrets.list(slug),
            f"admin search ({slug})": lambda: admin.secrets.search(some, slug),
            "engineer list (granted)": lambda: engineer.secrets.list(),
            "engineer search (granted)": lambda: engineer.secrets.search(some),
        }
        out["in_process"] = {k: summary(repeat(fn, args.reps, warmup=1)) for k, fn in timings.items()}
        out["peak_kib"] = {
            "admin list (all)": round(_peak_kib(admin.secrets.list)),
            "admin search (all)": round(_peak_kib(lambda: admin.secrets.search(some))),
        }
        admin.close()
        engineer.close()
        command, _copy = console_script(tmp, False)
        user = CliUser(tmp, url, dataset.ADMIN, dataset.passphrase(dataset.ADMIN), command)
        started = user.start()
        assert all(ok for _c, ok in started), started
        cli: dict[str, Any] = {}
        for label, argv in (("secret list", ["secret", "list"]), ("secret search", ["secret", "search", some])):
            user.run(*argv)  # untimed: the page cache
            times = []
            for _ in range(args.cli_reps):
                seconds, code, text, _rss = user.run(*argv)
                assert code == 0, text
                times.append(seconds)
            cli[label] = summary(times)
        user.stop()
        out["cli"] = cli
        if args.served:
            out["served"] = _served(manifest, tmp, some, args.reps)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
