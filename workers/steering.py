"""The steering queue: comments for a running task, written by the intake lane, read by the task.

steering.pass_on(redis, task_id, author="octocat", body="use the new API", comment_id=7)
notes = steering.take(redis, task_id)   # every note since the last take, oldest first
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from redis import Redis

from codexbot import keys

STEERING_TTL = 24 * 3600


@dataclass(frozen=True)
class Note:
    author: str
    body: str
    comment_id: int | None = None


def pass_on(redis: Redis, task_id: str, note: Note) -> None:
    raw = json.dumps({"author": note.author, "body": note.body, "id": note.comment_id})
    pipe = redis.pipeline()
    pipe.rpush(keys.steering(task_id), raw)
    pipe.expire(keys.steering(task_id), STEERING_TTL)
    pipe.execute()


def take(redis: Redis, task_id: str) -> list[Note]:
    pipe = redis.pipeline()
    pipe.lrange(keys.steering(task_id), 0, -1)
    pipe.delete(keys.steering(task_id))
    raw, _ = pipe.execute()
    notes = [json.loads(item) for item in raw]
    return [Note(str(n["author"]), str(n["body"]), n.get("id")) for n in notes]
