"""`codexbot task show|ls` (the audit trail) and `codexbot run` (the agent on a local checkout).

Registered on the main command in codexbot/cli.py. These read only what they need: the data
directory, Redis, and for `run` the model settings; never the GitHub App's secrets.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from codexbot import keys
from codexbot.redact import Redactor
from workers import tasks, text
from workers.agent import report
from workers.agent.loop import AgentLimits, AgentResult, run_agent
from workers.agent.model import OpenAIModel
from workers.agent.text import AgentTask
from workers.agent.trajectory import Trajectory, read_records
from workers.instructions import discover_instructions
from workers.testcmd import find_test_command

DATA_DIR_HELP = "The bot's data directory (trajectories are in its `trajectories/`)."


def _trajectories(data_dir: Path) -> Path:
    return data_dir / "trajectories"


@click.group("task")
def task() -> None:
    """Look at tasks: what they did, step by step."""


@task.command("show")
@click.argument("task_id")
@click.option(
    "--data-dir",
    envvar="CODEX_DATA_DIR",
    default="/var/lib/codexbot",
    type=click.Path(path_type=Path),
    help=DATA_DIR_HELP,
)
@click.option("--full", is_flag=True, help="Print every tool output whole.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSONL records.")
def show(task_id: str, data_dir: Path, full: bool, as_json: bool) -> None:
    """Print one task's trajectory readably."""
    path = report.trajectory_file(_trajectories(data_dir), task_id)
    if path is None or not path.is_file():
        raise click.ClickException(f"no trajectory for task {task_id!r} in {data_dir}")
    if as_json:
        click.echo(path.read_text(encoding="utf-8", errors="replace"), nl=False)
        return
    loaded = report.load(_trajectories(data_dir), task_id)
    assert loaded is not None
    click.echo(report.render_text(*loaded, full=full), nl=False)


def _redis_tasks(redis_url: str | None) -> dict[str, tasks.TaskRecord]:
    """The task records the intake lane wrote (read with ``workers.tasks``, their one reader)."""
    if not redis_url:
        return {}
    from redis import Redis
    from redis.exceptions import RedisError

    client = Redis.from_url(redis_url, socket_timeout=5)
    prefix = keys.task("")
    found: dict[str, tasks.TaskRecord] = {}
    try:
        for key in client.scan_iter(match=f"{prefix}*", count=500):
            task_id = key.decode()[len(prefix) :]
            if ":" in task_id or client.type(key) != b"hash":
                continue
            record = tasks.load(client, task_id)
            if record is not None:
                found[task_id] = record
    except RedisError as error:
        click.echo(f"codexbot: cannot read tasks from Redis ({error}); trajectories only", err=True)
    finally:
        client.close()
    return found


def _timestamp(value: Any) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        try:
            return datetime.fromisoformat(str(value)).timestamp()
        except ValueError:
            return None


def collect_tasks(data_dir: Path, redis_url: str | None) -> list[report.TaskSummary]:
    """Every task known from Redis records and trajectory files, newest first."""
    summaries: dict[str, report.TaskSummary] = {}
    directory = _trajectories(data_dir)
    for path in directory.glob("*.jsonl") if directory.is_dir() else []:
        summaries[path.stem] = report.summarize(path.stem, read_records(path))
    for task_id, record in _redis_tasks(redis_url).items():
        summary = summaries.setdefault(task_id, report.TaskSummary(id=task_id))
        summary.repo = record.repo or summary.repo
        summary.number = record.number or summary.number
        summary.mode = record.kind or summary.mode
        summary.state = record.state or summary.state
        summary.pr_url = record.pr_url
        summary.started = record.created or summary.started
        if record.state in tasks.FINAL_STATES and summary.seconds is None:
            summary.ended = record.updated
    return sorted(summaries.values(), key=lambda s: s.started or 0, reverse=True)


def _age(started: float | None) -> str:
    if started is None:
        return "?"
    return datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%d %H:%M:%S")


@task.command("ls")
@click.option(
    "--data-dir",
    envvar="CODEX_DATA_DIR",
    default="/var/lib/codexbot",
    type=click.Path(path_type=Path),
    help=DATA_DIR_HELP,
)
@click.option("--redis-url", envvar="REDIS_URL", default=None, help="Read task records here too.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
def list_tasks(data_dir: Path, redis_url: str | None, limit: int) -> None:
    """List recent tasks with their state and duration, newest first."""
    rows = collect_tasks(data_dir, redis_url)[:limit]
    if not rows:
        click.echo("no tasks yet")
        return
    click.echo(f"{'TASK':<36} {'STATE':<16} {'DURATION':>9}  {'STARTED (UTC)':<19}  WHAT")
    for row in rows:
        duration = f"{row.duration:.1f}s" if row.duration is not None else "-"
        what = f"{row.repo}#{row.number}" if row.repo else ""
        what += f" {row.pr_url}" if row.pr_url else ""
        click.echo(
            f"{row.id[:36]:<36} {row.state[:16]:<16} {duration:>9}  {_age(row.started):<19}  {what}"
        )


# ------------------------------------------------------------------------------------------------
# codexbot run


def _git(
    repo: Path, *args: str, input: bytes | None = None, env: dict[str, str] | None = None
) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=repo,
        input=input,
        capture_output=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if done.returncode != 0:
        raise click.ClickException(
            f"git {args[0]} failed: {done.stderr.decode(errors='replace').strip()[:500]}"
        )
    return done.stdout.decode(errors="replace").strip()


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


def commit_locally(repo: Path, patch: bytes, branch: str, message: str) -> str:
    """Commit ``patch`` on HEAD as branch ``branch``, leaving the working tree and index alone."""
    with tempfile.TemporaryDirectory() as scratch:
        env = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
        _git(repo, "read-tree", "HEAD", env=env)
        _git(
            repo, "apply", "--cached", "--binary", "--whitespace=nowarn", "-", input=patch, env=env
        )
        tree = _git(repo, "write-tree", env=env)
    identity = {}
    if subprocess.run(["git", "config", "user.email"], cwd=repo, capture_output=True).returncode:
        identity = {
            f"GIT_{who}_{part}": value
            for who in ("AUTHOR", "COMMITTER")
            for part, value in (("NAME", "codex-bot"), ("EMAIL", "codex-bot@localhost"))
        }
    commit = _git(
        repo, "commit-tree", tree, "-p", "HEAD", "-F", "-", input=message.encode(), env=identity
    )
    _git(repo, "branch", "--force", branch, commit)
    return commit


@click.command("run")
@click.option(
    "--repo",
    "repo",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A local git checkout; its HEAD is what the agent works on.",
)
@click.option("--task", "task_text", required=True, help="What to do (first line: the title).")
@click.option("--model", envvar="CODEX_MODEL", default="gpt-4.1", show_default=True)
@click.option(
    "--base-url",
    envvar="OPENAI_BASE_URL",
    default=None,
    help="OpenAI-compatible endpoint (default: OpenAI). The key is read from OPENAI_API_KEY only.",
)
@click.option(
    "--image", envvar="CODEX_SANDBOX_IMAGE", default="codexbot-sandbox:latest", show_default=True
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
def run(
    repo: Path,
    task_text: str,
    model: str,
    base_url: str | None,
    image: str,
    test_command: str | None,
    steps: int | None,
    data_dir: Path,
) -> None:
    """Run the agent on a local checkout in the sandbox; the result becomes a branch there."""
    api_key = os.environ.get("OPENAI_API_KEY", "")
    if not api_key:
        raise click.ClickException("set OPENAI_API_KEY (it is never read from the command line)")
    repo = repo.resolve()
    _git(repo, "rev-parse", "--verify", "HEAD")
    task_id = f"local-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
    title, _, body = task_text.strip().partition("\n")
    limits = AgentLimits(steps=steps) if steps else AgentLimits()
    outcome = run_local(
        repo,
        title,
        body,
        model=model,
        base_url=base_url,
        api_key=api_key,
        image=image,
        test_command=test_command,
        limits=limits,
        data_dir=data_dir,
        task_id=task_id,
    )
    click.echo(f"trajectory: {outcome['trajectory']}")
    if outcome.get("branch"):
        click.echo(f"branch: {outcome['branch']} ({outcome['commit'][:12]})")
    else:
        click.echo("no change was made; no branch created")
        sys.exit(1)


def run_local(
    repo: Path,
    title: str,
    body: str,
    *,
    model: str,
    base_url: str | None,
    api_key: str,
    image: str,
    test_command: str | None,
    limits: AgentLimits,
    data_dir: Path,
    task_id: str,
    progress: Any = None,
) -> dict[str, Any]:
    import docker

    from sandbox.container import Sandbox

    redact = Redactor([api_key])
    trajectory_path = _trajectories(data_dir) / f"{task_id}.jsonl"
    trajectory = Trajectory(trajectory_path, redact, listener=progress or progress_printer())
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="codexbot-run-") as scratch:
        work = Path(scratch) / "repo"
        _git(repo, "clone", "--quiet", "--no-hardlinks", str(repo), str(work))
        base = _git(work, "rev-parse", "HEAD")
        found = find_test_command(work, test_command)
        command = found.command if found else None
        agent_task = AgentTask(
            repo=repo.name,
            issue_number=0,
            issue_title=title,
            issue_body=body,
            test_command=command,
            instructions=tuple(discover_instructions(work)),
        )
        client = docker.from_env()
        client_model = OpenAIModel(base_url, api_key, model)
        try:
            with Sandbox(client, image=image, task_id=task_id) as sandbox:
                sandbox.put_workspace(work)
                before = sandbox.exec(command, timeout=900) if command else None
                _say(progress, f"tests before: {_verdict(before)} ({command or 'no command'})")
                result: AgentResult = run_agent(
                    agent_task, sandbox, client_model, limits, trajectory
                )
                after = sandbox.exec(command, timeout=900) if command else None
                _say(progress, f"tests after: {_verdict(after)}")
                patch = sandbox.diff(base)
        finally:
            client_model.close()
            client.close()
    outcome: dict[str, Any] = {
        "task_id": task_id,
        "trajectory": str(trajectory_path),
        "status": result.status,
        "tests_before": before.exit_code if before else None,
        "tests_after": after.exit_code if after else None,
        "seconds": round(time.monotonic() - started, 3),
        "model_seconds": result.model_seconds,
        "steps": result.steps,
    }
    if not patch.strip():
        return outcome
    subjects = _git(repo, "log", "-50", "--format=%s").splitlines()
    changed = [
        line[6:]
        for line in patch.decode(errors="replace").splitlines()
        if line.startswith("+++ b/")
    ]
    message = redact(
        text.commit_message(
            result.title or title,
            result.summary,
            None,
            conventions=text.learn_conventions(subjects),
            component=text.component_for(changed),
        )
    )
    branch = f"codex/{text.slugify(title)}-{task_id[-6:]}"
    outcome.update(
        branch=branch, commit=commit_locally(repo, patch, branch, message), message=message
    )
    return outcome


def _verdict(result: Any) -> str:
    if result is None:
        return "not run"
    return "passed" if result.exit_code == 0 else f"failed (exit {result.exit_code})"


def _say(progress: Any, line: str) -> None:
    if progress is None:
        click.echo(line, err=True)
