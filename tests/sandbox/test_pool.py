"""The warm pool: a task takes an idle, started sandbox of its shape, and one starts behind it."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from redis import Redis

from codexbot import keys
from sandbox import pool
from sandbox.hardening import BASE_ENVIRONMENT, WORKSPACE, SandboxLimits
from sandbox.labels import (
    KIND_LABEL,
    REDIS_LABEL,
    REPO_LABEL,
    TASK_LABEL,
    redis_identity,
    worker_identity,
)
from sandbox.layers import UPPER_MOUNT
from sandbox.mirror import MIRROR_PATH, mirror_volume_name
from sandbox.reaper import Reaped, reap_pool
from sim.stack import wait_until
from tests.sandbox.conftest import git, make_repo
from workers import workspace
from workers.repoconfig import RepoConfig
from workers.workspace import MirrorCache, task_sandbox

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
ON = pool.PoolSettings(size=1, idle_seconds=600)
SETUP_SECRET = "pool-test-secret-" + uuid.uuid4().hex  # noqa: S105 - made up, searched for


def pooled(client: docker.DockerClient, redis: Redis) -> list[Any]:
    """This test database's pooled containers, idle or taken."""
    selector = [f"{KIND_LABEL}={pool.POOL_KIND}", f"{REDIS_LABEL}={redis_identity(redis)}"]
    return client.containers.list(all=True, filters={"label": selector}, ignore_removed=True)


def idle_ids(redis: Redis) -> set[str]:
    return {
        raw.decode() if isinstance(raw, bytes) else raw
        for name in redis.scan_iter(match=keys.pool("*"))
        if b":claim:" not in name and b":filling:" not in name
        for raw in redis.lrange(name, 0, -1)
    }


def in_container(container: Any, command: str) -> str:
    return container.exec_run(["sh", "-c", command], user="1000:1000").output.decode()


@pytest.fixture
def cleanup(docker_client: docker.DockerClient, redis: Redis) -> Iterator[list[str]]:
    """Repository names to clean up after; the pool's containers of this database go too."""
    names: list[str] = []
    yield names
    for container in pooled(docker_client, redis):
        box = container.labels.get(pool.BOX_LABEL, container.name)
        volumes = docker_client.volumes.list(filters={"label": f"{pool.BOX_LABEL}={box}"})
        pool.remove(container, tuple(volumes))
    for name in names:
        for volume in docker_client.volumes.list(filters={"label": f"{REPO_LABEL}={name}"}):
            with contextlib.suppress(docker.errors.APIError):
                volume.remove(force=True)
        for volume in docker_client.volumes.list(filters={"name": mirror_volume_name(name)}):
            volume.remove(force=True)


class Repo:
    """One repository's tasks through `task_sandbox`, as the job runs them."""

    def __init__(self, client: docker.DockerClient, redis: Redis, image: str, tmp: Path) -> None:
        self.client, self.redis, self.image = client, redis, image
        self.name = f"test/pool-{uuid.uuid4().hex[:8]}"
        self.tmp = tmp / self.name.replace("/", "-")
        self.upstream = make_repo(self.tmp / "upstream")
        self.head = git(self.upstream, "rev-parse", "HEAD").strip()
        self.cache = MirrorCache(self.tmp / "mirrors")

    def sandbox(self, settings: pool.PoolSettings = ON) -> Any:
        url = f"file://{self.upstream}"
        mirror = self.cache.update(self.name, url, token=None)
        start = self.cache.checkout(mirror, self.tmp / uuid.uuid4().hex[:8], git_url=url)
        return task_sandbox(
            self.client,
            self.redis,
            base_image=self.image,
            config=RepoConfig(env=(("GREETING", "hello"),)),
            start=start,
            host_mirror=mirror,
            repo=self.name,
            task_id=f"test-pool-{uuid.uuid4().hex[:8]}",
            setup_secrets={"TOKEN": SETUP_SECRET},
            pool_settings=settings,
        )


@pytest.fixture
def new_repo(
    docker_client: docker.DockerClient,
    redis: Redis,
    sandbox_image: str,
    tmp_path: Path,
    cleanup: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    monkeypatch.setattr(workspace, "_layer_refusals", workspace.LayerRefusals())

    def make() -> Repo:
        repo = Repo(docker_client, redis, sandbox_image, tmp_path)
        cleanup.append(repo.name)
        return repo

    return make


def assert_holds_nothing_of_a_task(container: Any) -> None:
    """Started, hardened as every sandbox is, and empty of anything of a task."""
    container.reload()
    host = container.attrs["HostConfig"]
    assert container.status == "running" and container.attrs["Config"]["User"] == "1000:1000"
    assert (host["NetworkMode"], host["ReadonlyRootfs"], host["CapDrop"]) == ("none", True, ["ALL"])
    assert host["SecurityOpt"] == ["no-new-privileges"] and host["Privileged"] is False
    assert host["Init"] is True and host["PidsLimit"] == SandboxLimits().pids
    assert all(not bind.startswith("/") for bind in host["Binds"])  # named volumes only
    assert TASK_LABEL not in container.labels
    assert sorted(container.attrs["Config"]["Env"]) == sorted(
        [f"{k}={v}" for k, v in BASE_ENVIRONMENT.items()] + ["GREETING=hello"]
    )
    assert SETUP_SECRET not in json.dumps(container.attrs)
    if UPPER_MOUNT in {mount["Destination"] for mount in container.attrs["Mounts"]}:
        # Standing on the repository's tree, which every task of it sees: nothing of its own.
        assert in_container(container, f"ls -A {UPPER_MOUNT}") == ""
        assert in_container(container, f"cd {WORKSPACE} && git status --porcelain") == ""
    else:
        for empty in (WORKSPACE, MIRROR_PATH):
            assert in_container(container, f"ls -A {empty} && echo listed") == "listed\n"


def test_tasks_take_pooled_sandboxes_with_their_workspace_and_one_starts_behind(
    docker_client: docker.DockerClient, redis: Redis, new_repo: Any
) -> None:
    first = new_repo()
    with first.sandbox() as (box, _):
        fresh = box.container_id
        assert TASK_LABEL in docker_client.containers.get(fresh).labels  # none waited: started
    # Behind it: one for a repository's first task, and one on the tree built meanwhile.
    waiting = {c.id: c for c in pooled(docker_client, redis)}
    assert len(waiting) == 2 and fresh not in waiting and set(waiting) == idle_ids(redis)
    for container in waiting.values():
        assert_holds_nothing_of_a_task(container)
    on_tree = next(c for c in waiting.values() if REPO_LABEL in c.labels)

    with first.sandbox() as (box, _):  # the repository's next task, standing on its tree
        assert box.container_id == on_tree.id
        assert box.exec(
            "stat -f -c %T .; git rev-parse HEAD; git status --porcelain"
        ).output.split() == [
            "overlayfs",
            first.head,
        ]
        assert box.exec("echo $GREETING; echo changed > calc.py && cat calc.py").output == (
            "hello\nchanged\n"
        )
        assert not idle_ids(redis) & {on_tree.id}
    behind = {c.id for c in pooled(docker_client, redis)} - set(waiting)
    assert len(behind) == 1  # a new one on the tree, behind the one taken; the taken one is gone
    assert on_tree.id not in {c.id for c in pooled(docker_client, redis)}
    assert docker_client.volumes.list(filters={"label": f"{pool.BOX_LABEL}={on_tree.name}"}) == []
    assert_holds_nothing_of_a_task(docker_client.containers.get(behind.pop()))

    second = new_repo()  # another repository's first task takes the one with an empty mirror
    generic = next(c for c in waiting.values() if REPO_LABEL not in c.labels)
    with second.sandbox() as (box, _):
        assert box.container_id == generic.id
        assert box.exec("git rev-parse HEAD; git status --porcelain; cat calc.py").output == (
            f"{second.head}\ndef add(a, b):\n    return a + b\n"
        )
    with first.sandbox() as (box, _):  # what the task before wrote is not here
        assert box.exec("cat calc.py").output == "def add(a, b):\n    return a + b\n"


def test_two_claimers_never_take_the_same_idle_sandbox(
    docker_client: docker.DockerClient, redis: Redis, sandbox_image: str, cleanup: list[str]
) -> None:
    shape = pool.Shape(image=sandbox_image)
    settings = pool.PoolSettings(size=2, idle_seconds=600)
    assert pool.fill(docker_client, redis, shape, settings) == 2
    key = keys.pool(pool.shape_key(docker_client, shape))
    # As if two workers had each read the same entry: the claim still lets only one have it.
    redis.rpush(key, *redis.lrange(key, 0, -1))
    taken: list[str] = []
    boxes: list[Any] = []
    go = threading.Barrier(6)

    def claim(n: int) -> None:
        go.wait()
        box = pool.take(docker_client, redis, shape, task_id=f"test-claim-{n}", settings=settings)
        if box is not None:
            boxes.append(box)
            taken.append(box.container_id)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert len(taken) == 2 and len(set(taken)) == 2
    finally:
        for box in boxes:
            box.remove()


def test_the_reaper_removes_idle_expired_sandboxes_and_never_a_taken_one(
    docker_client: docker.DockerClient, redis: Redis, sandbox_image: str, cleanup: list[str]
) -> None:
    shape = pool.Shape(image=sandbox_image)
    short = pool.PoolSettings(size=2, idle_seconds=1)
    pool.fill(docker_client, redis, shape, short)
    box = pool.take(docker_client, redis, shape, task_id="test-reap-taken", settings=short)
    assert box is not None
    with box:
        (idle,) = idle_ids(redis)
        reaped: list[Reaped] = []

        def reaped_some() -> bool:
            reaped.extend(reap_pool(docker_client, redis))
            return bool(reaped)

        wait_until(reaped_some, 30, "the idle sandbox reaped")
        assert [r.reason for r in reaped] == ["idle for more than 1 s"]
        assert [c.id for c in pooled(docker_client, redis)] == [box.container_id]
        assert idle_ids(redis) == set()
        assert reap_pool(docker_client, redis) == []  # its task's process is alive
        assert box.exec("echo still here").output == "still here\n"
        with pytest.raises(docker.errors.NotFound):
            docker_client.containers.get(idle)
        assert (
            docker_client.volumes.list(filters={"label": f"{pool.BOX_LABEL}={reaped[0].container}"})
            == []
        )


def test_the_reaper_removes_a_taken_sandbox_once_its_task_is_over(
    docker_client: docker.DockerClient, redis: Redis, sandbox_image: str, cleanup: list[str]
) -> None:
    shape = pool.Shape(image=sandbox_image)
    pool.fill(docker_client, redis, shape, ON)
    task_id = f"test-over-{uuid.uuid4().hex[:8]}"
    box = pool.take(docker_client, redis, shape, task_id=task_id, settings=ON)
    assert box is not None
    try:
        redis.hset(keys.task(task_id), "state", json.dumps("running"))
        redis.set(keys.lease(task_id), "attempt 1")
        assert reap_pool(docker_client, redis) == []  # an attempt holds its lease
        redis.hset(keys.task(task_id), "state", json.dumps("done"))
        reaped = reap_pool(docker_client, redis)
        assert [(r.task_id, r.reason) for r in reaped] == [(task_id, "its task is done")]
        assert pooled(docker_client, redis) == []
    finally:
        box.remove()


def test_a_stopping_worker_takes_its_idle_sandboxes_with_it(
    docker_client: docker.DockerClient, redis: Redis, sandbox_image: str, cleanup: list[str]
) -> None:
    """`codexbot worker` stopping for good: its idle sandboxes go; one a task took stays."""
    shape = pool.Shape(image=sandbox_image)
    settings = pool.PoolSettings(size=2, idle_seconds=600)
    assert pool.fill(docker_client, redis, shape, settings) == 2
    box = pool.take(docker_client, redis, shape, task_id="test-stop-taken", settings=settings)
    assert box is not None
    with box:
        assert reap_pool(docker_client, redis, stopping="another-worker") == []
        (idle,) = idle_ids(redis)
        reaped = reap_pool(docker_client, redis, stopping=worker_identity())
        assert [r.reason for r in reaped] == ["the worker that started it stopped"]
        assert [c.id for c in pooled(docker_client, redis)] == [box.container_id]
        with pytest.raises(docker.errors.NotFound):
            docker_client.containers.get(idle)


FILL_AND_EXIT = """
import sys, docker
from redis import Redis
from sandbox import pool
pool.fill(docker.from_env(), Redis.from_url(sys.argv[1]), pool.Shape(image=sys.argv[2]),
          pool.PoolSettings(size=1, idle_seconds=3600))
"""


def test_the_reaper_removes_idle_sandboxes_of_a_dead_worker(
    docker_client: docker.DockerClient,
    redis: Redis,
    redis_url: str,
    sandbox_image: str,
    cleanup: list[str],
) -> None:
    subprocess.run(
        [sys.executable, "-c", FILL_AND_EXIT, redis_url, sandbox_image],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    (left,) = pooled(docker_client, redis)
    reaped = reap_pool(docker_client, redis)
    assert [r.container for r in reaped] == [left.name] and "dead" in reaped[0].reason
    assert pooled(docker_client, redis) == []
    assert (
        pool.take(docker_client, redis, pool.Shape(image=sandbox_image), task_id="t", settings=ON)
        is None
    )


def test_without_a_pool_tasks_start_their_own_sandbox_as_before(
    docker_client: docker.DockerClient, redis: Redis, new_repo: Any
) -> None:
    repo = new_repo()
    off = pool.PoolSettings(size=0)
    for _ in range(2):
        with repo.sandbox(off) as (box, _):
            assert TASK_LABEL in docker_client.containers.get(box.container_id).labels
            assert box.exec("git rev-parse HEAD").output.strip() == repo.head
    assert pooled(docker_client, redis) == []
    assert redis.keys(keys.pool("*")) == []
