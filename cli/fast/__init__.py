"""The console-script entry point, with a fast path through the engineer's running agent.

While ``credvault unlock`` (or ``agent start``) keeps the session in the agent, the
everyday commands need none of click, SQLAlchemy or cryptography: one request over the
agent's socket and the same output the click command prints. ``parse`` (parse.py)
reads a command line strictly, with the standard library alone, ``serve`` (serve.py)
asks the agent and prints (printing.py); *everything else* goes to the click CLI
(``vault.cli.main``): another command, any option it does not know, an option given
twice, ``--help``, a prompt, ``--passphrase-file``, no agent running. Whatever the fast
path cannot do exactly as the click command would, it leaves to it;
``tests/cli/test_fast.py`` runs both on the same command lines and compares them.

Served: ``whoami``, ``status``, ``client list``, ``secret list [CLIENT]``, ``secret show REF``,
``secret history REF``, ``secret add REF --kind K ... (--password-stdin | --generate)``,
``checkout REF`` (``--show``, ``--json`` or the clipboard), ``checkin REF``, ``checkouts``,
``audit log``.
"""

from __future__ import annotations

import os
import sys

from .parse import Order, parse

__all__ = ["Order", "main", "parse", "via_agent"]


def main() -> None:
    """Console-script entry point: the agent fast path, else the click CLI."""
    order = None if os.environ.get("CREDVAULT_KEY_FILE") else parse(sys.argv[1:])  # a service: click's
    if order is not None:
        from .serve import serve

        try:
            status = serve(order)
            if status is not None:
                sys.stdout.flush()
        except BrokenPipeError:  # `credvault secret list | head`: the reader left; no traceback
            _quiet_stdout()
            sys.exit(1)  # as click does on EPIPE
        if status is not None:
            sys.exit(status)
    from ..main import main as click_main

    click_main()


def _quiet_stdout() -> None:
    """Point standard output at /dev/null so that the interpreter's last flush fails no more."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def via_agent(order: Order) -> int | None:
    """Run ``order`` through the engineer's agent: the exit status, or None if none runs."""
    from .serve import serve

    return serve(order)
