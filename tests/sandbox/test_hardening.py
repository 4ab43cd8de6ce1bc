"""The container really is locked down: checked with `docker inspect` and from inside."""

# ruff: noqa: S108 - /tmp here is the container's private tmpfs, not the host's

from __future__ import annotations

import os

import docker
import pytest

from sandbox.container import Sandbox
from sandbox.hardening import SandboxLimits
from tests.conftest import FAKE_SECRETS

pytestmark = pytest.mark.docker


def test_inspect_shows_every_hardening_flag(
    docker_client: docker.DockerClient, shared_box: Sandbox
) -> None:
    info = docker_client.api.inspect_container(shared_box.container_id)
    host = info["HostConfig"]
    limits = SandboxLimits()

    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert not host["CapAdd"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Privileged"] is False
    assert host["PidsLimit"] == limits.pids
    assert host["Memory"] == 1024**3
    assert host["MemorySwap"] == host["Memory"]
    assert host["NanoCpus"] == 1_000_000_000
    assert host["CpuShares"] == 1024
    assert host["Init"] is True
    assert host["IpcMode"] == "private"
    assert set(host["Tmpfs"]) == {"/tmp", "/home/sandbox", "/run/codexbot"}
    assert "size=256m" in host["Tmpfs"]["/tmp"]
    assert info["Config"]["User"] == "1000:1000"
    assert info["NetworkSettings"]["Networks"].keys() == {"none"}
    mounts = info["Mounts"]
    assert [(m["Type"], m["Destination"]) for m in mounts] == [("volume", "/workspace")]
    assert not any("docker.sock" in str(m) for m in mounts)
    assert all(not bind.startswith("/") for bind in host["Binds"])  # named volumes, no host path
    assert not host["Devices"]
    assert host["PidMode"] == "" and host["UsernsMode"] == ""
    ulimits = {u["Name"]: (u["Soft"], u["Hard"]) for u in host["Ulimits"]}
    assert ulimits == {
        "fsize": (limits.file_bytes, limits.file_bytes),
        "nofile": (limits.open_files, limits.open_files),
        "core": (0, 0),
    }
    assert host["OomKillDisable"] in (False, None)


def test_init_is_pid_1_and_limits_hold_inside(shared_box: Sandbox) -> None:
    result = shared_box.exec(
        "tr '\\0' ' ' < /proc/1/cmdline; echo; ulimit -f; ulimit -n; "
        "cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/memory/memory.limit_in_bytes "
        "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes 2>/dev/null || "
        "cat /sys/fs/cgroup/pids.max /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory.swap.max"
    )
    lines = result.output.split("\n")
    assert lines[0].startswith("/sbin/docker-init -- sleep infinity")
    limits = SandboxLimits()
    assert lines[1] == str(limits.file_bytes // 1024)  # bash reports 1024-byte blocks
    assert lines[2] == str(limits.open_files)
    assert lines[3] == str(limits.pids)
    assert lines[4] == str(1024**3)
    assert lines[5] in (str(1024**3), "0")  # v1: memory+swap equals memory; v2: no swap


def test_setup_phase_options_differ_only_in_the_writable_root() -> None:
    from sandbox.hardening import container_options

    agent = container_options(SandboxLimits())
    setup = container_options(SandboxLimits(), setup_phase=True)
    assert agent["read_only"] is True and setup["read_only"] is False
    assert set(setup["tmpfs"]) == {"/tmp", "/run/codexbot"}
    for key in ("network_mode", "cap_drop", "security_opt", "user", "init", "pids_limit"):
        assert setup[key] == agent[key]
    assert setup["network_mode"] == "none"


def test_no_network_inside(shared_box: Sandbox) -> None:
    connect = shared_box.exec(
        "python3 -c \"import socket; socket.create_connection(('127.0.0.1', 6379), 1)\""
    )
    assert connect.exit_code != 0
    assert "ConnectionRefusedError" in connect.output or "OSError" in connect.output

    interfaces = shared_box.exec("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '")
    assert interfaces.output.split() == ["lo"]


def test_runs_unprivileged_without_capabilities(shared_box: Sandbox) -> None:
    result = shared_box.exec(
        "id -u; id -g; grep -E '^(Cap(Eff|Prm|Bnd)|NoNewPrivs):' /proc/self/status"
    )
    lines = result.output.split("\n")
    assert lines[:2] == ["1000", "1000"]
    assert "CapEff:\t0000000000000000" in result.output
    assert "CapBnd:\t0000000000000000" in result.output
    assert "NoNewPrivs:\t1" in result.output


@pytest.mark.parametrize("path", ["/etc/evil", "/usr/bin/evil", "/evil", "/var/evil"])
def test_writing_outside_workspace_and_tmp_fails(shared_box: Sandbox, path: str) -> None:
    result = shared_box.exec(f"echo x > {path}")
    assert result.exit_code != 0
    assert "Read-only file system" in result.output or "Permission denied" in result.output


def test_workspace_tmp_and_home_are_writable(shared_box: Sandbox) -> None:
    result = shared_box.exec(
        "touch /workspace/.probe /tmp/probe ~/probe && rm /workspace/.probe && echo ok"
    )
    assert (result.exit_code, result.output) == (0, "ok\n")


def test_container_env_holds_nothing_from_host(
    docker_client: docker.DockerClient,
    sandbox_image: str,
    task_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = FAKE_SECRETS["hardening_token"]
    monkeypatch.setenv("GITHUB_TOKEN", secret)
    monkeypatch.setenv("CODEX_FAKE_SECRET", secret)
    assert os.environ["CODEX_FAKE_SECRET"] == secret

    with Sandbox(
        docker_client, image=sandbox_image, task_id=task_id, env={"TASK_HINT": "hello"}
    ) as box:
        seen = box.exec("env; echo ---; tr '\\0' '\\n' < /proc/1/environ").output
        config_env = docker_client.api.inspect_container(box.container_id)["Config"]["Env"]

    assert secret not in seen
    assert "GITHUB_TOKEN" not in seen
    assert "CODEX_FAKE_SECRET" not in seen
    assert "TASK_HINT=hello" in seen
    assert "LANG=C.UTF-8" in seen
    environ_of_init = seen.split("---\n")[1]
    assert "HOME=/home/sandbox" in environ_of_init  # we really read pid 1's environment
    assert not any(secret in entry or entry.startswith("GITHUB_TOKEN=") for entry in config_env)
