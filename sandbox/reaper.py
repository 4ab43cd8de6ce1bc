"""Remove what crashed tasks left behind: containers (and their volumes) whose task is over.

Every worker calls `reap(client, redis)` now and then (`start_reaper` runs it on a thread). A
container of a task with a record in Redis is judged by that record alone: it goes when the task
has ended, or when no attempt holds the task's lease (its work horse is gone: killed, or its
task handed back); while a lease is held it stays, whatever the worker's registration says (a
worker in a warm shutdown still runs its horse). Other containers go when
- its RQ job (label `codexbot.job`) is finished, failed, stopped, canceled or gone; or
- its worker (label `codexbot.worker`) is gone: no RQ registration, a registration on this host
  whose pid is dead, or one whose heartbeat is older than `STALE_HEARTBEAT_SECONDS`; a
  non-RQ owner (`host:pid`) on this host whose process is dead.
Volumes of removed containers go with them, also the task's unmounted ones (a layered
workspace's work directory); the engine-side mirror and tree volumes are shared and kept. Each
round also prunes superseded trees (`sandbox.layers.prune_trees`), reaps the warm pool
(`reap_pool`): an idle sandbox goes once idle past its time or when the worker that started it is
gone, a taken one when the task that took it is over (judged as above, by its claim), and
reports how many task containers of this deployment run on its engine (`report_sandboxes`, for
/metrics).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import docker
import docker.errors
import structlog
from redis import Redis
from rq import Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from codexbot import keys
from codexbot.fleetmetrics import WorkerMetrics
from sandbox.labels import (
    CREATED_LABEL,
    HOST_LABEL,
    JOB_LABEL,
    KIND_LABEL,
    PID_LABEL,
    REDIS_LABEL,
    TASK_LABEL,
    WORKER_LABEL,
    redis_identity,
)
from sandbox.layers import prune_trees
from sandbox.pool import BOX_LABEL, CLAIM_SECONDS, IDLE_LABEL, POOL_KIND, SHAPE_LABEL

log = structlog.get_logger(__name__)

FINISHED_JOB_STATES = {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}
STALE_HEARTBEAT_SECONDS = 120
REAP_INTERVAL_SECONDS = 15


@dataclass(frozen=True)
class Reaped:
    container: str
    task_id: str
    reason: str


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def job_over(redis: Redis, job_id: str) -> str | None:
    """Why the job is over, or None while it is queued or running."""
    try:
        status = Job.fetch(job_id, connection=redis).get_status(refresh=False)
    except NoSuchJobError:
        return "its job is gone"
    if status in FINISHED_JOB_STATES:
        return f"its job is {status.value}"
    return None


def task_over(redis: Redis, task_id: str) -> str | None:
    """Why the task of a container is over, by its record and lease (None: it may still run)."""
    raw = redis.hget(keys.task(task_id), "state")
    if raw is None:
        return None
    state = json.loads(raw)  # type: ignore[arg-type]
    if state in ("done", "failed", "stopped"):
        return f"its task is {state}"
    if redis.exists(keys.lease(task_id)):
        return None
    return "no attempt holds its task's lease"


def worker_gone(
    redis: Redis, worker: str, *, host: str, pid: str, now: datetime, this_host: str
) -> str | None:
    """Why the worker is gone, or None if it may still be alive."""
    registered = Worker.find_by_key(Worker.redis_worker_namespace_prefix + worker, connection=redis)
    if registered is not None:
        if registered.hostname == this_host and registered.pid:
            if not _pid_alive(registered.pid):
                return f"its worker {worker} (pid {registered.pid}) is dead"
            return None
        seen = registered.last_heartbeat
        if seen is not None:
            if seen.tzinfo is None:
                seen = seen.replace(tzinfo=UTC)
            if (now - seen).total_seconds() > STALE_HEARTBEAT_SECONDS:
                return f"its worker {worker} stopped sending heartbeats"
        return None
    # Not an RQ worker name: host:pid of whoever made it.
    if host == this_host and pid.isdigit():
        return None if _pid_alive(int(pid)) else f"its process {pid} on {host} is dead"
    if ":" not in worker:
        return f"its worker {worker} is not registered"
    return None


def maker_gone(
    redis: Redis, labels: Mapping[str, str], *, now: datetime, this_host: str
) -> str | None:
    """`worker_gone` for whoever made a container (or took a pooled one): by its labels."""
    return worker_gone(
        redis,
        labels.get(WORKER_LABEL, ""),
        host=labels.get(HOST_LABEL, ""),
        pid=labels.get(PID_LABEL, ""),
        now=now,
        this_host=this_host,
    )


def reap(client: docker.DockerClient, redis: Redis) -> list[Reaped]:
    """Remove every task container whose task is over; returns what was removed and why."""
    this_host = socket.gethostname()
    now = datetime.now(UTC)
    ours = redis_identity(redis)
    reaped: list[Reaped] = []
    for container in client.containers.list(
        all=True, filters={"label": TASK_LABEL}, ignore_removed=True
    ):
        labels = container.labels
        task_id = labels.get(TASK_LABEL, "")
        reason = None
        if labels.get(JOB_LABEL):
            if labels.get(REDIS_LABEL) != ours:
                continue  # another deployment's (or test database's) job: not ours to judge
            if redis.exists(keys.task(task_id)):
                reason = task_over(redis, task_id)
                if reason is None:
                    continue
            else:
                reason = job_over(redis, labels[JOB_LABEL])
        if reason is None:
            reason = maker_gone(redis, labels, now=now, this_host=this_host)
        if reason is None:
            continue
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
        # The task's own volumes (mounted or not); shared mirrors and trees carry no task label.
        for volume in client.volumes.list(filters={"label": f"{TASK_LABEL}={task_id}"}):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                volume.remove(force=True)
        log.warning("sandbox.reaped", task_id=task_id, container=container.name, reason=reason)
        reaped.append(Reaped(container=container.name, task_id=task_id, reason=reason))
    return reaped


def count_sandboxes(client: docker.DockerClient, redis: Redis) -> int:
    """Running task containers of this deployment (its Redis) on the engine."""
    ours = [TASK_LABEL, f"{REDIS_LABEL}={redis_identity(redis)}"]
    return len(client.containers.list(filters={"label": ours}, ignore_removed=True))


def report_sandboxes(client: docker.DockerClient, redis: Redis, engine: dict) -> int:
    """Count this deployment's sandboxes on the engine into the fleet's metrics, keyed by the
    engine's id: workers that share an engine report the same figure, and one scrape adds up
    the engines."""
    count = count_sandboxes(client, redis)
    WorkerMetrics(redis).sandboxes_seen(engine.get("ID", ""), engine.get("Name", ""), count)
    return count


REAPER_CLAIM = json.dumps({"reaper": True})


def idle_over(redis: Redis, labels: dict[str, str], *, now: datetime, this_host: str) -> str | None:
    """Why an idle pooled sandbox should go, or None while it may wait for a task."""
    try:
        made = datetime.fromisoformat(labels.get(CREATED_LABEL, ""))
        idle = int(labels.get(IDLE_LABEL, ""))
    except ValueError:
        return "its labels do not say when it was made or how long it may wait"
    if (now - made).total_seconds() >= idle:
        return f"idle for more than {idle} s"
    return maker_gone(redis, labels, now=now, this_host=this_host)


def taken_over(redis: Redis, claim: dict, *, now: datetime, this_host: str) -> str | None:
    """Why a taken pooled sandbox should go, by the task, job and worker that took it."""
    if claim.get("reaper"):
        return "a reaper took it to remove it"
    task_id = str(claim.get("task", ""))
    if task_id and redis.exists(keys.task(task_id)):
        return task_over(redis, task_id)
    if claim.get(JOB_LABEL):
        return job_over(redis, str(claim[JOB_LABEL]))
    return maker_gone(redis, claim, now=now, this_host=this_host)


def reap_pool(
    client: docker.DockerClient, redis: Redis, *, stopping: str | None = None
) -> list[Reaped]:
    """Remove the pooled sandboxes that should go (`idle_over`, `taken_over`); returns them.
    ``stopping``: a worker that stops for good, whose idle sandboxes go now (a taken one goes
    with its task, which may run on another worker)."""
    this_host = socket.gethostname()
    now = datetime.now(UTC)
    ours = redis_identity(redis)
    reaped: list[Reaped] = []
    selector = {"label": f"{KIND_LABEL}={POOL_KIND}"}
    for container in client.containers.list(all=True, filters=selector, ignore_removed=True):
        labels = container.labels
        if labels.get(REDIS_LABEL) != ours:
            continue  # listed in another Redis: its reapers judge it
        claim_key = keys.pool_claim(container.id)
        raw = redis.get(claim_key)
        task_id = ""
        if raw is None:
            reason = (
                "the worker that started it stopped"
                if stopping is not None and labels.get(WORKER_LABEL) == stopping
                else idle_over(redis, labels, now=now, this_host=this_host)
            )
            # Claimed as a task claims it, so the two never both have it.
            if reason is None or not redis.set(claim_key, REAPER_CLAIM, nx=True, ex=CLAIM_SECONDS):
                continue
            redis.lrem(keys.pool(labels.get(SHAPE_LABEL, "")), 0, container.id)
        else:
            claim = json.loads(raw)  # type: ignore[arg-type]
            task_id = str(claim.get("task", ""))
            reason = taken_over(redis, claim, now=now, this_host=this_host)
            if reason is None:
                continue
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)
        box = {"label": f"{BOX_LABEL}={labels.get(BOX_LABEL, container.name)}"}
        for volume in client.volumes.list(filters=box):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                volume.remove(force=True)
        redis.delete(claim_key)
        log.warning("sandbox.pool_reaped", container=container.name, task_id=task_id, reason=reason)
        reaped.append(Reaped(container=container.name, task_id=task_id, reason=reason))
    return reaped


def start_reaper(
    client_factory: Callable[[], docker.DockerClient],
    redis: Redis,
    *,
    interval: float = REAP_INTERVAL_SECONDS,
) -> threading.Event:
    """Run `reap` every `interval` seconds on a daemon thread; set the returned event to stop."""
    stop = threading.Event()

    def loop() -> None:
        client = client_factory()
        engine: dict | None = None
        try:
            while not stop.is_set():
                try:
                    reap(client, redis)
                    reap_pool(client, redis)
                    prune_trees(client, redis)
                    engine = engine or client.info()
                    report_sandboxes(client, redis, engine)
                except Exception:  # noqa: BLE001 - a reaper must outlive a bad round; logged
                    log.exception("sandbox.reap_failed")
                stop.wait(interval)
        finally:
            client.close()

    threading.Thread(target=loop, name="codexbot-reaper", daemon=True).start()
    return stop
