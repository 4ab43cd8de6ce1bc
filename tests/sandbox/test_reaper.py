"""A worker SIGKILLed mid-task leaves a container; the reaper removes it within 60 seconds."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import docker
import pytest
from redis import Redis
from rq import Queue, Worker
from rq.job import JobStatus

from sandbox.labels import JOB_LABEL, REDIS_LABEL, TASK_LABEL, WORKER_LABEL, volume_name
from sandbox.reaper import reap, worker_gone

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
WORKER = """
import sys
from redis import Redis
from rq import Queue, SimpleWorker
redis = Redis.from_url(sys.argv[1])
SimpleWorker([Queue(sys.argv[2], connection=redis)], connection=redis).work(burst=True)
"""


def task_containers(client: docker.DockerClient, task_id: str) -> list:
    return client.containers.list(
        all=True, filters={"label": f"{TASK_LABEL}={task_id}"}, ignore_removed=True
    )


def test_sigkilled_worker_leaves_nothing_behind_within_60_seconds(
    docker_client: docker.DockerClient, sandbox_image: str, redis: Redis, redis_url: str
) -> None:
    task_id = f"test-reap-{uuid.uuid4().hex[:8]}"
    queue = Queue(f"reap-{uuid.uuid4().hex[:6]}", connection=redis)
    job = queue.enqueue("tests.sandbox.worker_job.hold_sandbox", task_id, sandbox_image)
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, redis_url, queue.name],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 60
        while not [c for c in task_containers(docker_client, task_id) if c.status == "running"]:
            assert worker.poll() is None, "the worker died before the task started"
            assert time.monotonic() < deadline, "the task never started its sandbox"
            time.sleep(0.1)
        labels = task_containers(docker_client, task_id)[0].labels
        assert labels[JOB_LABEL] == job.id
        assert labels[REDIS_LABEL].endswith("/" + redis_url.rsplit("/", 1)[1])
        assert reap(docker_client, redis) == []  # alive and running: left alone
        assert task_containers(docker_client, task_id)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()

    killed_at = time.monotonic()
    reaped = []
    while task_containers(docker_client, task_id):
        assert time.monotonic() - killed_at < 60, "a container of the task is still there"
        reaped += reap(docker_client, redis)
        time.sleep(0.5)
    assert [r.task_id for r in reaped] == [task_id]
    assert f"its worker {labels[WORKER_LABEL]}" in reaped[0].reason
    assert not docker_client.volumes.list(filters={"name": volume_name(task_id)})


def test_finished_job_means_its_container_goes(redis: Redis) -> None:
    from sandbox.reaper import job_over

    queue = Queue("reaper-test", connection=redis)
    queue.enqueue("os.getcwd", job_id="abc").set_status(JobStatus.FINISHED)
    queue.enqueue("os.getcwd", job_id="def").set_status(JobStatus.STARTED)
    assert job_over(redis, "abc") == "its job is finished"
    assert job_over(redis, "def") is None
    assert job_over(redis, "missing") == "its job is gone"


def test_worker_gone_rules(redis: Redis) -> None:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    dead = subprocess.Popen(["true"])
    dead.wait()
    queues = [Queue("reaper-test", connection=redis)]
    for name, hostname, pid in (("w1", "here", dead.pid), ("w2", "here", os.getpid())):
        worker = Worker(queues, name=name, connection=redis)
        worker.hostname, worker.pid = hostname, pid
        worker.register_birth()
    silent = Worker(queues, name="w3", connection=redis)
    silent.hostname, silent.pid = "elsewhere", 1
    silent.register_birth()
    redis.hset(silent.key, "last_heartbeat", "2001-01-01T00:00:00Z")
    args = {"host": "", "pid": "", "now": now, "this_host": "here"}
    assert "is dead" in (worker_gone(redis, "w1", **args) or "")
    assert worker_gone(redis, "w2", **args) is None
    assert "heartbeats" in (worker_gone(redis, "w3", **args) or "")
    assert "not registered" in (worker_gone(redis, "w4", **args) or "")
    own = {**args, "host": "here", "pid": str(os.getpid())}
    assert worker_gone(redis, f"here:{os.getpid()}", **own) is None
    gone = {**args, "host": "here", "pid": str(dead.pid)}
    assert "is dead" in (worker_gone(redis, f"here:{dead.pid}", **gone) or "")


def test_a_task_container_stays_while_its_lease_is_held(
    docker_client: docker.DockerClient, sandbox_image: str, redis: Redis
) -> None:
    """Judged by the task's record and lease, not its worker's registration: a worker in a warm
    shutdown (or one a new worker replaced under the same name) still runs its work horse."""
    from sandbox.labels import redis_identity

    task_id = f"test-lease-{uuid.uuid4().hex[:8]}"
    redis.hset(f"codexbot:task:{task_id}", "state", '"running"')
    redis.set(f"codexbot:task:{task_id}:lease", 1, ex=60)
    container = docker_client.containers.run(
        sandbox_image,
        ["sleep", "60"],
        detach=True,
        labels={
            TASK_LABEL: task_id,
            JOB_LABEL: task_id,
            REDIS_LABEL: redis_identity(redis),
            WORKER_LABEL: "a-worker-that-is-not-registered",
        },
    )
    try:
        assert [r.task_id for r in reap(docker_client, redis)] == []
        redis.delete(f"codexbot:task:{task_id}:lease")  # its horse is gone: nobody renews it
        reaped = [r for r in reap(docker_client, redis) if r.task_id == task_id]
        assert [r.reason for r in reaped] == ["no attempt holds its task's lease"]
        assert not task_containers(docker_client, task_id)
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


def test_the_reaper_reports_this_deployments_running_sandboxes(
    docker_client: docker.DockerClient, sandbox_image: str, redis: Redis
) -> None:
    """Counted by label: this Redis's task containers, not another deployment's on the engine."""
    from codexbot import fleetmetrics
    from sandbox.labels import redis_identity
    from sandbox.reaper import report_sandboxes

    engine = docker_client.info()
    before = report_sandboxes(docker_client, redis, engine)
    task_id = f"test-count-{uuid.uuid4().hex[:8]}"
    started = [
        docker_client.containers.run(
            sandbox_image,
            ["sleep", "60"],
            detach=True,
            labels={TASK_LABEL: task_id, JOB_LABEL: task_id, REDIS_LABEL: where},
        )
        for where in (redis_identity(redis), redis_identity(redis), "elsewhere:6379/0")
    ]
    try:
        assert report_sandboxes(docker_client, redis, engine) == before + 2
        shown = [
            (sample.labels, sample.value)
            for family in fleetmetrics.collect(redis)
            if family.name == "codexbot_sandboxes"
            for sample in family.samples
        ]
        assert shown == [({"engine": engine["ID"], "host": engine["Name"]}, before + 2)]
    finally:
        for container in started:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
