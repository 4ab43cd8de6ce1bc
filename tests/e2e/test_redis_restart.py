"""Redis restarted (AOF on, as deploy/ runs it) mid-flow: an acknowledged delivery is not lost and
no task runs twice. A redis-server of the test's own (`sim.redisserver`); the real receiver and
worker processes reconnect to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from sim.redisserver import RedisServer
from sim.stack import DEMO_SCRIPTS, Stack, wait_until
from tests.e2e.conftest import SCRIPTS
from tests.e2e.test_survive import TITLE, pulls_of, release, wait_running
from tests.e2e.test_triggers import bot_comments, seed
from workers import tasks

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def test_a_delivery_and_its_task_survive_redis_restarts(
    redis_server: RedisServer, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    with Stack(
        data_dir=tmp_path / "stack",
        redis_url=redis_server.url,
        script_dirs=(DEMO_SCRIPTS, SCRIPTS),
        run_worker=False,
        extra_env={"CODEX_LEASE_SECONDS": "5"},
    ) as stack:
        number = seed(stack, tmp_path, "redis-restart", TITLE)
        repo = "octo-org/redis-restart"
        _, task_id = stack.label(repo, number)  # 202: acknowledged, with no worker running
        redis_server.restart()
        stack.start_worker()
        wait_running(stack, task_id, 1)
        redis_server.restart()  # mid-task: the horse's lease, the record, the queue
        release(docker_client, task_id)
        wait_until(
            lambda: (r := tasks.load(stack.redis, task_id)) is not None and r.state == "done",
            120,
            "the task to be done",
        )
        record = tasks.load(stack.redis, task_id)
        assert record is not None and record.attempt == 1, "the task ran more than once"
        assert len(pulls_of(stack, repo)) == 1
        assert len(bot_comments(stack, repo, number)) == 1
