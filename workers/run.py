"""Running the agent for a task: the policy it works under, its briefing, its controls (stop,
steering, progress), and its result. The sandbox it works in is `workers.agentbox`'s.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path

import structlog

from codexbot.commands import repo_options
from codexbot.fleetmetrics import WorkerMetrics
from sandbox.prepared import setup_secret_values
from workers import checkout, policy, repoconfig, review, steering
from workers.agent.loop import AgentLimits, AgentResult, AgentTask, OpenAIModel, run_agent
from workers.agent.model import CallObserver, Usage
from workers.agent.text import Comment, Discussion
from workers.agent.trajectory import Trajectory
from workers.agentbox import AgentBox
from workers.coderepos import CodeRepos, Snapshot, wanted_repositories
from workers.concurrency import on_a_thread
from workers.instructions import discover_instructions
from workers.policy import Policy
from workers.task import AgentSettings, Task, TaskFailed, TaskStopped, Work
from workers.trajectories import RedisTrajectories

log = structlog.get_logger(__name__)

PROGRESS_INTERVAL = 5.0  # seconds between "step N" edits of the progress comment
UNFINISHED = {"limits_exceeded", "stuck", "stopped", "error"}


def read_policy(task: Task, work: Work, start: checkout.Checkout, mirror: Path) -> Policy:
    """The rules of the base repository's default branch, whatever the task works on."""
    try:
        return policy.read_policy(
            mirror,
            task.source.default_branch,
            start,
            task.workdir / "policy",
            from_fork=work.from_fork,
        )
    except policy.PolicyError as error:
        raise TaskFailed(str(error)) from None


def setup_secrets_for(task: Task, rules: Policy) -> dict[str, str]:
    """The setup secrets the policy names; none for code from a fork, whatever it says."""
    if rules.from_fork:
        return {}
    secrets = setup_secret_values(rules.config.setup_secrets, repo=task.source.full_name)
    for value in secrets.values():
        task.redact.add(value)
    return secrets


def agent_limits(config: repoconfig.RepoConfig, work: Work, settings: AgentSettings) -> AgentLimits:
    overrides = {k: v for k, v in asdict(config.limits).items() if v is not None}
    if work.max_steps is not None:
        overrides["steps"] = work.max_steps
    defaults = {
        "max_tokens": settings.codex_max_tokens,
        "model_timeout_floor": settings.codex_model_timeout_floor,
    }
    try:
        return AgentLimits.from_config({**defaults, **overrides})
    except ValueError as error:
        raise TaskFailed(f"`.github/codex.yml` limits: {error}") from None


@dataclass(frozen=True)
class Briefing:
    """What the agent starts with: its task, its model client, and the code its `map` and
    `references` tools read (the task's repository and the related ones it may read)."""

    agent_task: AgentTask
    model: OpenAIModel
    diff: str = ""  # a code review's: the pull request's change
    code: CodeRepos | None = None


def code_for(
    task: Task, start: checkout.Checkout, config: repoconfig.RepoConfig
) -> tuple[CodeRepos, list[str]]:
    """The task's code at its commit, with the related repositories named by `--repo` (asking)
    and `repos:`, each only if the asker may read it; and a note for each one refused."""
    request = task.record.request
    question = request.text if request.kind == "ask" else ""
    wanted = wanted_repositories(question, config.repos, task.source.full_name)
    related, refused = task.source.related(wanted, request.sender)
    if refused:
        log.info("related repositories refused", refused=refused)
    cache = task.settings.codex_data_dir / "codemap"
    own = Snapshot(task.source.full_name, start.path, start.base_sha, cache)
    return CodeRepos(own, related), refused


def brief_agent(
    task: Task,
    work: Work,
    start: checkout.Checkout,
    config: repoconfig.RepoConfig,
    test_command: str | None,
    discussion: Future[Discussion | None] | None = None,
) -> Briefing:
    """``discussion``: the issue or PR's discussion, read already (`read_discussion_ahead`)."""
    kind = task.record.request.kind
    asking, reviewing = kind == "ask", kind == "code_review"
    diff = review.pull_diff(start, work.base_branch) if reviewing else ""
    code, refused = code_for(task, start, config)
    agent_task = AgentTask(
        repo=task.source.full_name,
        issue_number=task.record.request.number,
        issue_title=work.title,
        issue_body=work.instructions,
        test_command=test_command,
        discussion=discussion.result() if discussion else task.source.discussion(work),
        instructions=tuple(discover_instructions(start.path)),
        mode="ask" if asking else "review" if reviewing else "fix",
        question=(
            repo_options(task.record.request.text)[1]
            if asking
            else task.record.request.text
            if reviewing
            else work.instructions
            if kind == "fix_ci"
            else ""
        ),
        diff=review.prompt_diff(diff),
        code_tools=True,
        related=tuple(code.repositories()[1:]),
        related_refused=tuple(refused),
    )
    return Briefing(agent_task, model_for(task, config), diff, code)


def read_discussion_ahead(task: Task, work: Work) -> Future[Discussion | None]:
    """The discussion, read on a thread of its own while the task is checked out; the source's
    client is that thread's until it is done (the default branch is read first, here)."""
    task.source.default_branch  # noqa: B018 - read now, before the thread uses the client
    return on_a_thread(task.source.discussion, work)


def model_for(task: Task, config: repoconfig.RepoConfig, seed: int | None = None) -> OpenAIModel:
    """The task's model client; ``seed`` (each try's number) lets tries sample apart."""
    settings = task.settings
    return OpenAIModel(
        base_url=settings.openai_base_url,
        api_key=settings.openai_api_key.get_secret_value(),
        model=config.model or settings.codex_model,
        observe=None if task.metrics is None else model_observer(task.metrics),
        seed=seed,
        stream=settings.codex_model_stream,
    )


def model_observer(meter: WorkerMetrics) -> CallObserver:
    """Each model call's latency, tokens and error kind, into the fleet's metrics."""

    def observe(seconds: float, usage: Usage | None, error: str | None) -> None:
        meter.model_call(
            seconds,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            error=error,
        )

    return observe


def close_model(briefing: Future[Briefing]) -> None:
    if briefing.exception() is None:
        briefing.result().model.close()


class AgentControls:
    """What the task lends the agent loop: its stop flag, the comments that arrive while it
    works, and a live count of its steps for the progress comment."""

    def __init__(self, task: Task) -> None:
        self._task = task
        self.steps = 0
        self.steered = 0
        self._last_progress = 0.0

    def should_stop(self) -> str | None:
        try:
            self._task.check_stop()
        except TaskStopped as stop:
            return str(stop)
        return None

    def steering(self) -> list[Comment]:
        task = self._task
        comments = [
            Comment(author=note.author, permission=task.source.role(note.author), body=note.body)
            for note in steering.take(task.redis, task.id)
        ]
        if comments:
            self.steered += len(comments)
            self._show_progress(force=True)
        return comments

    def on_record(self, record: dict) -> None:
        if self._task.watch is not None:
            self._task.watch(record)
        if record.get("type") == "tool":
            self.steps += 1
            self._show_progress()

    def _show_progress(self, force: bool = False) -> None:
        if force or time.monotonic() - self._last_progress > PROGRESS_INTERVAL:
            self._last_progress = time.monotonic()
            self._task.progress.update("running", step=self.steps, steered=self.steered)


def trajectory_path(data_dir: Path, task_id: str) -> Path:
    return data_dir / "trajectories" / f"{task_id}.jsonl"


def task_trajectory(
    task: Task, trajectory_id: str | None = None, listener: Callable[[dict], None] | None = None
) -> Trajectory:
    """The trajectory of the task (or of one of its tries, `trajectory_id`), redacted as the task
    redacts and kept where every host reads it."""
    store = RedisTrajectories(task.redis, task.settings.codex_trajectory_ttl)
    file = task.trajectory_file
    if trajectory_id is not None and file is not None:
        file = file.with_name(f"{trajectory_id}{file.suffix}")
    return Trajectory(
        file,
        task.redact,
        listener=listener,
        keep=functools.partial(store.append, trajectory_id or task.id),
    )


def run_agent_for(
    task: Task,
    work: Work,
    briefing: Briefing,
    env: AgentBox,
    config: repoconfig.RepoConfig,
    controls: AgentControls,
    trajectory_id: str | None = None,
) -> AgentResult:
    """The agent loop on the task's sandbox (`trajectory_id`: a try's own trajectory)."""
    trajectory = task_trajectory(task, trajectory_id, controls.on_record)
    return run_agent(
        briefing.agent_task,
        env,
        briefing.model,
        agent_limits(config, work, task.settings),
        trajectory,
        steering=controls.steering,
        should_stop=controls.should_stop,
        tool_protocol=config.tool_protocol or task.settings.codex_tool_protocol,
        code=briefing.code,
    )


def ensure_agent_went_on(result: AgentResult) -> None:
    """A newer task took over: nothing of this one is published."""
    if result.status == "stopped" and result.reason.startswith("superseded"):
        raise TaskStopped(result.reason)


def answered(result: AgentResult) -> dict:
    ensure_agent_went_on(result)
    if result.status == "error":
        raise TaskFailed(f"the agent stopped with an error: {result.reason}")
    answer = result.answer or result.summary
    return {"answer": answer, "status": result.status, "steps": result.steps}


def reviewed(result: AgentResult) -> AgentResult:
    """The agent's result when it gave a review; TaskFailed saying why otherwise."""
    ensure_agent_went_on(result)
    if result.status == "reviewed":
        return result
    if result.status == "error":
        raise TaskFailed(f"the agent stopped with an error: {result.reason}")
    raise TaskFailed(f"{result.reason or result.status}, before finishing the review")


def ensure_something_to_publish(result: AgentResult, patch: bytes) -> None:
    """Work in the workspace is published however the run ended (a draft unless it finished;
    a `/codex stop` keeps what was done); only a run that changed nothing has nothing to show."""
    ensure_agent_went_on(result)
    if not patch.strip():
        if result.status == "stopped":
            raise TaskStopped(result.reason)
        if result.status == "error":
            raise TaskFailed(f"the agent stopped with an error: {result.reason}")
        if result.status in UNFINISHED:
            raise TaskFailed(f"{result.reason or result.status}, before changing any file")
        raise TaskFailed("the agent finished without changing any file")
