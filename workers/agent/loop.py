"""The agent loop: ask the model, run its tool calls in the environment, feed results back, stop.

After mini-swe-agent. Control flow is by exceptions: FormatError is fed back to the model;
Submitted ends the run with the model's answer, and every other way a run can end is a RunEnded
carrying its status (LimitsExceeded, Stuck, Stopped, TooManyFormatErrors, ModelFailed), mapped in
one place. Anything else (the sandbox dying, a bug) propagates to the job, after an error record is
written: the trajectory's final record is written in ``finally``, so every run leaves one.

Two protocols: ``native`` sends the tool schemas and reads the reply's tool calls (or calls it
wrote as text, see ``textcalls``); ``text`` is for endpoints without tool support: one fenced
shell block per reply, a marker line to finish. ``auto`` starts native and switches for good (per
endpoint, in this process) when the server refuses tools.

The conversation only grows: earlier messages are never rewritten from one step to the next
(compaction aside), so a server's prompt cache stays valid up to the newest message.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict
from typing import Any

import structlog

from workers.agent import actions, callend, context, textcalls
from workers.agent.model import (
    ContextTooLong,
    Model,
    ModelError,
    ModelReply,
    ModelTimeout,
    OpenAIModel,
    ToolCall,
    ToolsUnsupported,
    known_text_only,
    remember_text_only,
)
from workers.agent.outcome import (
    AgentLimits,
    AgentResult,
    LimitsExceeded,
    ModelFailed,
    RunEnded,
    Stopped,
    Stuck,
    Submitted,
    ToolProtocol,
    TooManyFormatErrors,
)
from workers.agent.runstate import RunState
from workers.agent.stopping import cancel_on_stop
from workers.agent.text import (
    AgentTask,
    Comment,
    initial_messages,
    render_instructions,
    steering_message,
    text_protocol_prompt,
)
from workers.agent.tools import (
    ASK_TOOLS,
    REVIEW_TOOLS,
    TOOLS,
    AnswerAction,
    FinishAction,
    FormatError,
    ReviewAction,
    Submission,
    parse_action,
    tool_names,
    with_code_tools,
    with_repo_argument,
)
from workers.agent.trajectory import Trajectory
from workers.agent.workspace import CodeReader, Environment, ExecLike, Workspace
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
    "ModelFailed",
    "OpenAIModel",
    "RunEnded",
    "Stopped",
    "Stuck",
    "Submitted",
    "TooManyFormatErrors",
    "run_agent",
]

log = structlog.get_logger(__name__)

STOP_POLL_SECONDS = 0.25  # how often the stop flag is read while a command runs
CALL_SHARE = 0.5  # a model call may take this share of the time left, so a retry fits after it
MIN_REPLY_TOKENS = 256  # max_tokens never goes below this, however full the context
CUT_TAIL_CHARS = 4000  # of a streamed reply's text after the cut, kept in the trajectory

MODE_TOOLS = {"fix": TOOLS, "ask": ASK_TOOLS, "review": REVIEW_TOOLS}
SUBMISSIONS = frozenset({"finish", "answer", "review"})  # the calls that end the run


def run_agent(
    task: AgentTask,
    env: Environment,
    model: Model,
    limits: AgentLimits,
    trajectory: Trajectory,
    *,
    steering: Callable[[], list[Comment]] | None = None,
    should_stop: Callable[[], str | None] | None = None,
    tool_protocol: ToolProtocol = "auto",
    code: CodeReader | None = None,
) -> AgentResult:
    """Runs the task to an end. ``steering`` returns comments that arrived since its last call;
    ``should_stop`` returns a reason to stop (``/codex stop``) or None; both are asked each step,
    and ``should_stop`` also while a command runs: an environment with ``cancel(reason)`` then has
    the command killed at once. ``tool_protocol``: see the module's docstring. ``code``, when the
    worker has the repository's code, adds the `map` and `references` tools."""
    tools = MODE_TOOLS[task.mode] if code is None else with_code_tools(MODE_TOOLS[task.mode])
    if code is not None and len(code.repositories()) > 1:
        tools = with_repo_argument(tools)
    text = tool_protocol == "text" or (tool_protocol == "auto" and known_text_only(model))
    run = RunState(
        task,
        env,
        model,
        limits,
        trajectory,
        initial_messages(task),
        tools,
        Workspace(env, code, task.repo),
        "text" if text else "native",
        steering,
        should_stop,
    )
    run.switchable = tool_protocol == "auto"
    result = run.result("error", reason="the agent loop crashed")
    try:
        start(run)
        while True:
            check_limits(run)
            act(run, query(run))
    except Submitted as done:
        result = submitted(run, done.action)
    except RunEnded as end:
        result = run.result(end.status, reason=str(end))
        if end.status == "error":
            trajectory.record("error", run.steps, error=type(end).__name__, message=str(end))
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


def start(run: RunState) -> None:
    if run.protocol == "text":
        use_text_protocol(run, "the tool protocol is `text`")
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
        tools=tool_names(run.tools),
        protocol=run.protocol,
    )
    run.trajectory.record("instructions", 0, files=run.instruction_files, reason="repository root")


def check_limits(run: RunState) -> None:
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


def query(run: RunState) -> ModelReply:
    """The model's next reply. A refused prompt is compacted and a timed-out call compacted and
    tried again, once each; tools refused switch an `auto` run to the text protocol."""
    run.steps += 1
    steer(run)
    compact(run)
    meanwhile: Callable[[], object] | None = getattr(run.env, "before_model", None)
    if meanwhile is not None:  # the worker's use of the wait: the tests run ahead
        meanwhile()
    remedies: set[str] = set()
    while True:
        try:
            return ask_model(run)
        except ToolsUnsupported as error:
            if not run.switchable or run.protocol == "text":
                raise ModelFailed(str(error)) from None
            remember_text_only(run.model)
            use_text_protocol(run, str(error))
        except ContextTooLong as error:
            if "context" in remedies or not compact(run, force=True):
                raise ModelFailed(str(error)) from None
            remedies.add("context")
        except ModelTimeout as error:
            if "timeout" in remedies or run.seconds_left() <= 0:
                raise LimitsExceeded(
                    f"time limit reached ({run.limits.wall_seconds:g} seconds) waiting for the "
                    f"model: {error}"
                ) from None
            remedies.add("timeout")
            compact(run, force=True)
        except ModelError as error:
            raise ModelFailed(str(error)) from None


def ask_model(run: RunState) -> ModelReply:
    tools = run.tools if run.protocol == "native" else []
    run.trajectory.record("request", run.steps, messages=run.messages, tools=tools)
    started = time.monotonic()
    try:
        reply = run.model.complete(
            run.messages,
            tools,
            seconds=call_seconds(run),
            max_tokens=reply_tokens(run),
            call_end=functools.partial(
                callend.call_end,
                tools=tool_names(run.tools),
                text_protocol=run.protocol == "text",
            ),
        )
    finally:
        run.model_seconds += time.monotonic() - started
    duration = time.monotonic() - started
    run.prompt_tokens += reply.usage.prompt_tokens
    run.completion_tokens += reply.usage.completion_tokens
    run.trajectory.record(
        "response",
        run.steps,
        message=reply.message,
        **({"reasoning": reply.reasoning} if reply.reasoning else {}),
        prompt_tokens=reply.usage.prompt_tokens,
        completion_tokens=reply.usage.completion_tokens,
        **({"usage_estimated": True} if reply.usage.estimated else {}),
        **({"stopped_at_call": True} if reply.stopped_at_call else {}),
        **({"cut_tail": reply.cut_tail[:CUT_TAIL_CHARS]} if reply.cut_tail else {}),
        duration=round(duration, 3),
    )
    return reply


def call_seconds(run: RunState) -> float:
    """How long one model call may take: a share of the run's time left, so that a call that
    times out leaves time to compact and try again; never less than the floor."""
    left = max(run.seconds_left(), 0.0)
    return max(run.limits.model_timeout_floor, left * CALL_SHARE, min(left, 1.0))


def reply_tokens(run: RunState) -> int:
    """max_tokens: the limit, within what the context window has left after the prompt."""
    room = run.limits.context_tokens - context.estimate_tokens(run.messages)
    return max(MIN_REPLY_TOKENS, min(run.limits.max_tokens, room))


def use_text_protocol(run: RunState, reason: str) -> None:
    """From now on no tools are sent: the system prompt says how to act in text instead."""
    run.protocol, run.switchable = "text", False
    system = run.messages[0]
    addition = text_protocol_prompt(run.task.mode)
    if addition not in system["content"]:
        system["content"] = f"{system['content'].rstrip()}\n\n{addition}"
    run.trajectory.record("protocol", run.steps, protocol="text", reason=reason)
    log.info("agent.text_protocol", reason=run.trajectory.redact(reason)[:200])


def steer(run: RunState) -> None:
    """Comments posted while the agent works join the conversation, fenced like the issue."""
    comments = run.steering() if run.steering else []
    if comments:
        run.messages.append({"role": "user", "content": steering_message(comments)})
        run.trajectory.record("steering", run.steps, comments=[asdict(c) for c in comments])


def compact(run: RunState, *, force: bool = False) -> bool:
    """Near the context window, the oldest tool results become a one-line note; ``force`` (the
    server refused the prompt, or took too long over it) halves the history instead. Whether
    anything was elided."""
    elided = context.compact(run.messages, run.limits.context_tokens, force=force)
    if elided is None:
        return False
    run.trajectory.record(
        "context",
        run.steps,
        elided_tool_results=elided,
        estimated_tokens=context.estimate_tokens(run.messages),
        forced=force,
    )
    return elided > 0


def act(run: RunState, reply: ModelReply) -> None:
    """Runs every tool call in the reply and appends each result; a malformed call gets an error.

    Native calls get `tool` messages. Calls the model wrote as text have no id the server knows,
    so their results go back in one user message, and the reply stays as the model wrote it.
    A reply counts once towards the malformed replies in a row, however many of its calls fail,
    and its valid calls run all the same; a submission runs after the reply's other calls (a
    model may write `finish` before the edit it means to submit), and not after a failed one."""
    run.messages.append(reply.message)
    calls, recognised, problem = reply.tool_calls, "", ""
    if not calls:
        found = recognise(run, reply.message.get("content") or "")
        calls, recognised, problem = found.calls, found.dialect, found.problem
    if not calls and not problem:
        nudge = textcalls.NO_COMMAND if run.protocol == "text" else textcalls.NO_CALL
        run.messages.append({"role": "user", "content": nudge})
        note_format_error(run, "reply had no tool call")
        return
    shown: list[str] = []
    failed: list[str] = []  # what went wrong in this reply, in order
    if problem:
        shown.append(f"Error: {problem}")
        run.trajectory.record("tool", run.steps, recognised=recognised, error=problem)
        failed.append(f"a call in your reply could not be read: {problem}")
    calls = sorted(calls, key=lambda call: call.name in SUBMISSIONS)  # stable: the rest in order
    try:
        for number, call in enumerate(calls, start=1):
            content, ok = run_call(run, call, recognised, failed)
            if not ok:
                said = content.removeprefix("Error: ")
                failed.append(f"call {number} (`{call.name}`) failed: {said}")
            if recognised:
                shown.append(f"{context.RESULT_PREFIX}`{call.name}` call:\n{content}")
            else:
                run.messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
            if run.stop_reason:
                raise Stopped(run.stop_reason)
            note_repeat(run, call, content)
    finally:
        if shown:
            run.messages.append({"role": "user", "content": "\n\n".join(shown)})
    if len(failed) == len(calls) + bool(problem):
        note_format_error(run, failed[-1])
    else:
        run.format_errors = 0


def recognise(run: RunState, content: str) -> textcalls.Recognised:
    names = tool_names(run.tools)
    if run.protocol == "text":
        return textcalls.recognise_text_protocol(content, names)
    return textcalls.recognise_tool_calls(content, names)


def run_call(run: RunState, call: ToolCall, recognised: str, failed: list[str]) -> tuple[str, bool]:
    """One call's result as the model sees it, and whether it ran; a call it cannot act on gets
    the error. A submission after a failed call of the same reply (``failed``) is not run: the
    model has not seen what failed."""
    try:
        if failed and call.name in SUBMISSIONS:
            raise FormatError(
                f"`{call.name}` was not run because {failed[0][:300]} "
                f"Read that error, set it right, then call `{call.name}` again."
            )
        return execute(run, call, recognised), True
    except FormatError as error:
        record_tool(run, call, recognised, arguments=call.arguments, error=str(error))
        log.info("agent.tool_error", step=run.steps, problem=run.trajectory.redact(str(error)))
        return f"Error: {error}", False


def note_format_error(run: RunState, problem: str) -> None:
    run.format_errors += 1
    log.info("agent.format_error", step=run.steps, problem=run.trajectory.redact(problem))
    if run.format_errors >= run.limits.format_errors:
        raise TooManyFormatErrors(
            f"{run.format_errors} malformed replies in a row; last: {problem}"
        )


def note_repeat(run: RunState, call: ToolCall, content: str) -> None:
    key = json.dumps([call.name, call.arguments, content])
    run.seen_calls[key] += 1
    if run.seen_calls[key] >= run.limits.repeats:
        raise Stuck(
            f"the agent made the same `{call.name}` call with the same result "
            f"{run.seen_calls[key]} times"
        )


def record_tool(run: RunState, call: ToolCall, recognised: str, **fields: Any) -> None:
    """A tool record; ``recognised`` names the text shape a call came in (hermes, ...)."""
    seen = {"recognised": recognised} if recognised else {}
    run.trajectory.record("tool", run.steps, call_id=call.id, name=call.name, **fields, **seen)


def execute(run: RunState, call: ToolCall, recognised: str = "") -> str:
    action = parse_action(call.name, call.arguments, run.tools)
    if isinstance(action, FinishAction | AnswerAction | ReviewAction):
        record_tool(run, call, recognised, **asdict(action))
        raise Submitted(action)
    started = time.monotonic()
    with stop_watch(run):
        try:
            outcome = actions.perform(action, run.workspace, run.limits, run.seconds_left())
        except Exception:
            # A stop cancels every command the tool runs, the bot's own look at the changes
            # after it too: what fails once a stop arrived is the stop.
            if run.stop_reason:
                raise Stopped(run.stop_reason) from None
            raise
    duration = round(time.monotonic() - started, 3)
    record_tool(run, call, recognised, **outcome.details, output=outcome.shown, duration=duration)
    log.info(
        "agent.tool",
        step=run.steps,
        tool=call.name,
        duration=duration,
        detail=run.trajectory.redact(outcome.summary)[:200],
    )
    return outcome.shown + more_instructions(run, outcome.paths)


def stop_watch(run: RunState) -> AbstractContextManager[None]:
    """While a tool runs, a stop (``/codex stop``, a newer task) cancels its command at once."""
    cancel: Callable[[str], object] | None = getattr(run.env, "cancel", None)
    if run.should_stop is None or cancel is None:
        return nullcontext()

    def stopped(reason: str) -> None:
        run.stop_reason = reason

    return cancel_on_stop(run.should_stop, cancel, stopped, STOP_POLL_SECONDS)


def more_instructions(run: RunState, paths: list[str]) -> str:
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


def submitted(run: RunState, action: Submission) -> AgentResult:
    if isinstance(action, ReviewAction):
        findings = [asdict(finding) for finding in action.findings]
        return run.result("reviewed", summary=action.summary, findings=findings)
    if isinstance(action, AnswerAction):
        answer = actions.verified_answer(action.text, run.workspace)
        return run.result("answered", answer=answer, summary=answer)
    return run.result(
        "finished", title=action.title, summary=action.summary, not_done=action.not_done
    )
