"""Names and labels of what a task makes in the engine (containers, volumes, images).

Every resource carries its task, the worker and job that made it and the Redis that holds the job,
so a reaper (`sandbox.reaper`) can judge, after a crash, whether its owner is still alive.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from datetime import UTC, datetime
from typing import Any

import docker
import docker.errors
import structlog

log = structlog.get_logger(__name__)

TASK_LABEL = "codexbot.task"
CREATED_LABEL = "codexbot.created"
WORKER_LABEL = "codexbot.worker"
REPO_LABEL = "codexbot.repo"
JOB_LABEL = "codexbot.job"
HOST_LABEL = "codexbot.host"
PID_LABEL = "codexbot.pid"
KIND_LABEL = "codexbot.kind"
REDIS_LABEL = "codexbot.redis"  # which Redis holds the job: a reaper judges only its own


def sanitize_name(task_id: str) -> str:
    """A Docker-safe name fragment for a task id.

    >>> sanitize_name("octo/repo#42")
    'octo-repo-42'
    """
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", task_id).strip("-.")
    return cleaned[:100] or "task"


def container_name(task_id: str) -> str:
    return f"codexbot-{sanitize_name(task_id)}"


def volume_name(task_id: str) -> str:
    return f"codexbot-{sanitize_name(task_id)}-workspace"


def task_labels(
    task_id: str, extra: dict[str, str] | None, *, now: datetime, worker: str
) -> dict[str, str]:
    """Caller labels plus ours; ours win, so a caller cannot hide a container from the reaper."""
    return {
        **(extra or {}),
        TASK_LABEL: task_id,
        CREATED_LABEL: now.isoformat(timespec="seconds"),
        WORKER_LABEL: worker,
    }


def _current_job() -> Any:
    try:
        from rq import get_current_job

        return get_current_job()
    except Exception:  # noqa: BLE001 - outside a job, or no RQ
        return None


def worker_identity() -> str:
    """The RQ worker running this code (the reaper watches its registration), or host:pid."""
    job = _current_job()
    if job is not None and job.worker_name:
        return str(job.worker_name)
    return f"{socket.gethostname()}:{os.getpid()}"


def redis_identity(redis: Any) -> str:
    """host:port/db of a Redis client, so reapers on different databases leave each other be."""
    kwargs = redis.connection_pool.connection_kwargs
    where = kwargs.get("path") or f"{kwargs.get('host', '')}:{kwargs.get('port', '')}"
    return f"{where}/{kwargs.get('db', 0)}"


def resource_labels(
    task_id: str, extra: dict[str, str] | None = None, *, kind: str = "task"
) -> dict[str, str]:
    """Labels for everything a task makes: container, volume, image."""
    labels = task_labels(task_id, extra, now=datetime.now(UTC), worker=worker_identity())
    labels[HOST_LABEL] = socket.gethostname()
    labels[PID_LABEL] = str(os.getpid())
    labels[KIND_LABEL] = kind
    job = _current_job()
    if job is not None:
        labels[JOB_LABEL] = str(job.id)
        labels[REDIS_LABEL] = redis_identity(job.connection)
    return labels


def remove_task_containers(
    client: docker.DockerClient, task_id: str, *, keep: frozenset[str] = frozenset()
) -> int:
    """Remove every container and volume labelled with `task_id` (but the volumes named in `keep`);
    returns how many containers."""
    selector = {"label": f"{TASK_LABEL}={task_id}"}
    containers = client.containers.list(all=True, filters=selector, ignore_removed=True)
    for container in containers:
        with contextlib.suppress(docker.errors.NotFound):  # removed meanwhile
            container.remove(force=True, v=True)
    for volume in client.volumes.list(filters=selector):
        if volume.name in keep:
            continue
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            volume.remove(force=True)
    if containers:
        log.info("sandbox.reaped", task_id=task_id, containers=len(containers))
    return len(containers)
