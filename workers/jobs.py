"""The task job. A job is a short script of named steps; failure handling sits here, once.

``run_task`` takes a task id: the intake lane wrote the task's record (what, where, who asked)
to Redis and posted its progress comment. Jobs build their own clients, so a worker on any host
with the same settings can run them. ``run_work`` is the pipeline itself, shared with
``codexbot run`` (`workers.local`): plan (`workers.plan`), run the agent (`workers.run`),
publish (`workers.publish`).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from datetime import UTC, datetime

import docker
import structlog
from redis import Redis
from rq import get_current_job

from codexbot import redisconn
from codexbot.fleetmetrics import WorkerMetrics
from codexbot.logs import configure_logging, forget_secret
from codexbot.redact import Redactor
from codexbot.settings import Settings, load_settings
from sandbox.changes import ChangePolicy, WorkspaceResult
from sandbox.pool import PoolSettings
from sandbox.prepared import SetupFailed
from workers import checkout, tasks
from workers.agent.text import Discussion
from workers.agentbox import (
    AgentBox,
    Baseline,
    SandboxStart,
    take_baseline,
    test_json,
    verify_with_tests,
)
from workers.attempts import Prepared, plan_tries, publish_best, use_earlier_try
from workers.concurrency import in_background, on_a_thread
from workers.github import GitHubError, Repository
from workers.githubapp import GitHubApp
from workers.lease import keep_lease
from workers.plan import GitHubSource, plan
from workers.progress import CheckRun, LiveProgress, Progress, ProgressView
from workers.publish import GitHubPublisher, Publisher
from workers.run import (
    AgentControls,
    answered,
    brief_agent,
    close_model,
    ensure_something_to_publish,
    read_discussion_ahead,
    read_policy,
    reviewed,
    run_agent_for,
    setup_secrets_for,
)
from workers.task import Task, TaskError, TaskFailed, TaskStopped, Work
from workers.workspace import MirrorCache, task_sandbox

log = structlog.get_logger()


def run_work(task: Task, work: Work, publisher: Publisher) -> dict:
    """Checkout, sandbox, tests, agent, tests, patch, publish (or several tries at once, the
    tests choosing which is published: `workers.attempts`).

    What does not wait on each other overlaps: the mirror is fetched while the task is planned
    (`GitHubSource.fetch_ahead`) and the discussion read while the repository is checked out;
    the agent's briefing is gathered while the container starts; the tests before run while the
    model reads
    the task (the agent's first command waits for them); the change is pushed while the tests
    run on it, and the container is removed while the pull request is opened and the task
    reports. The model starts while the container starts and the workspace is made (with setup
    commands, once the environment is prepared: a failed setup costs no model call); the tests
    after are often known before the agent is done (`workers.agentbox`).
    """
    discussion = read_discussion_ahead(task, work)
    try:
        return _run_work(task, work, publisher, discussion)
    finally:
        wait([discussion])  # the source's client is one thread's: failures are shown after


def _run_work(
    task: Task, work: Work, publisher: Publisher, discussion: Future[Discussion | None]
) -> dict:
    timings = task.timings
    task.advance("preparing")
    with timings.stage("checkout"):
        start, mirror = task.source.workspace(work, task.workdir / "repo")
    if not work.closes_issue:  # an issue's fix shows its check run on the commit it makes
        task.advance("preparing", commit=start.base_sha)
    rules = read_policy(task, work, start, mirror)
    config, test_command = rules.config, work.test_command or rules.test_command
    secrets = setup_secrets_for(task, rules)
    tries = plan_tries(task, config)
    if tries.count > 1 and tries.use is None:
        brief = brief_agent(task, work, start, config, test_command, discussion)
        ready = Prepared(work, start, mirror, config, test_command, secrets, brief)
        return publish_best(task, ready, publisher, tries)
    with (
        ThreadPoolExecutor(max_workers=2, thread_name_prefix="task") as helpers,
        ExitStack() as stack,
    ):
        briefing = in_background(
            helpers, brief_agent, task, work, start, config, test_command, discussion
        )
        # Also joins the briefing before a failure is reported: one thread uses the source.
        stack.callback(close_model, briefing)

        def enter(box_stack: ExitStack, prepared: Callable[[], None]) -> Baseline:
            client = docker.from_env()
            box_stack.callback(client.close)
            # Fills the "setup", "container_start" and "workspace" timings itself.
            sandbox, _ = box_stack.enter_context(
                task_sandbox(
                    client,
                    task.redis,
                    base_image=task.settings.codex_sandbox_image,
                    config=config,
                    start=start,
                    host_mirror=mirror,
                    repo=task.source.full_name,
                    task_id=task.id,
                    setup_secrets=secrets,
                    env_scope=f"fork {work.pull.head_repo}" if work.from_fork and work.pull else "",
                    timings=timings.stages,
                    pool_settings=PoolSettings(
                        task.settings.codex_pool_size, task.settings.codex_pool_idle_seconds
                    ),
                    on_prepared=prepared,
                )
            )
            return take_baseline(sandbox, start, config, test_command, timings)

        sandbox_start = SandboxStart(helpers, enter)
        stack.callback(sandbox_start.close)
        controls = AgentControls(task)
        changing = task.record.request.kind not in ("ask", "code_review")
        applied: list[checkout.AppliedPatch] = []  # the patch put on the branch ahead, if any

        def apply_ahead(changes: WorkspaceResult) -> None:
            applied.clear()
            if changes.patch.strip():  # what fails here fails again at the push, and is shown
                with contextlib.suppress(Exception):
                    changed = checkout.apply_patch(
                        start, patch=changes.patch, branch=work.branch, policy=change_policy
                    )
                    applied.append(checkout.AppliedPatch(work.branch, changes.patch, changed))

        change_policy = ChangePolicy.from_config(config)
        agent_env = AgentBox(
            sandbox_start.baseline,
            test_command,
            ahead=changing and task.settings.codex_tests_ahead,
            on_patch=apply_ahead if changing else None,
        )
        try:
            brief = briefing.result()
            if config.setup:  # a failed setup costs no model call
                sandbox_start.wait_for_environment()
            task.check_stop()
            task.advance("running", detail="")
            with timings.stage("agent"):
                result = (
                    use_earlier_try(task, agent_env, tries.use)
                    if tries.use is not None
                    else run_agent_for(task, work, brief, agent_env, config, controls)
                )
            known = agent_env.at_finish()
            stack.callback(known.abandon)
        finally:
            agent_env.close()
            wait([sandbox_start.baseline])  # the tests before finish before the container goes
        untouched = sandbox_start.baseline.result()
        if task.record.request.kind == "ask":
            return answered(result)
        if task.record.request.kind == "code_review":
            return publisher.review(task, work, reviewed(result), brief.diff, start)
        changes = known.changes or untouched.guard.result()
        ensure_something_to_publish(result, changes.patch)
        result.write_missing_finish(work.title, changes.patch.decode(errors="replace"))
        pushing = in_background(
            helpers,
            publisher.push,
            task,
            work,
            start,
            changes.patch,
            result,
            untouched.guard.policy,
            applied[-1] if applied else None,
        )
        task.advance("testing", detail="Running the tests on the result.")
        with timings.stage("tests_after"):
            after = known.tests_after() or verify_with_tests(untouched.sandbox, test_command)
        # After the push: removing a container takes the engine's CPU, which the push needs.
        pushed = pushing.result()
        task.cleanup.start("sandbox removal", stack.pop_all().close)
    task.advance("publishing", commit=pushed.sha)
    with timings.stage("publish"):
        published = publisher.publish(
            task,
            work,
            pushed,
            result,
            (untouched.tests, after),
            changes.refusals,
            tuple(agent_env.ran_into),
        )
    return {
        **published,
        "status": result.status,
        "steps": result.steps,
        "steered": controls.steered,
        "tokens": result.prompt_tokens + result.completion_tokens,
        "tests_before": test_json(untouched.tests),
        "tests_after": test_json(after),
        "patch": changes.patch.decode(errors="replace"),
    }


# -- the job and its one place for failure handling -------------------------------------------

SHOWN_ERRORS = (TaskFailed, checkout.GitError, GitHubError, SetupFailed)


class RecordedProgress:
    """A GitHub task shows its state twice: in its record in Redis, and in its progress comment.

    An attempt after a lost worker says so (``note``) above its detail until the task ends."""

    def __init__(
        self, redis: Redis, record: tasks.TaskRecord, live: LiveProgress, note: str = ""
    ) -> None:
        self._redis = redis
        self._record = record
        self._live = live
        self._note = note

    def update(self, state: str, **changes: object) -> None:
        tasks.save(self._redis, self._record)  # raises NotOwner once a later attempt took over
        if self._note and "detail" in changes and state not in tasks.FINAL_STATES:
            changes["detail"] = "\n\n".join(filter(None, (self._note, str(changes["detail"]))))
        self._live.update(state, **changes)

    def close(self) -> None:
        self._live.close()


def _enqueue_to_start_ms() -> int | None:
    job = get_current_job()
    if job is None or job.enqueued_at is None:
        return None
    enqueued = job.enqueued_at.replace(tzinfo=UTC)
    return max(0, round((datetime.now(UTC) - enqueued).total_seconds() * 1000))


def _user_reason(error: Exception, redact: Redactor) -> str:
    if isinstance(error, SHOWN_ERRORS):
        return redact(str(error))
    return f"an internal error ({type(error).__name__}); the operator's logs have the details"


def _react(repo: Repository, record: tasks.TaskRecord, content: str) -> None:
    try:
        repo.react(
            content,
            number=record.request.number,
            comment_id=record.request.comment_id,
            comment_type=record.request.comment_type,
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


def _build_task(
    task_id: str, settings: Settings, redis: Redis, redact: Redactor, meter: WorkerMetrics
) -> tuple[Task, GitHubApp, Repository]:
    record = tasks.load(redis, task_id)
    if record is None:
        raise TaskFailed(f"task {task_id} has no record; it was never accepted")
    attempt = tasks.begin_attempt(redis, record, settings.codex_lease_seconds)
    note = record.retry_note if attempt > 1 else ""
    app = GitHubApp.from_settings(settings, meter)
    token = app.installation_token(record.request.installation_id)
    redact.add(token)
    forget_secret(token)
    repository = app.repository(record.request.repo, token)
    mirrors = MirrorCache(settings.codex_data_dir / "mirrors")
    source = GitHubSource(
        repository,
        redis,
        mirrors,
        record.request.number,
        installation=(record.request.installation_id, app.installation_of),
        code_cache=settings.codex_data_dir / "codemap",
    )
    source.fetch_ahead()  # while the task is planned
    view = ProgressView(
        record.state,
        record.id,
        record.request.kind,
        record.request.sender,
        detail=note,
        link=settings.task_url(record.id),
    )
    own_client = app.repository(record.request.repo, token)
    progress = LiveProgress(
        Progress(
            own_client,
            record.request.number,
            view,
            record.progress_comment_id,
            checks=CheckRun(own_client),
        ),
        own_client,
        may_post=lambda: tasks.owns(redis, record.id, attempt),
    )
    task = Task(
        record=record,
        settings=settings,
        redis=redis,
        source=source,
        redact=redact,
        progress=RecordedProgress(redis, record, progress, note),
        workdir=settings.codex_data_dir / "work" / task_id,
        metrics=meter,
    )
    return task, app, repository


def run_task(*, task_id: str) -> dict:
    """RQ entry point: run one accepted task to its pull request, answer or follow-up."""
    started = time.monotonic()
    settings = load_settings()
    redact = Redactor(settings.secret_values())
    configure_logging(settings.secret_values())
    structlog.contextvars.bind_contextvars(task_id=task_id)
    queued_ms = _enqueue_to_start_ms()
    redis = redisconn.connect(settings.redis_url)
    meter = WorkerMetrics(redis)
    task, app, repo = _build_task(task_id, settings, redis, redact, meter)
    record = task.record
    structlog.contextvars.bind_contextvars(
        delivery_id=record.request.delivery_id, repo=record.request.repo
    )
    log.info(
        "task started",
        number=record.request.number,
        kind=record.request.kind,
        queued_ms=queued_ms,
        attempt=record.attempt,
    )
    lease = keep_lease(redis, task_id, record.attempt, settings.codex_lease_seconds)
    ended = "failed"  # how the task ended, for the metrics
    reacted: Future[None] | None = None
    try:
        shutil.rmtree(task.workdir, ignore_errors=True)  # what a lost attempt left on this host
        task.check_stop()
        work = plan(record, repo, app.login)
        outcome = run_work(task, work, GitHubPublisher(repo, settings))
        outcome = redact.within(outcome)  # RQ stores it; comments show it
        record.pr_url = outcome.get("pr_url", "")
        task.advance("done", step=None, **_final_view(outcome))
        ended = "done"
        reacted = on_a_thread(_react, repo, record, "rocket")  # while the comment shows the end
    except tasks.NotOwner:
        # A later attempt runs the task (this worker was taken for lost): leave it all to that one.
        log.warning("task taken over by a later attempt", attempt=record.attempt)
        ended = "taken_over"
        return {"task_id": task_id, "status": "taken over", "attempt": record.attempt}
    except TaskStopped as stop:
        record.reason = redact(str(stop))
        task.advance("stopped", detail=f"Stopped: {record.reason}", step=None)
        ended = "stopped"
        log.info("task stopped", reason=record.reason)
        return {"task_id": task_id, "status": "stopped", "reason": record.reason}
    except Exception as error:
        if not tasks.owns(redis, task_id, record.attempt):  # its sandbox went with the takeover
            log.warning("task taken over by a later attempt", attempt=record.attempt, exc_info=True)
            ended = "taken_over"
            return {"task_id": task_id, "status": "taken over", "attempt": record.attempt}
        reason = _user_reason(error, redact)
        log.exception("task failed")
        record.reason = reason
        task.advance("failed", detail=f"I could not finish this task: {reason}", step=None)
        _react(repo, record, "confused")
        # RQ keeps what is raised here in Redis: the reason as shown, redacted; the traceback is
        # in the operator's log, which is redacted too.
        raise TaskError(reason) from None
    finally:
        task.progress.close()  # the last state is shown before the job ends (and its lease)
        if reacted is not None and reacted.exception() is not None:  # before its client closes
            log.warning("reaction not added", error=str(reacted.exception())[:200])
        lease.set()
        if tasks.owns(redis, task_id, record.attempt):
            tasks.release_target(redis, record)
            tasks.end_lease(redis, task_id, record.attempt)
        shutil.rmtree(task.workdir, ignore_errors=True)
        task.cleanup.wait()
        meter.task_finished(record.request.kind, ended, time.monotonic() - started)
        repo.close()
        redis.close()
    task.timings.stages["enqueue_to_start"] = queued_ms or 0
    task.timings.stages["total"] = round((time.monotonic() - started) * 1000)
    log.info("task finished", pr=outcome.get("pr_url"), timings_ms=task.timings.stages)
    return {**outcome, "task_id": task_id, "timings_ms": task.timings.stages}
