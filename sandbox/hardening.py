"""The flags every sandbox container runs with. One place, applied everywhere, asserted by a test.

The container has no network, a read-only root, no capabilities, no way to gain privileges, and
bounded memory (no swap), processes and CPU. Only /tmp, the home directory and the workspace
volume are writable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SANDBOX_UID = 1000
SANDBOX_GID = 1000
SANDBOX_USER = f"{SANDBOX_UID}:{SANDBOX_GID}"
SANDBOX_HOME = "/home/sandbox"
WORKSPACE = "/workspace"

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
}


@dataclass(frozen=True)
class SandboxLimits:
    """Resource bounds of one sandbox container. Memory has no swap on top."""

    memory: str = "1g"
    pids: int = 256
    cpus: float = 1.0
    tmp_size: str = "256m"
    home_size: str = "64m"


def tmpfs_mounts(limits: SandboxLimits) -> dict[str, str]:
    return {
        "/tmp": f"rw,nosuid,nodev,size={limits.tmp_size}",  # noqa: S108 - a private tmpfs
        SANDBOX_HOME: (
            f"rw,nosuid,nodev,size={limits.home_size},uid={SANDBOX_UID},gid={SANDBOX_GID},mode=0700"
        ),
    }


def container_options(limits: SandboxLimits) -> dict[str, Any]:
    """HARDENING plus the resource limits, ready for `client.containers.create(**options)`."""
    return {
        **HARDENING,
        "tmpfs": tmpfs_mounts(limits),
        "mem_limit": limits.memory,
        "memswap_limit": limits.memory,
        "pids_limit": limits.pids,
        "nano_cpus": int(limits.cpus * 1_000_000_000),
    }
