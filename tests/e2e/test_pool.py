"""The warm pool on the whole bot: a repository's next task runs in the sandbox its first left."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from redis import Redis

from sandbox import pool
from sandbox.labels import (
    KIND_LABEL,
    REDIS_LABEL,
    REPO_LABEL,
    TASK_LABEL,
    WORKER_LABEL,
    redis_identity,
)
from sandbox.reaper import reap_pool
from sim.stack import DEMO_SCRIPTS, Stack, wait_until
from tests.conftest import REDIS_URL

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def taken(stack: Stack) -> dict[str, str]:
    """Task id -> the pooled container it took, from the worker's log."""
    found = {}
    for line in stack.logs("worker").splitlines():
        if line.startswith("{") and '"sandbox.pool_taken"' in line:
            event = json.loads(line)
            found[event["task_id"]] = event["container"]
    return found


def test_the_next_task_takes_the_idle_sandbox_the_first_left_and_fixes_the_bug(
    tmp_path: Path, docker_client, redis_url: str
) -> None:
    redis = Redis.from_url(redis_url)
    redis.flushdb()
    ours = [f"{KIND_LABEL}={pool.POOL_KIND}", f"{REDIS_LABEL}={redis_identity(redis)}"]
    with Stack(
        data_dir=tmp_path / "stack",
        redis_url=REDIS_URL,
        script_dirs=(DEMO_SCRIPTS,),
        extra_env={"CODEX_POOL_SIZE": "1"},
    ) as stack:
        full_name, issue = stack.seed()
        _, first = stack.label(full_name, issue["number"])
        stack.wait_for_task(first, timeout=300)
        on_tree = wait_until(
            lambda: [
                c
                for c in docker_client.containers.list(filters={"label": ours}, ignore_removed=True)
                if c.labels.get(REPO_LABEL) == full_name
            ],
            60,
            "an idle sandbox on the repository's tree",
        )[0]
        # Started in the task's context: its maker is the worker, which outlives the task.
        assert on_tree.labels[WORKER_LABEL] == f"worker-{stack.queue}"
        assert TASK_LABEL not in on_tree.labels
        assert reap_pool(docker_client, redis) == []

        again = stack.github.create_issue(full_name, issue["title"], "Once more.")
        _, second = stack.label(full_name, again["number"])
        outcome = stack.wait_for_task(second, timeout=300)
        assert taken(stack)[second] == on_tree.id
        assert "+" in outcome["patch"] and len(stack.github.pulls(full_name)) == 2
        assert on_tree.id not in {
            c.id
            for c in docker_client.containers.list(
                all=True, filters={"label": ours}, ignore_removed=True
            )
        }
    assert (
        docker_client.containers.list(all=True, filters={"label": ours}, ignore_removed=True) == []
    )
    redis.close()
