"""The state of one agent run: its task, environment, conversation and what it has spent."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from workers.agent.model import Model
from workers.agent.outcome import AgentLimits, AgentResult, Status
from workers.agent.text import AgentTask, Comment
from workers.agent.trajectory import Trajectory
from workers.agent.workspace import Environment, Workspace


@dataclass
class RunState:
    """What one run of the agent loop knows and has spent so far."""

    task: AgentTask
    env: Environment
    model: Model
    limits: AgentLimits
    trajectory: Trajectory
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    workspace: Workspace
    protocol: Literal["native", "text"] = "native"
    steering: Callable[[], list[Comment]] | None = None
    should_stop: Callable[[], str | None] | None = None
    started: float = field(default_factory=time.monotonic)
    switchable: bool = False  # the protocol may still change to text (auto, not yet decided)
    steps: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_seconds: float = 0.0
    format_errors: int = 0  # in a row
    seen_calls: Counter[str] = field(default_factory=Counter)
    instruction_files: list[str] = field(default_factory=list)
    stop_reason: str | None = None  # a stop that arrived while a command ran

    def result(self, status: Status, **values: Any) -> AgentResult:
        return AgentResult(
            status=status,
            steps=self.steps,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            seconds=round(time.monotonic() - self.started, 3),
            model_seconds=round(self.model_seconds, 3),
            instruction_files=list(self.instruction_files),
            **values,
        )

    def seconds_left(self) -> float:
        return self.limits.wall_seconds - (time.monotonic() - self.started)
