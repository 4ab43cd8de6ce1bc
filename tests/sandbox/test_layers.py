"""Layered workspaces: each task's /workspace is an overlay on the repository's tree volume."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from redis import Redis

from sandbox import layers
from sandbox.container import Sandbox
from sandbox.labels import REPO_LABEL, TASK_LABEL
from sandbox.mirror import mirror_volume_name
from tests.sandbox.conftest import git, make_repo
from workers import workspace
from workers.checkout import Checkout
from workers.repoconfig import RepoConfig
from workers.workspace import MirrorCache, task_sandbox

pytestmark = pytest.mark.docker


@pytest.fixture
def repo_name(docker_client: docker.DockerClient) -> Iterator[str]:
    name = f"test/layers-{uuid.uuid4().hex[:8]}"
    yield name
    for volume in docker_client.volumes.list(filters={"label": f"{REPO_LABEL}={name}"}):
        volume.remove(force=True)
    for volume in docker_client.volumes.list(filters={"name": mirror_volume_name(name)}):
        volume.remove(force=True)


class Tasks:
    """Runs tasks of one repository through `task_sandbox`, as the job does."""

    def __init__(
        self, client: docker.DockerClient, redis: Redis, image: str, name: str, tmp: Path
    ) -> None:
        self.client, self.redis, self.image, self.name, self.tmp = client, redis, image, name, tmp
        self.upstream = make_repo(tmp / "upstream")
        self.cache = MirrorCache(tmp / "mirrors")
        self.ids: list[str] = []

    def start(self) -> tuple[Checkout, Path]:
        url = f"file://{self.upstream}"
        mirror = self.cache.update(self.name, url, token=None)
        return self.cache.checkout(mirror, self.tmp / uuid.uuid4().hex[:8], git_url=url), mirror

    def sandbox(self, timings: dict[str, int] | None = None) -> Any:
        start, mirror = self.start()
        self.ids.append(f"test-layers-{uuid.uuid4().hex[:8]}")
        return task_sandbox(
            self.client,
            self.redis,
            base_image=self.image,
            config=RepoConfig(),
            start=start,
            host_mirror=mirror,
            repo=self.name,
            task_id=self.ids[-1],
            timings=timings,
        )

    def trees(self) -> list[str]:
        selector = [f"{REPO_LABEL}={self.name}", f"codexbot.kind={layers.TREE_KIND}"]
        return sorted(v.name for v in self.client.volumes.list(filters={"label": selector}))

    def leftovers(self) -> list[str]:
        return [
            volume.name
            for task in self.ids
            for volume in self.client.volumes.list(filters={"label": f"{TASK_LABEL}={task}"})
        ]


@pytest.fixture
def tasks(
    docker_client: docker.DockerClient,
    redis: Redis,
    sandbox_image: str,
    repo_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Tasks:
    monkeypatch.setattr(workspace, "_layer_refusals", workspace.LayerRefusals())
    return Tasks(docker_client, redis, sandbox_image, repo_name, tmp_path)


def filesystem(box: Sandbox) -> str:
    return box.exec("stat -f -c %T /workspace").output.strip()


def test_tasks_stand_on_one_tree_and_never_see_each_others_files(tasks: Tasks) -> None:
    head = git(tasks.upstream, "rev-parse", "HEAD").strip()
    with tasks.sandbox() as (box, _):
        assert filesystem(box) != "overlayfs"  # nothing to stand on yet: a plain workspace
        assert box.exec("git rev-parse HEAD; git status --porcelain").output.split() == [head]
    assert len(tasks.trees()) == 1  # made meanwhile, done when the task's sandbox is gone
    # No file of the tree is "racily clean" (its mtime in the index's second), so a task standing
    # on it never hashes them all again.
    seconds = tasks.client.containers.run(
        tasks.image,
        [
            "sh",
            "-c",
            "git ls-files --debug | sed -n 's/^  mtime: \\([0-9]*\\):.*/\\1/p' | sort -n | tail -1;"
            " stat -c %Y .git/index",
        ],
        volumes={tasks.trees()[0]: {"bind": "/tree", "mode": "ro"}},
        working_dir="/tree",
        network_mode="none",
        remove=True,
    ).split()
    assert len(seconds) == 2 and int(seconds[0]) < int(seconds[1])
    timings: dict[str, int] = {}
    with tasks.sandbox(timings) as (box, _):
        assert box.exec("stat -f -c %T /workspace; stat -c %U /workspace").output.split() == [
            "overlayfs",
            "sandbox",
        ]
        assert box.exec("git rev-parse HEAD; git status --porcelain").output.split() == [head]
        # Everything an agent might do, including to .git, stays in this task's upper layer.
        edits = box.exec(
            "echo 'def add(a, b):\n    return a - b' > calc.py && echo new > new.txt && "
            "rm old.txt && mkdir -p pkg && echo x > pkg/mod.py && "
            "echo 'exit 1' > .git/hooks/pre-commit && git config core.hooksPath /tmp && "
            "git status --porcelain"
        )
        assert edits.exit_code == 0, edits.output
        assert sorted(edits.output.split("\n")[:-1]) == [
            " D old.txt",
            " M calc.py",
            "?? new.txt",
            "?? pkg/",
        ]
    assert timings["workspace"] >= 0 and timings["container_start"] > 0
    trees = tasks.trees()

    with tasks.sandbox() as (box, _):
        assert filesystem(box) == "overlayfs"
        assert box.exec("git status --porcelain").output == ""
        assert box.exec("cat calc.py old.txt").output == (
            "def add(a, b):\n    return a + b\nto be deleted\n"
        )
        gone = box.exec("ls new.txt pkg .git/hooks/pre-commit")
        assert gone.exit_code != 0 and gone.output.count("No such file") == 3
        assert box.exec("git config core.hooksPath").exit_code == 1
    assert tasks.trees() == trees  # the same tree, unchanged by the task before
    assert tasks.leftovers() == []  # upper, work and overlay volumes went with each task


def test_a_far_commit_gets_a_new_tree_and_superseded_trees_are_pruned_when_unused(
    tasks: Tasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tasks.sandbox():
        pass
    first = tasks.trees()
    assert len(first) == 1
    monkeypatch.setattr(layers, "REBUILD_AFTER_FILES", 0)
    monkeypatch.setattr(layers, "SUPERSEDED_GRACE_SECONDS", 0)
    swapped = "def add(a, b):\n    return b + a\n"
    (tasks.upstream / "calc.py").write_text(swapped)
    git(tasks.upstream, "commit", "-qam", "swap")
    with tasks.sandbox() as (box, _):  # too far from the tree: plain, a new tree meanwhile
        assert filesystem(box) != "overlayfs"
        assert box.exec("cat calc.py").output == swapped
    second = tasks.trees()
    assert len(second) == 1 and second != first  # the build pruned the old tree (grace 0)
    with tasks.sandbox() as (other, _):
        assert filesystem(other) == "overlayfs"
        (tasks.upstream / "calc.py").write_text("def add(a, b):\n    return a + b + 0\n")
        git(tasks.upstream, "commit", "-qam", "again")
        with tasks.sandbox() as (third, _):
            assert third.exec("cat calc.py").output == "def add(a, b):\n    return a + b + 0\n"
        # A tree a running task stands on is never pruned, however long superseded.
        assert len(tasks.trees()) == 2 and set(second) < set(tasks.trees())
        assert layers.prune_trees(tasks.client, tasks.redis, tasks.name) == 0
        assert other.exec("cat calc.py").output == swapped
    assert layers.prune_trees(tasks.client, tasks.redis, tasks.name) == 1
    assert len(tasks.trees()) == 1 and tasks.trees() != second


def test_an_engine_that_refuses_overlay_volumes_gets_plain_workspaces(
    tasks: Tasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = layers.overlay_options

    def refused(lower: str, upper: str, work: str) -> dict[str, Any]:
        # What a rootless engine or another volume driver amounts to: the mount fails at start.
        return real("/nonexistent-codexbot-lower", upper, work)

    monkeypatch.setattr(layers, "overlay_options", refused)
    head = git(tasks.upstream, "rev-parse", "HEAD").strip()
    for _ in range(3):  # the first builds the tree, the second is refused, the third not tried
        with tasks.sandbox() as (box, _):
            assert filesystem(box) != "overlayfs"
            assert box.exec("git rev-parse HEAD; git status --porcelain").output.split() == [head]
    assert workspace._layer_refusals.engine is True
    assert tasks.leftovers() == []


def test_a_tree_never_registered_goes_and_only_its_own_deployment_judges_it(
    tasks: Tasks, docker_client: docker.DockerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tasks.sandbox():
        pass
    assert len(tasks.trees()) == 1
    monkeypatch.setattr(layers, "LOCK_SECONDS", 0)
    monkeypatch.setattr(layers, "SUPERSEDED_GRACE_SECONDS", 0)
    where = tasks.redis.connection_pool.connection_kwargs
    other = Redis(host=where["host"], port=where["port"], db=(where.get("db", 0) + 1) % 16)
    try:
        assert layers.prune_trees(docker_client, other, tasks.name) == 0  # not its to judge
    finally:
        other.close()
    assert layers.prune_trees(docker_client, tasks.redis, tasks.name) == 0  # complete, newest
    tasks.redis.delete(layers.registry(tasks.name))  # as if its builder died before registering
    assert layers.prune_trees(docker_client, tasks.redis, tasks.name) == 1
    assert tasks.trees() == []


def test_overlay_options_refuse_paths_that_could_smuggle_mount_options() -> None:
    assert layers.overlay_options("/a", "/b", "/c")["driver_opts"]["o"] == (
        "lowerdir=/a,upperdir=/b,workdir=/c"
    )
    for bad in ("/a,upperdir=/etc", "/a:/b", "relative", "/with space"):
        with pytest.raises(Exception, match="engine path"):
            layers.overlay_options(bad, "/b", "/c")


def test_sandbox_removes_the_volumes_it_owns(
    docker_client: docker.DockerClient, sandbox_image: str, task_id: str
) -> None:
    extra = docker_client.volumes.create(labels={TASK_LABEL: task_id})
    with Sandbox(docker_client, image=sandbox_image, task_id=task_id, owned_volumes=(extra,)):
        docker_client.volumes.get(extra.name)  # kept at start, though it carries the task label
    with pytest.raises(docker.errors.NotFound):
        docker_client.volumes.get(extra.name)


def test_an_image_without_the_upper_mount_gets_plain_workspaces(
    tasks: Tasks, docker_client: docker.DockerClient
) -> None:
    """A repository's own base image lacks the directory that gives /workspace its owner."""
    dockerfile = (
        f"FROM {tasks.image}\nUSER root\nRUN rmdir {layers.UPPER_MOUNT}\nUSER sandbox\n"
    ).encode()
    tag = f"codexbot-test-no-upper:{uuid.uuid4().hex[:8]}"
    docker_client.images.build(
        fileobj=io.BytesIO(dockerfile), tag=tag, network_mode="none", rm=True, forcerm=True
    )
    tasks.image = tag
    try:
        for _ in range(3):  # the first builds the tree, the second finds the root unwritable
            with tasks.sandbox() as (box, _):
                made = box.exec("stat -f -c %T .; echo x > top.txt && git status --porcelain")
                assert made.exit_code == 0 and made.output.split()[1:] == ["??", "top.txt"]
                assert made.output.split()[0] != "overlayfs"
        assert workspace._layer_refusals.images == {tag}
        assert tasks.leftovers() == []
    finally:
        docker_client.images.remove(tag, force=True)
