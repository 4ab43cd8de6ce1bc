"""The whole bot on loopback: simulated GitHub and model in-process, the real receiver and worker
as subprocesses (``codexbot serve`` and ``codexbot worker``), all configured only through the
environment variables a user would set. Used by the demo, the end-to-end tests and bench/.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import requests
from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from codexbot.request import TASK_KINDS
from sandbox.labels import remove_task_containers
from sandbox.pool import remove_pooled
from sim.github import Delivery, GitHubSim, generate_app_key
from sim.model import ScriptedModel, load_scripts
from workers.trajectories import RedisTrajectories

ROOT = Path(__file__).resolve().parent.parent
DEMO_REPO = ROOT / "sim" / "demo_repo"
DEMO_SCRIPTS = ROOT / "sim" / "scripts"
APP_ID = 4242
BIN = Path(sys.executable).parent


class StackError(Exception):
    """Part of the stack did not start or a task did not finish."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05) -> Any:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise StackError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def stop_process(process: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if it has not gone after ``timeout`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def children(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (a task worker's work horse)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def read_issue_file(path: Path) -> tuple[str, str]:
    """First line the title, the rest the body."""
    title, _, body = path.read_text().partition("\n")
    if not title.strip():
        raise StackError(f"{path}: the first line (the issue title) is empty")
    return title.strip(), body.strip()


@dataclass
class Stack:
    data_dir: Path
    redis_url: str = "redis://127.0.0.1:6379/0"
    model_base_url: str | None = None
    model_name: str = "scripted-model"
    openai_api_key: str = field(default_factory=lambda: "sk-sim-" + secrets.token_hex(20))
    webhook_secret: str = field(default_factory=lambda: "whsec-" + secrets.token_hex(20))
    sandbox_image: str = "codexbot-sandbox:latest"
    run_worker: bool = True
    queue: str = field(default_factory=lambda: "codex-" + secrets.token_hex(4))
    script_dirs: tuple[Path, ...] = (DEMO_SCRIPTS,)
    model_dialect: str = "native"  # how the scripted model speaks (sim.model.DIALECTS)
    trusted_bots: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)  # more settings, e.g. setup secrets
    stand_ins_host: str = "127.0.0.1"  # where the simulator and the scripted model listen
    receiver_host: str = "127.0.0.1"  # where the receiver listens

    def __post_init__(self) -> None:
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.task_ids: list[str] = []
        self.private_key, public_key = generate_app_key()
        self.receiver_port = free_port()
        self.receiver_url = f"http://{self.receiver_host}:{self.receiver_port}"
        self.github = GitHubSim(
            app_id=APP_ID,
            app_public_key_pem=public_key,
            webhook_url=f"{self.receiver_url}/webhook",
            webhook_secret=self.webhook_secret,
            data_dir=self.data_dir / "github",
            host=self.stand_ins_host,
        )
        self.model: ScriptedModel | None = None
        if self.model_base_url is None:
            paths = sorted(path for folder in self.script_dirs for path in folder.glob("*.json"))
            scripts = [script for path in paths for script in load_scripts(path)]
            self.model = ScriptedModel(
                scripts,
                api_key=self.openai_api_key,
                dialect=self.model_dialect,
                host=self.stand_ins_host,
            )
        self.redis = Redis.from_url(self.redis_url)

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def secrets(self) -> dict[str, str]:
        """Every secret value the bot is given, for tests that search for leaks."""
        return {
            "private_key": self.private_key.decode(),
            "webhook_secret": self.webhook_secret,
            "openai_api_key": self.openai_api_key,
        }

    def env(self) -> dict[str, str]:
        key_path = self.data_dir / "app-private-key.pem"
        if not key_path.exists():
            key_path.write_bytes(self.private_key)
            key_path.chmod(0o600)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("GITHUB_", "OPENAI_", "CODEX_"))
        }
        env.update(
            GITHUB_APP_ID=str(APP_ID),
            GITHUB_PRIVATE_KEY_PATH=str(key_path),
            GITHUB_WEBHOOK_SECRET=self.webhook_secret,
            GITHUB_API_URL=self.github.api_url,
            REDIS_URL=self.redis_url,
            OPENAI_API_KEY=self.openai_api_key,
            OPENAI_BASE_URL=self.model.base_url if self.model else str(self.model_base_url),
            CODEX_MODEL=self.model_name,
            CODEX_SANDBOX_IMAGE=self.sandbox_image,
            CODEX_DATA_DIR=str(self.data_dir / "bot"),
            CODEX_QUEUE=self.queue,
            CODEX_FAST_QUEUE=f"{self.queue}-fast",
            CODEX_TRUSTED_BOTS=self.trusted_bots,
            CODEX_REDELIVER_INTERVAL="0",  # a test that wants the loop sets it in extra_env
            CODEX_POOL_SIZE="0",  # each task starts its own (tests find it by its task label)
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        self.github.start()
        if self.model:
            self.model.start()
        self.start_receiver()
        if self.run_worker:
            self.start_worker()
        self.wait_for_receiver()

    def wait_for_receiver(self) -> None:
        wait_until(self._receiver_healthy, 30, "the receiver's /healthz")

    def start_receiver(self) -> None:
        """Start ``codexbot serve`` on the stack's port (again, after ``stop_process``)."""
        port = str(self.receiver_port)
        self._spawn(
            "receiver", "serve", "--host", self.receiver_host, "--port", port, "--workers", "1"
        )

    def stop_process(self, name: str) -> None:
        """Stop one of the bot's processes (``receiver``, ``worker-fast``, ...) as a host would."""
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def kill_process(self, name: str) -> list[int]:
        """SIGKILL one of the bot's processes and its children (a task worker's work horse, in
        a process group of its own), as an OOM kill or a lost node would; the children's pids."""
        process = self.processes.pop(name)
        horses = children(process.pid)
        for pid in horses:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return horses

    def start_worker(self, name: str = "worker") -> None:
        self.start_task_worker(name)
        self._spawn(
            f"{name}-fast", "worker", "--lane", "fast", "--name", f"{name}-fast-{self.queue}"
        )

    def start_fast_worker(self, name: str) -> None:
        self._spawn(name, "worker", "--lane", "fast", "--name", f"{name}-{self.queue}")

    def start_task_worker(self, name: str) -> None:
        self._spawn(name, "worker", "--lane", "tasks", "--name", f"{name}-{self.queue}")

    def command(self, name: str, args: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
        """How process ``name`` is started: its argv and environment (a test may place it)."""
        return [str(BIN / "codexbot"), *args], self.env()

    def _spawn(self, name: str, *args: str) -> None:
        log = (self.data_dir / "logs" / f"{name}.log").open("ab")
        argv, env = self.command(name, args)
        self.processes[name] = subprocess.Popen(
            argv,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def _receiver_healthy(self) -> bool:
        receiver = self.processes["receiver"]
        if receiver.poll() is not None:
            raise StackError(
                f"the receiver exited with {receiver.returncode}:\n{self.logs('receiver')}"
            )
        try:
            return requests.get(f"{self.receiver_url}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        """Stop the bot's processes (their forked task children too), then the stand-ins."""
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()
        self._remove_task_sandboxes()
        if self.model:
            self.model.stop()
        self.github.stop()
        for name in (self.queue, f"{self.queue}-fast"):
            Queue(name, connection=self.redis).delete(delete_jobs=False)
        self.redis.close()

    def _remove_task_sandboxes(self) -> None:
        """A task killed mid-run leaves its container; the worker's reaper would, we do it now.
        So would it the idle sandboxes the stack's workers started for the warm pool."""
        client = docker.from_env()
        try:
            remove_pooled(client, started_by=lambda worker: worker.endswith(self.queue))
            for task_id in self.task_ids:
                remove_task_containers(client, task_id)
        finally:
            client.close()

    def trajectory(self, task_id: str) -> list[dict]:
        """The task's trajectory as the workers kept it in Redis."""
        return RedisTrajectories(self.redis).read(task_id)

    def logs(self, name: str | None = None) -> str:
        names = (
            [name] if name else sorted(path.stem for path in (self.data_dir / "logs").glob("*.log"))
        )
        return "".join(
            (self.data_dir / "logs" / f"{n}.log").read_text(errors="replace") for n in names
        )

    def log_lines_of(self, task_id: str, limit: int = 40) -> str:
        """The last `limit` log lines of every process that name `task_id`: what a failed
        task's report needs, since RQ keeps only the reason shown to the user."""
        lines = [line for line in self.logs().splitlines() if task_id in line]
        return "\n".join(line[:4000] for line in lines[-limit:])

    # -- driving it like a user ----------------------------------------------------------------

    def seed(
        self,
        repo_dir: Path = DEMO_REPO,
        issue_file: Path | None = None,
        full_name: str = "octo-org/textstats",
    ) -> tuple[str, dict]:
        """A repository from ``repo_dir`` and an issue from ``issue_file`` (default: the demo's)."""
        title, body = read_issue_file(issue_file or repo_dir / "issue.md")
        source = repo_dir
        if issue_file is None:  # the bundled repository carries its issue beside the code
            source = self.data_dir / "seed" / full_name.replace("/", "__")
            shutil.rmtree(source, ignore_errors=True)
            ignore = shutil.ignore_patterns("issue.md", "__pycache__", ".pytest_cache")
            shutil.copytree(repo_dir, source, ignore=ignore)
        self.github.create_repo(full_name, source)
        self.github.set_permission(full_name, "octo-maintainer", "maintain")
        issue = self.github.create_issue(full_name, title, body)
        return full_name, issue

    def label(self, full_name: str, number: int, label: str = "codex") -> tuple[Delivery, str]:
        """Label an issue as a maintainer would; return the delivery and the task it started."""
        delivery = self.github.add_label(full_name, number, label)
        if delivery.status_code != 202:
            raise StackError(
                f"the receiver answered {delivery.status_code}: {delivery.response_body}"
            )
        task_id = json.loads(delivery.response_body)["task_id"]
        self.task_ids.append(task_id)
        return delivery, task_id

    def wait_for_task(
        self, task_id: str, timeout: float = 600, watch: Callable[[], None] | None = None
    ) -> dict:
        """The task job's result; ``watch`` is called at each poll (the demo shows stages)."""

        def finished() -> Job | None:
            if watch is not None:
                watch()
            try:
                job = Job.fetch(task_id, connection=self.redis)
            except NoSuchJobError:  # the intake lane has not queued the task yet
                intake = Job.fetch(f"intake-{task_id}", connection=self.redis)
                status = intake.get_status()
                if status == JobStatus.FAILED:
                    result = intake.latest_result()
                    detail = result.exc_string if result else ""
                    raise StackError(f"intake of {task_id} failed: {detail}") from None
                if status == JobStatus.FINISHED and intake.return_value() not in TASK_KINDS:
                    answer = intake.return_value()
                    raise StackError(f"intake of {task_id} started no task: {answer}") from None
                return None
            status = job.get_status()
            if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                result = job.latest_result()
                raise StackError(
                    f"task {task_id} {status}: {result.exc_string if result else ''}\n"
                    f"its log lines:\n{self.log_lines_of(task_id)}"
                )
            return job if status == JobStatus.FINISHED else None

        job = wait_until(finished, timeout, f"task {task_id}", interval=0.1)
        return job.return_value()
