"""A redis-server of its own for a test or a bench: on a free loopback port, with a data
directory of its own, AOF fsynced on every write (as deploy/ runs Redis), restartable on the same
port and files."""

from __future__ import annotations

import subprocess
from pathlib import Path

from redis import Redis

from sim.stack import free_port, wait_until


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
