"""The agent loop: ask the model, run its tool calls in the environment, feed results back, stop.

After mini-swe-agent. Control flow is by exceptions: FormatError is fed back to the model;
Submitted, LimitsExceeded and TooManyFormatErrors end the run. Anything else (the sandbox dying, a
bug) propagates to the job, after an error record is written: the trajectory's final record is
written in ``finally``, so every run leaves one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import structlog

from workers.agent.model import Model, ModelError, ModelReply, OpenAIModel, ToolCall
from workers.agent.text import AgentTask, initial_messages, observation
from workers.agent.tools import TOOLS, FinishAction, FormatError, parse_action
from workers.agent.trajectory import Trajectory

# The agent's whole public surface, importable from here or from the package.
__all__ = [
    "AgentLimits",
    "AgentResult",
    "AgentTask",
    "Environment",
    "ExecLike",
    "FormatError",
    "LimitsExceeded",
    "Model",
    "ModelError",
    "OpenAIModel",
    "Submitted",
    "TooManyFormatErrors",
    "run_agent",
]

log = structlog.get_logger(__name__)

NUDGE = (
    "Your reply had no tool call. Use a tool: `shell` to run a command, "
    "`finish` when the fix is done and the tests pass."
)
MIN_COMMAND_TIMEOUT = 1.0


class ExecLike(Protocol):
    @property
    def exit_code(self) -> int: ...
    @property
    def output(self) -> str: ...
    @property
    def timed_out(self) -> bool: ...
    @property
    def truncated(self) -> bool: ...


class Environment(Protocol):
    def exec(self, command: str, *, timeout: float) -> ExecLike: ...


@dataclass(frozen=True)
class AgentLimits:
    steps: int = 30  # model calls
    wall_seconds: float = 900
    tokens: int = 400_000  # prompt + completion, summed over all calls
    output_bytes: int = 10_000  # of each tool result shown to the model
    command_timeout: float = 120
    format_errors: int = 3  # malformed tool calls in a row before giving up


@dataclass
class AgentResult:
    status: Literal["finished", "limits_exceeded", "error"]
    title: str = ""
    summary: str = ""
    steps: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reason: str = ""


class Submitted(Exception):
    def __init__(self, action: FinishAction) -> None:
        super().__init__(action.title)
        self.action = action


class LimitsExceeded(Exception):
    pass


class TooManyFormatErrors(Exception):
    pass


@dataclass
class _Run:
    env: Environment
    model: Model
    limits: AgentLimits
    trajectory: Trajectory
    messages: list[dict[str, Any]]
    started: float = field(default_factory=time.monotonic)
    steps: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    format_errors: int = 0  # in a row

    def result(self, status: Any, **fields: str) -> AgentResult:
        return AgentResult(
            status=status,
            steps=self.steps,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            **fields,
        )

    def seconds_left(self) -> float:
        return self.limits.wall_seconds - (time.monotonic() - self.started)


def run_agent(
    task: AgentTask, env: Environment, model: Model, limits: AgentLimits, trajectory: Trajectory
) -> AgentResult:
    run = _Run(env, model, limits, trajectory, messages=initial_messages(task))
    result = run.result("error", reason="the agent loop crashed")
    try:
        while True:
            check_limits(run)
            act(run, query(run))
    except Submitted as done:
        result = run.result("finished", title=done.action.title, summary=done.action.summary)
    except LimitsExceeded as error:
        result = run.result("limits_exceeded", reason=str(error))
    except (ModelError, TooManyFormatErrors) as error:
        result = run.result("error", reason=str(error))
        trajectory.record("error", run.steps, error=type(error).__name__, message=str(error))
    except BaseException as error:
        trajectory.record("error", run.steps, error=type(error).__name__, message=str(error))
        raise
    finally:
        trajectory.record("result", run.steps, **asdict(result))
        log.info(
            "agent.done",
            status=result.status,
            steps=run.steps,
            reason=trajectory.redact(result.reason),
        )
    return result


def check_limits(run: _Run) -> None:
    limits = run.limits
    if run.steps >= limits.steps:
        raise LimitsExceeded(f"step limit reached ({limits.steps} model calls)")
    if run.prompt_tokens + run.completion_tokens >= limits.tokens:
        raise LimitsExceeded(f"token limit reached ({limits.tokens} tokens)")
    if run.seconds_left() <= 0:
        raise LimitsExceeded(f"time limit reached ({limits.wall_seconds:g} seconds)")


def query(run: _Run) -> ModelReply:
    run.steps += 1
    run.trajectory.record("request", run.steps, messages=run.messages, tools=TOOLS)
    started = time.monotonic()
    reply = run.model.complete(run.messages, TOOLS)
    run.prompt_tokens += reply.usage.prompt_tokens
    run.completion_tokens += reply.usage.completion_tokens
    run.trajectory.record(
        "response",
        run.steps,
        message=reply.message,
        prompt_tokens=reply.usage.prompt_tokens,
        completion_tokens=reply.usage.completion_tokens,
        duration=round(time.monotonic() - started, 3),
    )
    return reply


def act(run: _Run, reply: ModelReply) -> None:
    """Runs every tool call in the reply and appends each result; a malformed call gets an error."""
    run.messages.append(reply.message)
    if not reply.tool_calls:
        run.messages.append({"role": "user", "content": NUDGE})
        note_format_error(run, "reply had no tool call")
        return
    for call in reply.tool_calls:
        try:
            content = execute(run, call)
            run.format_errors = 0
        except FormatError as error:
            content = f"Error: {error}"
            run.trajectory.record(
                "tool",
                run.steps,
                call_id=call.id,
                name=call.name,
                arguments=call.arguments,
                error=str(error),
            )
            note_format_error(run, str(error))
        run.messages.append({"role": "tool", "tool_call_id": call.id, "content": content})


def note_format_error(run: _Run, problem: str) -> None:
    run.format_errors += 1
    log.info("agent.format_error", step=run.steps, problem=run.trajectory.redact(problem))
    if run.format_errors >= run.limits.format_errors:
        raise TooManyFormatErrors(
            f"{run.format_errors} malformed replies in a row; last: {problem}"
        )


def execute(run: _Run, call: ToolCall) -> str:
    action = parse_action(call.name, call.arguments)
    if isinstance(action, FinishAction):
        run.trajectory.record("tool", run.steps, call_id=call.id, name=call.name, **asdict(action))
        raise Submitted(action)
    timeout = min(action.timeout or run.limits.command_timeout, run.limits.command_timeout)
    timeout = max(MIN_COMMAND_TIMEOUT, min(timeout, run.seconds_left()))
    started = time.monotonic()
    done = run.env.exec(action.command, timeout=timeout)
    duration = round(time.monotonic() - started, 3)
    shown = observation(
        done.exit_code,
        done.output,
        timed_out=done.timed_out,
        truncated=done.truncated,
        limit=run.limits.output_bytes,
    )
    run.trajectory.record(
        "tool",
        run.steps,
        call_id=call.id,
        name=call.name,
        command=action.command,
        timeout=timeout,
        exit_code=done.exit_code,
        timed_out=done.timed_out,
        output=shown,
        duration=duration,
    )
    log.info(
        "agent.tool",
        step=run.steps,
        command=run.trajectory.redact(action.command)[:200],
        exit_code=done.exit_code,
        duration=duration,
    )
    return shown
