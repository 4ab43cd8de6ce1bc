"""A task's record in Redis: what was asked, by whom, where, and how far it got.

The intake lane writes it; the task job reads it and moves its state; `codexbot task ls`,
the task page and /metrics read it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

from redis import Redis

from codexbot import keys
from codexbot.request import TaskRequest

RECORD_TTL = 30 * 24 * 3600
TaskState = Literal[
    "queued", "preparing", "running", "testing", "publishing", "done", "failed", "stopped"
]
STATES: tuple[TaskState, ...] = get_args(TaskState)
FINAL_STATES: frozenset[TaskState] = frozenset({"done", "failed", "stopped"})


@dataclass
class TaskRecord:
    """The request, and how far the task for it got."""

    request: TaskRequest
    progress_comment_id: int | None = None
    state: TaskState = "queued"
    reason: str = ""
    pr_url: str = ""
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    @property
    def id(self) -> str:
        return self.request.task_id

    @property
    def target(self) -> str:
        return keys.target(self.request.repo, self.request.number)


REQUEST_FIELDS = {f.name for f in fields(TaskRequest)}
PROGRESS_FIELDS = {f.name for f in fields(TaskRecord)} - {"request"}


def save(redis: Redis, record: TaskRecord) -> None:
    """One flat hash: the request's fields and the progress fields side by side."""
    record.updated = time.time()
    flat = {
        **record.request.fields(),
        **{name: getattr(record, name) for name in PROGRESS_FIELDS},
    }
    values: dict[str | bytes, bytes | str | int | float] = {
        name: json.dumps(value) for name, value in flat.items()
    }
    pipe = redis.pipeline()
    pipe.hset(keys.task(record.id), mapping=values)  # type: ignore[arg-type]
    pipe.expire(keys.task(record.id), RECORD_TTL)
    for state in STATES:
        if state != record.state:
            pipe.srem(keys.tasks_in_state(state), record.id)
    pipe.sadd(keys.tasks_in_state(record.state), record.id)
    pipe.execute()


def load(redis: Redis, task_id: str) -> TaskRecord | None:
    raw: dict[bytes, bytes] = redis.hgetall(keys.task(task_id))  # type: ignore[assignment]
    if not raw:
        return None
    values: dict[str, Any] = {name.decode(): json.loads(value) for name, value in raw.items()}
    if "id" in values:  # written before the request had a type of its own
        values.setdefault("task_id", values.pop("id"))
    request = TaskRequest(**{k: v for k, v in values.items() if k in REQUEST_FIELDS})
    return TaskRecord(request, **{k: v for k, v in values.items() if k in PROGRESS_FIELDS})


def newest_for_target(redis: Redis, repo: str, number: int) -> str | None:
    value = redis.get(keys.target(repo, number))
    return value.decode() if isinstance(value, bytes) else None


def claim_target(redis: Redis, record: TaskRecord) -> str | None:
    """Make ``record`` the newest task for its issue or PR; return the task it replaces."""
    previous = redis.set(record.target, record.id, get=True, ex=RECORD_TTL)
    return previous.decode() if isinstance(previous, bytes) else None


def release_target(redis: Redis, record: TaskRecord) -> None:
    """Forget the running task for the target, unless a newer one has taken it."""
    script = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end"
    redis.eval(script, 1, record.target, record.id)


def request_stop(redis: Redis, task_id: str, reason: str) -> None:
    redis.set(keys.cancel(task_id), reason, ex=RECORD_TTL)


def stop_reason(redis: Redis, task_id: str) -> str | None:
    value = redis.get(keys.cancel(task_id))
    return value.decode() if isinstance(value, bytes) else None
