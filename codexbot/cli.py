"""The ``codexbot`` command: ``serve`` the webhook receiver, run a ``worker``."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from codexbot.logs import configure_logging
from codexbot.settings import Settings, SettingsError, load_settings


def _settings() -> Settings:
    """Load the settings, or stop with one line that names the bad one."""
    try:
        settings = load_settings()
        settings.private_key_pem()
    except SettingsError as error:
        click.echo(f"codexbot: {error}", err=True)
        sys.exit(2)
    return settings


@click.group()
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.pass_context
def main(context: click.Context, log_level: str) -> None:
    """codex-bot: hands GitHub issues to an AI coding agent in an offline sandbox."""
    context.obj = {"log_level": getattr(logging, log_level.upper())}


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--workers",
    default=2,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Receiver processes (each with a few threads).",
)
@click.pass_context
def serve(context: click.Context, host: str, port: int, workers: int) -> None:
    """Run the webhook receiver (POST /webhook, GET /healthz)."""
    settings = _settings()
    configure_logging(settings.secret_values(), context.obj["log_level"])

    from gunicorn.app.base import BaseApplication

    from app import create_app

    class Receiver(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            options: dict[str, Any] = {
                "bind": f"{host}:{port}",
                "workers": workers,
                "worker_class": "gthread",
                "threads": 8,
                "timeout": 30,
                "graceful_timeout": 5,
                "accesslog": None,
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):  # noqa: ANN202
            return create_app(settings)

    Receiver().run()


@main.command()
@click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
@click.option("--name", default=None, help="Worker name (defaults to host and pid).")
@click.pass_context
def worker(context: click.Context, burst: bool, name: str | None) -> None:
    """Run an RQ worker that executes tasks (checkout, sandbox, agent, publish)."""
    settings = _settings()
    configure_logging(settings.secret_values(), context.obj["log_level"])

    from redis import Redis
    from rq import Queue, Worker

    import workers.jobs  # noqa: F401 - imported once here, so each forked task starts warm

    redis = Redis.from_url(settings.redis_url)
    queue = Queue(settings.codex_queue, connection=redis)
    Worker([queue], connection=redis, name=name).work(burst=burst, with_scheduler=False)


if __name__ == "__main__":
    main()
