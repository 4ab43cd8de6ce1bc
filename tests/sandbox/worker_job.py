"""An RQ job that holds a sandbox open until it is killed: the reaper test's victim."""

from __future__ import annotations

import time

import docker

from sandbox.container import Sandbox


def hold_sandbox(task_id: str, image: str) -> None:
    client = docker.from_env()
    with Sandbox(client, image=image, task_id=task_id) as box:
        box.exec("echo ready > /tmp/ready")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # until SIGKILL: the worker dies mid-task
            box.exec("sleep 1", timeout=5)
