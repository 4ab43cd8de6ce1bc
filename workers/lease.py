"""Who runs a task: its lease, the janitor that runs again a task whose worker was lost, and the
task worker's warm shutdown.

An attempt at a task holds a lease in Redis (`keys.lease`, its attempt number) for
`CODEX_LEASE_SECONDS`, renewed by a thread of the work horse a few times per period. A worker
that dies (SIGKILL, OOM, a lost host) stops renewing it. Every task worker runs the janitor:
a task in a started state without a lease is taken back and queued again as the next attempt
(at the front of the queue), or failed after `tasks.MAX_ATTEMPTS`, in one Redis step
(`tasks.take_back`: once, and never taken back without being queued); then its progress comment
says which. The attempt number in the record fences what a stale attempt may do
(`tasks.save`, `tasks.owns`).

On SIGTERM a `TaskWorker` takes no new job and lets its running task finish for
`CODEX_SHUTDOWN_GRACE` seconds; then it kills its work horse and hands the task back at once
(the same path as a lost worker, without waiting for the lease to expire).
"""

from __future__ import annotations

import threading
from datetime import datetime

import structlog
from redis import Redis
from rq import Queue, Worker

from codexbot.settings import Settings
from workers import tasks, text
from workers.github import GitHubError
from workers.githubapp import GitHubApp
from workers.progress import Progress, ProgressView

log = structlog.get_logger()

# Held by the janitor's rounds and by the worker while it forks a work horse: a fork copies the
# locks other threads hold (a log line being written, an HTTP connection in use), and a horse
# forked in the middle of a round would wait on them forever.
_FORKING = threading.Lock()


def keep_lease(redis: Redis, task_id: str, attempt: int, lease_seconds: int) -> threading.Event:
    """Renew the attempt's lease on a daemon thread until the returned event is set."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease_seconds / 3):
            try:
                if not tasks.renew_lease(redis, task_id, attempt, lease_seconds):
                    log.warning("task lease lost", attempt=attempt)
                    return
            except Exception:  # noqa: BLE001 - Redis away for a moment: try again next round
                log.warning("task lease not renewed", exc_info=True)

    threading.Thread(target=renew, name="codexbot-lease", daemon=True).start()
    return stop


def _show(app: GitHubApp, record: tasks.TaskRecord, settings: Settings, detail: str) -> None:
    if record.progress_comment_id is None:
        return
    request = record.request
    try:
        repository = app.repository(request.repo, app.installation_token(request.installation_id))
        try:
            view = ProgressView(
                record.state,
                record.id,
                request.kind,
                request.sender,
                detail=detail,
                link=settings.task_url(record.id),
            )
            Progress(repository, request.number, view, record.progress_comment_id).update()
        finally:
            repository.close()
    except GitHubError:
        log.warning("progress comment not updated", task_id=record.id, exc_info=True)


def retry_lost(
    redis: Redis, settings: Settings, app: GitHubApp, task_id: str, attempt: int, how: str = "lost"
) -> str:
    """Run again (or fail) a task whose attempt ``attempt`` lost its worker; what was done."""
    record = tasks.load(redis, task_id)
    if record is None:
        return "gone"
    queue = Queue(settings.codex_queue, connection=redis)
    done = tasks.take_back(
        redis,
        queue,
        record,
        attempt,
        timeout=settings.codex_job_timeout,
        note=text.lost_worker_note(attempt + 1, tasks.MAX_ATTEMPTS, how),
        reason=text.lost_worker_reason(tasks.MAX_ATTEMPTS),
    )
    if done == "failed":
        _show(app, record, settings, f"I could not finish this task: {record.reason}")
        log.warning("task failed: worker lost", task_id=task_id, attempt=attempt)
    elif done == "requeued":
        _show(app, record, settings, record.retry_note)
        log.warning("task requeued: worker lost", task_id=task_id, attempt=attempt + 1)
    return done or "taken"  # its lease came back, or another janitor took it


def sweep(redis: Redis, settings: Settings, app: GitHubApp) -> list[tuple[str, str]]:
    """One round of the janitor: (task id, what was done) for every task found without a lease."""
    return [
        (task_id, retry_lost(redis, settings, app, task_id, attempt))
        for task_id, attempt in tasks.started_without_lease(redis, settings.codex_queue)
    ]


def start_janitor(redis: Redis, settings: Settings, app: GitHubApp) -> threading.Event:
    """Run `sweep` every third of a lease on a daemon thread; set the returned event to stop."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(settings.codex_lease_seconds / 3):
            try:
                with _FORKING:
                    sweep(redis, settings, app)
            except Exception:  # noqa: BLE001 - the janitor must outlive a bad round; logged
                log.exception("janitor round failed")

    threading.Thread(target=loop, name="codexbot-janitor", daemon=True).start()
    return stop


class TaskWorker(Worker):
    """An RQ worker whose warm shutdown has a deadline: after `CODEX_SHUTDOWN_GRACE` seconds
    the running task goes back to the queue instead of being cut off by the platform's kill."""

    def __init__(self, *args, settings: Settings, app: GitHubApp, **kwargs) -> None:  # noqa: ANN002, ANN003
        kwargs.setdefault("job_monitoring_interval", 2)
        super().__init__(*args, **kwargs)
        self._settings = settings
        self._app = app
        self._stop_since: datetime | None = None

    def fork_work_horse(self, job, queue) -> None:  # noqa: ANN001 - RQ's types
        with _FORKING:
            super().fork_work_horse(job, queue)

    def request_stop(self, signum, frame) -> None:  # noqa: ANN001 - RQ's signal handler
        self._stop_since = datetime.now()
        log.info("warm shutdown", grace_seconds=self._settings.codex_shutdown_grace)
        super().request_stop(signum, frame)

    def maintain_heartbeats(self, job, execution) -> None:  # noqa: ANN001 - RQ's types
        super().maintain_heartbeats(job, execution)
        if self._stop_since is None or not self.horse_pid:
            return
        waited = (datetime.now() - self._stop_since).total_seconds()
        if waited < self._settings.codex_shutdown_grace:
            return
        task_id = job.kwargs.get("task_id", "")
        record = tasks.load(self.connection, task_id) if task_id else None
        self.kill_horse()  # first: a horse still running must not see its task handed on
        self.wait_for_horse()
        if record is None or not record.attempt:
            return
        tasks.end_lease(self.connection, task_id, record.attempt)
        done = retry_lost(
            self.connection, self._settings, self._app, task_id, record.attempt, how="stopped"
        )
        log.warning("task handed back at shutdown", task_id=task_id, outcome=done)
