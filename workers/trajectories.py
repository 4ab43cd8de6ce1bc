"""Where trajectories are kept so that every host reads them: Redis, one list per task, each
record compressed on its own, the whole list gone after ``CODEX_TRAJECTORY_TTL`` seconds.

The worker appends as the agent goes (one round trip per record); the receiver's task page and
`codexbot task show|ls` read. Nothing here knows what a record means: the lines are already
redacted JSON (``workers.agent.trajectory``). An object store would fit the same protocol.
"""

from __future__ import annotations

import json
import time
import zlib
from typing import Any, Protocol

from redis import Redis

from codexbot import keys

DEFAULT_TTL = 14 * 24 * 3600
LEVEL = 6  # zlib's default: JSON text shrinks 5-10 times at about 20 MB/s


class TrajectoryStore(Protocol):
    def append(self, task_id: str, line: str) -> None:
        """Add one record (a line of JSON) at the end of the task's trajectory."""

    def read(self, task_id: str) -> list[dict[str, Any]]:
        """The task's records in order; none for a task unknown or expired."""

    def recent(self, limit: int) -> list[str]:
        """The ids of the tasks whose trajectory started last, newest first."""


def parse_lines(lines: Any) -> list[dict[str, Any]]:
    """Records from lines of JSON; a line a crash cut short, or not an object, is skipped."""
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


class RedisTrajectories:
    """``TrajectoryStore`` on the Redis every host shares."""

    def __init__(self, redis: Redis, ttl: int = DEFAULT_TTL) -> None:
        self.redis = redis
        self.ttl = ttl

    def append(self, task_id: str, line: str) -> None:
        key = keys.trajectory(task_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.rpush(key, zlib.compress(line.encode(), LEVEL))
        pipe.expire(key, self.ttl)
        length = pipe.execute()[0]
        if length == 1:  # a new trajectory: list it, and forget the ones that have expired
            now = time.time()
            pipe.zadd(keys.TRAJECTORIES, {task_id: now}, nx=True)
            pipe.zremrangebyscore(keys.TRAJECTORIES, "-inf", now - self.ttl)
            pipe.execute()

    def read(self, task_id: str) -> list[dict[str, Any]]:
        chunks: list[bytes] = self.redis.lrange(keys.trajectory(task_id), 0, -1)  # type: ignore[assignment]
        return parse_lines(_inflate(chunk) for chunk in chunks)

    def recent(self, limit: int) -> list[str]:
        newest: list[bytes] = self.redis.zrevrange(keys.TRAJECTORIES, 0, limit - 1)  # type: ignore[assignment]
        return [task_id.decode() for task_id in newest]


def _inflate(chunk: bytes) -> bytes:
    try:
        return zlib.decompress(chunk)
    except zlib.error:
        return b""  # not a record of ours: skipped like a cut-short line
