"""The worker's mirror cache and the engine-side mirror: warm workspaces without streaming trees."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from sandbox import mirror as engine_mirror
from sandbox.changes import ChangeGuard, ChangePolicy
from sandbox.container import Sandbox
from sandbox.image import DEFAULT_IMAGE, ensure_image
from sandbox.labels import remove_task_containers
from workers.workspace import (
    MirrorCache,
    bundle_since,
    lockfile_contents,
    mirror_dir_name,
    tips,
)

IDENTITY = ["-c", "user.name=T", "-c", "user.email=t@example.com"]


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *IDENTITY, *args], cwd=repo, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def make_upstream(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "app.py").write_text("print('v1')\n")
    (path / "requirements.txt").write_text("attrs==23.1\n")
    (path / "sub").mkdir()
    (path / "sub" / "poetry.lock").write_text("lock\n")
    (path / "notes.txt").write_text("not a lockfile\n")
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "v1")
    return path


def commit(repo: Path, name: str, text: str) -> str:
    (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"change {name}")
    return git(repo, "rev-parse", "HEAD")


def test_mirror_dir_names_are_safe_and_distinct() -> None:
    assert mirror_dir_name("octo/widgets").startswith("octo-widgets-")
    assert mirror_dir_name("octo/widgets") != mirror_dir_name("octo-widgets")
    assert "/" not in mirror_dir_name("../../etc")
    assert not mirror_dir_name("../../etc").startswith(".")


def test_clone_once_then_fetch_and_checkout_shares_objects(tmp_path: Path) -> None:
    upstream = make_upstream(tmp_path / "upstream")
    cache = MirrorCache(tmp_path / "mirrors")
    url = f"file://{upstream}"
    mirror = cache.update("octo/widgets", url, token=None)
    assert tips(mirror) == {git(upstream, "rev-parse", "HEAD")}

    second = commit(upstream, "app.py", "print('v2')\n")
    assert cache.update("octo/widgets", url, token=None) == mirror
    assert second in tips(mirror)

    started = time.monotonic()
    start = cache.checkout(mirror, tmp_path / "work" / "repo", git_url=url)
    assert time.monotonic() - started < 1
    assert (start.base_branch, start.base_sha) == ("main", second)
    assert (start.path / "app.py").read_text() == "print('v2')\n"
    assert (start.path / ".git" / "objects" / "info" / "alternates").read_text().strip() == str(
        mirror / "objects"
    )
    assert git(start.path, "remote", "get-url", "origin") == url
    assert git(mirror, "config", "gc.auto") == "0"


def test_bundle_holds_only_new_commits(tmp_path: Path) -> None:
    upstream = make_upstream(tmp_path / "upstream")
    cache = MirrorCache(tmp_path / "mirrors")
    mirror = cache.update("o/r", f"file://{upstream}", token=None)
    have = tips(mirror)
    assert bundle_since(mirror, have, tmp_path / "none.bundle") is False
    commit(upstream, "big.txt", "x" * 100_000)
    cache.update("o/r", f"file://{upstream}", token=None)
    assert bundle_since(mirror, have, tmp_path / "new.bundle") is True
    assert bundle_since(mirror, set(), tmp_path / "all.bundle") is True
    assert bundle_since(mirror, {"f" * 40}, tmp_path / "unknown.bundle") is True  # ignored
    # The incremental bundle needs the old commits (it is thin) and lacks the first one's blobs.
    listed = subprocess.run(
        ["git", "bundle", "list-heads", str(tmp_path / "new.bundle")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "refs/heads/main" in listed
    assert (tmp_path / "new.bundle").stat().st_size < (tmp_path / "all.bundle").stat().st_size + 1


def test_lockfiles_are_the_tracked_ones(tmp_path: Path) -> None:
    upstream = make_upstream(tmp_path / "upstream")
    (upstream / "package-lock.json").write_text("{}\n")  # untracked: not part of the key
    assert lockfile_contents(upstream) == {
        "requirements.txt": b"attrs==23.1\n",
        "sub/poetry.lock": b"lock\n",
    }


# ------------------------------------------------------------------ the engine-side mirror


@pytest.fixture(scope="module")
def image(docker_client: docker.DockerClient) -> str:
    ensure_image(docker_client, DEFAULT_IMAGE)
    return DEFAULT_IMAGE


@pytest.fixture
def repo_name(docker_client: docker.DockerClient) -> Iterator[str]:
    name = f"test/mirror-{uuid.uuid4().hex[:8]}"
    yield name
    for volume in docker_client.volumes.list(
        filters={"name": engine_mirror.mirror_volume_name(name)}
    ):
        volume.remove(force=True)


@pytest.mark.docker
def test_engine_side_mirror_sends_only_new_commits_and_the_agent_cannot_write_it(
    docker_client: docker.DockerClient, image: str, repo_name: str, tmp_path: Path
) -> None:
    upstream = make_upstream(tmp_path / "upstream")
    cache = MirrorCache(tmp_path / "mirrors")
    url = f"file://{upstream}"
    host_mirror = cache.update(repo_name, url, token=None)
    first = git(upstream, "rev-parse", "HEAD")

    def run_task(sha: str, need: str | None = None) -> engine_mirror.Refreshed:
        task = f"test-mirror-{uuid.uuid4().hex[:8]}"
        volume = engine_mirror.ensure_mirror_volume(docker_client, repo_name, task)
        try:
            with Sandbox(
                docker_client, image=image, task_id=task, volumes=engine_mirror.mirror_mount(volume)
            ) as box:
                refreshed = engine_mirror.refresh(
                    box, lambda have, path: bundle_since(host_mirror, have, path), need=need
                )
                engine_mirror.checkout(box, sha)
                assert box.exec("git rev-parse HEAD").output.strip() == sha
                assert box.exec("git status --porcelain").output == ""
                assert box.exec("cat app.py").exit_code == 0
                denied = box.exec("touch /mirror/evil; echo x >> /mirror/HEAD")
                assert denied.output.count("Permission denied") == 2
                box.exec("echo change >> app.py")
                assert b"+change" in ChangeGuard(box, sha, ChangePolicy()).result().patch
            return refreshed
        finally:
            remove_task_containers(docker_client, task)

    cold = run_task(first)
    assert cold.had_commits == 0 and cold.sent_bytes > 0

    warm = run_task(first)
    assert warm.had_commits == 1 and warm.sent_bytes == 0  # nothing new: nothing sent

    second = commit(upstream, "data.txt", "y" * 50_000)
    cache.update(repo_name, url, token=None)
    newer = run_task(second)
    assert newer.had_commits == 1 and 0 < newer.sent_bytes < cold.sent_bytes + 60_000

    # News on another branch: a task that needs only `second` sends nothing; one without a
    # need brings the branch over.
    git(upstream, "checkout", "-q", "-b", "topic")
    commit(upstream, "topic.txt", "z" * 10_000)
    git(upstream, "checkout", "-q", "main")
    cache.update(repo_name, url, token=None)
    assert run_task(second, need=second).sent_bytes == 0
    assert run_task(second).sent_bytes > 0
    assert run_task(second, need="f" * 40).sent_bytes == 0  # had it all by then: nothing new
    # The mirror volume outlives the tasks; their workspace volumes do not.
    assert docker_client.volumes.get(engine_mirror.mirror_volume_name(repo_name))


@pytest.mark.docker
def test_a_commit_only_the_checkout_has_reaches_the_sandbox(
    docker_client: docker.DockerClient, image: str, repo_name: str, tmp_path: Path, redis
) -> None:
    """A fork's PR head is fetched into the checkout alone; the workspace still starts there."""
    from workers.checkout import Checkout
    from workers.repoconfig import RepoConfig
    from workers.workspace import task_sandbox

    upstream = make_upstream(tmp_path / "upstream")
    cache = MirrorCache(tmp_path / "mirrors")
    url = f"file://{upstream}"
    mirror = cache.update(repo_name, url, token=None)
    start = cache.checkout(mirror, tmp_path / "work", git_url=url)
    head = commit(start.path, "fork.txt", "from a fork\n")
    start = Checkout(path=start.path, base_branch="main", base_sha=head)
    task = f"test-fork-{uuid.uuid4().hex[:8]}"
    try:
        with task_sandbox(
            docker_client,
            redis,
            base_image=image,
            config=RepoConfig(),
            start=start,
            host_mirror=mirror,
            repo=repo_name,
            task_id=task,
        ) as (box, _):
            assert box.exec("git rev-parse HEAD; cat fork.txt").output == f"{head}\nfrom a fork\n"
    finally:
        remove_task_containers(docker_client, task)
