"""A task always ends, and ends once: task workers SIGKILLed (with their work horse) or stopped
mid-task, as an OOM kill, a lost node or a `docker stop` would, through the real receiver,
workers, Redis and Docker engine."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from redis import Redis
from rq import Worker

from sim.stack import DEMO_SCRIPTS, Stack, children, wait_until
from tests.conftest import REDIS_URL
from tests.e2e.conftest import SCRIPTS
from tests.e2e.test_triggers import bot_comments, seed
from workers import tasks

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TITLE = "Survive a lost worker"
LEASE_SECONDS = int(os.environ.get("CODEX_TEST_LEASE_SECONDS", "3"))  # 30 in production


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_url) -> Iterator[Stack]:
    Redis.from_url(redis_url).flushdb()
    with Stack(
        data_dir=tmp_path_factory.mktemp("survive"),
        redis_url=REDIS_URL,
        script_dirs=(DEMO_SCRIPTS, SCRIPTS),
        extra_env={"CODEX_LEASE_SECONDS": str(LEASE_SECONDS), "CODEX_SHUTDOWN_GRACE": "2"},
    ) as running:
        running.start_task_worker("worker-b")
        yield running


def record(stack: Stack, task_id: str) -> tasks.TaskRecord:
    found = tasks.load(stack.redis, task_id)
    assert found is not None
    return found


def wait_running(stack: Stack, task_id: str, attempt: int, timeout: float = 120) -> None:
    def running() -> bool:
        found = tasks.load(stack.redis, task_id)
        return found is not None and found.attempt == attempt and found.state == "running"

    wait_until(running, timeout, f"attempt {attempt} of {task_id} to run")


def worker_running(stack: Stack, task_id: str, attempt: int) -> str:
    """The stack's name of the live worker that runs the attempt."""
    job_id = tasks.job_id(task_id, attempt)

    def find() -> str | None:
        for worker in Worker.all(connection=stack.redis):
            if worker.get_current_job_id() != job_id:
                continue
            for name, process in stack.processes.items():
                if process.pid == worker.pid and process.poll() is None:
                    return name
        return None

    return wait_until(find, 30, f"the worker of {job_id}")


def kill_worker(stack: Stack, name: str) -> None:
    """SIGKILL a task worker and its work horse, as an OOM kill or a lost node would."""
    assert stack.kill_process(name), "the worker runs no work horse"


def release(docker_client: docker.DockerClient, task_id: str) -> None:
    """Let the script's first command finish (it waits for /tmp/go) in the task's container (the
    running one: a lost attempt's may still be on its way out)."""

    def touched() -> bool:
        for container in docker_client.containers.list(
            filters={"label": f"codexbot.task={task_id}"}, ignore_removed=True
        ):
            with contextlib.suppress(docker.errors.APIError):
                if container.exec_run(["touch", "/tmp/go"]).exit_code == 0:
                    return True
        return False

    wait_until(touched, 60, f"the container of {task_id} to be released", interval=0.5)


def running_task(stack: Stack, tmp_path: Path, name: str) -> tuple[str, int, str, str]:
    """A task of the script that waits, running its first attempt: (repo, number, id, the
    stack's name of its worker)."""
    number = seed(stack, tmp_path, name, TITLE)
    repo = f"octo-org/{name}"
    _, task_id = stack.label(repo, number)
    wait_running(stack, task_id, 1)
    return repo, number, task_id, worker_running(stack, task_id, 1)


def progress_body(stack: Stack, repo: str, number: int) -> str:
    return bot_comments(stack, repo, number)[0]["body"]


def final_body(stack: Stack, repo: str, number: int) -> str:
    """The progress comment once it shows the end: the record is saved before the comment is
    edited, so a task that is done in Redis may show its last state a moment later."""

    def shown() -> str | None:
        body = progress_body(stack, repo, number)
        return body if "Done" in body else None

    return wait_until(shown, 30, "the progress comment to show the end")


def pulls_of(stack: Stack, repo: str) -> list[dict]:
    return [p for p in stack.github.pulls(repo)]


def test_a_task_whose_worker_is_killed_runs_again_and_ends_once(stack, tmp_path, docker_client):
    repo, number, task_id, name = running_task(stack, tmp_path, "survive-once")
    kill_worker(stack, name)
    stack.start_task_worker("worker-c")
    wait_running(stack, task_id, 2)
    assert "attempt 2 of 3" in progress_body(stack, repo, number)
    release(docker_client, task_id)
    wait_until(lambda: record(stack, task_id).state == "done", 120, "the task to be done")
    final_body(stack, repo, number)
    assert len(pulls_of(stack, repo)) == 1
    assert len(bot_comments(stack, repo, number)) == 1  # the progress comment, edited in place


def test_a_task_whose_worker_is_lost_three_times_fails_and_says_why(stack, tmp_path, docker_client):
    number = seed(stack, tmp_path, "survive-never", TITLE)
    repo = "octo-org/survive-never"
    _, task_id = stack.label(repo, number)
    to_retry = []
    for attempt in (1, 2, 3):
        wait_running(stack, task_id, attempt)
        name = worker_running(stack, task_id, attempt)
        kill_worker(stack, name)
        killed = time.monotonic()
        if attempt < 3:
            wait_running(stack, task_id, attempt + 1)
        else:
            wait_until(lambda: record(stack, task_id).state == "failed", 120, "the task to fail")
        to_retry.append(time.monotonic() - killed)
        # A new name: a dead worker's name stays registered for a while.
        stack.start_task_worker(f"worker-{attempt}")
    body = wait_until(
        lambda: "Failed" in (text := progress_body(stack, repo, number)) and text,
        30,
        "the progress comment to say the task failed",
    )
    assert "lost on each of its 3 attempts" in body, body
    assert not pulls_of(stack, repo)
    print(f"death to retry (s): {[round(t, 1) for t in to_retry]}")
    wait_until(
        lambda: (
            not docker_client.containers.list(
                all=True, filters={"label": f"codexbot.task={task_id}"}, ignore_removed=True
            )
        ),
        60,
        "the lost attempts' containers to go",
    )


def test_a_stopped_worker_hands_its_task_back(stack, tmp_path, docker_client):
    """SIGTERM (a `docker stop`): the worker takes no new work, and after its grace period hands
    the running task back instead of failing it; another worker finishes it."""
    repo, number, task_id, name = running_task(stack, tmp_path, "survive-stop")
    process = stack.processes.pop(name)
    os.kill(process.pid, signal.SIGTERM)
    wait_running(stack, task_id, 2)
    assert "was stopped; retrying, attempt 2 of 3" in progress_body(stack, repo, number)
    process.wait(timeout=30)
    release(docker_client, task_id)
    wait_until(lambda: record(stack, task_id).state == "done", 120, "the task to be done")
    body = final_body(stack, repo, number)
    assert "internal error" not in body
    assert len(pulls_of(stack, repo)) == 1
    stack.start_task_worker("worker-stopped")


def test_an_attempt_after_the_push_replaces_it_and_reuses_the_pull_request(
    stack, tmp_path, docker_client
):
    """The worker dies after its push, while the tests run: the next attempt replaces that commit
    (only if the branch is still there) and opens one pull request."""
    number = seed(stack, tmp_path, "survive-pushed", "Survive a loss after the push")
    repo = "octo-org/survive-pushed"
    _, task_id = stack.label(repo, number)

    def pushed_and_testing(attempt: int, before: str = "") -> str:
        found = tasks.load(stack.redis, task_id)
        ok = found and found.attempt == attempt and found.state == "testing"
        return found.pushed if ok and found.pushed != before else ""  # type: ignore[union-attr]

    first = wait_until(lambda: pushed_and_testing(1), 120, "the first attempt's push")
    kill_worker(stack, worker_running(stack, task_id, 1))
    stack.start_task_worker("worker-after-push")
    second = wait_until(lambda: pushed_and_testing(2, first), 120, "the second attempt's push")
    branch = f"codex/issue-{number}-survive-a-loss-after-the-push"
    assert stack.github.branch_sha(repo, branch) == second
    release(docker_client, task_id)
    wait_until(lambda: record(stack, task_id).state == "done", 120, "the task to be done")
    pulls = pulls_of(stack, repo)
    assert len(pulls) == 1
    assert pulls[0]["head"]["sha"] == second


def test_a_worker_taken_for_lost_that_comes_back_changes_nothing(stack, tmp_path, docker_client):
    """A frozen worker (SIGSTOP: a host cut off, a VM paused) loses its lease; the task runs again
    elsewhere and ends. When the frozen one resumes, it writes nothing: not the record, not the
    comment, no pull request."""
    repo, number, task_id, name = running_task(stack, tmp_path, "survive-back")
    frozen = stack.processes.pop(name)
    groups = [frozen.pid, *children(frozen.pid)]
    for group in groups:
        os.killpg(group, signal.SIGSTOP)
    try:
        wait_running(stack, task_id, 2)
        release(docker_client, task_id)
        wait_until(lambda: record(stack, task_id).state == "done", 120, "the task to be done")
        done = final_body(stack, repo, number)
    finally:
        for group in groups:
            os.killpg(group, signal.SIGCONT)
    horse = groups[1]
    wait_until(lambda: not Path(f"/proc/{horse}").exists() or _zombie(horse), 120, "the old horse")
    after = record(stack, task_id)
    assert (after.state, after.attempt) == ("done", 2)
    assert progress_body(stack, repo, number) == done
    assert len(pulls_of(stack, repo)) == 1
    stack.processes[name] = frozen  # still a live worker: the stack stops it with the others


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True
