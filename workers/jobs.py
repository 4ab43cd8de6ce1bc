"""RQ jobs. A job is a short script of named steps; failure handling sits here, once.

Jobs take primitive, JSON-able arguments and build their own clients, so a worker on any
host with the same settings can run them.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import docker
import structlog
from rq import get_current_job

from codexbot.logs import configure_logging, forget_secret
from codexbot.redact import Redactor
from codexbot.settings import Settings, load_settings
from sandbox.container import Sandbox
from workers import checkout, text
from workers.agent.loop import AgentLimits, AgentResult, AgentTask, OpenAIModel, run_agent
from workers.agent.trajectory import Trajectory
from workers.github import GitHubApp, GitHubError, Issue, Repository
from workers.testcmd import detect_test_command

log = structlog.get_logger()
TEST_TIMEOUT = 900


class TaskFailed(Exception):
    """The task cannot go on; the message is shown to the user as the reason."""


@dataclass
class Timings:
    stages: dict[str, int] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.stages[name] = round((time.monotonic() - started) * 1000)


@dataclass
class Task:
    """Everything one run knows; built once at the start of the job."""

    id: str
    settings: Settings
    repo: Repository
    issue: Issue
    redact: Redactor
    timings: Timings = field(default_factory=Timings)
    workdir: Path = Path()


def _enqueue_to_start_ms() -> int | None:
    job = get_current_job()
    if job is None or job.enqueued_at is None:
        return None
    enqueued = job.enqueued_at.replace(tzinfo=UTC)
    return max(0, round((datetime.now(UTC) - enqueued).total_seconds() * 1000))


def prepare_workspace(task: Task) -> checkout.Checkout:
    return checkout.clone(task.repo.git_url, task.workdir / "repo", token=task.repo.token)


def verify_with_tests(sandbox: Sandbox, command: str | None) -> text.TestRun | None:
    if command is None:
        return None
    result = sandbox.exec(command, timeout=TEST_TIMEOUT)
    return text.TestRun(
        command=command, exit_code=result.exit_code, tail=text.tail_lines(result.output)
    )


def agent_run(task: Task, sandbox: Sandbox, test_command: str | None) -> AgentResult:
    settings = task.settings
    model = OpenAIModel(
        base_url=settings.openai_base_url,
        api_key=settings.openai_api_key.get_secret_value(),
        model=settings.codex_model,
    )
    agent_task = AgentTask(
        repo=task.repo.full_name,
        issue_number=task.issue.number,
        issue_title=task.issue.title,
        issue_body=task.issue.body,
        test_command=test_command,
    )
    trajectory = Trajectory(trajectory_path(settings, task.id), task.redact)
    try:
        return run_agent(agent_task, sandbox, model, AgentLimits(), trajectory)
    finally:
        model.close()


def trajectory_path(settings: Settings, task_id: str) -> Path:
    return settings.codex_data_dir / "trajectories" / f"{task_id}.jsonl"


def publish(
    task: Task,
    start: checkout.Checkout,
    patch: bytes,
    result: AgentResult,
    tests: tuple[text.TestRun | None, text.TestRun | None],
) -> dict:
    before, after = tests
    branch = text.branch_name(task.issue.number, task.issue.title)
    changed = checkout.apply_patch(start, patch=patch, branch=branch)
    subject = result.title or f"Fix {task.issue.title}"
    message = task.redact(text.commit_message(subject, result.summary, task.issue.number))
    sha = checkout.commit_and_push(start, branch=branch, message=message, token=task.repo.token)
    body = text.pr_body(
        issue_number=task.issue.number,
        summary=result.summary,
        changed_files=changed,
        tests_before=before,
        tests_after=after,
        steps=result.steps,
        tokens=result.prompt_tokens + result.completion_tokens,
        notes=[result.reason] if result.status != "finished" and result.reason else [],
    )
    draft = after is None or not after.passed or result.status != "finished"
    pull = task.repo.open_pull_request(
        head=branch,
        base=start.base_branch,
        title=text.commit_subject(subject),
        body=task.redact(body),
        draft=draft,
    )
    task.repo.comment(task.issue.number, text.pr_opened_comment(pull.url, after))
    log.info("published", branch=branch, sha=sha, pr=pull.url, draft=draft)
    return {
        "pr_url": pull.url,
        "pr_number": pull.number,
        "branch": branch,
        "sha": sha,
        "commit_message": message,
        "draft": draft,
        "changed_files": changed,
    }


def _test_json(run: text.TestRun | None) -> dict | None:
    return None if run is None else {"command": run.command, "exit_code": run.exit_code}


def run_fix(task: Task) -> dict:
    """The task itself: checkout, sandbox, tests, agent, tests, patch, publish."""
    timings = task.timings
    with timings.stage("checkout"):
        start = prepare_workspace(task)
    test_command = detect_test_command(start.path)
    with ExitStack() as stack:
        client = docker.from_env()
        stack.callback(client.close)
        with timings.stage("container_start"):
            sandbox = stack.enter_context(
                Sandbox(
                    client,
                    image=task.settings.codex_sandbox_image,
                    task_id=task.id,
                    labels={"codexbot.repo": task.repo.full_name},
                )
            )
        with timings.stage("workspace"):
            sandbox.put_workspace(start.path)
        with timings.stage("tests_before"):
            before = verify_with_tests(sandbox, test_command)
        with timings.stage("agent"):
            result = agent_run(task, sandbox, test_command)
        with timings.stage("tests_after"):
            after = verify_with_tests(sandbox, test_command)
        patch = sandbox.diff(start.base_sha)
    if result.status == "error":
        raise TaskFailed(f"the agent stopped with an error: {result.reason}")
    if not patch.strip():
        raise TaskFailed("the agent finished without changing any file")
    with timings.stage("publish"):
        published = publish(task, start, patch, result, (before, after))
    return {
        **published,
        "status": result.status,
        "steps": result.steps,
        "tokens": result.prompt_tokens + result.completion_tokens,
        "tests_before": _test_json(before),
        "tests_after": _test_json(after),
        "patch": patch.decode(errors="replace"),
    }


SHOWN_ERRORS = (TaskFailed, checkout.GitError, GitHubError)


def _user_reason(error: Exception, redact: Redactor) -> str:
    if isinstance(error, SHOWN_ERRORS):
        return redact(str(error))
    return f"an internal error ({type(error).__name__}); the operator's logs have the details"


def _report_failure(repository: Repository, issue_number: int, task_id: str, reason: str) -> None:
    try:
        repository.comment(issue_number, text.failure_comment(reason, task_id))
    except GitHubError:
        log.exception("could not report the failure on the issue")


def fix_issue(
    *, repo: str, issue_number: int, installation_id: int, task_id: str, delivery_id: str
) -> dict:
    """RQ entry point: fix one issue and open a pull request for it."""
    started = time.monotonic()
    settings = load_settings()
    redact = Redactor(settings.secret_values())
    configure_logging(settings.secret_values())
    structlog.contextvars.bind_contextvars(task_id=task_id, delivery_id=delivery_id, repo=repo)
    queued_ms = _enqueue_to_start_ms()
    log.info("task started", issue=issue_number, queued_ms=queued_ms)
    app = GitHubApp(
        app_id=settings.github_app_id,
        private_key=settings.private_key_pem(),
        api_url=settings.github_api_url,
    )
    token = app.installation_token(installation_id)
    redact.add(token)
    forget_secret(token)
    repository = app.repository(repo, token)
    workdir = settings.codex_data_dir / "work" / task_id
    try:
        task = Task(
            id=task_id,
            settings=settings,
            repo=repository,
            issue=repository.issue(issue_number),
            redact=redact,
            workdir=workdir,
        )
        outcome = run_fix(task)
    except Exception as error:
        log.exception("task failed")
        _report_failure(repository, issue_number, task_id, _user_reason(error, redact))
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        repository.close()
    task.timings.stages["enqueue_to_start"] = queued_ms or 0
    task.timings.stages["total"] = round((time.monotonic() - started) * 1000)
    log.info("task finished", pr=outcome["pr_url"], timings_ms=task.timings.stages)
    return {**outcome, "task_id": task_id, "timings_ms": task.timings.stages}
