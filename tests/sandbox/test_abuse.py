"""The abuse suite: hostile commands on a real container, each contained and reported clearly.

After each one the abused sandbox still answers, a neighbouring task's sandbox answers quickly,
and the host (its Redis, its files, its processes) is untouched.
"""

# ruff: noqa: S108 - /tmp here is the container's private tmpfs, not the host's

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from redis import Redis

from sandbox.container import Sandbox
from sandbox.hardening import SandboxLimits
from sandbox.labels import remove_task_containers
from tests.conftest import FAKE_SECRETS

from .conftest import make_repo

pytestmark = pytest.mark.docker

LIMITS = SandboxLimits(
    memory="256m", pids=64, tmp_size="32m", file_bytes=48 * 1024**2, workspace_bytes=96 * 1024**2
)
SECRET = FAKE_SECRETS["abuse_token"]


@pytest.fixture(scope="module")
def boxes(
    docker_client: docker.DockerClient, sandbox_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Sandbox, Sandbox]]:
    """The abused sandbox and a neighbour, as two tasks on one engine."""
    repo = make_repo(tmp_path_factory.mktemp("abuse") / "repo")
    tasks = [f"test-abuse-{uuid.uuid4().hex[:8]}", f"test-neighbour-{uuid.uuid4().hex[:8]}"]
    os.environ["CODEX_ABUSE_FAKE_SECRET"] = SECRET  # in the worker's env: must never get in
    try:
        with (
            Sandbox(docker_client, image=sandbox_image, task_id=tasks[0], limits=LIMITS) as box,
            Sandbox(docker_client, image=sandbox_image, task_id=tasks[1], limits=LIMITS) as other,
        ):
            box.put_workspace(repo)
            other.put_workspace(repo)
            yield box, other
    finally:
        del os.environ["CODEX_ABUSE_FAKE_SECRET"]
        for task in tasks:
            remove_task_containers(docker_client, task)


@pytest.fixture
def box(boxes: tuple[Sandbox, Sandbox], redis: Redis, tmp_path: Path) -> Iterator[Sandbox]:
    abused, neighbour = boxes
    marker = tmp_path / "host-marker"
    marker.write_text("host file")
    yield abused
    # Contained: the abused box still works, with no process of the abuse left ...
    after = abused.exec("echo alive; ps -eo args --no-headers | grep -v -e '^ps ' -e '^grep ' -c")
    assert after.output.startswith("alive\n"), after.output
    assert int(after.output.splitlines()[1]) <= 6, abused.exec("ps -eo pid,args").output
    abused.exec("cd /workspace && rm -rf fill* /tmp/fill*")
    # ... the other task answers at once, and the host is untouched.
    started = time.monotonic()
    assert neighbour.exec("echo ok").output == "ok\n"
    assert time.monotonic() - started < 1.0
    assert redis.ping()
    assert marker.read_text() == "host file"


def test_fork_bomb(box: Sandbox) -> None:
    started = time.monotonic()
    result = box.exec(":(){ :|:& };:", timeout=3)
    assert time.monotonic() - started < 6
    # The bomb's first shell returns at once. Its descendants either hit the pids limit and
    # die ("fork: ... Resource temporarily unavailable") or are the leftovers, all killed;
    # which comes first depends on timing. Either way the agent is told, and nothing is left.
    told = (
        "the command left running: :(){ :|:& };:" in result.output
        or "Resource temporarily unavailable" in result.output
        or result.timed_out
    )
    assert told, result.output
    after = box.exec("echo alive; ps -e --no-headers | wc -l", timeout=10)
    alive, processes = after.output.split()
    assert alive == "alive" and int(processes) < 10, after.output


def test_fork_bomb_in_the_foreground(box: Sandbox) -> None:
    result = box.exec("bomb() { bomb | bomb & wait; }; bomb", timeout=3)
    assert result.timed_out and result.exit_code == 124
    assert "timed out after 3 s: the command and its process group were killed" in result.output


def test_memory_hog(box: Sandbox) -> None:
    result = box.exec(
        "python3 -c 'b = bytearray(); [b.extend(bytes(16 << 20)) for _ in range(64)]'", timeout=30
    )
    assert result.exit_code != 0
    assert "out of memory: the kernel killed" in result.output or "MemoryError" in result.output, (
        result.output
    )


def test_disk_filler_one_big_file(box: Sandbox) -> None:
    result = box.exec("cd /workspace && dd if=/dev/zero of=fill bs=1M count=500", timeout=30)
    assert result.exit_code != 0
    assert "File size limit exceeded" in result.output or "File too large" in result.output


def test_disk_filler_many_files_is_stopped(box: Sandbox) -> None:
    result = box.exec(
        "cd /workspace && for i in $(seq 1000); do head -c 4M /dev/zero > fill$i; done; echo done",
        timeout=60,
    )
    assert "stopped: the workspace grew past 100663296 bytes" in result.output
    assert "done" not in result.output


def test_disk_filler_in_tmp_hits_the_tmpfs_size(box: Sandbox) -> None:
    result = box.exec("head -c 100M /dev/zero > /tmp/fill", timeout=30)
    assert result.exit_code != 0
    assert "No space left on device" in result.output


def test_output_flood_of_one_gigabyte(box: Sandbox) -> None:
    started = time.monotonic()
    result = box.exec("head -c 1000000000 /dev/zero | tr '\\0' x; echo; echo END", timeout=60)
    assert time.monotonic() - started < 30
    assert result.exit_code == 0 and result.truncated
    assert result.output.endswith("x\nEND\n")
    assert "bytes cut ...]" in result.output
    assert len(result.output) < 70_000


def test_sleep_ten_thousand(box: Sandbox) -> None:
    started = time.monotonic()
    result = box.exec("sleep 10000", timeout=1)
    assert time.monotonic() - started < 3
    assert result.timed_out and "timed out after 1 s" in result.output


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("getent hosts github.com || echo no-dns", "no-dns"),
        ("python3 -c \"import socket; socket.getaddrinfo('pypi.org', 443)\"", "gaierror"),
        (
            "python3 -c \"import socket; socket.create_connection(('127.0.0.1', 6379), 2)\"",
            "ConnectionRefusedError",
        ),
        (
            "python3 -c \"import socket; socket.create_connection(('10.0.0.1', 80), 2)\"",
            "Network is unreachable",
        ),
        (
            'python3 -c "import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, 1)"',
            "PermissionError",
        ),
        (
            'python3 -c "import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW)"',
            "PermissionError",
        ),
    ],
)
def test_network_attempts_fail(box: Sandbox, command: str, expected: str) -> None:
    result = box.exec(command, timeout=20)
    assert expected in result.output, result.output


def test_reading_pid1_environ_and_the_docker_socket(box: Sandbox) -> None:
    result = box.exec(
        "tr '\\0' '\\n' < /proc/1/environ; echo ---; env; echo ---; "
        "ls -l /var/run/docker.sock /run/docker.sock 2>&1; "
        "find / -xdev -name '*.sock' 2>/dev/null | head"
    )
    assert SECRET not in result.output
    assert "CODEX_ABUSE_FAKE_SECRET" not in result.output
    assert "HOME=/home/sandbox" in result.output  # pid 1's environment was really read
    assert "cannot access '/var/run/docker.sock': No such file or directory" in result.output
    assert "cannot access '/run/docker.sock': No such file or directory" in result.output


@pytest.mark.parametrize(
    "command",
    [
        "echo x > /etc/passwd",
        "echo x > /usr/local/bin/evil",
        "echo x > /evil",
        "echo 1 > /proc/sys/kernel/panic",
        "echo x > /sys/kernel/evil",
        "mount -t tmpfs none /mnt",
    ],
)
def test_writing_outside_the_workspace(box: Sandbox, command: str) -> None:
    result = box.exec(command)
    assert result.exit_code != 0
    assert any(
        reason in result.output
        for reason in ("Read-only file system", "Permission denied", "must be superuser")
    ), result.output


@pytest.mark.parametrize(
    "command",
    [
        "sleep 1001 &",
        "nohup sleep 1002 >/dev/null 2>&1 &",
        "setsid sleep 1003 &",
        "(setsid sh -c 'sleep 1004 & sleep 1005' &) ; sleep 0.2",
    ],
)
def test_process_left_running_after_the_command(box: Sandbox, command: str) -> None:
    result = box.exec(command + " echo returned")
    assert "returned" in result.output
    assert "[killed " in result.output and "the command left running" in result.output
    assert "sleep 10" not in box.exec("ps -eo args").output
