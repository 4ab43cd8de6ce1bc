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
GREP_ERROR = 2  # grep's exit status for an error (1: no match)
GREP_SAYS = "grep: "  # how grep's own messages start


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
        return code_map(action, workspace, limits)
    if isinstance(action, ReferencesAction):
        return references(action, workspace, limits)
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


# What a `repo` argument may say for the task's own repository, besides its name.
OWN_REPO_WORDS = frozenset({"", ".", "this", "self"})


@dataclass(frozen=True)
class Target:
    """The repository a call's `repo` names: ``related`` names a related repository (None: the
    task's own; ``own_named``: named outright), ``note`` is told with the result."""

    related: str | None = None
    own_named: bool = False
    note: str = ""


def target(workspace: Workspace, repo: str) -> Target:
    """Tolerant of how a model names the task's own repository: its name (owner/name or name,
    any case), nothing, `.`, `this` or `self`. A name that is none of the task's repositories
    reads the task's own (with a note) when there is no related one to mean; else it is refused
    with their names."""
    wanted = repo.strip().strip("/").lower()
    own = workspace.repo.lower()
    if wanted in OWN_REPO_WORDS:
        return Target()
    if wanted in {own, own.rpartition("/")[2]}:
        return Target(own_named=True)
    code = workspace.code
    related = [] if code is None else [n for n in code.repositories() if n.lower() != own]
    if not related:
        this = f"`{workspace.repo}`" if workspace.repo else "the task's own"
        note = f"Note: `{repo}` is not a repository of this task; read {this} instead."
        return Target(note=note)
    for name in related:
        if wanted == name.lower():
            return Target(related=name)
    names = ", ".join(f"`{name}`" for name in [workspace.repo, *related])
    raise FormatError(f"`{repo}` is not a repository of this task; they are {names}.")


def noted(shown: str, where: Target) -> str:
    return f"{where.note}\n{shown}" if where.note else shown


def read_file(action: ReadFileAction, workspace: Workspace, limits: AgentLimits) -> Outcome:
    path = workspace_path(action.path)
    where = target(workspace, action.repo)
    other = workspace.code if where.related else None
    text = other.text_of(where.related, path) if other else workspace.read_text(path)
    if text is None:
        raise FormatError(f"`{path}` is not a file in the repository.")
    body, total = numbered(text, action.start_line, action.end_line)
    last = min(action.end_line or total, total)
    cited = f"{where.related}:{path}" if other else path
    header = f"{cited}: lines {action.start_line}-{last} of {total}"
    shown = observation_text(header, body, limits.output_bytes)
    return Outcome(
        shown=noted(shown, where),
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
    where = target(workspace, action.repo)
    errors: list[str] = []
    if where.related and workspace.code is not None:
        lines = workspace.code.search(where.related, action.pattern, path, cap)
    else:
        lines, errors = grep(workspace, action.pattern, path, cap)
    more = len(lines) > cap
    lines = lines[:cap]
    header = f"{len(lines)} match(es)" + (f" (the first {cap}; narrow the search)" if more else "")
    shown = observation_text(header, "\n".join(lines) or "(no matches)", limits.output_bytes)
    if errors:
        shown += "\n\ngrep reported: " + "; ".join(errors[:5])
    touched = sorted({line.split(":", 1)[0] for line in lines if ":" in line})
    return Outcome(
        shown=noted(shown, where),
        summary=f"search {action.pattern}",
        paths=touched[:20],
        details={"pattern": action.pattern, "path": path, "matches": len(lines)},
    )


def grep(workspace: Workspace, pattern: str, path: str, cap: int) -> tuple[list[str], list[str]]:
    """The matching lines and grep's own errors (a missing path, an unreadable file): errors,
    never matches. Only errors, none matching, is a failed call."""
    done = workspace.env.exec(search_command(pattern, path, cap), timeout=SEARCH_TIMEOUT)
    lines = [line for line in done.output.splitlines() if line]
    if done.exit_code != GREP_ERROR:
        return lines, []
    errors = [line for line in lines if line.startswith(GREP_SAYS)]
    matches = [line for line in lines if not line.startswith(GREP_SAYS)]
    if not matches:
        said = "; ".join(error.removeprefix(GREP_SAYS) for error in errors[:5])
        raise FormatError(f"The search failed: {said or 'grep failed'}.")
    return matches, [error.removeprefix(GREP_SAYS) for error in errors]


def code_map(action: MapAction, workspace: Workspace, limits: AgentLimits) -> Outcome:
    code = code_of(workspace)
    where = target(workspace, action.repo)
    under = workspace_path(action.path) if action.path else ""
    shown = observation_text(
        "The map", code.map(where.related, under, action.tokens), limits.output_bytes
    )
    return Outcome(
        shown=noted(shown, where),
        summary=f"map {under or '.'}",
        paths=[under] if under else [],
        details={"path": under, "tokens": action.tokens, "repo": action.repo},
    )


def references(action: ReferencesAction, workspace: Workspace, limits: AgentLimits) -> Outcome:
    code = code_of(workspace)
    where = target(workspace, action.repo)
    shown = code.references(action.symbol, code.own_name if where.own_named else where.related)
    return Outcome(
        shown=noted(observation_text("References", shown, limits.output_bytes), where),
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
