"""The fast lane: what happens in the first second after a request arrives.

The receiver enqueues ``accept`` for every request it decides to act on; a dedicated worker
(`codexbot worker --lane fast`) runs it without waiting behind agent tasks. It reacts with 👀,
checks the requester may ask, answers `help`, `stop` and unknown commands itself, passes
comments to a running task, and for real work posts the progress comment and enqueues the task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache

import structlog
from redis import Redis
from rq import Queue

from codexbot import keys, redisconn
from codexbot.commands import MARKER, help_text
from codexbot.fleetmetrics import WorkerMetrics
from codexbot.logs import configure_logging, forget_secret
from codexbot.request import RequestKind, TaskRequest
from codexbot.settings import Settings, load_settings
from workers import policy, steering, tasks, text
from workers.github import Repository
from workers.githubapp import GitHubApp
from workers.permissions import WRITE_ROLES, cached_role
from workers.progress import Progress, ProgressView

log = structlog.get_logger()


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    redis: Redis
    app: GitHubApp


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    """Built once per worker process: the fast lane runs jobs in-process, so tokens are reused."""
    settings = load_settings()
    configure_logging(settings.secret_values())
    # A Redis restart under an intake job waits for Redis instead of losing the request.
    redis = redisconn.connect(settings.redis_url)
    app = GitHubApp.from_settings(settings, WorkerMetrics(redis))
    return Runtime(settings=settings, redis=redis, app=app)


def reply(repository: Repository, request: TaskRequest, body: str) -> None:
    repository.comment(request.number, f"{body.strip()}\n\n{MARKER}\n")


def may_ask(run: Runtime, repository: Repository, user: str) -> bool:
    if user.lower() in run.settings.trusted_bots():
        return True
    return cached_role(run.redis, repository, user) in WRITE_ROLES


def explain_who_may_ask(repository: Repository, request: TaskRequest) -> None:
    reply(
        repository,
        request,
        f"Thanks for asking, @{request.sender}. Only people with write, maintain or admin "
        f"access to {request.repo} can hand work to codex-bot, so nothing was started. "
        "A maintainer can ask on your behalf.",
    )


def answer_help(run: Runtime, repository: Repository, request: TaskRequest) -> str:
    reply(repository, request, f"codex-bot understands these commands:\n\n{help_text()}")
    return "help"


def answer_unknown(run: Runtime, repository: Repository, request: TaskRequest) -> str:
    word = request.text.replace("`", "")[:40]
    reply(
        repository,
        request,
        f"I don't know the command `/codex {word}`. These are the ones I understand:\n\n"
        f"{help_text()}",
    )
    return "unknown"


def stop_running_task(run: Runtime, repository: Repository, request: TaskRequest) -> str:
    running = tasks.newest_for_target(run.redis, request.repo, request.number)
    if running is None:
        reply(repository, request, "Nothing is running for this one, so there is nothing to stop.")
    else:
        tasks.request_stop(run.redis, running, f"stopped by @{request.sender}")
        reply(repository, request, f"Stopping task `{running}`, as @{request.sender} asked.")
    return "stop"


def pass_comment_to_running_task(run: Runtime, repository: Repository, request: TaskRequest) -> str:
    running = tasks.newest_for_target(run.redis, request.repo, request.number)
    if running is not None:
        note = steering.Note(request.sender, request.text, request.comment_id)
        steering.pass_on(run.redis, running, note)
    return "steer"


def claims_review(run: Runtime, request: TaskRequest) -> bool:
    """GitHub sends one event for a review and one per inline comment: start one follow-up."""
    if request.kind != "review" or request.review_id is None:
        return True
    return bool(
        run.redis.set(
            keys.review_claim(request.review_id), request.task_id, nx=True, ex=keys.DELIVERY_TTL
        )
    )


def explain_where_work_goes(run: Runtime, repository: Repository, request: TaskRequest) -> bool:
    """On a pull request the bot pushes only to a branch of its own: say so when that is not the
    PR's head. False for a review follow-up on a PR the bot did not open: nothing to start."""
    pull = repository.pull(request.number)
    if pull.owned_by(run.app.login(), request.repo):
        return True
    if request.kind == "review":
        log.info("review on a pull request the bot did not open", author=pull.author)
        return False
    branch = text.pull_branch_name(pull.number)
    if pull.from_fork(request.repo):
        reply(
            repository,
            request,
            f"This pull request comes from the fork {pull.head_repo}. codex-bot can read it but "
            f"pushes only to branches of {request.repo}, so it will push its work to "
            f"`{branch}` here and open a pull request from that branch.",
        )
    else:
        reply(
            repository,
            request,
            f"codex-bot pushes only to branches it created, so it will push its work to "
            f"`{branch}` and open a pull request from there into `{pull.head_ref}`.",
        )
    return True


def start_task(run: Runtime, repository: Repository, request: TaskRequest) -> str:
    if not claims_review(run, request):
        return "nothing to do"
    pushes = request.kind != "code_review"
    if request.is_pull and pushes and not explain_where_work_goes(run, repository, request):
        return "not the bot's pull request"
    record = tasks.TaskRecord(request, queue=run.settings.codex_queue)
    view = ProgressView(
        "queued", record.id, request.kind, request.sender, link=run.settings.task_url(record.id)
    )
    progress = Progress(repository, request.number, view)
    progress.update()
    record.progress_comment_id = progress.comment_id
    tasks.save(run.redis, record)
    previous = tasks.claim_target(run.redis, record)
    if previous and previous != record.id:
        tasks.request_stop(run.redis, previous, f"superseded by task `{record.id}`")
    queue = Queue(run.settings.codex_queue, connection=run.redis)
    tasks.enqueue(queue, record, attempt=1, timeout=run.settings.codex_job_timeout)
    log.info("task queued", superseded=previous)
    return request.kind


def start_review(run: Runtime, repository: Repository, request: TaskRequest) -> str:
    if not request.is_pull:
        reply(repository, request, "`/codex review` reviews a pull request; this is an issue.")
        return "not a pull request"
    return start_task(run, repository, request)


def review_if_policy_says(run: Runtime, repository: Repository, request: TaskRequest) -> str:
    """A pull request a person opened or made ready: reviewed when the default branch's
    `.github/codex.yml` says `review: auto`. Nobody asked, so nothing is said otherwise."""
    try:
        config = policy.default_branch_config(repository)
    except policy.PolicyError as error:
        log.info("no automatic review", reason=str(error))
        return "nothing to do"
    if config.review != "auto":
        return "nothing to do"
    return start_task(run, repository, replace(request, kind="code_review"))


CI_ROUNDS_TTL = 90 * 24 * 3600


def fix_ci_if_policy_says(run: Runtime, repository: Repository, request: TaskRequest) -> str:
    """Red CI on a pull request: more work on it when the App opened it, the default branch's
    `.github/codex.yml` says `fix_ci: true`, and rounds are left (`fix_ci_rounds`). After the
    last round the bot says it stops, once."""
    source, run_id, sha = request.text.split()[:3]
    pull = repository.pull(request.number)
    if pull.state != "open" or not pull.owned_by(run.app.login(), request.repo):
        return "not the bot's pull request"
    if pull.head_sha != sha:
        return "nothing to do"  # the CI of a commit the branch has moved on from
    try:
        config = policy.default_branch_config(repository)
    except policy.PolicyError as error:
        log.info("no CI fix", reason=str(error))
        return "nothing to do"
    claim = keys.ci_claim(request.repo, sha)
    if not config.fix_ci or not run.redis.set(claim, request.task_id, nx=True, ex=CI_ROUNDS_TTL):
        return "nothing to do"
    rounds = keys.ci_rounds(request.repo, request.number)
    done = int(run.redis.incr(rounds))  # type: ignore[arg-type]  # a sync client
    run.redis.expire(rounds, CI_ROUNDS_TTL)
    if done > config.fix_ci_rounds:
        if done == config.fix_ci_rounds + 1:
            reply(repository, request, text.ci_rounds_over(config.fix_ci_rounds))
        return "out of rounds"
    asked = f"{source} {run_id} {sha} {done}/{config.fix_ci_rounds}"
    return start_task(run, repository, replace(request, kind="fix_ci", text=asked))


Action = Callable[[Runtime, Repository, TaskRequest], str]
ACTIONS: dict[RequestKind, Action] = {
    "help": answer_help,
    "unknown": answer_unknown,
    "stop": stop_running_task,
    "steer": pass_comment_to_running_task,
    "fix": start_task,
    "ask": start_task,
    "review": start_task,
    "code_review": start_review,
}


def accept(**fields: object) -> str:
    """RQ entry point for the fast lane. Returns what it did, for the job's result."""
    request = TaskRequest(**fields)  # type: ignore[arg-type]  # as app.requests built it
    run = runtime()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        task_id=request.task_id, delivery_id=request.delivery_id, repo=request.repo
    )
    token = run.app.installation_token(request.installation_id)
    forget_secret(token)
    repository = run.app.repository(request.repo, token)
    try:
        if request.kind == "auto_review":  # nobody asked: no 👀, no permission to check
            return review_if_policy_says(run, repository, request)
        if request.kind == "fix_ci":  # the same: the policy and the PR's owner decide
            return fix_ci_if_policy_says(run, repository, request)
        repository.react(
            "eyes",
            number=request.number,
            comment_id=request.comment_id,
            comment_type=request.comment_type,
        )
        if not may_ask(run, repository, request.sender):
            if request.kind != "steer":  # a plain comment from a reader is just a comment
                explain_who_may_ask(repository, request)
            return "not allowed"
        act = ACTIONS.get(request.kind)
        return act(run, repository, request) if act else "nothing to do"
    finally:
        repository.close()
