"""`churnwatch queue`, the call centre's page, and `churnwatch agent add|remove`, its accounts."""

from __future__ import annotations

import logging.config
from pathlib import Path

import click

from stream_app.cli.common import kafka_reachable, logging_setup, read_settings
from stream_app.contracts.events import QUEUES
from stream_app.settings import Settings

__all__ = ["queue", "agent"]

_ACCOUNTS_HELP = "The accounts file (default: CHURNWATCH_QUEUE_ACCOUNTS)."


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--day", "day_", type=click.DateTime(["%Y-%m-%d"]), help="The day to call (default: the newest alert's).")
@click.option("--budget", type=click.IntRange(1), help="Calls a day (default: CHURNWATCH_DAILY_CALL_BUDGET).")
@click.option("--lookup", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV of customer_id,phone kept by the operator: the numbers agents dial.")
@click.option("--refresh-s", default=60.0, show_default=True, type=click.FloatRange(0.5),
              help="How often the page reads what the alerts and outcomes topics gained.")
def queue(host: str, port: int, day_, budget: int | None, lookup: Path | None, refresh_s: float) -> None:
    """The call centre's page: each agent's calls of the day in priority order, and buttons
    that record each outcome (agents log in: docs/call-centre.md)."""
    from aiohttp import web

    from stream_app.alerts.agents import Accounts
    from stream_app.alerts.call_queue import CallQueue, load_lookup
    from stream_app.alerts.queue_page import Login, make_app

    settings = read_settings()
    if not settings.kafka_bootstrap:
        raise click.ClickException("set KAFKA_BOOTSTRAP: the calls come from the alerts topic")
    if settings.queue_accounts is None:
        raise click.ClickException("set CHURNWATCH_QUEUE_ACCOUNTS to the agents' accounts file "
                                   "(create it with `churnwatch agent add`): the page has no open access")
    login = Login(Accounts(settings.queue_accounts), settings.queue_auth_header, _session_key(settings),
                  settings.queue_cookie_secure)
    kafka_reachable(settings)
    config = logging_setup(settings)
    config["loggers"] = {"kafka": {"level": "WARNING"}}  # not a line per connection, each refresh
    logging.config.dictConfig(config)
    numbers = load_lookup(lookup) if lookup else None
    calls = CallQueue(settings, day_.date() if day_ else None, budget, numbers)
    calls.refresh()
    click.echo(f"{len(calls.alerts)} calls for {calls.day} on http://{host}:{port}/", err=True)
    try:
        web.run_app(make_app(calls, login, refresh_s), host=host, port=port, print=None)
    finally:
        calls.close()


@click.group()
def agent() -> None:
    """The call-queue page's accounts: who may log in, and the queues each one sees."""


@agent.command("add")
@click.argument("agent_id")
@click.option("--accounts", type=click.Path(dir_okay=False, path_type=Path), help=_ACCOUNTS_HELP)
@click.option("--name", help="The agent's name, as the page shows it.")
@click.option("--queue", "queues", multiple=True,
              type=click.Choice(QUEUES),
              help="A queue whose calls the agent sees (repeat it; none: every queue).")
@click.option("--region", "regions", multiple=True, help="A region whose calls the agent sees (repeat it; none: every "
                                                        "region).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input, not a prompt.")
@click.option("--no-password", is_flag=True, help="No password: the agent logs in through an auth proxy.")
def agent_add(agent_id: str, accounts: Path | None, name: str | None, queues: tuple[str, ...],
              regions: tuple[str, ...], password_stdin: bool, no_password: bool) -> None:
    """Add an agent, or replace their account; the page takes it at their next request."""
    from stream_app.alerts.agents import add_agent

    path = _accounts_path(accounts)
    if no_password:
        password = None
    elif password_stdin:
        password = click.get_text_stream("stdin").readline().rstrip("\n")
    else:
        password = click.prompt(f"password for {agent_id}", hide_input=True, confirmation_prompt=True)
    if password is not None and len(password) < 8:
        raise click.ClickException("the password is shorter than 8 characters")
    add_agent(path, agent_id, password, list(queues), name, list(regions))
    click.echo(f"{agent_id} can log in to the call-queue page ({path})", err=True)


@agent.command("remove")
@click.argument("agent_id")
@click.option("--accounts", type=click.Path(dir_okay=False, path_type=Path), help=_ACCOUNTS_HELP)
def agent_remove(agent_id: str, accounts: Path | None) -> None:
    """Remove an agent: their open sessions end at their next request."""
    from stream_app.alerts.agents import remove_agent

    path = _accounts_path(accounts)
    remove_agent(path, agent_id)
    click.echo(f"{agent_id} removed from {path}", err=True)


def _session_key(settings: Settings) -> bytes | None:
    from cryptography.fernet import Fernet

    if settings.queue_session_key is None:
        return None
    key = settings.queue_session_key.get_secret_value().encode()
    try:
        Fernet(key)
    except ValueError:
        raise click.ClickException("CHURNWATCH_QUEUE_SESSION_KEY is not a Fernet key (32 url-safe base64 bytes); make "
                                   "one with: python -c 'from cryptography.fernet import Fernet; "
                                   "print(Fernet.generate_key().decode())'") from None
    return key


def _accounts_path(given: Path | None) -> Path:
    path = given or read_settings().queue_accounts
    if path is None:
        raise click.ClickException("give --accounts FILE or set CHURNWATCH_QUEUE_ACCOUNTS")
    return path
