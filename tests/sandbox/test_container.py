"""The sandbox against the real engine: workspace in, commands with limits, patch out, cleanup."""

# ruff: noqa: S108 - /tmp here is the container's private tmpfs, not the host's

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import docker
import docker.errors
import pytest

from sandbox.changes import ChangeGuard, ChangePolicy
from sandbox.container import Sandbox
from sandbox.labels import (
    CREATED_LABEL,
    TASK_LABEL,
    WORKER_LABEL,
    container_name,
    remove_task_containers,
    volume_name,
)
from sandbox.output import RESTART_NOTE, SandboxError

from .conftest import git, make_repo

pytestmark = pytest.mark.docker

BINARY = bytes(range(256)) * 4 + b"\x00\xff\x00"


def container_exists(client: docker.DockerClient, name: str) -> bool:
    try:
        client.containers.get(name)
    except docker.errors.NotFound:
        return False
    return True


def volume_exists(client: docker.DockerClient, name: str) -> bool:
    try:
        client.volumes.get(name)
    except docker.errors.NotFound:
        return False
    return True


# ------------------------------------------------------------------ workspace and commands


def test_workspace_is_a_working_git_checkout_owned_by_sandbox(
    shared_box: Sandbox, shared_repo: Path
) -> None:
    status = shared_box.exec("git status --porcelain && git log --format=%s")
    assert (status.exit_code, status.output) == (0, "initial\n")

    not_ours = shared_box.exec("find /workspace \\( -not -uid 1000 -o -not -gid 1000 \\) -print")
    assert (not_ours.exit_code, not_ours.output) == (0, "")

    head = shared_box.exec("git rev-parse HEAD").output.strip()
    assert head == git(shared_repo, "rev-parse", "HEAD").strip()


def test_pytest_runs_inside(shared_box: Sandbox) -> None:
    result = shared_box.exec("python3 -m pytest -q -p no:cacheprovider", timeout=60)
    assert result.exit_code == 0, result.output
    assert "1 passed" in result.output


def test_exit_code_and_both_streams_are_reported(shared_box: Sandbox) -> None:
    result = shared_box.exec("echo out; echo err >&2; exit 7")
    assert result.exit_code == 7
    assert "out\n" in result.output and "err\n" in result.output
    assert not result.timed_out and not result.truncated
    assert result.command == "echo out; echo err >&2; exit 7"


def test_python_source_runs_in_a_fork_of_the_exec_server_like_a_command(
    shared_box: Sandbox,
) -> None:
    source = (
        "import os, sys\n"
        "print(sys.argv[1:], os.getcwd(), os.getuid())\n"
        "sys.stderr.write('err\\n')\n"
        "sys.exit(int(sys.argv[1]))\n"
    )
    where = shared_box.exec("pwd").output
    reply = shared_box.run_python(source, ["3", "two words"], timeout=10, workdir="/tmp")
    assert reply.exit_code == 3
    assert reply.text() == "['3', 'two words'] /tmp 1000\nerr\n"
    crashed = shared_box.run_python("raise ValueError('boom')", [], timeout=10)
    assert crashed.exit_code == 1 and "ValueError: boom" in crashed.text()
    started = time.monotonic()
    stuck = shared_box.run_python("import time\ntime.sleep(1000)", [], timeout=1)
    assert stuck.timed_out and stuck.exit_code == 124
    assert time.monotonic() - started < 5
    # The server itself goes on, where the last command left it.
    assert shared_box.exec("pwd").output == where


def test_workdir_is_honoured(shared_box: Sandbox) -> None:
    assert shared_box.exec("pwd", workdir="/tmp").output == "/tmp\n"
    assert shared_box.exec("pwd").output == "/workspace\n"


def test_timeout_kills_the_command_quickly(shared_box: Sandbox) -> None:
    started = time.monotonic()
    result = shared_box.exec("sleep 1000", timeout=1)
    assert time.monotonic() - started < 5
    assert result.timed_out
    assert result.exit_code == 124
    assert "timed out after 1 s" in result.output
    assert "sleep 1000" not in shared_box.exec("ps -eo args").output


def test_timeout_kills_a_command_that_ignores_term(shared_box: Sandbox) -> None:
    started = time.monotonic()
    result = shared_box.exec("trap '' TERM; sleep 1000 & wait", timeout=1)
    assert time.monotonic() - started < 5
    assert result.timed_out
    assert result.exit_code == 124
    assert "sleep 1000" not in shared_box.exec("ps -eo args").output


def test_background_jobs_end_with_their_command(shared_box: Sandbox) -> None:
    started = time.monotonic()
    result = shared_box.exec("sleep 777 & echo started")
    assert time.monotonic() - started < 1.5  # the job does not hold the output stream open
    assert result.output.startswith("started\n\n[killed 1 process(es) the command left running")
    # Named by its command line: `sleep 777`, or its shell if caught between fork and exec.
    assert len(result.killed_leftovers) == 1 and "sleep 777" in result.killed_leftovers[0]
    assert "sleep 777" not in shared_box.exec("ps -eo args").output


def test_output_flood_is_capped_to_head_and_tail(shared_box: Sandbox) -> None:
    started = time.monotonic()
    result = shared_box.exec(
        "echo FIRST-LINE; yes | head -c 50000000; echo; echo LAST-LINE", max_output=10_000
    )
    assert time.monotonic() - started < 20
    assert result.exit_code == 0
    assert result.truncated
    assert result.output.startswith("FIRST-LINE\ny\ny\n")
    assert result.output.endswith("y\n\nLAST-LINE\n")
    total = len("FIRST-LINE\n") + 50_000_000 + 1 + len("LAST-LINE\n")
    assert f"\n[... {total - 10_000} bytes cut ...]\n" in result.output
    assert len(result.output) < 10_100


def test_invalid_utf8_is_replaced_not_fatal(shared_box: Sandbox) -> None:
    result = shared_box.exec("printf 'ok \\xff\\xfe end'")
    assert result.output == "ok \ufffd\ufffd end"


def test_labels_on_container_and_volume(
    docker_client: docker.DockerClient, shared_box: Sandbox
) -> None:
    container = docker_client.containers.get(shared_box.container_id)
    labels = container.labels
    task = labels[TASK_LABEL]
    assert container.name == container_name(task)
    assert labels["codexbot.repo"] == "octo/widgets"
    assert labels[CREATED_LABEL].endswith("+00:00")
    assert ":" in labels[WORKER_LABEL]
    volume = docker_client.volumes.get(volume_name(task))
    assert volume.attrs["Labels"][TASK_LABEL] == task


# ------------------------------------------------------------------ the patch


def test_the_guards_patch_applies_on_a_host_clone(
    docker_client: docker.DockerClient, sandbox_image: str, task_id: str, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    base = git(repo, "rev-parse", "HEAD").strip()
    with Sandbox(docker_client, image=sandbox_image, task_id=task_id) as box:
        box.put_workspace(repo)
        guard = ChangeGuard(box, base, ChangePolicy())
        assert guard.result().patch == b""
        box.exec("printf 'def add(a, b):\\n    return b + a\\n' > calc.py && rm old.txt")
        box.exec("mkdir -p pkg && echo 'VALUE = 1' > pkg/new_module.py")
        box.exec(
            f"python3 -c \"open('pkg/blob.bin', 'wb').write(bytes.fromhex('{BINARY.hex()}'))\""
        )
        assert box.run_raw("cat pkg/blob.bin", timeout=10).data() == BINARY
        patch = guard.result().patch

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    subprocess.run(["git", "apply", "--index", "-"], input=patch, cwd=clone, check=True)
    assert (clone / "calc.py").read_text() == "def add(a, b):\n    return b + a\n"
    assert not (clone / "old.txt").exists()
    assert (clone / "pkg" / "new_module.py").read_text() == "VALUE = 1\n"
    assert (clone / "pkg" / "blob.bin").read_bytes() == BINARY
    assert b"GIT binary patch" in patch


def test_a_guard_on_an_unknown_commit_raises(shared_box: Sandbox) -> None:
    with pytest.raises(SandboxError, match="could not list the changes"):
        ChangeGuard(shared_box, "0" * 40, ChangePolicy())


# ------------------------------------------------------------------ lifecycle


def test_container_and_volume_are_removed_after_the_block(
    docker_client: docker.DockerClient, sandbox_image: str, task_id: str
) -> None:
    with Sandbox(docker_client, image=sandbox_image, task_id=task_id) as box:
        assert container_exists(docker_client, box.container_id)
        assert volume_exists(docker_client, volume_name(task_id))
        container_id = box.container_id
    assert not container_exists(docker_client, container_id)
    assert not volume_exists(docker_client, volume_name(task_id))


def test_container_and_volume_are_removed_when_the_body_raises(
    docker_client: docker.DockerClient, sandbox_image: str, task_id: str
) -> None:
    with (
        pytest.raises(RuntimeError, match="agent crashed"),
        Sandbox(docker_client, image=sandbox_image, task_id=task_id) as box,
    ):
        container_id = box.container_id
        raise RuntimeError("agent crashed")
    assert not container_exists(docker_client, container_id)
    assert not volume_exists(docker_client, volume_name(task_id))


def test_remove_task_containers_reaps_strays(
    docker_client: docker.DockerClient, sandbox_image: str, task_id: str
) -> None:
    stray = Sandbox(docker_client, image=sandbox_image, task_id=task_id)
    stray.start()  # as if the worker died before leaving the block
    assert remove_task_containers(docker_client, task_id) == 1
    assert not container_exists(docker_client, container_name(task_id))
    assert not volume_exists(docker_client, volume_name(task_id))
    assert remove_task_containers(docker_client, task_id) == 0


def test_missing_image_is_a_clear_error(docker_client: docker.DockerClient, task_id: str) -> None:
    with (
        pytest.raises(SandboxError, match="not found"),
        Sandbox(docker_client, image="codexbot-no-such-image:latest", task_id=task_id),
    ):
        pass
    assert not volume_exists(docker_client, volume_name(task_id))


def test_unreachable_engine_is_a_clear_error(task_id: str) -> None:
    client = docker.DockerClient(base_url="unix:///nonexistent/docker.sock", version="1.41")
    with (
        pytest.raises(SandboxError, match="unreachable"),
        Sandbox(client, image="x", task_id=task_id),
    ):
        pass


def test_sandbox_restarts_when_a_command_kills_its_main_process(
    docker_client: docker.DockerClient, sandbox_image: str, task_id: str, shared_repo: Path
) -> None:
    with Sandbox(docker_client, image=sandbox_image, task_id=task_id) as box:
        box.put_workspace(shared_repo)
        box.exec("pkill -x sleep")
        deadline = time.monotonic() + 10
        while docker_client.api.inspect_container(box.container_id)["State"]["Running"]:
            assert time.monotonic() < deadline, "the container did not stop"
            time.sleep(0.05)
        result = box.exec("cat calc.py")
        assert result.exit_code == 0
        assert result.output == RESTART_NOTE + "def add(a, b):\n    return a + b\n"
        assert box.exec("true").output == ""


def test_leftovers_of_an_earlier_attempt_are_replaced(
    docker_client: docker.DockerClient, sandbox_image: str, task_id: str, tmp_path: Path
) -> None:
    crashed = Sandbox(docker_client, image=sandbox_image, task_id=task_id)
    crashed.start()
    crashed.exec("echo stale > stale.txt")
    repo = make_repo(tmp_path / "repo")
    with Sandbox(docker_client, image=sandbox_image, task_id=task_id) as box:
        box.put_workspace(repo)
        assert box.container_id != crashed.container_id
        assert box.exec("git status --porcelain").output == ""


def test_a_volume_of_another_task_is_never_reused(
    docker_client: docker.DockerClient, sandbox_image: str, task_id: str
) -> None:
    foreign = docker_client.volumes.create(
        name=volume_name(task_id), labels={TASK_LABEL: "someone-else"}
    )
    try:
        with (
            pytest.raises(SandboxError, match="another task"),
            Sandbox(docker_client, image=sandbox_image, task_id=task_id),
        ):
            pass
        assert volume_exists(docker_client, foreign.name)
    finally:
        foreign.remove(force=True)
