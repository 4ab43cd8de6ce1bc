"""`codexbot task show|ls` (the audit trail) and `codexbot run` (the agent on a local checkout).

Registered on the main command in codexbot/cli.py. These read only what they need: the data
directory, Redis, and for `run` the model settings; never the GitHub App's secrets.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from pydantic import SecretStr
from redis import Redis
from redis.exceptions import RedisError

from codexbot.settings import Settings
from workers.agent import report
from workers.agent.trajectory import read_records
from workers.trajectories import RedisTrajectories

DEFAULTS = {name: field.default for name, field in Settings.model_fields.items()}
DATA_DIR_HELP = (
    "The data directory: trajectories of `codexbot run` (and from before they were kept in "
    "Redis) are in its `trajectories/`."
)


def _trajectories(data_dir: Path) -> Path:
    return data_dir / "trajectories"


data_dir_option = click.option(
    "--data-dir",
    envvar="CODEX_DATA_DIR",
    default=DEFAULTS["codex_data_dir"],
    type=click.Path(path_type=Path),
    help=DATA_DIR_HELP,
)
redis_url_option = click.option(
    "--redis-url",
    envvar="REDIS_URL",
    default=DEFAULTS["redis_url"],
    show_default=True,
    help="The bot's Redis: task records and trajectories.",
)


@contextmanager
def _redis(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=2)
    try:
        yield client
    finally:
        client.close()


def _store(client: Redis) -> RedisTrajectories:
    return RedisTrajectories(client, DEFAULTS["codex_trajectory_ttl"])  # readers set no TTL


def _unreachable(error: RedisError) -> None:
    click.echo(f"codexbot: cannot read Redis ({error}); files only", err=True)


@click.group("task")
def task() -> None:
    """Look at tasks: what they did, step by step."""


@task.command("show")
@click.argument("task_id")
@data_dir_option
@redis_url_option
@click.option("--full", is_flag=True, help="Print every tool output whole.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSONL records.")
def show(task_id: str, data_dir: Path, redis_url: str, full: bool, as_json: bool) -> None:
    """Print one task's trajectory readably."""
    directory = _trajectories(data_dir)
    with _redis(redis_url) as client:
        try:
            records = report.load(_store(client), task_id, directory)
        except RedisError as error:
            _unreachable(error)
            path = report.trajectory_file(directory, task_id)
            records = read_records(path) if path is not None else []
    if not records:
        raise click.ClickException(f"no trajectory for task {task_id!r} in Redis or {data_dir}")
    if as_json:
        for record in records:
            click.echo(json.dumps(record, ensure_ascii=False))
        return
    summary = report.summarize(task_id, records)
    click.echo(report.render_text(summary, report.steps_of(records), full=full), nl=False)


def collect_tasks(data_dir: Path, redis_url: str, limit: int) -> list[report.TaskSummary]:
    """The newest tasks known from Redis (task records and trajectories) and trajectory files."""
    summaries: dict[str, report.TaskSummary] = {}
    directory = _trajectories(data_dir)
    for path in directory.glob("*.jsonl") if directory.is_dir() else []:
        summaries[path.stem] = report.summarize(path.stem, read_records(path))
    with _redis(redis_url) as client:
        try:
            return report.recent_tasks(client, _store(client), limit, summaries)
        except RedisError as error:
            _unreachable(error)
    newest = sorted(summaries.values(), key=lambda s: s.started or 0, reverse=True)
    return newest[:limit]


@task.command("ls")
@data_dir_option
@redis_url_option
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
def list_tasks(data_dir: Path, redis_url: str, limit: int) -> None:
    """List recent tasks with their state and duration, newest first."""
    rows = collect_tasks(data_dir, redis_url, limit)
    if not rows:
        click.echo("no tasks yet")
        return
    click.echo(f"{'TASK':<36} {'STATE':<16} {'DURATION':>9}  {'STARTED (UTC)':<19}  WHAT")
    for row in rows:
        duration = f"{row.duration:.1f}s" if row.duration is not None else "-"
        what = f"{row.repo}#{row.number}" if row.repo else ""
        what += f" {row.pr_url}" if row.pr_url else ""
        started = report.utc_time(row.started) or "?"
        click.echo(f"{row.id[:36]:<36} {row.state[:16]:<16} {duration:>9}  {started:<19}  {what}")


# ------------------------------------------------------------------------------------------------
# codexbot run


def progress_printer(out: Any = None) -> Any:
    """A trajectory listener printing one line per model call and per tool call."""
    stream = out or sys.stderr

    def show(record: dict[str, Any]) -> None:
        kind = record.get("type")
        if kind == "response":
            tokens = record.get("prompt_tokens", 0) + record.get("completion_tokens", 0)
            print(
                f"step {record['step']:>3}  model {record.get('duration', 0):.1f}s {tokens} tokens",
                file=stream,
                flush=True,
            )
        elif kind == "tool":
            label = report.steps_of([record])[0].tools[0].label.splitlines()
            first = (label[0] if label else "")[:100]
            status = f"exit {record['exit_code']}" if "exit_code" in record else ""
            status = f"error: {record['error'][:100]}" if record.get("error") else status
            print(f"          {record.get('name')}: {first}  {status}", file=stream, flush=True)
        elif kind == "result":
            print(
                f"result: {record.get('status')} {record.get('reason', '')}".rstrip(),
                file=stream,
                flush=True,
            )

    return show


@click.command("run")
@click.option(
    "--repo",
    "repo",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A local git checkout; its HEAD is what the agent works on.",
)
@click.option("--task", "task_text", required=True, help="What to do (first line: the title).")
@click.option("--model", envvar="CODEX_MODEL", default=DEFAULTS["codex_model"], show_default=True)
@click.option(
    "--base-url",
    envvar="OPENAI_BASE_URL",
    default=None,
    help="OpenAI-compatible endpoint (default: OpenAI). The key is read from OPENAI_API_KEY only.",
)
@click.option(
    "--image",
    envvar="CODEX_SANDBOX_IMAGE",
    default=DEFAULTS["codex_sandbox_image"],
    show_default=True,
)
@click.option("--test", "test_command", default=None, help="Test command (default: detected).")
@click.option("--steps", default=None, type=click.IntRange(1, 1000), help="Step limit.")
@click.option(
    "--data-dir",
    envvar="CODEX_DATA_DIR",
    default=str(Path.home() / ".local/share/codexbot"),
    type=click.Path(path_type=Path),
    help=DATA_DIR_HELP,
)
@click.option(
    "--redis-url",
    envvar="REDIS_URL",
    default=DEFAULTS["redis_url"],
    show_default=True,
    help="Where prepared environments are kept, as for the bot's workers.",
)
def run(
    repo: Path,
    task_text: str,
    model: str,
    base_url: str | None,
    image: str,
    test_command: str | None,
    steps: int | None,
    data_dir: Path,
    redis_url: str,
) -> None:
    """Run a task on a local checkout: the bot's pipeline, with `.github/codex.yml` and the
    change guard, in the same sandbox; the result becomes a branch there instead of a PR."""
    api_key = os.environ.get("OPENAI_API_KEY", "")
    if not api_key:
        raise click.ClickException("set OPENAI_API_KEY (it is never read from the command line)")

    from workers.local import LocalSettings, local_task_id, run_local
    from workers.task import TaskFailed, TaskStopped

    redis = Redis.from_url(redis_url)
    try:
        redis.ping()
    except RedisError:
        redis.close()
        raise click.ClickException(
            "codexbot run keeps prepared environments in Redis, as the workers do, and none "
            "answered at REDIS_URL (--redis-url)"
        ) from None
    title, _, body = task_text.strip().partition("\n")
    settings = LocalSettings(
        codex_data_dir=data_dir,
        codex_sandbox_image=image,
        codex_model=model,
        openai_base_url=base_url,
        openai_api_key=SecretStr(api_key),
    )
    task_id = local_task_id()
    try:
        outcome = run_local(
            repo.resolve(),
            title,
            body,
            settings=settings,
            redis=redis,
            task_id=task_id,
            test_command=test_command,
            max_steps=steps,
            watch=progress_printer(),
        )
    except (TaskFailed, TaskStopped) as error:
        click.echo(f"no change was made; no branch created: {error}", err=True)
        sys.exit(1)
    finally:
        redis.close()
    for when in ("before", "after"):
        tests = outcome.get(f"tests_{when}")
        click.echo(f"tests {when}: {_verdict(tests)}", err=True)
    click.echo(f"trajectory: {outcome['trajectory']}")
    click.echo(f"branch: {outcome['branch']} ({outcome['sha'][:12]})")


def _verdict(tests: dict | None) -> str:
    if tests is None:
        return "not run (no test command)"
    passed = tests["exit_code"] == 0
    verdict = "passed" if passed else f"failed (exit {tests['exit_code']})"
    return f"{verdict} ({tests['command']})"
