"""The ``codexbot`` command: ``serve`` the webhook receiver, run a ``worker``."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from typing import Any

import click

from codexbot.logs import configure_logging
from codexbot.settings import Settings, SettingsError, app_configured, load_settings


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
@click.version_option(package_name="codex-bot", prog_name="codexbot")
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


# Chosen by measurement (`python -m bench.ingest`, 2 cores; README, "Performance"): granian
# served the same mix at about twice gunicorn's rate, and one process per core with one thread
# each beat more threads (they only contend for the GIL) on both throughput and p99.
DEFAULT_SERVER = "granian"
DEFAULT_THREADS = 1
# How `serve --log-level` reaches the worker processes the server starts.
LOG_LEVEL_VARIABLE = "CODEXBOT_SERVE_LOG_LEVEL"


def served_app():  # noqa: ANN201 - a Flask app; flask is imported in the worker only
    """The factory the production server calls in each worker process: settings, logs, app."""
    from app import create_app

    settings = load_settings()
    level = logging.getLevelNamesMapping().get(os.environ.get(LOG_LEVEL_VARIABLE, ""), logging.INFO)
    configure_logging(settings.secret_values(), level)
    return create_app(settings)


def setup_app():  # noqa: ANN201 - a Flask app
    """The factory for the set-up server (no App configured yet): see app/setup.py."""
    from app.setup import create_setup_app

    configure_logging([], logging.INFO)
    return create_setup_app(
        os.environ.get("GITHUB_API_URL", "").strip() or "https://api.github.com",
        os.environ.get("CODEX_PUBLIC_URL", "").strip() or None,
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--workers",
    default=None,
    type=click.IntRange(1, 64),
    help="Receiver processes  [default: one per CPU core]",
)
@click.option(
    "--threads",
    default=DEFAULT_THREADS,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Threads per process.",
)
@click.option(
    "--server",
    default=DEFAULT_SERVER,
    show_default=True,
    type=click.Choice(["granian", "gunicorn"]),
    help="Production server (the benchmark runs both).",
)
@click.option("--dev", is_flag=True, help="Flask's development server, one process.")
@click.pass_context
def serve(
    context: click.Context,
    host: str,
    port: int,
    workers: int | None,
    threads: int,
    server: str,
    dev: bool,
) -> None:
    """Run the webhook receiver (POST /webhook, GET /healthz, GET /metrics).

    With no GitHub App configured yet, serve the set-up page (GET /setup) instead.
    """
    if not app_configured():
        click.echo(
            f"codexbot: no GitHub App is configured; open http://{host}:{port}/setup "
            "(or CODEX_PUBLIC_URL/setup) to create it",
            err=True,
        )
        if dev:
            setup_app().run(host=host, port=port)
        else:  # one process: the set-up's state must be the same on every request
            _serve_with_granian(host, port, 1, 1, target="codexbot.cli:setup_app")
        return
    settings = _settings()
    level = context.obj["log_level"]
    configure_logging(settings.secret_values(), level)
    if dev:
        from app import create_app

        create_app(settings).run(host=host, port=port, threaded=True)
        return
    processes = workers or os.cpu_count() or 1
    os.environ[LOG_LEVEL_VARIABLE] = logging.getLevelName(level)
    metrics_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Every worker process writes its counters here; a scrape sums them.
        metrics_dir = tempfile.mkdtemp(prefix="codexbot-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        if server == "granian":
            _serve_with_granian(host, port, processes, threads)
        else:
            _serve_with_gunicorn(host, port, processes, threads)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve_with_granian(
    host: str, port: int, workers: int, threads: int, target: str = "codexbot.cli:served_app"
) -> None:
    from granian import Granian
    from granian.constants import Interfaces
    from granian.log import LogLevels

    Granian(
        target,
        factory=True,
        interface=Interfaces.WSGI,
        address=host,
        port=port,
        workers=workers,
        blocking_threads=threads,
        log_level=LogLevels.warning,
        # granian's own lines go to the root logger, which writes JSON (configure_logging).
        log_dictconfig={
            "loggers": {
                "_granian": {"handlers": [], "propagate": True},
                "granian.access": {"handlers": [], "propagate": True},
            }
        },
        respawn_failed_workers=True,
        workers_kill_timeout=5,
    ).serve()


def _serve_with_gunicorn(host: str, port: int, workers: int, threads: int) -> None:
    from gunicorn.app.base import BaseApplication

    class Receiver(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            options: dict[str, Any] = {
                "bind": f"{host}:{port}",
                "workers": workers,
                "worker_class": "gthread" if threads > 1 else "sync",
                "threads": threads,
                "timeout": 30,
                "graceful_timeout": 5,
                "accesslog": None,
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):  # noqa: ANN202
            return served_app()

    Receiver().run()


@main.command()
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@click.option("--name", default=None, help="Worker name (defaults to host and pid).")
@click.option(
    "--lane",
    type=click.Choice(["all", "fast", "tasks"]),
    default="all",
    show_default=True,
    help="fast: the intake lane (reactions, permissions, replies; runs jobs in-process); "
    "tasks: agent tasks; all: both, fast first (one machine, light load).",
)
@click.pass_context
def worker(context: click.Context, burst: bool, name: str | None, lane: str) -> None:
    """Run an RQ worker that executes tasks (checkout, sandbox, agent, publish)."""
    settings = _settings()
    configure_logging(settings.secret_values(), context.obj["log_level"])

    from redis import Redis
    from rq import Queue, SimpleWorker

    # Imported once here, so each forked task starts warm.
    import workers.intake
    import workers.jobs  # noqa: F401

    redis = Redis.from_url(settings.redis_url)
    names = {
        "fast": [settings.codex_fast_queue],
        "tasks": [settings.codex_queue],
        "all": [settings.codex_fast_queue, settings.codex_queue],
    }[lane]
    queues = [Queue(queue_name, connection=redis) for queue_name in names]
    if lane == "fast":
        workers.intake.runtime()  # fail now, not on the first request, if settings are wrong
    if lane != "tasks" and settings.codex_redeliver_interval:
        from workers.githubapp import GitHubApp
        from workers.redeliver import start_reconciler

        owner = name or f"{os.uname().nodename}.{os.getpid()}"
        app = GitHubApp.from_settings(settings)  # its own client, for its own thread
        start_reconciler(app, redis, settings.codex_redeliver_interval, owner)
    if lane != "fast":
        import docker
        from redis.exceptions import RedisError

        from sandbox.reaper import reap_pool, start_reaper
        from workers.agent import clients
        from workers.githubapp import GitHubApp, app_key
        from workers.lease import TaskWorker, start_janitor

        app_key(settings.private_key_pem())  # once here, not in every task this process forks
        clients.prepare(
            clients.options(settings.openai_base_url, settings.openai_api_key.get_secret_value())
        )

        start_reaper(docker.from_env, redis)  # removes sandboxes of finished or dead tasks
        # Runs again the tasks of lost workers; a GitHub client per thread.
        start_janitor(redis, settings, GitHubApp.from_settings(settings))
        app = GitHubApp.from_settings(settings)
        worker = TaskWorker(queues, connection=redis, name=name, settings=settings, app=app)
        worker.work(burst=burst, with_scheduler=False)
        # Stopped for good: the idle sandboxes it started for the warm pool go with it (when the
        # engine cannot be reached now, the other workers' reapers remove them later).
        try:
            reap_pool(docker.from_env(), redis, stopping=worker.name)
        except (docker.errors.DockerException, RedisError) as error:
            click.echo(f"codexbot: idle sandboxes left to the reaper: {error}", err=True)
        return
    SimpleWorker(queues, connection=redis, name=name).work(burst=burst, with_scheduler=False)


@main.command()
@click.option(
    "--since",
    default="6h",
    show_default=True,
    help="How far back to look (90s, 30m, 6h, 2d; GitHub keeps three days).",
)
@click.option("--dry-run", is_flag=True, help="Say what would be redelivered; ask for nothing.")
@click.pass_context
def redeliver(context: click.Context, since: str, dry_run: bool) -> None:
    """Ask GitHub to redeliver the webhooks the receiver missed (each once)."""
    from datetime import UTC, datetime

    from redis import Redis

    from workers.github import GitHubError
    from workers.githubapp import GitHubApp
    from workers.redeliver import parse_duration, reconcile

    try:
        window = parse_duration(since)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--since") from None
    settings = _settings()
    configure_logging(settings.secret_values(), context.obj["log_level"])
    redis = Redis.from_url(settings.redis_url)
    try:
        report = reconcile(
            GitHubApp.from_settings(settings),
            redis,
            since=datetime.now(UTC) - window,
            dry_run=dry_run,
        )
    except GitHubError as error:
        click.echo(f"codexbot: {error}", err=True)
        sys.exit(1)
    for text in report.lines:
        click.echo(text)
    click.echo(report.summary())


@main.command()
def doctor() -> None:
    """Check the set-up (settings, App key, Redis, Docker, model, webhook URL); exit 1 if wrong."""
    from codexbot.doctor import main as run_doctor

    sys.exit(run_doctor(click.echo))


@main.command()
@click.option("--url", default=None, help="Also require this URL to answer 200 (the receiver).")
@click.option("--worker", is_flag=True, help="Also require a live RQ worker on this host.")
def health(url: str | None, worker: bool) -> None:
    """Exit 0 if Redis answers (and the receiver or this host's worker is alive): for probes."""
    import socket
    import urllib.request

    from redis import Redis
    from redis.exceptions import RedisError
    from rq import Worker

    settings = _settings()
    try:
        redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
        redis.ping()
        if worker and not any(
            w.hostname == socket.gethostname() for w in Worker.all(connection=redis)
        ):
            click.echo("codexbot: no live worker registered from this host", err=True)
            sys.exit(1)
        if url:
            urllib.request.urlopen(url, timeout=5).close()  # noqa: S310 - the operator's own URL
    except (RedisError, OSError) as error:
        click.echo(f"codexbot: unhealthy: {error}", err=True)
        sys.exit(1)


def _add_subcommands() -> None:
    from sandbox.cli import sandbox
    from workers.agent.cli import run, task

    for command in (sandbox, task, run):
        main.add_command(command)


_add_subcommands()

if __name__ == "__main__":
    main()
