"""A task on a local checkout (`codexbot run`): the pipeline of a task from GitHub
(`workers.jobs.run_work`) with the checkout itself as its source and mirror, and a branch in it
as its publication. The policy is the checkout's default branch's (its current branch, or a
detached HEAD), read as for a repository on GitHub; the change guard judges the change as there.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import SecretStr
from redis import Redis

from codexbot.redact import Redactor
from codexbot.request import TaskRequest
from codexbot.settings import Settings
from sandbox.changes import ChangePolicy, Refusal
from workers import checkout, tasks, text
from workers.agent.loop import AgentResult, ToolProtocol
from workers.agent.model import StreamMode
from workers.agent.text import Discussion
from workers.agentbox import TestOutcome
from workers.checkout import Checkout, Git, GitError
from workers.coderepos import Snapshot
from workers.jobs import run_work
from workers.publish import Pushed, commit_message_for, ensure_no_known_secret
from workers.run import trajectory_path
from workers.task import Task, TaskFailed, Work
from workers.workspace import MirrorCache, mirror_dir_name


@dataclass(frozen=True)
class LocalSettings:
    """What a local run reads of the settings (see `workers.task.AgentSettings`)."""

    codex_data_dir: Path
    codex_sandbox_image: str
    codex_model: str
    openai_base_url: str | None
    openai_api_key: SecretStr
    # The workers' defaults, from the one place they are set.
    codex_max_tokens: int = Settings.model_fields["codex_max_tokens"].default
    codex_model_timeout_floor: float = Settings.model_fields["codex_model_timeout_floor"].default
    codex_tool_protocol: ToolProtocol = Settings.model_fields["codex_tool_protocol"].default
    codex_model_stream: StreamMode = Settings.model_fields["codex_model_stream"].default
    codex_trajectory_ttl: int = Settings.model_fields["codex_trajectory_ttl"].default
    codex_max_attempts: int = Settings.model_fields["codex_max_attempts"].default
    codex_attempts_tokens: int = Settings.model_fields["codex_attempts_tokens"].default
    codex_pool_size: int = 0  # one task per process: nothing to keep warm for
    codex_pool_idle_seconds: int = Settings.model_fields["codex_pool_idle_seconds"].default
    codex_tests_ahead: bool = Settings.model_fields["codex_tests_ahead"].default


class LocalSource:
    """A local checkout as a task's source: its own repository is the mirror."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            Git(path)("rev-parse", "--verify", "HEAD")
        except GitError as error:
            raise TaskFailed(f"{path} is not a git checkout with a commit: {error}") from None
        self.full_name = f"local/{mirror_dir_name(str(path)).removesuffix('.git')}"
        try:
            self.default_branch = Git(path)("symbolic-ref", "--quiet", "--short", "HEAD")
        except GitError:
            self.default_branch = "HEAD"  # detached: the policy is HEAD's

    def workspace(self, work: Work, into: Path) -> tuple[Checkout, Path]:
        start = MirrorCache(self.path.parent).checkout(self.path, into, git_url=str(self.path))
        return start, self.path

    def discussion(self, work: Work) -> Discussion | None:
        return None

    def related(self, names: Sequence[str], asker: str) -> tuple[list[Snapshot], list[str]]:
        return [], [f"{name}: related repositories are read only on GitHub" for name in names]

    def role(self, user: str) -> str:
        return "none"  # nobody comments on a local run


class LocalPublisher:
    """The change committed on a new branch of the checkout; its work tree and HEAD untouched."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def review(
        self, task: Task, work: Work, result: AgentResult, diff: str, start: Checkout
    ) -> dict:
        raise TaskFailed("a code review is posted on a pull request; run it from GitHub")

    def push(
        self,
        task: Task,
        work: Work,
        start: Checkout,
        patch: bytes,
        result: AgentResult,
        policy: ChangePolicy,
        ahead: checkout.AppliedPatch | None = None,
    ) -> Pushed:
        with task.timings.stage("push"):
            ensure_no_known_secret(task, patch)
            changed = checkout.apply_patch(
                start, patch=patch, branch=work.branch, policy=policy, ahead=ahead
            )
            message = task.redact(commit_message_for(task, work, start, result, changed))
            git = Git(start.path)
            git("commit", "--quiet", "--no-verify", "--file", "-", input=message.encode())
            sha = git("rev-parse", "HEAD")
            ref = f"refs/heads/{work.branch}"
            Git(self.path)("fetch", "--quiet", "--no-tags", str(start.path), f"{ref}:{ref}")
        return Pushed(sha, message, changed)

    def publish(
        self,
        task: Task,
        work: Work,
        pushed: Pushed,
        result: AgentResult,
        tests: tuple[TestOutcome, TestOutcome],
        refusals: tuple[Refusal, ...] = (),
        ran_into: tuple[str, ...] = (),
        tries: str = "",
    ) -> dict:
        return {
            "pr_url": "",
            "branch": work.branch,
            "sha": pushed.sha,
            "commit_message": pushed.message,
            "changed_files": pushed.changed,
            "refused": [refusal.line() for refusal in refusals],
            "ran_into": list(ran_into),
        }


class Silent:
    """A local run shows its progress through the trajectory's listener alone."""

    def update(self, state: str, **changes: object) -> None:
        pass

    def close(self) -> None:
        pass


def local_task_id() -> str:
    return f"local-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def run_local(
    path: Path,
    title: str,
    body: str,
    *,
    settings: LocalSettings,
    redis: Redis,
    task_id: str,
    test_command: str | None = None,
    max_steps: int | None = None,
    watch: Callable[[dict], None] | None = None,
) -> dict:
    """The task pipeline on the checkout at `path`; the result is a new `codex/...` branch there.

    Raises `TaskFailed` or `TaskStopped` with the reason when no branch was made."""
    source = LocalSource(path)
    work = Work(
        title=title,
        instructions=body,
        branch=f"{text.BRANCH_PREFIX}{text.slugify(title)}-{task_id[-6:]}",
        base_branch=source.default_branch,
        start_ref=None,
        closes_issue=False,
        opens_pull=False,
        test_command=test_command,
        max_steps=max_steps,
    )
    request = TaskRequest(
        kind="fix",
        repo=source.full_name,
        number=0,
        installation_id=0,
        sender="local",
        is_pull=False,
        task_id=task_id,
        delivery_id=task_id,
    )
    with tempfile.TemporaryDirectory(prefix="codexbot-run-") as scratch:
        task = Task(
            record=tasks.TaskRecord(request),
            settings=settings,
            redis=redis,
            source=source,
            redact=Redactor([settings.openai_api_key.get_secret_value()]),
            progress=Silent(),
            workdir=Path(scratch),
            watch=watch,
            trajectory_file=trajectory_path(settings.codex_data_dir, task_id),
        )
        try:
            outcome = run_work(task, work, LocalPublisher(path))
        finally:
            task.cleanup.wait()
    trajectory = str(task.trajectory_file)
    return {**task.redact.within(outcome), "task_id": task_id, "trajectory": trajectory}
