"""The warm pool: started, hardened, idle sandboxes waiting for the next task of their shape.

Starting a container is the largest single part of the bot's own time in a task (250-450 ms
here). So once a task has its sandbox, its worker starts another of the same shape in the
background (`fill`), and the next task of that shape takes it (`take`): a claim in Redis and a
new command channel instead of a container start.

    shape = Shape(image=prepared.image, env=..., limits=limits, mirror_volume=volume, tree=tree)
    box = take(client, redis, shape, task_id=task_id, settings=settings)  # None: start one
    ...
    fill(client, redis, shape, settings)  # in the background, never in the task's way

A shape is everything a container is made with (mounts cannot change once it exists): the
image (by id), the environment, the limits, the home volume, and what /mirror and /workspace
are. With a repository's engine-side mirror, /workspace is an overlay on the repository's tree
(its upper layer still empty) or a fresh plain volume; without one (`mirror_volume=""`: a
repository's first task, whose mirror has nothing to reuse yet) /mirror and /workspace are both
fresh empty volumes of its own. So an idle sandbox holds no task's files, no task label and no
secret (the agent's sandbox never gets one): at most the repository's mirror and tree, which
every task of the repository sees. A task's files are written only after it is taken, and
each pooled container serves one task and goes with it: nothing passes from task to task.

Taking is a claim only one can win: `SET codexbot:pool:claim:<container> NX`, in the Redis
every worker and the reaper share (the engine's own rename is no compare-and-swap: two
concurrent renames of one container by its old name both succeeded in 13 of 20 tries here).
The list `codexbot:pool:<shape>` only says where to look. Idle containers carry the pool's
labels (`codexbot.kind=pool`, their shape, their idle time, the worker that started them, the
Redis that lists them): the reaper (`sandbox.reaper.reap_pool`) claims and removes one idle past
its time or whose worker is gone, and judges a taken one by the task in its claim.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import docker
import docker.errors
import requests
import structlog
from redis import Redis

from codexbot import keys
from sandbox.container import Sandbox
from sandbox.hardening import WORKSPACE, SandboxLimits
from sandbox.labels import (
    CREATED_LABEL,
    HOST_LABEL,
    JOB_LABEL,
    KIND_LABEL,
    PID_LABEL,
    REDIS_LABEL,
    REPO_LABEL,
    WORKER_LABEL,
    container_name,
    redis_identity,
    resource_labels,
    worker_identity,
)
from sandbox.layers import LAYER_KIND, Tree, layers_on
from sandbox.mirror import mirror_mount
from sandbox.output import SandboxError

log = structlog.get_logger(__name__)

POOL_KIND = "pool"
SHAPE_LABEL = "codexbot.pool-shape"
IDLE_LABEL = "codexbot.pool-idle-seconds"
BOX_LABEL = "codexbot.pool-box"  # on a pooled container and its volumes: the container's name
CLAIM_SECONDS = 2 * 24 * 3600  # beyond any task; deleted when the task's sandbox is removed
FILL_LOCK_SECONDS = 120
CLAIM_LABELS = (JOB_LABEL, WORKER_LABEL, HOST_LABEL, PID_LABEL)  # of the task that took it


@dataclass(frozen=True)
class PoolSettings:
    """`size` idle sandboxes per shape in recent use (0: no pool); each waits `idle_seconds`."""

    size: int = 1
    idle_seconds: int = 1800


@dataclass(frozen=True)
class Shape:
    """What a sandbox is made with; two of one shape are interchangeable before they are taken."""

    image: str
    env: tuple[tuple[str, str], ...] = ()
    limits: SandboxLimits = SandboxLimits()  # noqa: B008 - frozen dataclass
    home_volume: bool = False
    repo: str = ""
    mirror_volume: str = ""  # the repository's engine-side mirror; "": an empty one of its own
    tree: Tree | None = None  # /workspace as an overlay on it; None: a fresh plain volume


def shape_key(client: docker.DockerClient, shape: Shape) -> str:
    """A digest of the shape, with the image by id (a rebuilt image is another shape)."""
    fields = {
        "image": client.api.inspect_image(shape.image)["Id"],
        "env": sorted(shape.env),
        "limits": dataclasses.asdict(shape.limits),
        "home": shape.home_volume,
        "mirror": shape.mirror_volume,
        "tree": shape.tree.volume if shape.tree else "",
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def volume_names(box: str, shape: Shape) -> list[str]:
    """The volumes of the pooled container named `box`, in the order they are removed."""
    names = [f"{box}-workspace"]  # the overlay (first: it stands on the next two) or plain
    if shape.tree is not None:
        names += [f"{box}-upper", f"{box}-work"]
    if shape.home_volume:
        names.append(f"{box}-home")
    if not shape.mirror_volume:
        names.append(f"{box}-mirror")
    return names


def claim_text(task_id: str) -> str:
    """Who took a pooled container: the reaper judges it by this task, job and worker."""
    labels = resource_labels(task_id)
    return json.dumps({"task": task_id, **{label: labels.get(label, "") for label in CLAIM_LABELS}})


def take(
    client: docker.DockerClient,
    redis: Redis,
    shape: Shape,
    *,
    task_id: str,
    settings: PoolSettings,
) -> Sandbox | None:
    """An idle sandbox of `shape`, now the task's (removed when its block ends), or None."""
    if settings.size <= 0:
        return None
    key = shape_key(client, shape)
    claim = claim_text(task_id)
    while (raw := redis.lpop(keys.pool(key))) is not None:
        container_id = raw.decode() if isinstance(raw, bytes) else str(raw)
        if not redis.set(keys.pool_claim(container_id), claim, nx=True, ex=CLAIM_SECONDS):
            continue  # the reaper claimed it, to remove it
        try:
            container = client.containers.get(container_id)
        except docker.errors.NotFound:
            continue
        owned = tuple(
            client.volumes.prepare_model({"Name": name})
            for name in volume_names(container.name, shape)
        )
        if container.status != "running" or container.labels.get(SHAPE_LABEL) != key:
            remove(container, owned)
            continue
        try:
            box = Sandbox.taken(
                client, container, task_id=task_id, limits=shape.limits, owned_volumes=owned
            )
        except SandboxError as error:
            log.warning("sandbox.pool_broken", container=container_id, error=str(error))
            continue
        log.info("sandbox.pool_taken", container=container_id, task_id=task_id)
        return box
    return None


def release(redis: Redis, container_id: str) -> None:
    """Forget the claim of a taken container once it is removed."""
    redis.delete(keys.pool_claim(container_id))


def remove(container: Any | None, volumes: tuple[Any, ...]) -> None:
    """Remove a pooled container (if any) and its volumes, whatever is already gone."""
    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
        if container is not None:
            container.remove(force=True, v=True)
    for volume in volumes:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            volume.remove(force=True)


def fill(client: docker.DockerClient, redis: Redis, shape: Shape, settings: PoolSettings) -> int:
    """Start idle sandboxes of `shape` until `settings.size` wait; returns how many it started.

    One worker fills a shape at a time; listed containers that are gone are forgotten first.
    """
    if settings.size <= 0:
        return 0
    key = shape_key(client, shape)
    if not redis.set(keys.pool_filling(key), worker_identity(), nx=True, ex=FILL_LOCK_SECONDS):
        return 0
    try:
        listed = keys.pool(key)
        running = {
            container.id
            for container in client.containers.list(filters={"label": f"{SHAPE_LABEL}={key}"})
        }
        for raw in redis.lrange(listed, 0, -1):
            container_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            if container_id not in running:
                redis.lrem(listed, 0, container_id)
        started = 0
        while redis.llen(listed) < settings.size:
            redis.rpush(listed, start_idle(client, redis, shape, key, settings))
            redis.expire(listed, 2 * settings.idle_seconds)
            started += 1
        return started
    finally:
        redis.delete(keys.pool_filling(key))


def idle_labels(
    redis: Redis, shape: Shape, key: str, box: str, idle_seconds: int
) -> dict[str, str]:
    """The labels of an idle sandbox: the pool's and its maker's, none of a task."""
    labels = {
        KIND_LABEL: POOL_KIND,
        SHAPE_LABEL: key,
        IDLE_LABEL: str(idle_seconds),
        BOX_LABEL: box,
        CREATED_LABEL: datetime.now(UTC).isoformat(timespec="seconds"),
        WORKER_LABEL: worker_identity(),
        HOST_LABEL: socket.gethostname(),
        PID_LABEL: str(os.getpid()),
        REDIS_LABEL: redis_identity(redis),
    }
    if shape.repo:
        labels[REPO_LABEL] = shape.repo
    return labels


def start_idle(
    client: docker.DockerClient, redis: Redis, shape: Shape, key: str, settings: PoolSettings
) -> str:
    """Start one idle sandbox of `shape`; returns its container id."""
    name = f"pool-{secrets.token_hex(6)}"
    box_name = container_name(name)
    labels = idle_labels(redis, shape, key, box_name, settings.idle_seconds)
    made: list[Any] = []
    try:
        mirror = shape.mirror_volume
        if not mirror:
            made.append(client.volumes.create(name=f"{box_name}-mirror", labels=labels))
            mirror = made[-1].name
        volumes = mirror_mount(mirror)
        if shape.tree is not None:
            layered = layers_on(
                client, shape.tree, name=box_name, labels={**labels, KIND_LABEL: LAYER_KIND}
            )
            made[:0] = layered.volumes
            volumes.update(layered.mounts)
    except BaseException:
        remove(None, tuple(made))
        raise
    box = Sandbox(
        client,
        image=shape.image,
        task_id=name,
        env=dict(shape.env),
        limits=shape.limits,
        volumes=volumes,
        workspace_volume=shape.tree is None,
        home_volume=shape.home_volume,
        owned_volumes=tuple(made),
        idle=labels,
    )
    box.start()  # removes what it made, and `made`, when it fails
    try:
        if box.run_raw("test -w .", timeout=30, workdir=WORKSPACE).exit_code != 0:
            raise SandboxError(f"/workspace of {box_name} is not the sandbox user's")
    except BaseException:
        box.remove()
        raise
    container_id = box.container_id
    box.leave_running()
    log.info("sandbox.pool_started", container=container_id, shape=key)
    return container_id


def fill_quietly(
    client: docker.DockerClient, redis: Redis, shape: Shape, settings: PoolSettings
) -> None:
    """`fill`, logging a failure: the next task then starts its own sandbox, as without a pool."""
    try:
        fill(client, redis, shape, settings)
    except (
        SandboxError,
        docker.errors.DockerException,
        requests.exceptions.RequestException,
    ) as error:
        log.warning("sandbox.pool_fill_failed", error=str(error))


def remove_pooled(client: docker.DockerClient, *, started_by: Callable[[str], bool]) -> int:
    """Remove every pooled sandbox (idle or taken) started by a worker `started_by` accepts,
    with its volumes; returns how many. For a deployment (or a test stack) that stops for good."""
    removed = 0
    for container in client.containers.list(
        all=True, filters={"label": f"{KIND_LABEL}={POOL_KIND}"}
    ):
        if not started_by(container.labels.get(WORKER_LABEL, "")):
            continue
        box = container.labels.get(BOX_LABEL, container.name)
        remove(container, tuple(client.volumes.list(filters={"label": f"{BOX_LABEL}={box}"})))
        removed += 1
    return removed
