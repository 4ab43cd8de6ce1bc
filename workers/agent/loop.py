"""The agent loop: ask the model, run its tool calls in the environment, feed results back, stop.

After mini-swe-agent. Control flow is by exceptions: FormatError is fed back to the model;
Submitted, LimitsExceeded, Stuck, Stopped and TooManyFormatErrors end the run. Anything else (the
sandbox dying, a bug) propagates to the job, after an error record is written: the trajectory's
final record is written in ``finally``, so every run leaves one.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import structlog

from workers.agent import actions
from workers.agent.model import (
    Model,
    ModelError,
    ModelReply,
    ModelTimeout,
    OpenAIModel,
    ToolCall,
)
from workers.agent.text import (
    AgentTask,
    Comment,
    initial_messages,
    render_instructions,
    steering_message,
)
from workers.agent.tools import (
    ASK_TOOLS,
    TOOLS,
    AnswerAction,
    FinishAction,
    FormatError,
    parse_action,
)
from workers.agent.trajectory import Trajectory
from workers.agent.workspace import Environment, ExecLike, Workspace
from workers.instructions import applicable

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
    "Stopped",
    "Stuck",
    "Submitted",
    "TooManyFormatErrors",
    "run_agent",
]

log = structlog.get_logger(__name__)

NUDGE = (
    "Your reply had no tool call. Use a tool: `shell` to run a command, "
    "`finish` when the fix is done and the tests pass."
)
ELIDED = "[older tool output removed to fit the context window: {size} characters]"
CONTEXT_SHARE = 0.8  # compact the history when it passes this share of the context window
KEEP_RECENT = 3  # the most recent tool results are never elided
STOP_POLL_SECONDS = 0.25  # how often the stop flag is read while a command runs

Status = Literal["finished", "answered", "limits_exceeded", "stuck", "stopped", "error"]


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
    steps: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reason: str = ""
    seconds: float = 0.0  # wall time of the run
    model_seconds: float = 0.0  # of which waiting for the model
    instruction_files: list[str] = field(default_factory=list)


class Submitted(Exception):
    def __init__(self, action: FinishAction | AnswerAction) -> None:
        super().__init__(type(action).__name__)
        self.action = action


class LimitsExceeded(Exception):
    pass


class Stuck(Exception):
    pass


class Stopped(Exception):
    pass


class TooManyFormatErrors(Exception):
    pass


@dataclass
class _Run:
    task: AgentTask
    env: Environment
    model: Model
    limits: AgentLimits
    trajectory: Trajectory
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    workspace: Workspace
    steering: Callable[[], list[Comment]] | None = None
    should_stop: Callable[[], str | None] | None = None
    started: float = field(default_factory=time.monotonic)
    steps: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_seconds: float = 0.0
    format_errors: int = 0  # in a row
    seen_calls: Counter[str] = field(default_factory=Counter)
    instruction_files: list[str] = field(default_factory=list)
    stop_reason: str | None = None  # a stop that arrived while a command ran

    def result(self, status: Status, **values: str) -> AgentResult:
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


def run_agent(
    task: AgentTask,
    env: Environment,
    model: Model,
    limits: AgentLimits,
    trajectory: Trajectory,
    *,
    steering: Callable[[], list[Comment]] | None = None,
    should_stop: Callable[[], str | None] | None = None,
) -> AgentResult:
    """Runs the task to an end. ``steering`` returns comments that arrived since its last call;
    ``should_stop`` returns a reason to stop (``/codex stop``) or None; both are asked each step,
    and ``should_stop`` also while a command runs: an environment with ``cancel(reason)`` then has
    the command killed at once."""
    tools = ASK_TOOLS if task.mode == "ask" else TOOLS
    run = _Run(
        task,
        env,
        model,
        limits,
        trajectory,
        initial_messages(task),
        tools,
        Workspace(env),
        steering,
        should_stop,
    )
    result = run.result("error", reason="the agent loop crashed")
    try:
        start(run)
        while True:
            check_limits(run)
            act(run, query(run))
    except Submitted as done:
        result = submitted(run, done.action)
    except LimitsExceeded as error:
        result = run.result("limits_exceeded", reason=str(error))
    except Stuck as error:
        result = run.result("stuck", reason=str(error))
    except Stopped as error:
        result = run.result("stopped", reason=str(error))
    except (ModelError, TooManyFormatErrors) as error:
        result = run.result("error", reason=str(error))
        trajectory.record("error", run.steps, error=type(error).__name__, message=str(error))
    except BaseException as error:
        trajectory.record("error", run.steps, error=type(error).__name__, message=str(error))
        raise
    finally:
        result.seconds = round(time.monotonic() - run.started, 3)
        trajectory.record("result", run.steps, **asdict(result))
        log.info(
            "agent.done",
            status=result.status,
            steps=run.steps,
            reason=trajectory.redact(result.reason),
        )
    return result


def start(run: _Run) -> None:
    root_files = applicable(run.task.instructions, [""])
    run.instruction_files = [f.path for f in root_files]
    run.trajectory.record(
        "start",
        0,
        repo=run.task.repo,
        number=run.task.issue_number,
        mode=run.task.mode,
        title=run.task.issue_title,
        test_command=run.task.test_command,
        limits=asdict(run.limits),
        tools=[tool["function"]["name"] for tool in run.tools],
    )
    run.trajectory.record("instructions", 0, files=run.instruction_files, reason="repository root")


def check_limits(run: _Run) -> None:
    limits = run.limits
    reason = run.should_stop() if run.should_stop else None
    if reason:
        raise Stopped(reason)
    if run.steps >= limits.steps:
        raise LimitsExceeded(f"step limit reached ({limits.steps} model calls)")
    if run.prompt_tokens + run.completion_tokens >= limits.tokens:
        raise LimitsExceeded(f"token limit reached ({limits.tokens} tokens)")
    if run.seconds_left() <= 0:
        raise LimitsExceeded(f"time limit reached ({limits.wall_seconds:g} seconds)")


def query(run: _Run) -> ModelReply:
    run.steps += 1
    steer(run)
    compact(run)
    run.trajectory.record("request", run.steps, messages=run.messages, tools=run.tools)
    started = time.monotonic()
    try:
        reply = run.model.complete(run.messages, run.tools, seconds=max(run.seconds_left(), 0))
    except ModelTimeout as error:
        run.model_seconds += time.monotonic() - started
        raise LimitsExceeded(
            f"time limit reached ({run.limits.wall_seconds:g} seconds) waiting for the model: "
            f"{error}"
        ) from None
    duration = time.monotonic() - started
    run.model_seconds += duration
    run.prompt_tokens += reply.usage.prompt_tokens
    run.completion_tokens += reply.usage.completion_tokens
    run.trajectory.record(
        "response",
        run.steps,
        message=reply.message,
        prompt_tokens=reply.usage.prompt_tokens,
        completion_tokens=reply.usage.completion_tokens,
        duration=round(duration, 3),
    )
    return reply


def steer(run: _Run) -> None:
    """Comments posted while the agent works join the conversation, fenced like the issue."""
    comments = run.steering() if run.steering else []
    if comments:
        run.messages.append({"role": "user", "content": steering_message(comments)})
        run.trajectory.record("steering", run.steps, comments=[asdict(c) for c in comments])


def compact(run: _Run) -> None:
    """Near the context window, the oldest tool results become a one-line note."""
    budget = run.limits.context_tokens * CONTEXT_SHARE
    if estimate_tokens(run.messages) <= budget:
        return
    tool_messages = [m for m in run.messages if m.get("role") == "tool"][:-KEEP_RECENT]
    elided = 0
    for message in tool_messages:
        if message["content"].startswith("[older tool output removed"):
            continue
        message["content"] = ELIDED.format(size=len(message["content"]))
        elided += 1
        if estimate_tokens(run.messages) <= budget:
            break
    run.trajectory.record(
        "context",
        run.steps,
        elided_tool_results=elided,
        estimated_tokens=estimate_tokens(run.messages),
    )


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    return len(json.dumps(messages, ensure_ascii=False)) // 4


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
        if run.stop_reason:
            raise Stopped(run.stop_reason)
        note_repeat(run, call, content)


def note_format_error(run: _Run, problem: str) -> None:
    run.format_errors += 1
    log.info("agent.format_error", step=run.steps, problem=run.trajectory.redact(problem))
    if run.format_errors >= run.limits.format_errors:
        raise TooManyFormatErrors(
            f"{run.format_errors} malformed replies in a row; last: {problem}"
        )


def note_repeat(run: _Run, call: ToolCall, content: str) -> None:
    key = json.dumps([call.name, call.arguments, content])
    run.seen_calls[key] += 1
    if run.seen_calls[key] >= run.limits.repeats:
        raise Stuck(
            f"the agent made the same `{call.name}` call with the same result "
            f"{run.seen_calls[key]} times"
        )


def execute(run: _Run, call: ToolCall) -> str:
    action = parse_action(call.name, call.arguments, run.tools)
    if isinstance(action, FinishAction | AnswerAction):
        run.trajectory.record("tool", run.steps, call_id=call.id, name=call.name, **asdict(action))
        raise Submitted(action)
    started = time.monotonic()
    with stop_watch(run):
        outcome = actions.perform(action, run.workspace, run.limits, run.seconds_left())
    duration = round(time.monotonic() - started, 3)
    run.trajectory.record(
        "tool",
        run.steps,
        call_id=call.id,
        name=call.name,
        **outcome.details,
        output=outcome.shown,
        duration=duration,
    )
    log.info(
        "agent.tool",
        step=run.steps,
        tool=call.name,
        duration=duration,
        detail=run.trajectory.redact(outcome.summary)[:200],
    )
    return outcome.shown + more_instructions(run, outcome.paths)


@contextmanager
def stop_watch(run: _Run) -> Iterator[None]:
    """While a tool runs, a stop (``/codex stop``, a newer task) cancels its command at once."""
    cancel: Callable[[str], object] | None = getattr(run.env, "cancel", None)
    if run.should_stop is None or cancel is None:
        yield
        return
    should_stop = run.should_stop
    done = threading.Event()

    def watch() -> None:
        while not done.wait(STOP_POLL_SECONDS):
            try:
                reason = should_stop()
            except Exception as error:  # noqa: BLE001 - the loop asks again after the tool
                log.warning("agent.stop_watch_failed", error=str(error)[:200])
                return
            if reason:
                run.stop_reason = reason
                cancel(reason)
                while not done.wait(STOP_POLL_SECONDS):
                    cancel(reason)  # a tool of several commands: each one that starts
                return

    watcher = threading.Thread(target=watch, name="stop-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


def more_instructions(run: _Run, paths: list[str]) -> str:
    """AGENTS.md files of directories the agent reaches for the first time, after the result."""
    new = [
        f for f in applicable(run.task.instructions, paths) if f.path not in run.instruction_files
    ]
    if not new:
        return ""
    run.instruction_files += [f.path for f in new]
    run.trajectory.record(
        "instructions",
        run.steps,
        files=[f.path for f in new],
        reason=f"the agent works in {', '.join(sorted(set(paths)))}",
    )
    return "\n\n" + render_instructions(new)


def submitted(run: _Run, action: FinishAction | AnswerAction) -> AgentResult:
    if isinstance(action, AnswerAction):
        answer = actions.verified_answer(action.text, run.workspace)
        return run.result("answered", answer=answer, summary=answer)
    return run.result(
        "finished", title=action.title, summary=action.summary, not_done=action.not_done
    )
