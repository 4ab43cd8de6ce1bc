"""Fixtures for the sandbox tests: the real Docker engine, the real image, a git repo to copy in."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from sandbox.container import Sandbox
from sandbox.image import DEFAULT_IMAGE, ensure_image
from sandbox.labels import remove_task_containers

GIT_IDENTITY = ["-c", "user.name=Test", "-c", "user.email=test@example.com"]


def git(repo: Path, *args: str) -> str:
    completed = subprocess.run(
        ["git", *GIT_IDENTITY, *args], cwd=repo, check=True, capture_output=True, text=True
    )
    return completed.stdout


def make_repo(path: Path) -> Path:
    """A small Python project with one passing test, committed on `main`."""
    path.mkdir(parents=True)
    (path / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    (path / "test_calc.py").write_text(
        "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
    )
    (path / "old.txt").write_text("to be deleted\n")
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


@pytest.fixture(scope="session")
def sandbox_image(docker_client: docker.DockerClient) -> str:
    ensure_image(docker_client, DEFAULT_IMAGE)
    return DEFAULT_IMAGE


@pytest.fixture
def task_id(docker_client: docker.DockerClient) -> Iterator[str]:
    """A unique task id; anything a test leaves behind under it is removed afterwards."""
    value = f"test-{uuid.uuid4().hex[:12]}"
    yield value
    remove_task_containers(docker_client, value)


@pytest.fixture(scope="module")
def shared_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repo(tmp_path_factory.mktemp("shared") / "repo")


@pytest.fixture(scope="module")
def shared_box(
    docker_client: docker.DockerClient, sandbox_image: str, shared_repo: Path
) -> Iterator[Sandbox]:
    """One sandbox, with the repo copied in, for checks that change nothing."""
    task = f"test-shared-{uuid.uuid4().hex[:12]}"
    with Sandbox(
        docker_client, image=sandbox_image, task_id=task, labels={"codexbot.repo": "octo/widgets"}
    ) as box:
        box.put_workspace(shared_repo)
        yield box
