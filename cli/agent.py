"""The resident agent: ``credvault agent start | status | stop``.

``credvault unlock`` starts the agent by default; ``agent start`` does the same without
replacing a running one. Either unlocks once (a hidden prompt or ``--passphrase-file``)
into a background process that holds the session in memory, without the OS keyring;
while it runs, the everyday commands ask it over a private Unix socket instead of
opening the database and the keys themselves (cli/fast/, cli/agentvault.py,
``vault/service/agent.py``). Every request is still the audited library call the
command would make. ``credvault lock`` stops it too.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import click

from vault.errors import ConfigurationError, StoreUnavailable
from vault.service import agentclient, config
from vault.service.validation import engineer_name

from .context import AppContext, pass_app
from .engineers import PASSPHRASE_FILE
from .output import echo_json, when


@click.group("agent")
def agent() -> None:
    """Keep your unlocked session in a background agent (what `unlock` does by default).

    \b
    Example:
      credvault agent start --ttl 8h
      credvault checkout acme/fw01-admin -r T-1234
      credvault agent stop
    """


@agent.command("start")
@click.option(
    "--ttl", metavar="DURATION", help="How long the agent lives (default CREDVAULT_SESSION_TTL or 15m; at most 12h)."
)
@PASSPHRASE_FILE
@pass_app
def start(app: AppContext, ttl: str | None, passphrase_file: Path | None) -> None:
    """Unlock once and start the agent; the everyday commands then go through it.

    The agent keeps your keys in its memory only, answers only your own user on a
    socket in a private directory, and ends when its time is up, at `agent stop` or at
    `credvault lock`.

    \b
    Example:
      credvault agent start --ttl 4h
    """
    name = engineer_name(app.require_engineer())
    lifetime = app.session_ttl(ttl)
    url = app.target()
    path = agentclient.socket_path(url, name)
    running = _ping(path)
    if running is not None:
        click.echo(f"An agent for {name} is already running, until {_until(running)}.")
        return
    app.check_target(url)  # the pinned vault or server (`AppContext.check_pin`), before any passphrase is typed
    passphrase = app.passphrase(passphrase_file, prompt=f"Passphrase for {name}")
    from vault.service import agent as agent_service  # the server side: only `start` needs it

    answer = agent_service.start(url, name, passphrase, lifetime)
    local = config.LocalConfig.load()
    local.engineer = name
    if app.server_url() is None:
        local.db_url = local.db_url or url
    local.save()
    click.echo(f"Started the agent for {name} until {_until(answer)}; `credvault agent stop` ends it.")


@agent.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@pass_app
def status(app: AppContext, as_json: bool) -> None:
    """Say whether an agent runs for the selected engineer, and until when.

    \b
    Example:
      credvault agent status
    """
    name = app.require_engineer()
    running = _ping(agentclient.socket_path(app.target(), name))
    if as_json:
        echo_json({"engineer": name, "running": running is not None, "expires_at": (running or {}).get("expires_at")})
    elif running is None:
        click.echo(f"No agent runs for {name}.")
    else:
        click.echo(f"The agent for {name} runs until {_until(running)}.")


@agent.command("stop")
@pass_app
def stop(app: AppContext) -> None:
    """Stop the selected engineer's agent (its keys go with it).

    \b
    Example:
      credvault agent stop
    """
    name = app.require_engineer()
    if stop_agent(app, name):
        click.echo(f"Stopped the agent for {name}.")
    else:
        click.echo(f"No agent runs for {name}.")


def stop_agent(app: AppContext, name: str, *, every: bool = False) -> bool:
    """Stop the agent of ``name`` on the selected database, or with ``every`` each agent of
    ``name`` in this user's private directory (whatever URL spelling started it: ``lock``
    must leave no session running); True if one answered."""
    try:
        paths = [agentclient.socket_path(app.target(), name)]
        if every:
            folder = agentclient.runtime_dir()
            paths += [os.path.join(folder, entry) for entry in sorted(os.listdir(folder)) if entry.endswith(".sock")]
    except (ConfigurationError, OSError):
        return False  # no usable private directory: no agent can be running there
    stopped = False
    for path in dict.fromkeys(paths):
        if path != paths[0] and (_ping(path) or {}).get("engineer") != name:
            continue
        try:
            agentclient.request(path, {"op": "stop"}, timeout=agentclient.CONNECT_TIMEOUT)
        except (agentclient.AgentAbsent, StoreUnavailable):
            continue
        stopped = True
    return stopped


def agent_running(app: AppContext, name: str) -> bool:
    """Whether an agent of ``name`` answers on the selected database."""
    try:
        return _ping(agentclient.socket_path(app.target(), name)) is not None
    except ConfigurationError:
        return False


def _ping(path: str) -> dict[str, object] | None:
    try:
        return agentclient.request(path, {"op": "ping"}, timeout=agentclient.CONNECT_TIMEOUT)
    except (agentclient.AgentAbsent, StoreUnavailable):
        return None


def _until(answer: dict[str, object]) -> str:
    return when(dt.datetime.fromisoformat(str(answer["expires_at"])))


COMMANDS = [agent]
