"""Layered workspaces: /workspace as an overlay on a checkout the engine keeps per repository.

Writing the whole working tree into every task costs time in proportion to its size (about 80 ms
for 24 MB on this machine, before git does anything). So each repository has a *tree volume*: a
checkout of one commit, made once by a short-lived builder container and never written again. A
task's workspace is an overlay volume (the engine's `local` driver, type overlay) whose lower layer
is that tree and whose upper layer is a fresh volume of the task's own:

    source = Source(repo="octo/widgets", sha=sha, mirror_volume=..., refresh=...)
    tree = ensure_tree(client, redis, source, image=..., distance=..., task_id=task_id)
    layered = task_layers(client, tree, task_id=task_id, labels=labels)
    with Sandbox(client, ..., workspace_volume=False, volumes={**mirror, **layered.mounts},
                 owned_volumes=layered.volumes) as box:
        sandbox.mirror.checkout(box, sha)  # writes only the files that differ from the tree

Moving to the task's commit writes only what differs, and whatever the agent writes lands in its
own upper layer, removed with the task: tasks never see each other's files, and none can change the
tree (it is mounted in no task container). The engine resolves the layers' paths (each volume's
Mountpoint) on its own side, so this works unchanged with a remote DOCKER_HOST.

The overlay's root directory takes the owner of the upper layer's, which the engine creates for
root. The upper volume is therefore also mounted, read-only, at UPPER_MOUNT, an empty directory
the image gives the sandbox user: a fresh volume takes the owner of the image's directory at its
mount point, so /workspace belongs to the sandbox user like a plain workspace volume does.

`workers.workspace.task_sandbox` never makes a task wait for a tree: when there is none near the
task's commit (the repository's first task, or one more than REBUILD_AFTER_FILES files away) the
task gets a plain workspace and a tree is built at its commit meanwhile, for the next. Older trees
are removed once superseded for SUPERSEDED_GRACE_SECONDS and no task's overlay stands on them.
Which trees are complete is kept in Redis (a builder that died leaves an unregistered volume,
never used). An engine that cannot mount overlay volumes (rootless, another volume driver) makes
the container fail to start: `task_sandbox` then falls back to a plain workspace volume, and
stops trying layers in that process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import docker
import docker.errors
import structlog
from redis import Redis

from codexbot import keys
from sandbox.container import Sandbox
from sandbox.hardening import WORKSPACE, SandboxLimits
from sandbox.labels import (
    CREATED_LABEL,
    KIND_LABEL,
    REDIS_LABEL,
    REPO_LABEL,
    WORKER_LABEL,
    redis_identity,
    resource_labels,
    sanitize_name,
    worker_identity,
)
from sandbox.mirror import CREATOR_LABEL, MIRROR_PATH, Refreshed
from sandbox.output import SandboxError

log = structlog.get_logger(__name__)

UPPER_MOUNT = "/opt/codexbot-upper"
TREE_KIND = "tree"
LAYER_KIND = "workspace-layer"
TREE_LABEL = "codexbot.tree"  # on a task's overlay volume: the tree it stands on
COMMIT_LABEL = "codexbot.commit"
LOCK_SECONDS = 900
REBUILD_AFTER_FILES = 200
BUILDER_CPU_SHARES = 128  # a tree is built beside a task: the task's own work goes first
SUPERSEDED_GRACE_SECONDS = 600
BUILD_TIMEOUT_SECONDS = 600

# Check out `sha` borrowing /mirror's objects, then write the index again once the clock is in a
# later second: git (built without USE_NSEC, as Debian's) counts a file whose mtime is in the same
# second as the index as "racily clean", and every task standing on the tree would hash all of
# those again (about 60 ms for 24 MB, at every `git status`).
BUILD_SCRIPT = (
    "set -e; cd {workspace}; git init -q .; "
    "echo {mirror}/objects > .git/objects/info/alternates; "
    "git -c advice.detachedHead=false checkout -q -f --detach {sha}; "
    "sleep 1; git update-index -q --really-refresh --force-write-index >/dev/null || true; "
    "git rev-parse HEAD"
)


@dataclass(frozen=True)
class Tree:
    volume: str
    commit: str
    mountpoint: str  # on the engine's side


@dataclass(frozen=True)
class Layered:
    """A task's workspace volumes: `mounts` for the container, `volumes` to remove after it."""

    mounts: dict[str, dict[str, str]]
    volumes: tuple[Any, ...]


def tree_volume_name(repo: str, sha: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", repo).strip("-.")[:50] or "repo"
    digest = hashlib.sha256(repo.encode()).hexdigest()[:10]
    return f"codexbot-tree-{safe}-{digest}-{sha[:12]}-{secrets.token_hex(3)}"


def registry(repo: str) -> str:
    return keys.trees(repo)


def overlay_options(lower: str, upper: str, work: str) -> dict[str, Any]:
    """`volumes.create` arguments for an overlay volume on the engine-side paths given."""
    for path in (lower, upper, work):
        if not path.startswith("/") or re.search(r"[,:\s]", path):
            raise SandboxError(f"cannot layer a workspace on the engine path {path!r}")
    return {
        "driver": "local",
        "driver_opts": {
            "type": "overlay",
            "device": "overlay",
            "o": f"lowerdir={lower},upperdir={upper},workdir={work}",
        },
    }


def _volume(client: docker.DockerClient, name: str) -> Any | None:
    try:
        return client.volumes.get(name)
    except docker.errors.NotFound:
        return None


def newest_tree(client: docker.DockerClient, redis: Redis, repo: str) -> Tree | None:
    """The newest complete tree of `repo` that still exists (forgetting those that do not)."""
    for raw in redis.zrevrange(registry(repo), 0, -1):
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        volume = _volume(client, name)
        labels = (volume.attrs.get("Labels") or {}) if volume is not None else {}
        if volume is None or labels.get(REPO_LABEL, "").lower() != repo.lower():
            redis.zrem(registry(repo), name)
            continue
        return Tree(volume=name, commit=labels[COMMIT_LABEL], mountpoint=volume.attrs["Mountpoint"])
    return None


@dataclass(frozen=True)
class Source:
    """What a tree is checked out from: the commit, and the repository's engine-side mirror."""

    repo: str
    sha: str
    mirror_volume: str
    refresh: Callable[[Sandbox], Refreshed]  # brings the mirror mounted in a box up to date


def near_tree(
    client: docker.DockerClient,
    redis: Redis,
    repo: str,
    sha: str,
    distance: Callable[[str, str], int],
) -> Tree | None:
    """The newest complete tree of `repo` if at most REBUILD_AFTER_FILES files from `sha`.

    `distance(a, b)` counts the files that differ between two commits (very many when one is
    unknown).
    """
    tree = newest_tree(client, redis, repo)
    if tree is not None and distance(tree.commit, sha) <= REBUILD_AFTER_FILES:
        return tree
    return None


def ensure_tree(
    client: docker.DockerClient,
    redis: Redis,
    source: Source,
    *,
    image: str,
    distance: Callable[[str, str], int],
    task_id: str,
    limits: SandboxLimits = SandboxLimits(),  # noqa: B008 - frozen dataclass
    wait: bool = True,
) -> Tree | None:
    """A complete tree of the repository near `source.sha`: the newest, or a new one built there.

    Concurrent callers build one tree: the others wait for it, or with `wait=False` return None
    at once (somebody is building).
    """
    repo = source.repo
    tree = near_tree(client, redis, repo, source.sha, distance)
    if tree is not None:
        return tree
    lock = redis.lock(
        keys.tree_build_lock(repo),
        timeout=LOCK_SECONDS,
        blocking_timeout=LOCK_SECONDS,
        thread_local=False,
    )
    if not lock.acquire(blocking=wait):
        if not wait:
            return None
        raise SandboxError(f"timed out waiting for another task to check out {repo}")
    try:
        tree = near_tree(client, redis, repo, source.sha, distance)  # built meanwhile
        if tree is not None:
            return tree
        tree = _build_tree(client, redis, source, image=image, task_id=task_id, limits=limits)
        redis.zadd(registry(repo), {tree.volume: time.time()})
        prune_trees(client, redis, repo)
        return tree
    finally:
        lock.release()


def _build_tree(
    client: docker.DockerClient,
    redis: Redis,
    source: Source,
    *,
    image: str,
    task_id: str,
    limits: SandboxLimits,
) -> Tree:
    repo, sha = source.repo, source.sha
    if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", sha):
        raise SandboxError(f"not a commit id: {sha!r}")
    started = time.monotonic()
    volume = client.volumes.create(
        name=tree_volume_name(repo, sha),
        labels={
            KIND_LABEL: TREE_KIND,
            REPO_LABEL: repo,
            COMMIT_LABEL: sha,
            CREATOR_LABEL: task_id,
            REDIS_LABEL: redis_identity(redis),  # whose registry says whether it is complete
            CREATED_LABEL: datetime.now(UTC).isoformat(timespec="seconds"),
            WORKER_LABEL: worker_identity(),
        },
    )
    try:
        # A fresh volume at /workspace takes the sandbox user's ownership, so the tree's files
        # belong to the agent's user, who may then change them through the overlay.
        with Sandbox(
            client,
            image=image,
            task_id=f"{task_id}-tree",
            labels={REPO_LABEL: repo},
            limits=dataclasses.replace(limits, cpu_shares=BUILDER_CPU_SHARES),
            workspace_volume=False,
            volumes={
                volume.name: {"bind": WORKSPACE, "mode": "rw"},
                source.mirror_volume: {"bind": MIRROR_PATH, "mode": "rw"},
            },
        ) as builder:
            source.refresh(builder)
            script = BUILD_SCRIPT.format(workspace=WORKSPACE, mirror=MIRROR_PATH, sha=sha)
            reply = builder.run_raw(script, timeout=BUILD_TIMEOUT_SECONDS, workdir=WORKSPACE)
            if reply.exit_code != 0 or reply.data().decode().split()[-1:] != [sha]:
                raise SandboxError(
                    f"could not check out {sha} for {repo} ({reply.exit_code}): "
                    f"{reply.text()[-2000:]}"
                )
    except BaseException:
        with contextlib.suppress(docker.errors.DockerException):
            volume.remove(force=True)
        raise
    volume.reload()
    log.info(
        "sandbox.tree_built",
        repo=repo,
        commit=sha,
        volume=volume.name,
        ms=int((time.monotonic() - started) * 1000),
    )
    return Tree(volume=volume.name, commit=sha, mountpoint=volume.attrs["Mountpoint"])


def task_layers(
    client: docker.DockerClient, tree: Tree, *, task_id: str, labels: dict[str, str] | None = None
) -> Layered:
    """The upper, work and overlay volumes of one task on `tree`, labelled for the reaper."""
    return layers_on(
        client,
        tree,
        name=f"codexbot-{sanitize_name(task_id)}",
        labels=resource_labels(task_id, labels, kind=LAYER_KIND),
    )


def layers_on(
    client: docker.DockerClient, tree: Tree, *, name: str, labels: dict[str, str]
) -> Layered:
    """The upper, work and overlay volumes `name`-upper, -work, -workspace on `tree`."""
    made: list[Any] = []
    try:
        for part in ("upper", "work"):
            made.append(client.volumes.create(name=f"{name}-{part}", labels=labels))
        upper, work = made
        overlay = client.volumes.create(
            name=f"{name}-workspace",
            labels={**labels, TREE_LABEL: tree.volume},
            **overlay_options(tree.mountpoint, upper.attrs["Mountpoint"], work.attrs["Mountpoint"]),
        )
        made.insert(0, overlay)
    except BaseException:
        _remove_volumes(made)
        raise
    return Layered(
        mounts={
            overlay.name: {"bind": WORKSPACE, "mode": "rw"},
            upper.name: {"bind": UPPER_MOUNT, "mode": "ro"},
        },
        volumes=tuple(made),  # overlay first: it stands on the other two
    )


def _remove_volumes(volumes: list[Any] | tuple[Any, ...]) -> None:
    for volume in volumes:
        with contextlib.suppress(docker.errors.DockerException):
            volume.remove(force=True)


def prune_trees(client: docker.DockerClient, redis: Redis, repo: str | None = None) -> int:
    """Remove the trees no task stands on that were superseded long enough ago; returns how many.

    Superseded: a newer complete tree of the same repository has existed for
    SUPERSEDED_GRACE_SECONDS (a task that chose the older one just before has made its overlay by
    then). A tree that was never completed goes once its builder's lock would have expired.
    """
    selector = [f"{KIND_LABEL}={TREE_KIND}"] + ([f"{REPO_LABEL}={repo}"] if repo else [])
    trees = client.volumes.list(filters={"label": selector})
    layers = client.volumes.list(filters={"label": f"{KIND_LABEL}={LAYER_KIND}"})
    in_use = {(volume.attrs.get("Labels") or {}).get(TREE_LABEL) for volume in layers}
    ours = redis_identity(redis)
    now = time.time()
    removed = 0
    for volume in trees:
        labels = volume.attrs.get("Labels") or {}
        if volume.name in in_use or labels.get(REDIS_LABEL) != ours:
            continue  # stood on, or another deployment's (or test database's) to judge
        owner = labels.get(REPO_LABEL, "")
        score = redis.zscore(registry(owner), volume.name)
        gone_since: float | None
        if score is None:
            gone_since = _created(volume) + LOCK_SECONDS
        else:
            newer = redis.zrangebyscore(
                registry(owner), f"({score}", "+inf", start=0, num=1, withscores=True
            )
            gone_since = float(newer[0][1]) if newer else None
        if gone_since is None or now - gone_since < SUPERSEDED_GRACE_SECONDS:
            continue
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            volume.remove(force=True)
            redis.zrem(registry(owner), volume.name)
            removed += 1
    return removed


def _created(volume: Any) -> float:
    stamp = (volume.attrs.get("Labels") or {}).get(CREATED_LABEL, "")
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return 0.0
