"""Redis restarted (AOF on, as deploy/ runs it) mid-flow: an acknowledged delivery is not lost and
no task runs twice. A redis-server of the test's own, on a free port, with a data directory of
its own; the real receiver and worker processes reconnect to it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from redis import Redis

from sim.stack import DEMO_SCRIPTS, Stack, free_port, wait_until
from tests.e2e.conftest import SCRIPTS
from tests.e2e.test_survive import TITLE, pulls_of, release, wait_running
from tests.e2e.test_triggers import bot_comments, seed
from workers import tasks

pytestmark = [pytest.mark.docker, pytest.mark.slow]


class RedisServer:
    """redis-server with AOF fsynced on every write, restartable on the same port and files."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
        )
        client = Redis.from_url(self.url)
        wait_until(lambda: self._answers(client), 30, "redis-server to answer")
        client.close()

    @staticmethod
    def _answers(client: Redis) -> bool:
        try:
            return bool(client.ping())
        except Exception:  # noqa: BLE001 - still loading or not listening yet
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


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
