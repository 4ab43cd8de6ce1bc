"""One running task as its steps see it: what was asked, where the code comes from, what it
shows, and the three ways it ends early.

A task from GitHub (`workers.jobs.run_task`) and one on a local checkout (`codexbot run`,
`workers.local`) are the same `Task`; they differ in their `Source` (a mirror of the GitHub
repository, or the checkout itself) and in the `Publisher` that `workers.publish` defines.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pydantic import SecretStr
from redis import Redis

from codexbot.fleetmetrics import WorkerMetrics
from codexbot.redact import Redactor
from workers import tasks
from workers.agent.loop import ToolProtocol
from workers.agent.model import StreamMode
from workers.agent.text import Discussion
from workers.checkout import Checkout
from workers.coderepos import Snapshot
from workers.concurrency import Cleanup, Timings
from workers.github import Pull, ReviewComment


class TaskFailed(Exception):
    """The task cannot go on; the message is shown to the user as the reason."""


class TaskError(Exception):
    """What a failed task leaves in RQ: the reason the user was shown, secrets masked."""


class TaskStopped(Exception):
    """A user stopped the task, a newer request superseded it, or a human moved the branch."""


@dataclass(frozen=True)
class Work:
    """What the agent is asked to do and where the result goes."""

    title: str
    instructions: str
    branch: str
    base_branch: str
    start_ref: str | None  # the branch to clone, when it exists already
    closes_issue: bool
    opens_pull: bool = True  # else the work goes onto the bot's own pull request's branch
    from_fork: bool = False  # the code comes from a fork: no setup secrets, judged as a whole
    review_comments: tuple[ReviewComment, ...] = ()
    pull: Pull | None = None
    # Named by the person at the keyboard (`codexbot run --test`, `--steps`); never from GitHub.
    test_command: str | None = None
    max_steps: int | None = None


class Source(Protocol):
    """Where the code and its discussion come from."""

    @property
    def full_name(self) -> str: ...

    @property
    def default_branch(self) -> str:
        """The branch whose policy rules the task (`HEAD` for a detached local checkout)."""
        ...

    def workspace(self, work: Work, into: Path) -> tuple[Checkout, Path]:
        """The checkout the task starts from, made at `into`, and the mirror it shares."""
        ...

    def discussion(self, work: Work) -> Discussion | None: ...

    def role(self, user: str) -> str:
        """The user's permission on the repository (`admin`, `write`, `read`, `none`)."""
        ...

    def related(self, names: Sequence[str], asker: str) -> tuple[list[Snapshot], list[str]]:
        """Read-only snapshots of the related repositories ``asker`` may read, and a note for
        each one refused (`workers.coderepos`)."""
        ...


class Shows(Protocol):
    """Where the task shows how far it got (the progress comment, or nothing)."""

    def update(self, state: str, **changes: object) -> None: ...

    def close(self) -> None: ...


class AgentSettings(Protocol):
    """The settings a run of the agent reads (`codexbot.settings.Settings` has them all)."""

    @property
    def codex_data_dir(self) -> Path: ...
    @property
    def codex_sandbox_image(self) -> str: ...
    @property
    def codex_model(self) -> str: ...
    @property
    def openai_base_url(self) -> str | None: ...
    @property
    def openai_api_key(self) -> SecretStr: ...
    @property
    def codex_max_tokens(self) -> int: ...
    @property
    def codex_model_timeout_floor(self) -> float: ...
    @property
    def codex_tool_protocol(self) -> ToolProtocol: ...
    @property
    def codex_model_stream(self) -> StreamMode: ...
    @property
    def codex_trajectory_ttl(self) -> int: ...
    @property
    def codex_max_attempts(self) -> int: ...
    @property
    def codex_attempts_tokens(self) -> int: ...
    @property
    def codex_pool_size(self) -> int: ...
    @property
    def codex_pool_idle_seconds(self) -> int: ...
    @property
    def codex_tests_ahead(self) -> bool: ...


@dataclass
class Task:
    """Everything one run knows; built once at the start of the job."""

    record: tasks.TaskRecord
    settings: AgentSettings
    redis: Redis
    source: Source
    redact: Redactor
    progress: Shows
    workdir: Path
    timings: Timings = field(default_factory=Timings)
    cleanup: Cleanup = field(default_factory=Cleanup)
    watch: Callable[[dict], None] | None = None  # sees each trajectory record (`codexbot run`)
    trajectory_file: Path | None = None  # a copy of the trajectory on this disk (`codexbot run`)
    metrics: WorkerMetrics | None = None  # the fleet's figures in Redis (a task from GitHub)

    @property
    def id(self) -> str:
        return self.record.id

    def check_stop(self) -> None:
        reason = tasks.stop_reason(self.redis, self.id)
        if reason:
            raise TaskStopped(reason)

    def advance(self, state: tasks.TaskState, **changes: object) -> None:
        self.record.state = state
        self.progress.update(state, **changes)
