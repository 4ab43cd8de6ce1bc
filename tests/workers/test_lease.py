"""The task's owner in Redis: one attempt at a time owns it, a lost one is taken back once, and a
stale attempt writes nothing. Real Redis; the worker processes are in tests/e2e/test_survive.py."""

from __future__ import annotations

import pytest
from redis import Redis
from rq import Queue
from rq.job import JobStatus

from codexbot import keys
from codexbot.request import TaskRequest
from workers import tasks, text


def accepted(redis: Redis, task_id: str = "t-1") -> tasks.TaskRecord:
    request = TaskRequest("fix", "octo/repo", 7, 1, "octo-maintainer", False, task_id, task_id)
    record = tasks.TaskRecord(request, queue="codex")
    tasks.save(redis, record)
    return record


def take_back(redis: Redis, record: tasks.TaskRecord, attempt: int) -> str:
    queue = Queue("codex", connection=redis)
    return tasks.take_back(
        redis, queue, record, attempt, timeout=600, note="retrying", reason="lost"
    )


def test_each_attempt_owns_the_task_until_a_later_one_starts(redis: Redis) -> None:
    record = accepted(redis)
    assert tasks.begin_attempt(redis, record, 30) == 1
    assert tasks.owns(redis, record.id, 1)
    stale = tasks.load(redis, record.id)
    assert stale is not None
    stale.state = "running"
    tasks.save(redis, stale)

    redis.delete(keys.lease(record.id))  # its worker died: the lease was not renewed
    assert tasks.started_without_lease(redis, "codex") == [(record.id, 1)]
    assert tasks.started_without_lease(redis, "another-deployment") == []
    assert take_back(redis, stale, 1) == "requeued"
    assert take_back(redis, stale, 1) == "", "a lost task is taken back once"
    again = tasks.load(redis, record.id)
    assert again is not None and again.state == "queued"
    assert tasks.begin_attempt(redis, again, 30) == 2

    assert not tasks.owns(redis, record.id, 1)
    assert not tasks.renew_lease(redis, record.id, 1, 30)
    stale.state = "failed"
    with pytest.raises(tasks.NotOwner):
        tasks.save(redis, stale)
    kept = tasks.load(redis, record.id)
    assert kept is not None and kept.state == "preparing" and kept.attempt == 2
    assert redis.sismember(keys.tasks_in_state("preparing"), record.id)
    assert not redis.sismember(keys.tasks_in_state("queued"), record.id)
    assert not redis.sismember(keys.tasks_in_state("failed"), record.id)


def test_a_worker_lost_the_moment_it_began_leaves_a_task_the_janitor_takes_back(
    redis: Redis,
) -> None:
    """Its job is out of the queue once a worker took it: were the task still "queued", no one
    would ever run it (the soak once found one so)."""
    record = accepted(redis)
    tasks.begin_attempt(redis, record, 30)
    begun = tasks.load(redis, record.id)
    assert begun is not None and begun.state == "preparing" == record.state
    redis.delete(keys.lease(record.id))  # killed before it saved anything
    assert tasks.started_without_lease(redis, "codex") == [(record.id, 1)]
    assert take_back(redis, record, 1) == "requeued"

    stopped = accepted(redis, "t-2")
    stopped.state = "stopped"
    tasks.save(redis, stopped)
    tasks.begin_attempt(redis, stopped, 30)  # a stopped task stays stopped
    again = tasks.load(redis, "t-2")
    assert again is not None and again.state == "stopped"


def test_a_held_lease_keeps_the_task_from_the_janitor(redis: Redis) -> None:
    record = accepted(redis)
    tasks.begin_attempt(redis, record, 30)
    record.state = "running"
    tasks.save(redis, record)
    assert tasks.started_without_lease(redis, "codex") == []
    assert take_back(redis, record, 1) == ""
    assert tasks.renew_lease(redis, record.id, 1, 30)


def test_a_lost_task_is_queued_again_in_the_step_that_takes_it_back(redis: Redis) -> None:
    """No moment where the task is taken back but not queued (a janitor that dies there would
    leave it "queued" with no job, forever); the retry goes first in the queue."""
    queue = Queue("codex", connection=redis)
    queue.enqueue_call("workers.jobs.run_task", kwargs={"task_id": "waiting"}, job_id="waiting")
    record = accepted(redis)
    tasks.begin_attempt(redis, record, 30)
    record.state = "running"
    tasks.save(redis, record)
    redis.delete(keys.lease(record.id))

    assert take_back(redis, record, 1) == "requeued"
    assert queue.job_ids == [tasks.job_id(record.id, 2), "waiting"]
    job = queue.fetch_job(tasks.job_id(record.id, 2))
    assert job is not None and job.kwargs == {"task_id": record.id}
    assert job.get_status() == JobStatus.QUEUED and job.timeout == 600
    again = tasks.load(redis, record.id)
    assert again is not None and (again.state, again.attempt) == ("queued", 1)
    assert again.retry_note == "retrying"


def test_a_task_lost_on_its_last_attempt_fails_in_the_same_step(redis: Redis) -> None:
    record = accepted(redis)
    redis.set(record.target, record.id)
    for _ in range(tasks.MAX_ATTEMPTS):
        tasks.begin_attempt(redis, record, 30)
    record.state = "testing"
    tasks.save(redis, record)
    redis.delete(keys.lease(record.id))

    assert take_back(redis, record, tasks.MAX_ATTEMPTS) == "failed"
    failed = tasks.load(redis, record.id)
    assert failed is not None and (failed.state, failed.reason) == ("failed", "lost")
    assert redis.sismember(keys.tasks_in_state("failed"), record.id)
    assert not redis.sismember(keys.tasks_in_state("testing"), record.id)
    assert redis.get(record.target) is None
    assert Queue("codex", connection=redis).job_ids == []


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [
        (2, "The worker running this was lost; retrying, attempt 2 of 3."),
        (3, "The worker running this was lost; retrying, attempt 3 of 3."),
    ],
)
def test_lost_worker_note(attempt: int, expected: str) -> None:
    assert text.lost_worker_note(attempt, 3) == expected


def test_stopped_worker_note() -> None:
    expected = "The worker running this was stopped; retrying, attempt 2 of 3."
    assert text.lost_worker_note(2, 3, "stopped") == expected


def test_lost_worker_reason() -> None:
    assert text.lost_worker_reason(3).startswith("the worker running it was lost on each of its 3")
