"""The task job. A job is a short script of named steps; failure handling sits here, once.

``run_task`` takes a task id: the intake lane wrote the task's record (what, where, who asked)
to Redis and posted its progress comment. Jobs build their own clients, so a worker on any host
with the same settings can run them.
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import docker
import structlog
from redis import Redis
from rq import get_current_job

from codexbot import keys
from codexbot.commands import MARKER
from codexbot.logs import configure_logging, forget_secret
from codexbot.redact import Redactor
from codexbot.settings import Settings, load_settings
from sandbox.changes import ChangeGuard, ChangePolicy, Refusal
from sandbox.container import ExecResult, Sandbox
from sandbox.prepared import SetupFailed, setup_secret_values
from workers import checkout, policy, repoconfig, tasks, text
from workers.agent.loop import AgentLimits, AgentResult, AgentTask, OpenAIModel, run_agent
from workers.agent.text import Comment, Discussion, fence
from workers.agent.trajectory import Trajectory
from workers.github import GitHubApp, GitHubError, Pull, Repository, ReviewComment
from workers.instructions import discover_instructions
from workers.permissions import cached_role
from workers.policy import Policy
from workers.progress import LiveProgress, Progress, ProgressView
from workers.testcmd import compare_runs
from workers.workspace import MirrorCache, task_sandbox

log = structlog.get_logger()
TEST_TIMEOUT = 900
PROGRESS_INTERVAL = 5.0  # seconds between "step N" edits of the progress comment
CHANGING_TOOLS = {"shell", "apply_patch"}
T = TypeVar("T")


class TaskFailed(Exception):
    """The task cannot go on; the message is shown to the user as the reason."""


class TaskError(Exception):
    """What a failed task leaves in RQ: the reason the user was shown, secrets masked."""


class TaskStopped(Exception):
    """A user stopped the task, a newer request superseded it, or a human moved the branch."""


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


class Cleanup:
    """What the job waits for only at its very end, done meanwhile: the sandbox goes while the
    task reports. A failure is logged; what is left carries the task's labels for the reaper."""

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []

    def start(self, what: str, fn: Callable[[], object]) -> None:
        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(self._run, what, fn), name=what)
        thread.start()
        self._threads.append(thread)

    @staticmethod
    def _run(what: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception:  # noqa: BLE001 - after the result: for the operator, not the user
            log.exception("cleanup failed", what=what)

    def wait(self) -> None:
        for thread in self._threads:
            thread.join()


@dataclass
class Task:
    """Everything one run knows; built once at the start of the job."""

    record: tasks.TaskRecord
    settings: Settings
    redis: Redis
    repo: Repository
    redact: Redactor
    progress: LiveProgress
    workdir: Path
    app: GitHubApp
    timings: Timings = field(default_factory=Timings)
    cleanup: Cleanup = field(default_factory=Cleanup)

    @property
    def id(self) -> str:
        return self.record.id

    def bot_login(self) -> str:
        return self.app.login()

    def check_stop(self) -> None:
        reason = tasks.stop_reason(self.redis, self.id)
        if reason:
            raise TaskStopped(reason)

    def advance(self, state: str, **changes: object) -> None:
        self.record.state = state
        tasks.save(self.redis, self.record)
        self.progress.update(state, **changes)


@dataclass(frozen=True)
class Work:
    """What the agent is asked to do and where the result goes."""

    title: str
    instructions: str
    branch: str
    base_branch: str
    start_ref: str | None  # the branch to clone, when it exists already
    closes_issue: bool
    opens_pull: bool = True  # else the work goes onto the bot's own pull request's branch
    from_fork: bool = False  # the code comes from a fork: no setup secrets, judged as a whole
    review_comments: tuple[ReviewComment, ...] = ()
    pull: Pull | None = None


class AgentControls:
    """What the task lends the agent loop: its stop flag, the comments that arrive while it
    works, and a live count of its steps for the progress comment."""

    def __init__(self, task: Task, baseline: Future[Baseline]) -> None:
        self._task = task
        self._baseline = baseline
        self._refusal_notes: list[str] = []
        self.steps = 0
        self.steered = 0
        self._last_progress = 0.0

    def should_stop(self) -> str | None:
        return tasks.stop_reason(self._task.redis, self._task.id)

    def steering(self) -> list[Comment]:
        task = self._task
        comments = [
            Comment(
                author=note["author"],
                permission=cached_role(task.redis, task.repo, note["author"]),
                body=str(note["body"]),
            )
            for note in take_steering(task.redis, task.id)
        ]
        if comments:
            self.steered += len(comments)
            self._show_progress(force=True)
        # A change the sandbox refuses is reported at the next step, so the agent can take
        # another way; it comes from the bot, which the agent's rules let it trust.
        comments += [
            Comment(author="codex-bot", permission="admin", body=note)
            for note in self._refusal_notes
        ]
        self._refusal_notes.clear()
        return comments

    def on_record(self, record: dict) -> None:
        if record.get("type") == "tool":
            self.steps += 1
            if record.get("name") in CHANGING_TOOLS:
                note = self._baseline.result().guard.after_command().strip()
                if note:
                    self._refusal_notes.append(note)
            self._show_progress()

    def _show_progress(self, force: bool = False) -> None:
        if force or time.monotonic() - self._last_progress > PROGRESS_INTERVAL:
            self._last_progress = time.monotonic()
            self._task.progress.update("running", step=self.steps, steered=self.steered)


def take_steering(redis: Redis, task_id: str) -> list[dict]:
    pipe = redis.pipeline()
    pipe.lrange(keys.steering(task_id), 0, -1)
    pipe.delete(keys.steering(task_id))
    raw, _ = pipe.execute()
    return [json.loads(item) for item in raw]


def _enqueue_to_start_ms() -> int | None:
    job = get_current_job()
    if job is None or job.enqueued_at is None:
        return None
    enqueued = job.enqueued_at.replace(tzinfo=UTC)
    return max(0, round((datetime.now(UTC) - enqueued).total_seconds() * 1000))


# -- the steps ------------------------------------------------------------------------------


def plan_issue_fix(task: Task) -> Work:
    issue = task.repo.issue(task.record.number)
    branch = text.branch_name(issue.number, issue.title)
    exists = task.repo.branch_head(branch) is not None
    instructions = issue.body
    if task.record.text:
        instructions += f"\n\nThe maintainer who asked added:\n{task.record.text}"
    return Work(
        title=issue.title,
        instructions=instructions,
        branch=branch,
        base_branch=task.repo.default_branch,
        start_ref=branch if exists else None,
        closes_issue=True,
    )


def describe_review_comments(comments: list[ReviewComment]) -> str:
    parts = []
    for comment in comments:
        where = f"{comment.path}:{comment.line}" if comment.line else comment.path
        parts.append(
            f"Review comment by @{comment.author} on {where}:\n{fence(comment.diff_hunk)}\n"
            f"{fence(comment.body)}"
        )
    return "\n\n".join(parts)


def plan_pull_follow_up(task: Task) -> Work:
    record = task.record
    pull = task.repo.pull(record.number)
    if pull.state != "open":
        raise TaskFailed(f"pull request #{pull.number} is {pull.state}")
    comments: list[ReviewComment] = []
    parts = [f"Pull request #{pull.number}: {pull.title}", pull.body]
    if record.review_id is not None:
        review_body = task.repo.review_body(pull.number, record.review_id)
        comments = task.repo.review_comments(pull.number, record.review_id)
        if review_body:
            parts.append(f"The review says:\n{fence(review_body)}")
        if comments:
            parts.append(describe_review_comments(comments))
    if record.text:
        parts.append(f"@{record.sender} asked:\n{fence(record.text)}")
    from_fork = pull.from_fork(task.repo.full_name)
    owned = pull.owned_by(task.bot_login(), task.repo.full_name)
    if record.kind == "review" and not owned:
        raise TaskStopped(f"pull request #{pull.number} was not opened by {task.bot_login()}")
    start_ref: str | None = pull.head_ref
    if owned:  # the bot's own pull request: more commits on its branch
        branch, base_branch = pull.head_ref, pull.head_ref
    else:
        # Never someone else's branch: a branch of the bot's own, with a pull request into the
        # head it starts from (into the base branch, for a fork, which the App cannot push to).
        branch = text.pull_branch_name(pull.number)
        base_branch = pull.base_ref if from_fork else pull.head_ref
        start_ref = branch if task.repo.branch_head(branch) is not None else None
    return Work(
        title=f"Follow up on pull request #{pull.number}: {pull.title}",
        instructions="\n\n".join(part for part in parts if part),
        branch=branch,
        base_branch=base_branch,
        start_ref=start_ref,
        closes_issue=False,
        opens_pull=not owned,
        from_fork=from_fork,
        review_comments=tuple(comments),
        pull=pull,
    )


def prepare_workspace(task: Task, work: Work) -> tuple[checkout.Checkout, Path]:
    """A checkout made in milliseconds from this worker's mirror of the repository."""
    cache = MirrorCache(task.settings.codex_data_dir / "mirrors")
    token = task.repo.token
    mirror = cache.update(task.repo.full_name, task.repo.git_url, token=token)
    start = cache.checkout(
        mirror, task.workdir / "repo", git_url=task.repo.git_url, branch=work.start_ref
    )
    if work.pull is not None and work.start_ref is None:  # a fork: start from the PR's head
        start = checkout.fetch_pull_head(start, work.pull.number, token=token)
    return start, mirror


def read_policy(task: Task, work: Work, start: checkout.Checkout, mirror: Path) -> Policy:
    """The rules of the base repository's default branch, whatever the task works on."""
    try:
        return policy.read_policy(
            mirror,
            task.repo.default_branch,
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
    secrets = setup_secret_values(rules.config.setup_secrets, repo=task.repo.full_name)
    for value in secrets.values():
        task.redact.add(value)
    return secrets


@dataclass(frozen=True)
class TestOutcome:
    __test__ = False  # not a pytest class

    run: text.TestRun | None
    output: str = ""


def verify_with_tests(sandbox: Sandbox, command: str | None) -> TestOutcome:
    if command is None:
        return TestOutcome(None)
    result = sandbox.exec(command, timeout=TEST_TIMEOUT)
    tail = text.tail_lines(result.output)
    return TestOutcome(
        text.TestRun(command=command, exit_code=result.exit_code, tail=tail), result.output
    )


def gather_discussion(task: Task, work: Work) -> Discussion:
    """The issue or PR with everything said on it, each author with their permission."""
    record = task.record

    def role(user: str) -> str:
        return cached_role(task.redis, task.repo, user)

    comments = [
        Comment(author=author, permission=role(author), body=body, created=created)
        for author, body, created in task.repo.issue_comments(record.number)
        if MARKER not in body
    ]
    if work.pull is not None:
        comments += [
            Comment(author=author, permission=role(author), body=body, kind="review")
            for author, body, _ in task.repo.reviews(record.number)
            if body.strip() and MARKER not in body
        ]
        comments += [
            Comment(
                author=c.author,
                permission=role(c.author),
                body=c.body,
                kind="review_comment",
                path=c.path,
                line=c.line,
            )
            for c in task.repo.review_comments(record.number)
            if MARKER not in c.body
        ]
        return Discussion(
            kind="pull_request",
            number=record.number,
            title=work.pull.title,
            body=work.pull.body,
            author=work.pull.author,
            author_permission=role(work.pull.author),
            comments=tuple(comments),
        )
    issue = task.repo.issue(record.number)
    return Discussion(
        kind="issue",
        number=record.number,
        title=issue.title,
        body=issue.body,
        author=issue.author,
        author_permission=role(issue.author),
        comments=tuple(comments),
    )


def agent_limits(config: repoconfig.RepoConfig, settings: Settings) -> AgentLimits:
    overrides = {k: v for k, v in asdict(config.limits).items() if v is not None}
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
    """What the agent starts with: its task and its model client."""

    agent_task: AgentTask
    model: OpenAIModel


def brief_agent(
    task: Task,
    work: Work,
    start: checkout.Checkout,
    config: repoconfig.RepoConfig,
    test_command: str | None,
) -> Briefing:
    settings = task.settings
    asking = task.record.kind == "ask"
    agent_task = AgentTask(
        repo=task.repo.full_name,
        issue_number=task.record.number,
        issue_title=work.title,
        issue_body=work.instructions,
        test_command=test_command,
        discussion=gather_discussion(task, work),
        instructions=tuple(discover_instructions(start.path)),
        mode="ask" if asking else "fix",
        question=task.record.text if asking else "",
    )
    model = OpenAIModel(
        base_url=settings.openai_base_url,
        api_key=settings.openai_api_key.get_secret_value(),
        model=config.model or settings.codex_model,
    )
    return Briefing(agent_task, model)


def close_model(briefing: Future[Briefing]) -> None:
    if briefing.exception() is None:
        briefing.result().model.close()


@dataclass(frozen=True)
class Baseline:
    """The untouched workspace: the change guard's start, and the tests before."""

    guard: ChangeGuard
    tests: TestOutcome


def take_baseline(
    sandbox: Sandbox,
    start: checkout.Checkout,
    config: repoconfig.RepoConfig,
    test_command: str | None,
    timings: Timings,
) -> Baseline:
    guard = ChangeGuard(sandbox, start.base_sha, ChangePolicy.from_config(config))
    with timings.stage("tests_before"):
        return Baseline(guard, verify_with_tests(sandbox, test_command))


class AfterBaseline:
    """The sandbox as the agent sees it: a command waits until the baseline is taken, so the
    agent never changes the workspace under the tests before."""

    def __init__(self, sandbox: Sandbox, baseline: Future[Baseline]) -> None:
        self._sandbox = sandbox
        self._baseline = baseline
        self.ran_into: list[str] = []  # what the agent's commands ran into, once each kind

    def exec(self, command: str, *, timeout: float) -> ExecResult:
        self._baseline.result()  # raises what went wrong taking it
        result = self._sandbox.exec(command, timeout=timeout)
        for note in result.notes:
            kind = note.split(":")[0].split("(")[0]
            if not any(seen.startswith(kind) for seen in self.ran_into):
                self.ran_into.append(note)
        return result

    def cancel(self, reason: str) -> bool:
        """A stop kills the command running now, the tests before included."""
        return self._sandbox.cancel(reason)


def agent_run(
    task: Task,
    briefing: Briefing,
    env: AfterBaseline,
    config: repoconfig.RepoConfig,
    controls: AgentControls,
) -> AgentResult:
    trajectory = Trajectory(
        trajectory_path(task.settings, task.id), task.redact, listener=controls.on_record
    )
    return run_agent(
        briefing.agent_task,
        env,
        briefing.model,
        agent_limits(config, task.settings),
        trajectory,
        steering=controls.steering,
        should_stop=controls.should_stop,
        tool_protocol=config.tool_protocol or task.settings.codex_tool_protocol,
    )


def trajectory_path(settings: Settings, task_id: str) -> Path:
    return settings.codex_data_dir / "trajectories" / f"{task_id}.jsonl"


def ensure_still_newest(task: Task) -> None:
    newest = tasks.newest_for_target(task.redis, task.record.repo, task.record.number)
    if newest not in (None, task.id):
        raise TaskStopped(f"superseded by task `{newest}`")


def ensure_branch_unmoved(task: Task, work: Work, start: checkout.Checkout) -> None:
    """Never push over a human: the branch must still be where this task started from."""
    head = task.repo.branch_head(work.branch)
    expected = start.base_sha if work.start_ref else None
    if head != expected:
        raise TaskStopped(
            f"`{work.branch}` moved while I worked (now at {str(head)[:12]}); "
            "I did not push over it. Ask again to start from the new head."
        )


def commit_message_for(
    task: Task, work: Work, start: checkout.Checkout, result: AgentResult, changed: list[str]
) -> str:
    record = task.record
    subject = result.title or f"Fix {work.title}"
    co_author = None
    if task.settings.codex_co_author and record.sender_id is not None:
        email = text.noreply_email(record.sender, record.sender_id)
        co_author = text.co_author_trailer(record.sender, email)
    return text.commit_message(
        subject,
        result.summary,
        record.number if work.closes_issue else None,
        conventions=text.learn_conventions(checkout.recent_subjects(start)),
        component=text.component_for(changed),
        co_author=co_author,
    )


@dataclass(frozen=True)
class Pushed:
    sha: str
    message: str
    changed: list[str]


def ensure_push_target(task: Task, work: Work) -> None:
    """The bot pushes only to branches of its own: never the default or a protected branch."""
    branch = work.branch
    if (
        not branch.startswith(text.BRANCH_PREFIX)
        or branch == task.repo.default_branch
        or task.repo.branch_protected(branch)
    ):
        raise TaskFailed(
            f"`{branch}` is not a branch codex-bot created (or it is protected), so I did not "
            "push to it"
        )


def ensure_fork_branch_allowed(start: checkout.Checkout, work: Work, policy: ChangePolicy) -> None:
    """A fork's branch pushed here is judged whole against the base branch: a workflow or a
    protected path that came with the fork would land in this repository, where workflows run
    with its secrets. Workflow changes from a fork are refused whatever the config allows."""
    base = checkout.merge_base(start, work.base_branch)
    strict = dataclasses.replace(policy, allow_workflow_changes=False)
    refusals = checkout.judge_staged(start.path, base, strict)
    if refusals:
        listed = "; ".join(
            f"{text.code_span(refusal.path)}: {refusal.reason}" for refusal in refusals[:10]
        )
        raise TaskFailed(
            f"the branch would bring changes from the fork into `{work.base_branch}`'s "
            f"repository that codex-bot does not push: {listed}"
        )


def push_change(
    task: Task,
    work: Work,
    start: checkout.Checkout,
    patch: bytes,
    result: AgentResult,
    policy: ChangePolicy,
) -> Pushed:
    """The patch committed on the task's branch and pushed; the PR is `publish`'s."""
    with task.timings.stage("push"):
        ensure_still_newest(task)
        ensure_push_target(task, work)
        ensure_branch_unmoved(task, work, start)
        if kinds := task.redact.found(patch):
            raise TaskFailed(
                f"the change holds a secret the bot knows ({', '.join(kinds)}); nothing was pushed"
            )
        changed = checkout.apply_patch(start, patch=patch, branch=work.branch, policy=policy)
        if work.from_fork:
            ensure_fork_branch_allowed(start, work, policy)
        message = task.redact(commit_message_for(task, work, start, result, changed))
        sha = checkout.commit_and_push(
            start, branch=work.branch, message=message, token=task.repo.token
        )
    return Pushed(sha, message, changed)


def publish(
    task: Task,
    work: Work,
    pushed: Pushed,
    result: AgentResult,
    tests: tuple[TestOutcome, TestOutcome],
    refusals: tuple[Refusal, ...] = (),
    ran_into: tuple[str, ...] = (),
) -> dict:
    """The pull request for the pushed change, or replies on the one it follows up."""
    before, after = tests
    sha, message, changed = pushed.sha, pushed.message, pushed.changed
    reason = result.reason if result.status != "finished" else ""
    draft = text.draft_line(after.run, result.status, reason) is not None
    pull_url = ""
    if work.opens_pull:
        body = text.pr_body(
            issue_number=task.record.number,
            summary=result.summary,
            changed_files=changed,
            tests_before=before.run,
            tests_after=after.run,
            steps=result.steps,
            tokens=result.prompt_tokens + result.completion_tokens,
            notes=[
                *(note for note in (result.not_done,) if note),
                *(
                    f"{text.code_span(refusal.path)} was left out: {refusal.reason}"
                    for refusal in refusals
                ),
                *(f"A command of the agent's ran into this: {note}" for note in ran_into),
            ],
            status=result.status,
            reason=reason,
            pre_existing=compare_runs(before.output, after.output).pre_existing,
            task_url=task.settings.task_url(task.id) or None,
        )
        pull = task.repo.open_pull_request(
            head=work.branch,
            base=work.base_branch,
            title=message.splitlines()[0],
            body=task.redact(body),
            draft=draft,
        )
        pull_url = pull.url
        ask_for_review(task, pull.number)
    elif work.pull is not None:
        pull_url = work.pull.url
    for comment in work.review_comments:
        task.repo.reply_to_review_comment(
            task.record.number, comment.id, f"Addressed in {sha[:12]}: {message.splitlines()[0]}"
        )
    log.info("published", branch=work.branch, sha=sha, pr=pull_url, draft=draft)
    return {
        "pr_url": pull_url,
        "branch": work.branch,
        "sha": sha,
        "commit_message": message,
        "draft": draft,
        "changed_files": changed,
    }


def ask_for_review(task: Task, number: int) -> None:
    """The person who asked reviews the result; a bot that asked (CI) is not asked back."""
    sender = task.record.sender
    if sender.lower().endswith("[bot]"):
        return
    try:
        task.repo.request_review(number, sender)
    except GitHubError:
        log.warning("review not requested", reviewer=sender, exc_info=True)


def _test_json(outcome: TestOutcome) -> dict | None:
    run = outcome.run
    return None if run is None else {"command": run.command, "exit_code": run.exit_code}


UNFINISHED = {"limits_exceeded", "stuck", "error"}


def run_work(task: Task, work: Work) -> dict:
    """Checkout, sandbox, tests, agent, tests, patch, publish.

    What does not wait on each other overlaps: the agent's briefing (the discussion, its model
    client) is gathered while the container starts; the tests before run while the model reads
    the task (the agent's first command waits for them); the change is pushed while the tests
    run on it, and the container is removed while the pull request is opened and the task
    reports. The agent starts only once the sandbox is ready, so a failed setup costs no model
    call.
    """
    timings = task.timings
    task.advance("preparing")
    with timings.stage("checkout"):
        start, mirror = prepare_workspace(task, work)
    rules = read_policy(task, work, start, mirror)
    config, test_command = rules.config, rules.test_command
    secrets = setup_secrets_for(task, rules)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="task") as helpers:
        with ExitStack() as stack:
            briefing = in_background(helpers, brief_agent, task, work, start, config, test_command)
            # Also joins the briefing before a failure is reported: one thread uses task.repo.
            stack.callback(close_model, briefing)
            client = docker.from_env()
            stack.callback(client.close)
            # Fills the "setup", "container_start" and "workspace" timings itself.
            sandbox, _ = stack.enter_context(
                task_sandbox(
                    client,
                    task.redis,
                    base_image=task.settings.codex_sandbox_image,
                    config=config,
                    start=start,
                    host_mirror=mirror,
                    repo=task.repo.full_name,
                    task_id=task.id,
                    setup_secrets=secrets,
                    env_scope=f"fork {work.pull.head_repo}" if work.from_fork and work.pull else "",
                    timings=timings.stages,
                )
            )
            baseline = in_background(
                helpers, take_baseline, sandbox, start, config, test_command, timings
            )
            controls = AgentControls(task, baseline)
            agent_env = AfterBaseline(sandbox, baseline)
            try:
                brief = briefing.result()
                task.check_stop()
                task.advance("running", detail="")
                with timings.stage("agent"):
                    result = agent_run(task, brief, agent_env, config, controls)
            finally:
                wait([baseline])  # the tests before finish before the container goes
            taken = baseline.result()
            if task.record.kind == "ask":
                return answered(result)
            changes = taken.guard.result()
            ensure_something_to_publish(result, changes.patch)
            result.write_missing_finish(work.title, changes.patch.decode(errors="replace"))
            pushing = in_background(
                helpers, push_change, task, work, start, changes.patch, result, taken.guard.policy
            )
            task.advance("testing", detail="Running the tests on the result.")
            with timings.stage("tests_after"):
                after = verify_with_tests(sandbox, test_command)
            task.cleanup.start("sandbox removal", stack.pop_all().close)
        pushed = pushing.result()
    task.advance("publishing")
    with timings.stage("publish"):
        published = publish(
            task,
            work,
            pushed,
            result,
            (taken.tests, after),
            changes.refusals,
            tuple(agent_env.ran_into),
        )
    return {
        **published,
        "status": result.status,
        "steps": result.steps,
        "steered": controls.steered,
        "tokens": result.prompt_tokens + result.completion_tokens,
        "tests_before": _test_json(taken.tests),
        "tests_after": _test_json(after),
        "patch": changes.patch.decode(errors="replace"),
    }


def ensure_agent_went_on(result: AgentResult) -> None:
    """A stop (a user's, or a newer task's) stays a stop: nothing is published."""
    if result.status == "stopped":
        raise TaskStopped(result.reason)


def answered(result: AgentResult) -> dict:
    ensure_agent_went_on(result)
    if result.status == "error":
        raise TaskFailed(f"the agent stopped with an error: {result.reason}")
    answer = result.answer or result.summary
    return {"answer": answer, "status": result.status, "steps": result.steps}


def ensure_something_to_publish(result: AgentResult, patch: bytes) -> None:
    """Work in the workspace is published however the run ended (a draft unless it finished);
    only a run that changed nothing fails."""
    ensure_agent_went_on(result)
    if not patch.strip():
        if result.status == "error":
            raise TaskFailed(f"the agent stopped with an error: {result.reason}")
        if result.status in UNFINISHED:
            raise TaskFailed(f"{result.reason or result.status}, before changing any file")
        raise TaskFailed("the agent finished without changing any file")


def in_background(pool: Executor, fn: Callable[..., T], *args: Any) -> Future[T]:
    """`fn(*args)` on the pool, logging with this task's bound context."""
    return pool.submit(contextvars.copy_context().run, fn, *args)


def plan(task: Task) -> Work:
    if task.record.is_pull:
        return plan_pull_follow_up(task)
    return plan_issue_fix(task)


# -- the job and its one place for failure handling -------------------------------------------

SHOWN_ERRORS = (TaskFailed, checkout.GitError, GitHubError, SetupFailed)


def _user_reason(error: Exception, redact: Redactor) -> str:
    if isinstance(error, SHOWN_ERRORS):
        return redact(str(error))
    return f"an internal error ({type(error).__name__}); the operator's logs have the details"


def _react(task: Task, content: str) -> None:
    record = task.record
    try:
        task.repo.react(
            content,
            number=record.number,
            comment_id=record.comment_id,
            comment_type=record.comment_type,
        )
    except GitHubError:
        log.warning("reaction not added", content=content, exc_info=True)


def _final_view(outcome: dict) -> dict[str, object]:
    if "answer" in outcome:
        return {"detail": outcome["answer"]}
    verb = "Opened" if outcome.get("draft") is False else "Opened as a draft"
    tests = outcome.get("tests_after")
    state = (
        "No test command was found."
        if tests is None
        else (
            f"The tests pass (`{tests['command']}`)."
            if tests["exit_code"] == 0
            else f"The tests still fail (`{tests['command']}`)."
        )
    )
    return {"detail": f"{verb}: {outcome['pr_url']}\n\n{state}"}


def _build_task(task_id: str, settings: Settings, redis: Redis, redact: Redactor) -> Task:
    record = tasks.load(redis, task_id)
    if record is None:
        raise TaskFailed(f"task {task_id} has no record; it was never accepted")
    app = GitHubApp(
        app_id=settings.github_app_id,
        private_key=settings.private_key_pem(),
        api_url=settings.github_api_url,
    )
    token = app.installation_token(record.installation_id)
    redact.add(token)
    forget_secret(token)
    repository = app.repository(record.repo, token)
    view = ProgressView(
        record.state, record.id, record.kind, record.sender, link=settings.task_url(record.id)
    )
    own_client = app.repository(record.repo, token)
    progress = LiveProgress(
        Progress(own_client, record.number, view, record.progress_comment_id), own_client
    )
    return Task(
        record=record,
        settings=settings,
        redis=redis,
        repo=repository,
        redact=redact,
        progress=progress,
        workdir=settings.codex_data_dir / "work" / task_id,
        app=app,
    )


def run_task(*, task_id: str) -> dict:
    """RQ entry point: run one accepted task to its pull request, answer or follow-up."""
    started = time.monotonic()
    settings = load_settings()
    redact = Redactor(settings.secret_values())
    configure_logging(settings.secret_values())
    structlog.contextvars.bind_contextvars(task_id=task_id)
    queued_ms = _enqueue_to_start_ms()
    redis = Redis.from_url(settings.redis_url)
    task = _build_task(task_id, settings, redis, redact)
    structlog.contextvars.bind_contextvars(
        delivery_id=task.record.delivery_id, repo=task.record.repo
    )
    log.info("task started", number=task.record.number, kind=task.record.kind, queued_ms=queued_ms)
    try:
        task.check_stop()
        outcome = redact.within(run_work(task, plan(task)))  # RQ stores it; comments show it
        task.record.pr_url = outcome.get("pr_url", "")
        task.advance("done", step=None, **_final_view(outcome))
        _react(task, "rocket")
    except TaskStopped as stop:
        task.record.reason = redact(str(stop))
        task.advance("stopped", detail=f"Stopped: {task.record.reason}", step=None)
        log.info("task stopped", reason=task.record.reason)
        return {"task_id": task_id, "status": "stopped", "reason": task.record.reason}
    except Exception as error:
        reason = _user_reason(error, redact)
        log.exception("task failed")
        task.record.reason = reason
        task.advance("failed", detail=f"I could not finish this task: {reason}", step=None)
        _react(task, "confused")
        # RQ keeps what is raised here in Redis: the reason as shown, redacted; the traceback is
        # in the operator's log, which is redacted too.
        raise TaskError(reason) from None
    finally:
        tasks.release_target(redis, task.record)
        shutil.rmtree(task.workdir, ignore_errors=True)
        task.progress.close()  # the last state is shown before the job ends
        task.cleanup.wait()
        task.repo.close()
        redis.close()
    task.timings.stages["enqueue_to_start"] = queued_ms or 0
    task.timings.stages["total"] = round((time.monotonic() - started) * 1000)
    log.info("task finished", pr=outcome.get("pr_url"), timings_ms=task.timings.stages)
    return {**outcome, "task_id": task_id, "timings_ms": task.timings.stages}
