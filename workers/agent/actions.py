"""What each tool does in the sandbox, and what the model is shown afterwards."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from workers.agent.patch import PatchError, plan_patch
from workers.agent.text import observation
from workers.agent.tools import (
    Action,
    ApplyPatchAction,
    FormatError,
    MapAction,
    ReadFileAction,
    ReferencesAction,
    SearchAction,
    ShellAction,
)
from workers.agent.workspace import (
    CodeReader,
    Workspace,
    numbered,
    search_command,
    workspace_path,
)
from workers.text import verify_references

if TYPE_CHECKING:
    from workers.agent.loop import AgentLimits

MIN_COMMAND_TIMEOUT = 1.0
SEARCH_TIMEOUT = 30.0


@dataclass
class Outcome:
    shown: str  # what the model sees
    summary: str  # one line for the log
    details: dict[str, Any] = field(default_factory=dict)  # for the trajectory
    paths: list[str] = field(default_factory=list)  # the files or directories it touched


def perform(
    action: Action, workspace: Workspace, limits: AgentLimits, seconds_left: float
) -> Outcome:
    if isinstance(action, ShellAction):
        return after_change(shell(action, workspace, limits, seconds_left), workspace)
    if isinstance(action, ReadFileAction):
        return read_file(action, workspace, limits)
    if isinstance(action, SearchAction):
        return search(action, workspace, limits)
    if isinstance(action, MapAction):
        return code_map(action, code_of(workspace), limits)
    if isinstance(action, ReferencesAction):
        return references(action, code_of(workspace), limits)
    if isinstance(action, ApplyPatchAction):
        return after_change(apply_patch(action, workspace), workspace)
    raise FormatError(f"the tool for {type(action).__name__} cannot run here")


def after_change(outcome: Outcome, workspace: Workspace) -> Outcome:
    """A tool that may change files, with what the environment says of the change (a change
    the sandbox refuses) after its result, outside the output's fence: the bot's, not the
    command's. Environments without a change guard say nothing."""
    said: Callable[[], str] | None = getattr(workspace.env, "after_change", None)
    note = said() if said else ""
    if note:
        outcome.shown = f"{outcome.shown}\n\n{note}"
    return outcome


def shell(
    action: ShellAction, workspace: Workspace, limits: AgentLimits, seconds_left: float
) -> Outcome:
    timeout = min(action.timeout or limits.command_timeout, limits.command_timeout)
    timeout = max(MIN_COMMAND_TIMEOUT, min(timeout, seconds_left))
    done = workspace.env.exec(action.command, timeout=timeout)
    shown = observation(
        done.exit_code,
        done.output,
        timed_out=done.timed_out,
        truncated=done.truncated,
        limit=limits.output_bytes,
    )
    return Outcome(
        shown=shown,
        summary=action.command,
        details={
            "command": action.command,
            "timeout": timeout,
            "exit_code": done.exit_code,
            "timed_out": done.timed_out,
        },
    )


def code_of(workspace: Workspace) -> CodeReader:
    if workspace.code is None:
        raise FormatError("This tool is not available in this task.")
    return workspace.code


def elsewhere(workspace: Workspace, repo: str) -> CodeReader | None:
    """The reader of a related repository the call names; None for the task's own."""
    if not repo:
        return None
    code = workspace.code
    if code is None:
        raise FormatError("This task reads no other repository; leave out `repo`.")
    return None if code.is_own(repo) else code


def read_file(action: ReadFileAction, workspace: Workspace, limits: AgentLimits) -> Outcome:
    path = workspace_path(action.path)
    other = elsewhere(workspace, action.repo)
    text = other.text_of(action.repo, path) if other else workspace.read_text(path)
    if text is None:
        raise FormatError(f"`{path}` is not a file in the repository.")
    body, total = numbered(text, action.start_line, action.end_line)
    last = min(action.end_line or total, total)
    cited = f"{action.repo}:{path}" if other else path
    header = f"{cited}: lines {action.start_line}-{last} of {total}"
    shown = observation_text(header, body, limits.output_bytes)
    return Outcome(
        shown=shown,
        summary=f"read {path}",
        paths=[path],
        details={"path": path, "start_line": action.start_line, "end_line": last},
    )


def search(action: SearchAction, workspace: Workspace, limits: AgentLimits) -> Outcome:
    path = workspace_path(action.path)
    try:
        re.compile(action.pattern)
    except re.error as error:
        raise FormatError(f"`pattern` is not a valid regular expression: {error}") from None
    cap = limits.search_matches
    other = elsewhere(workspace, action.repo)
    if other:
        lines = other.search(action.repo, action.pattern, path, cap)
    else:
        command = search_command(action.pattern, path, cap)
        done = workspace.env.exec(command, timeout=SEARCH_TIMEOUT)
        lines = [line for line in done.output.splitlines() if line]
    more = len(lines) > cap
    lines = lines[:cap]
    header = f"{len(lines)} match(es)" + (f" (the first {cap}; narrow the search)" if more else "")
    shown = observation_text(header, "\n".join(lines) or "(no matches)", limits.output_bytes)
    touched = sorted({line.split(":", 1)[0] for line in lines if ":" in line})
    return Outcome(
        shown=shown,
        summary=f"search {action.pattern}",
        paths=touched[:20],
        details={"pattern": action.pattern, "path": path, "matches": len(lines)},
    )


def code_map(action: MapAction, code: CodeReader, limits: AgentLimits) -> Outcome:
    under = workspace_path(action.path) if action.path else ""
    shown = observation_text(
        "The map", code.map(action.repo or None, under, action.tokens), limits.output_bytes
    )
    return Outcome(
        shown=shown,
        summary=f"map {under or '.'}",
        paths=[under] if under else [],
        details={"path": under, "tokens": action.tokens, "repo": action.repo},
    )


def references(action: ReferencesAction, code: CodeReader, limits: AgentLimits) -> Outcome:
    shown = code.references(action.symbol, action.repo or None)
    return Outcome(
        shown=observation_text("References", shown, limits.output_bytes),
        summary=f"references {action.symbol}",
        details={"symbol": action.symbol, "repo": action.repo},
    )


def apply_patch(action: ApplyPatchAction, workspace: Workspace) -> Outcome:
    cache: dict[str, str | None] = {}

    def read(path: str) -> str | None:
        checked = workspace_path(path)
        if checked not in cache:
            cache[checked] = workspace.read_text(checked)
        return cache[checked]

    try:
        changes = plan_patch(action.patch, read)
    except PatchError as error:
        raise FormatError(f"The patch was not applied. {error}") from None
    # What the repository forbids (workflows unless allowed, protected paths) is the change
    # guard's to judge, with the repository's own policy; it tells the agent at once.
    report = []
    for change in changes:
        path = workspace_path(change.path)
        if change.content is None:
            workspace.delete(path)
            report.append(f"deleted {path}")
        else:
            workspace.write_text(path, change.content)
            report.append(f"{'created' if cache.get(path) is None else 'changed'} {path}")
    shown = "The patch was applied: " + "; ".join(report) + "."
    paths = [workspace_path(c.path) for c in changes]
    return Outcome(
        shown=shown, summary=shown, paths=paths, details={"patch": action.patch, "files": paths}
    )


def observation_text(header: str, body: str, limit: int) -> str:
    shown = observation(0, body, timed_out=False, truncated=False, limit=limit)
    return header + shown.removeprefix("exit code: 0")


def line_counter(workspace: Workspace) -> Callable[[str], int | None]:
    counts: dict[str, int | None] = {}

    def lines_in(path: str) -> int | None:
        try:
            checked = workspace_path(path)
        except FormatError:
            return None
        if checked not in counts:
            quoted = shlex.quote(checked)
            done = workspace.env.exec(
                f"test -f {quoted} && awk 'END {{print NR}}' {quoted}", timeout=SEARCH_TIMEOUT
            )
            words = done.output.split()
            known = done.exit_code == 0 and bool(words) and words[-1].isdigit()
            counts[checked] = int(words[-1]) if known else None
        return counts[checked]

    return lines_in


def verified_answer(text: str, workspace: Workspace) -> str:
    """The answer with every `path:line` reference to a missing file or line removed; a
    reference into a related repository (`owner/name:path:line`) is checked there."""
    in_sandbox = line_counter(workspace)
    code = workspace.code

    def lines_in(reference: str) -> int | None:
        repo, _, path = reference.rpartition(":")
        if not repo:
            return in_sandbox(path)
        if code is None:
            return None
        try:
            own = code.is_own(repo)
        except FormatError:
            return None
        return in_sandbox(path) if own else code.line_count(reference)

    return verify_references(text, lines_in)
