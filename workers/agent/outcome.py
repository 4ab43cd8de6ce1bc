"""What a run of the agent ends with: its limits, its result, and the ways it ends early.

`run_agent` raises one of the `RunEnded` exceptions inside the loop and maps them, in one place,
to an `AgentResult` whose `status` the exception carries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from workers.agent.text import diff_counts, written_summary, written_title
from workers.agent.tools import Submission

Status = Literal["finished", "answered", "reviewed", "limits_exceeded", "stuck", "stopped", "error"]
ToolProtocol = Literal["auto", "native", "text"]


@dataclass(frozen=True)
class AgentLimits:
    """Every limit of a run, with its default; ``.github/codex.yml`` `limits:` overrides them."""

    steps: int = 30  # model calls
    wall_seconds: float = 900
    tokens: int = 400_000  # prompt + completion, summed over all calls
    output_bytes: int = 10_000  # of each tool result shown to the model
    command_timeout: float = 120
    format_errors: int = 3  # malformed tool calls in a row before giving up
    repeats: int = 3  # the same call with the same result this often: stuck
    context_tokens: int = 128_000  # the model's context window
    search_matches: int = 100
    max_tokens: int = 4096  # of one reply, sent to the server
    model_timeout_floor: float = 0.0  # a model call may always take this long (seconds)

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> AgentLimits:
        """Defaults overridden by a `limits:` mapping; ValueError names a bad key or value."""
        values: dict[str, Any] = {}
        known = {f.name: f for f in fields(cls)}
        for key, value in (config or {}).items():
            if key not in known:
                raise ValueError(f"unknown limit {key!r}; known: {', '.join(sorted(known))}")
            default = getattr(cls(), key)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"limit {key!r} must be a positive number, not {value!r}")
            values[key] = type(default)(value)
        return cls(**values)


@dataclass
class AgentResult:
    status: Status
    title: str = ""
    summary: str = ""
    not_done: str = ""
    answer: str = ""
    findings: list[dict[str, Any]] = field(default_factory=list)  # a review's, as the model gave
    steps: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reason: str = ""
    seconds: float = 0.0  # wall time of the run
    model_seconds: float = 0.0  # of which waiting for the model
    instruction_files: list[str] = field(default_factory=list)

    def write_missing_finish(self, issue_title: str, patch: str) -> None:
        """A title and summary the model did not give, written by the bot from the change."""
        if not self.summary:
            self.summary = written_summary(patch)
        if not self.title:
            changed = [path for path, _, _ in diff_counts(patch)]
            self.title = written_title(self.summary, issue_title, changed)


class Submitted(Exception):
    def __init__(self, action: Submission) -> None:
        super().__init__(type(action).__name__)
        self.action = action


class RunEnded(Exception):
    """The run ends before the model submitted; ``status`` is what the result says."""

    status: Status = "error"


class LimitsExceeded(RunEnded):
    status = "limits_exceeded"


class Stuck(RunEnded):
    status = "stuck"


class Stopped(RunEnded):
    status = "stopped"


class TooManyFormatErrors(RunEnded):
    status = "error"


class ModelFailed(RunEnded):
    """The model API could not answer, after the retries and the remedies that fit."""

    status = "error"
