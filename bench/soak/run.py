"""One soak run: the stack on an AOF Redis of its own, the deliveries sent as fast as the receiver
answers, a chaos loop killing task workers, Redis restarted mid-run, then the checks."""

from __future__ import annotations

import contextlib
import http.client
import itertools
import random
import re
import statistics
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
from redis import Redis
from redis.exceptions import RedisError
from rq import Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job

from bench.soak import mix
from codexbot import keys, redisconn
from codexbot.commands import MARKER
from sim.redisserver import RedisServer
from sim.stack import Stack, StackError, wait_until
from workers import tasks

BRANCH_ISSUE = re.compile(r"^codex/issue-(\d+)-")
CONTAINER_GRACE = 60  # an ended task's container may stay this long
STUCK_AFTER = 120  # a task may run this long past its timeout


@dataclass
class Options:
    deliveries: int = 10_000
    tasks: int = 0  # tasks started; 0: one per 250 deliveries (at least 4)
    replies: int = 0  # deliveries answered with a comment; 0: one per 500 (at least 2)
    workers: int = 4
    kill_every: float = 20.0
    max_kills: int = 0  # 0: no limit (kill until every task has ended)
    redis_restarts: int = 1
    connections: int = 8
    lease_seconds: int = 5
    job_timeout: int = 300
    seed: int = 1

    def task_count(self) -> int:
        return self.tasks or max(4, self.deliveries // 250)

    def reply_count(self) -> int:
        return self.replies or max(2, self.deliveries // 500)


@dataclass
class Kill:
    worker: str
    task_id: str = ""  # the task its work horse ran, if any
    attempt: int = 0
    retry_seconds: float | None = None  # death -> the task's next attempt running (or failed)


@dataclass
class Chaos:
    """Every ``kill_every`` seconds, SIGKILL a task worker and its work horse (one running a
    task, when any does) and start a new one in its place."""

    stack: Stack
    redis: Redis
    options: Options
    rng: random.Random
    names: list[str]
    kills: list[Kill] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _watchers: list[threading.Thread] = field(default_factory=list)

    def run(self) -> None:
        while not self.stop.wait(self.options.kill_every):
            if self.options.max_kills and len(self.kills) >= self.options.max_kills:
                return
            try:
                self.kill_one()
            except RedisError:  # Redis restarting: try again next round
                continue

    def done(self) -> bool:
        return bool(self.options.max_kills) and len(self.kills) >= self.options.max_kills

    def kill_one(self) -> None:
        by_pid = {self.stack.processes[name].pid: name for name in self.names}
        busy: dict[str, str] = {}
        for worker in Worker.all(connection=self.redis):
            job_id = worker.get_current_job_id()
            if job_id and worker.pid in by_pid:
                busy[by_pid[worker.pid]] = job_id
        name = self.rng.choice(sorted(busy) or self.names)
        kill = Kill(name)
        if name in busy:
            with contextlib.suppress(NoSuchJobError):
                kill.task_id = Job.fetch(busy[name], connection=self.redis).kwargs["task_id"]
            record = tasks.load(self.redis, kill.task_id) if kill.task_id else None
            kill.attempt = record.attempt if record else 0
        self.stack.kill_process(name)
        killed = time.monotonic()
        replacement = f"task-{len(self.kills) + len(self.names)}"
        self.stack.start_task_worker(replacement)
        self.names[self.names.index(name)] = replacement
        self.kills.append(kill)
        if kill.attempt:
            watcher = threading.Thread(target=self._time_retry, args=(kill, killed), daemon=True)
            watcher.start()
            self._watchers.append(watcher)

    def _time_retry(self, kill: Kill, killed: float) -> None:
        def retried() -> bool | None:
            try:
                record = tasks.load(self.redis, kill.task_id)
            except RedisError:
                return False
            if record is None:
                return None
            if record.attempt > kill.attempt:
                return record.state != "queued"
            return None if record.state in tasks.FINAL_STATES else False

        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not self.stop.is_set():
            outcome = retried()
            if outcome is None:  # ended before the kill mattered: nothing to time
                return
            if outcome:
                kill.retry_seconds = time.monotonic() - killed
                return
            time.sleep(0.1)

    def join(self) -> None:
        for watcher in self._watchers:
            watcher.join(timeout=30)


def send(stack: Stack, posts: list[mix.Post], connections: int, on_sent) -> tuple[list[int], float]:  # noqa: ANN001
    """POST every delivery over ``connections`` keep-alive connections; each answer's status (0:
    no answer) and the seconds it took."""
    statuses = [0] * len(posts)
    order = itertools.count()

    def connect() -> http.client.HTTPConnection:
        return http.client.HTTPConnection(stack.receiver_host, stack.receiver_port, timeout=30)

    def sender() -> None:
        connection = connect()
        while (index := next(order)) < len(posts):
            post = posts[index]
            headers = {
                "Content-Type": "application/json",
                "X-GitHub-Event": post.event,
                "X-GitHub-Delivery": post.delivery_id,
                "X-Hub-Signature-256": post.signature,
            }
            try:
                connection.request("POST", "/webhook", body=post.body, headers=headers)
                answer = connection.getresponse()
                answer.read()
                statuses[index] = answer.status
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = connect()
            on_sent(index)
        connection.close()

    started = time.monotonic()
    threads = [threading.Thread(target=sender, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses, time.monotonic() - started


def run(options: Options, data_dir: Path) -> dict[str, Any]:
    rng = random.Random(options.seed)
    redis_server = RedisServer(data_dir / "redis")
    redis_server.start()
    try:
        extra = {
            "CODEX_LEASE_SECONDS": str(options.lease_seconds),
            "CODEX_JOB_TIMEOUT": str(options.job_timeout),
        }
        with Stack(
            data_dir=data_dir / "stack",
            redis_url=redis_server.url,
            run_worker=False,
            extra_env=extra,
        ) as stack:
            return _soak(stack, redis_server, options, rng)
    finally:
        redis_server.stop()


def _soak(
    stack: Stack, redis_server: RedisServer, options: Options, rng: random.Random
) -> dict[str, Any]:
    began = time.monotonic()
    redis = redisconn.connect(redis_server.url)
    stack.start_fast_worker("fast")
    names = [f"task-{n}" for n in range(options.workers)]
    for name in names:
        stack.start_task_worker(name)
    want = mix.counts(options.deliveries)
    planned = mix.plan(stack, want.valid, options.task_count(), options.reply_count(), rng)
    posts = mix.stream(planned, want, stack.webhook_secret, rng)

    restarts_at = {
        round(len(posts) * (n + 1) / (options.redis_restarts + 1))
        for n in range(options.redis_restarts)
    }
    restart_now = threading.Semaphore(0)

    def on_sent(index: int) -> None:
        if index in restarts_at:
            restart_now.release()

    restarts_done = 0

    def restarter() -> None:
        nonlocal restarts_done
        for _ in restarts_at:
            restart_now.acquire()
            redis_server.restart()
            restarts_done += 1

    chaos = Chaos(stack, redis, options, rng, names)
    chaos_thread = threading.Thread(target=chaos.run, daemon=True)
    restart_thread = threading.Thread(target=restarter, daemon=True)
    chaos_thread.start()
    restart_thread.start()
    statuses, send_seconds = send(stack, posts, options.connections, on_sent)
    restart_thread.join(timeout=120)

    acknowledged = {
        post.delivery_id
        for post, status in zip(posts, statuses, strict=True)
        if post.kind in ("valid", "duplicate") and 200 <= status < 300
    }
    expected = [one for one in planned if one.delivery_id in acknowledged]
    settle_deadline = time.monotonic() + options.job_timeout + STUCK_AFTER
    with contextlib.suppress(StackError):
        wait_until(
            lambda: _settled(stack, redis, expected) and (chaos.done() or not options.max_kills),
            max(settle_deadline - time.monotonic(), 1),
            "every task to end",
            interval=0.5,
        )
    chaos.stop.set()
    chaos_thread.join(timeout=60)
    chaos.join()

    task_ids = [one.delivery_id for one in expected if one.expect == "task"]
    left = _containers_left(task_ids)
    report = {
        "deliveries": len(posts),
        "distinct_valid": want.valid,
        "tasks": len([one for one in planned if one.expect == "task"]),
        "replies": len([one for one in planned if one.expect == "reply"]),
        "send_seconds": round(send_seconds, 2),
        "deliveries_per_s": round(len(posts) / send_seconds, 1),
        "answers": dict(sorted(Counter(str(s) for s in statuses).items())),
        "http_5xx": sum(status >= 500 for status in statuses),
        "no_answer": sum(status == 0 for status in statuses),
        "unexpected_answers": _unexpected(posts, statuses),
        "not_acknowledged": want.valid - len(acknowledged),
        **_outcomes(stack, redis, planned, acknowledged),
        "tasks_by_state": _states(redis, task_ids),
        "tasks_stuck": _stuck(redis, task_ids, options.job_timeout),
        "containers_left": left,
        "kills": len(chaos.kills),
        "kills_of_running_tasks": sum(bool(kill.attempt) for kill in chaos.kills),
        "death_to_retry_s": [round(k.retry_seconds, 1) for k in chaos.kills if k.retry_seconds],
        "redis_restarts": restarts_done,
        "lease_seconds": options.lease_seconds,
        "workers": options.workers,
        "seconds": round(time.monotonic() - began, 1),
    }
    retries = [k.retry_seconds for k in chaos.kills if k.retry_seconds]
    report["death_to_retry_median_s"] = round(statistics.median(retries), 1) if retries else None
    report["failed"] = failures(report)
    redis.close()
    return report


INVARIANTS = (
    "duplicate_prs",
    "duplicate_commits",
    "duplicate_comments",
    "outcomes_missing",
    "outcomes_extra",
    "tasks_stuck",
    "containers_left",
    "http_5xx",
)


def failures(report: dict[str, Any]) -> list[str]:
    """The invariants the run broke (each must be 0)."""
    return [name for name in INVARIANTS if report.get(name)]


def _settled(stack: Stack, redis: Redis, expected: list[mix.Planned]) -> bool:
    try:
        for one in expected:
            if one.expect == "task":
                record = tasks.load(redis, one.delivery_id)
                if record is None or record.state not in tasks.FINAL_STATES:
                    return False
            elif one.expect == "reply" and not _bot_comments(stack, one.repo, one.number):
                return False
    except RedisError:
        return False
    return True


def _bot_comments(stack: Stack, repo: str, number: int) -> int:
    return sum(MARKER in c["body"] for c in stack.github.issue_comments(repo, number))


def _outcomes(
    stack: Stack, redis: Redis, planned: list[mix.Planned], acknowledged: set[str]
) -> dict[str, int]:
    """Each acknowledged delivery's outcome, and duplicates on every issue of the soak."""
    pulls: dict[tuple[str, int], list[dict]] = {}
    for repo in mix.REPOS:
        for pull in stack.github.pulls(repo):
            match = BRANCH_ISSUE.match(pull["head"]["ref"])
            if match:
                pulls.setdefault((repo, int(match.group(1))), []).append(pull)
    ok = missing = extra = duplicate_comments = 0
    counted: dict[tuple[str, int], int] = {}
    for one in planned:
        issue = (one.repo, one.number)  # number 0: a push, about no issue
        if one.number and issue not in counted:
            counted[issue] = _bot_comments(stack, *issue)
        comments = counted.get(issue, 0)
        wanted = 0 if one.expect == "none" else 1
        duplicate_comments += max(0, comments - wanted) if one.expect != "none" else 0
        if one.delivery_id not in acknowledged:
            continue
        record = tasks.load(redis, one.delivery_id)
        prs = len(pulls.get((one.repo, one.number), []))
        if one.expect == "task":
            ended = record is not None and record.state in tasks.FINAL_STATES
            has_pr = record is None or record.state != "done" or prs >= 1
            lacks = not ended or comments == 0 or not has_pr
            more = comments > 1 or prs > 1
        elif one.expect == "reply":
            lacks, more = comments == 0, comments > 1 or record is not None
        else:
            intake = redis.exists(f"rq:job:{keys.intake_job_id(one.delivery_id)}")
            lacks, more = False, bool(comments or record is not None or intake)
        missing += lacks
        extra += more
        ok += not lacks and not more
    none_issues = {(o.repo, o.number) for o in planned if o.expect == "none" and o.number}
    duplicate_comments += sum(counted[issue] for issue in none_issues)
    return {
        "outcomes_ok": ok,
        "outcomes_missing": missing,
        "outcomes_extra": extra,
        "duplicate_prs": sum(len(found) - 1 for found in pulls.values()),
        "duplicate_commits": _duplicate_commits(stack, pulls),
        "duplicate_comments": duplicate_comments,
        "pull_requests": sum(len(found) for found in pulls.values()),
    }


def _duplicate_commits(stack: Stack, pulls: dict[tuple[str, int], list[dict]]) -> int:
    """Commits on the bot's branches that hold a tree another of the branch's commits holds: the
    same change committed twice."""
    duplicates = 0
    for (repo, _), found in pulls.items():
        bare = stack.github.bare_repo_path(repo)
        for pull in found:
            trees = subprocess.run(
                ["git", "--git-dir", str(bare), "log", "--format=%T"]
                + [f"{pull['base']['ref']}..{pull['head']['sha']}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            duplicates += len(trees) - len(set(trees))
    return duplicates


def _unexpected(posts: list[mix.Post], statuses: list[int]) -> int:
    """Answers other than a 5xx or none that are not what the delivery deserves."""
    wanted = {"valid": (202, 204), "duplicate": (202, 204), "bad_signature": (401,)}
    wanted["malformed"] = (400,)
    return sum(
        0 < status < 500 and status not in wanted[post.kind]
        for post, status in zip(posts, statuses, strict=True)
    )


def _states(redis: Redis, task_ids: list[str]) -> dict[str, int]:
    records = [tasks.load(redis, task_id) for task_id in task_ids]
    return dict(Counter(r.state if r else "missing" for r in records))


def _stuck(redis: Redis, task_ids: list[str], job_timeout: int) -> int:
    """Tasks that ran (or run) longer than their timeout plus two minutes."""
    now = time.time()
    stuck = 0
    for task_id in task_ids:
        record = tasks.load(redis, task_id)
        if record is None:
            continue
        end = record.updated if record.state in tasks.FINAL_STATES else now
        stuck += end - record.created > job_timeout + STUCK_AFTER
    return stuck


def _containers_left(task_ids: list[str]) -> int:
    """Containers of ended tasks still there 60 s after the last of them ended."""
    client = docker.from_env()
    try:

        def left() -> list[str]:
            return [
                task_id
                for task_id in task_ids
                if client.containers.list(all=True, filters={"label": f"codexbot.task={task_id}"})
            ]

        with contextlib.suppress(StackError):
            wait_until(lambda: not left(), CONTAINER_GRACE, "ended tasks' containers to go", 1)
        return len(left())
    finally:
        client.close()
