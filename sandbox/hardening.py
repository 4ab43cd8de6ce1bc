"""The flags every sandbox container runs with. One place, applied everywhere, asserted by a test.

The container has no network, a read-only root, no capabilities, no way to gain privileges, an
init as pid 1, no Docker socket, and bounded memory (no swap), processes, CPU, file size and open
files. Only /tmp, the home directory, the bot's own scratch space and the workspace volume are
writable; the exec server stops a command whose workspace grows past `workspace_bytes`.

The setup phase (`setup_phase=True`) differs in one way only: its root filesystem and home are
writable, because what setup installs is committed as the prepared image. Its network stays
"none" here: the operator may allow one, this machine has none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from docker.types import Ulimit

SANDBOX_UID = 1000
SANDBOX_GID = 1000
SANDBOX_USER = f"{SANDBOX_UID}:{SANDBOX_GID}"
SANDBOX_HOME = "/home/sandbox"
WORKSPACE = "/workspace"
# The bot's own working files in the sandbox (the change guard's git directories): a tmpfs of
# their own, so an agent that fills /tmp or its home does not stop the bot from judging its work.
BOT_SCRATCH = "/run/codexbot"

# Everything the agent runs sees exactly this environment plus what the caller passes: never the
# worker's own environment, which holds tokens and keys.
BASE_ENVIRONMENT: dict[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": SANDBOX_HOME,
    "USER": "sandbox",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TERM": "dumb",
    "PAGER": "cat",
    "GIT_PAGER": "cat",
    "GIT_TERMINAL_PROMPT": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "PIP_NO_INPUT": "1",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
}

# Flags that do not depend on the limits. Keyword arguments of docker's `containers.create`.
HARDENING: dict[str, Any] = {
    "network_mode": "none",
    "read_only": True,
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
    "privileged": False,
    "user": SANDBOX_USER,
    "init": True,
    "ipc_mode": "private",
    "pid_mode": "",  # its own pid namespace, never the host's
    "userns_mode": "",
    "devices": [],
    "oom_kill_disable": False,
}

DOCKER_SOCKET_PATHS = ("/var/run/docker.sock", "/run/docker.sock")


@dataclass(frozen=True)
class SandboxLimits:
    """Resource bounds of one sandbox container. Memory has no swap on top."""

    memory: str = "1g"
    pids: int = 256
    cpus: float = 1.0
    cpu_shares: int = 1024  # weight against other containers when the CPUs are busy (Docker's)
    tmp_size: str = "256m"
    home_size: str = "64m"
    bot_scratch_size: str = "512m"
    file_bytes: int = 1024**3  # RLIMIT_FSIZE: no single file larger (SIGXFSZ, "File too large")
    open_files: int = 4096
    workspace_bytes: int = 8 * 1024**3  # the exec server stops a command past this; 0: no check
    # The workspace in memory (a tmpfs volume of `workspace_bytes`, charged to `memory`): a warm
    # checkout is ~4x faster than on the engine's disk, but the tree must fit in memory.
    workspace_in_memory: bool = False


def tmpfs_mounts(limits: SandboxLimits) -> dict[str, str]:
    return {
        "/tmp": f"rw,nosuid,nodev,size={limits.tmp_size}",  # noqa: S108 - a private tmpfs
        SANDBOX_HOME: (
            f"rw,nosuid,nodev,size={limits.home_size},uid={SANDBOX_UID},gid={SANDBOX_GID},mode=0700"
        ),
        BOT_SCRATCH: (
            f"rw,nosuid,nodev,noexec,size={limits.bot_scratch_size},uid={SANDBOX_UID},"
            f"gid={SANDBOX_GID},mode=0755"
        ),
    }


def workspace_volume_options(limits: SandboxLimits) -> dict[str, Any]:
    """Keyword arguments of `volumes.create` for the task's workspace volume."""
    if not limits.workspace_in_memory:
        return {}
    return {
        "driver": "local",
        "driver_opts": {
            "type": "tmpfs",
            "device": "tmpfs",
            "o": f"size={limits.workspace_bytes},uid={SANDBOX_UID},gid={SANDBOX_GID},mode=0755,"
            "nosuid,nodev",
        },
    }


def container_options(
    limits: SandboxLimits, *, setup_phase: bool = False, home_tmpfs: bool = True
) -> dict[str, Any]:
    """HARDENING plus the resource limits, ready for `client.containers.create(**options)`.

    `home_tmpfs=False` when the home directory is a volume (a prepared image's home, copied up).
    """
    tmpfs = tmpfs_mounts(limits)
    if setup_phase or not home_tmpfs:
        del tmpfs[SANDBOX_HOME]  # what setup installs under the home directory is kept
    return {
        **HARDENING,
        "read_only": not setup_phase,
        "tmpfs": tmpfs,
        "mem_limit": limits.memory,
        "memswap_limit": limits.memory,
        "pids_limit": limits.pids,
        "nano_cpus": int(limits.cpus * 1_000_000_000),
        "cpu_shares": limits.cpu_shares,
        "ulimits": [
            Ulimit(name="fsize", soft=limits.file_bytes, hard=limits.file_bytes),
            Ulimit(name="nofile", soft=limits.open_files, hard=limits.open_files),
            Ulimit(name="core", soft=0, hard=0),
        ],
    }
