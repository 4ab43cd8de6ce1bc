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
from rq import Queue
from rq.job import Job
from rq.utils import now

from codexbot import keys
from codexbot.request import TaskRequest

RECORD_TTL = 30 * 24 * 3600
TaskState = Literal[
    "queued", "preparing", "running", "testing", "publishing", "done", "failed", "stopped"
]
STATES: tuple[TaskState, ...] = get_args(TaskState)
FINAL_STATES: frozenset[TaskState] = frozenset({"done", "failed", "stopped"})
STARTED_STATES: tuple[TaskState, ...] = ("preparing", "running", "testing", "publishing")
MAX_ATTEMPTS = 3  # a task whose worker is lost runs again from the start, at most twice


@dataclass
class TaskRecord:
    """The request, and how far the task for it got."""

    request: TaskRequest
    progress_comment_id: int | None = None
    state: TaskState = "queued"
    reason: str = ""
    pr_url: str = ""
    attempt: int = 0  # the attempt that owns the task (1, 2, 3); 0 until one starts
    queue: str = ""  # the RQ queue its attempts go to
    pushed: str = ""  # the commit an attempt pushed: a later attempt may replace it
    retry_note: str = ""  # why this attempt runs (its worker was lost), for its progress comment
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


# KEYS: the record, its state's set, the other states' sets. ARGV: the attempt that writes
# ('' before one starts), the record's id, the TTL, then field, value pairs. The record is
# written only while that attempt owns it: a stale attempt (its worker was taken for dead)
# changes nothing.
_SAVE = """
local owner = redis.call('hget', KEYS[1], 'attempt')
if ARGV[1] ~= '' and owner ~= ARGV[1] then return 0 end
for i = 4, #ARGV, 2 do redis.call('hset', KEYS[1], ARGV[i], ARGV[i + 1]) end
if not owner then redis.call('hset', KEYS[1], 'attempt', '0') end
redis.call('expire', KEYS[1], ARGV[3])
for i = 3, #KEYS do redis.call('srem', KEYS[i], ARGV[2]) end
redis.call('sadd', KEYS[2], ARGV[2])
return 1
"""


class NotOwner(Exception):
    """Another attempt owns the task now: this one must change nothing."""


def save(redis: Redis, record: TaskRecord) -> None:
    """One flat hash: the request's fields and the progress fields side by side.

    The attempt number is not written here (`begin_attempt` and `take_back` move it): a
    record whose owner is a later attempt raises `NotOwner`."""
    record.updated = time.time()
    flat = {
        **record.request.fields(),
        **{name: getattr(record, name) for name in PROGRESS_FIELDS - {"attempt"}},
    }
    pairs = [part for name, value in flat.items() for part in (name, json.dumps(value))]
    others = [keys.tasks_in_state(state) for state in STATES if state != record.state]
    owner = str(record.attempt) if record.attempt else ""
    written = redis.eval(
        _SAVE,
        2 + len(others),
        keys.task(record.id),
        keys.tasks_in_state(record.state),
        *others,
        owner,
        record.id,
        RECORD_TTL,
        *pairs,
    )
    if not written:
        raise NotOwner(f"task {record.id}: attempt {record.attempt} no longer owns it")


def begin_attempt(redis: Redis, record: TaskRecord, lease_seconds: int) -> int:
    """Make the caller the task's owner: the next attempt number, and its lease. A queued task
    is "preparing" from this same step on: a worker lost right after it leaves a started task
    without a lease, which the janitor takes back (a queued one it would leave, its job gone)."""
    script = """
    local n = redis.call('hincrby', KEYS[1], 'attempt', 1)
    redis.call('set', KEYS[2], n, 'EX', ARGV[1])
    if redis.call('hget', KEYS[1], 'state') == ARGV[2] then
        redis.call('hset', KEYS[1], 'state', ARGV[3])
        redis.call('srem', KEYS[3], ARGV[4])
        redis.call('sadd', KEYS[4], ARGV[4])
    end
    return n
    """
    attempt = int(
        redis.eval(
            script,
            4,
            keys.task(record.id),
            keys.lease(record.id),
            keys.tasks_in_state("queued"),
            keys.tasks_in_state("preparing"),
            lease_seconds,
            json.dumps("queued"),
            json.dumps("preparing"),
            record.id,
        )
    )
    record.attempt = attempt
    if record.state == "queued":
        record.state = "preparing"
    return attempt


def renew_lease(redis: Redis, task_id: str, attempt: int, lease_seconds: int) -> bool:
    """Extend the lease while ``attempt`` holds it; False once it is lost."""
    script = """
    if redis.call('get', KEYS[1]) == ARGV[1] then
        return redis.call('expire', KEYS[1], ARGV[2])
    end
    return 0
    """
    return bool(redis.eval(script, 1, keys.lease(task_id), attempt, lease_seconds))


def end_lease(redis: Redis, task_id: str, attempt: int) -> None:
    script = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end"
    redis.eval(script, 1, keys.lease(task_id), attempt)


def owns(redis: Redis, task_id: str, attempt: int) -> bool:
    """Whether ``attempt`` still owns the task: its number in the record and its lease held."""
    script = """
    if redis.call('hget', KEYS[1], 'attempt') == ARGV[1]
        and redis.call('get', KEYS[2]) == ARGV[1] then return 1 end
    return 0
    """
    return bool(redis.eval(script, 2, keys.task(task_id), keys.lease(task_id), attempt))


# KEYS: the record, its lease, the queued and failed sets, the next attempt's RQ job, the RQ
# queue, rq's set of queues, the target's newest task, then the started states' sets.
# ARGV: the lost attempt, the record's id, MAX_ATTEMPTS, the retry note, the failure reason, the
# time, the queue key, the started states (JSON, comma-separated), "queued" and "failed" (JSON),
# the job id, then the job hash's field/value pairs (what `Queue.enqueue` writes).
_TAKE_BACK = """
if redis.call('exists', KEYS[2]) == 1 then return 0 end
if redis.call('hget', KEYS[1], 'attempt') ~= ARGV[1] then return 0 end
local state = redis.call('hget', KEYS[1], 'state')
local started = false
for name in string.gmatch(ARGV[8], '[^,]+') do
  if name == state then started = true end
end
if not started then return 0 end
for i = 9, #KEYS do redis.call('srem', KEYS[i], ARGV[2]) end
redis.call('hset', KEYS[1], 'updated', ARGV[6])
if tonumber(ARGV[1]) >= tonumber(ARGV[3]) then
  redis.call('hset', KEYS[1], 'state', ARGV[10], 'reason', ARGV[5])
  redis.call('sadd', KEYS[4], ARGV[2])
  if redis.call('get', KEYS[8]) == ARGV[2] then redis.call('del', KEYS[8]) end
  return 2
end
redis.call('hset', KEYS[1], 'state', ARGV[9], 'retry_note', ARGV[4])
redis.call('sadd', KEYS[3], ARGV[2])
redis.call('hset', KEYS[5], unpack(ARGV, 12))
redis.call('lpush', KEYS[6], ARGV[11])
redis.call('sadd', KEYS[7], ARGV[7])
return 1
"""

TakenBack = Literal["requeued", "failed", ""]


def take_back(
    redis: Redis,
    queue: Queue,
    record: TaskRecord,
    attempt: int,
    *,
    timeout: int,
    note: str,
    reason: str,
) -> TakenBack:
    """Take a started task whose lease is gone from attempt ``attempt``, once, in one Redis step:
    queued again as the next attempt (its RQ job written and put at the front of the queue in
    the same step, ``note`` saved for its progress comment), or failed with ``reason`` after
    `MAX_ATTEMPTS`. A janitor that dies halfway can leave no task taken back and never queued.
    "" if the lease is held or someone already took the task; ``record`` is updated."""
    job = _job(queue, record, attempt + 1, timeout)
    fields: list[Any] = []
    for name, value in job.to_dict().items():
        if value is not None:
            fields += [name, value]
    started = [keys.tasks_in_state(state) for state in STARTED_STATES]
    now = time.time()
    done = redis.eval(
        _TAKE_BACK,
        8 + len(started),
        keys.task(record.id),
        keys.lease(record.id),
        keys.tasks_in_state("queued"),
        keys.tasks_in_state("failed"),
        job.key,
        queue.key,
        Queue.redis_queues_keys,
        record.target,
        *started,
        attempt,
        record.id,
        MAX_ATTEMPTS,
        json.dumps(note),
        json.dumps(reason),
        json.dumps(now),
        queue.key,
        ",".join(json.dumps(state) for state in STARTED_STATES),
        json.dumps("queued"),
        json.dumps("failed"),
        job.id,
        *fields,
    )
    if not done:
        return ""
    record.updated = now
    if done == 2:
        record.state, record.reason = "failed", reason
        return "failed"
    record.state, record.retry_note = "queued", note
    return "requeued"


def started_without_lease(redis: Redis, queue: str) -> list[tuple[str, int]]:
    """Tasks of ``queue`` that say they run but whose lease expired: (id, attempt) of each."""
    lost = []
    for state in STARTED_STATES:
        for raw in redis.smembers(keys.tasks_in_state(state)):  # type: ignore[union-attr]
            task_id = raw.decode()  # type: ignore[union-attr]
            if redis.exists(keys.lease(task_id)):
                continue
            attempt, owner_queue = redis.hmget(keys.task(task_id), ["attempt", "queue"])
            if attempt is not None and owner_queue == json.dumps(queue).encode():
                lost.append((task_id, int(json.loads(attempt))))
    return lost


def job_id(task_id: str, attempt: int) -> str:
    """The RQ job of an attempt: the task's id for the first, then ``id-attempt-N``."""
    return task_id if attempt <= 1 else f"{task_id}-attempt-{attempt}"


def _job(queue: Queue, record: TaskRecord, attempt: int, timeout: int) -> Job:
    """The RQ job of an attempt at the task (``attempt`` is the one that will run)."""
    request = record.request
    job = queue.create_job(
        "workers.jobs.run_task",
        kwargs={"task_id": record.id},
        job_id=job_id(record.id, attempt),
        timeout=timeout,
        result_ttl=RECORD_TTL,
        failure_ttl=RECORD_TTL,
        description=f"{request.kind} {request.repo}#{request.number}",
    )
    job.origin = queue.name
    job.enqueued_at = now()
    return job


def enqueue(queue: Queue, record: TaskRecord, *, attempt: int, timeout: int) -> None:
    """Queue an attempt at the task (``attempt`` is the one that will run)."""
    queue.enqueue_job(_job(queue, record, attempt, timeout))


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
