"""The agent's tools: their JSON schemas (constants), and parsing the model's calls into actions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workers.agent.textcalls import Unreadable, loads_repaired


def _tool(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            },
        },
    }


MAP_TOKENS = 2000  # the map's default budget
MAX_MAP_TOKENS = 8000
SHELL_TOOL: dict[str, Any] = _tool(
    "shell",
    "Run one bash command in the repository root inside the offline sandbox. Returns the exit "
    "code and the combined stdout and stderr (long output is cut in the middle).",
    {
        "command": {"type": "string", "description": "The bash command to run."},
        "timeout": {
            "type": "number",
            "description": "Seconds before the command is killed (capped by the bot).",
        },
    },
    ["command"],
)
REPO_PROPERTY = {
    "type": "string",
    "description": "A related repository named in the task (owner/name), read-only; "
    "default: this one.",
}
# The tools that read another repository when given `repo`, offered only when the task has one.
REPO_TOOLS = frozenset({"read_file", "search", "map", "references"})
READ_FILE_TOOL: dict[str, Any] = _tool(
    "read_file",
    "Read a file of the repository, with line numbers. Give a line range for long files.",
    {
        "path": {"type": "string", "description": "Path relative to the repository root."},
        "start_line": {"type": "integer", "description": "First line (1-based); default 1."},
        "end_line": {"type": "integer", "description": "Last line (inclusive); default: end."},
    },
    ["path"],
)
SEARCH_TOOL: dict[str, Any] = _tool(
    "search",
    "Search the repository's files for an extended regular expression (grep -E). Returns "
    "`path:line:text` for each match, capped.",
    {
        "pattern": {"type": "string", "description": "Extended regular expression."},
        "path": {"type": "string", "description": "File or directory to search; default: all."},
    },
    ["pattern"],
)
MAP_TOOL: dict[str, Any] = _tool(
    "map",
    "The repository's modules, most central first: what each defines (`name:line`), which of "
    "the repository's files it imports and which import it. Cut to a budget; give `path` to "
    "see one directory or file.",
    {
        "path": {"type": "string", "description": "Directory or file to map; default: all."},
        "tokens": {
            "type": "integer",
            "description": f"Budget of the answer in tokens; default {MAP_TOKENS}.",
        },
    },
    [],
)
REFERENCES_TOOL: dict[str, Any] = _tool(
    "references",
    "Where a name (function, class, variable, type) is defined and used across the "
    "repository (and the related ones), as `path:line` with the line.",
    {
        "symbol": {"type": "string", "description": "The name, e.g. `run_task` or `Task.run`."},
    },
    ["symbol"],
)
APPLY_PATCH_TOOL: dict[str, Any] = _tool(
    "apply_patch",
    "Change files with a unified diff (`--- a/path`, `+++ b/path`, `@@` hunks; /dev/null to "
    "create or delete) or with search/replace blocks (a line naming the file, then "
    "`<<<<<<< SEARCH`, the exact old lines, `=======`, the new lines, `>>>>>>> REPLACE`). "
    "Nothing is written unless every hunk applies; a hunk that does not apply is named.",
    {"patch": {"type": "string", "description": "The patch text."}},
    ["patch"],
)
FINISH_TOOL: dict[str, Any] = _tool(
    "finish",
    "End the task once the fix is complete and the tests pass.",
    {
        "title": {
            "type": "string",
            "description": "Commit subject in the imperative mood, under 72 characters.",
        },
        "summary": {
            "type": "string",
            "description": "Two or three sentences: what changed and why.",
        },
        "not_done": {
            "type": "string",
            "description": "Anything you could not do or check; empty when nothing.",
        },
    },
    ["title", "summary"],
)
ANSWER_TOOL: dict[str, Any] = _tool(
    "answer",
    "Post your answer to the question and end the task. Ground it in the code: cite "
    "`path:line` for every claim about the code.",
    {"text": {"type": "string", "description": "The answer, in Markdown."}},
    ["text"],
)

SEVERITIES = ("P0", "P1", "P2")  # must fix, should fix, nit
REVIEW_TOOL: dict[str, Any] = _tool(
    "review",
    "Post your review of the pull request and end the task. Each finding is an inline comment "
    "on a line the pull request changes (a `+` or context line of the diff, numbered as in the "
    "new file); a finding on any other line is dropped.",
    {
        "summary": {"type": "string", "description": "The review's summary, in Markdown."},
        "findings": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "File path, as in the diff."},
                    "line": {"type": "integer", "description": "Line in the new file."},
                    "severity": {
                        "type": "string",
                        "enum": list(SEVERITIES),
                        "description": "P0 must fix, P1 should fix, P2 nit.",
                    },
                    "body": {"type": "string", "description": "The comment, in Markdown."},
                },
                "required": ["path", "line", "severity", "body"],
                "additionalProperties": False,
            },
        },
    },
    ["summary", "findings"],
)

TOOLS: list[dict[str, Any]] = [
    SHELL_TOOL,
    READ_FILE_TOOL,
    SEARCH_TOOL,
    APPLY_PATCH_TOOL,
    FINISH_TOOL,
]
ASK_TOOLS: list[dict[str, Any]] = [SHELL_TOOL, READ_FILE_TOOL, SEARCH_TOOL, ANSWER_TOOL]
REVIEW_TOOLS: list[dict[str, Any]] = [SHELL_TOOL, READ_FILE_TOOL, SEARCH_TOOL, REVIEW_TOOL]
CODE_TOOLS: list[dict[str, Any]] = [MAP_TOOL, REFERENCES_TOOL]


def with_code_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tools with `map` and `references` after `search` (offered when the worker has the
    repository's code to map)."""
    at = tools.index(SEARCH_TOOL) + 1
    return [*tools[:at], *CODE_TOOLS, *tools[at:]]


def with_repo_argument(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tools with the `repo` argument on those that read code, for a task that has related
    repositories: a task without them is never offered an argument it cannot use."""
    return [_with_repo(tool) if tool["function"]["name"] in REPO_TOOLS else tool for tool in tools]


def _with_repo(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool["function"]
    parameters = function["parameters"]
    parameters = {**parameters, "properties": {**parameters["properties"], "repo": REPO_PROPERTY}}
    return {**tool, "function": {**function, "parameters": parameters}}


class FormatError(Exception):
    """A tool call the agent cannot act on; the message is fed back to the model."""


@dataclass(frozen=True)
class ShellAction:
    command: str
    timeout: float | None


@dataclass(frozen=True)
class ReadFileAction:
    path: str
    start_line: int = 1
    end_line: int | None = None
    repo: str = ""  # a related repository; "" for the task's own


@dataclass(frozen=True)
class SearchAction:
    pattern: str
    path: str = "."
    repo: str = ""


@dataclass(frozen=True)
class MapAction:
    path: str = ""
    tokens: int = MAP_TOKENS
    repo: str = ""


@dataclass(frozen=True)
class ReferencesAction:
    symbol: str
    repo: str = ""


@dataclass(frozen=True)
class ApplyPatchAction:
    patch: str


@dataclass(frozen=True)
class FinishAction:
    title: str
    summary: str
    not_done: str = ""


@dataclass(frozen=True)
class AnswerAction:
    text: str


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    severity: str  # one of SEVERITIES
    body: str


@dataclass(frozen=True)
class ReviewAction:
    summary: str
    findings: tuple[Finding, ...] = ()


Submission = FinishAction | AnswerAction | ReviewAction
Action = (
    ShellAction
    | ReadFileAction
    | SearchAction
    | MapAction
    | ReferencesAction
    | ApplyPatchAction
    | Submission
)


def _arguments(name: str, raw: str) -> dict[str, Any]:
    """The call's arguments; a fence, trailing commas or an object sent as a JSON string are
    repaired, since their meaning is plain. Anything else is fed back as it is wrong."""
    try:
        arguments, _ = loads_repaired(raw or "{}")
    except Unreadable as error:
        raise FormatError(
            f"The arguments of your `{name}` call are not valid JSON ({error}). "
            "Send a JSON object matching the tool's schema."
        ) from None
    if not isinstance(arguments, dict):
        raise FormatError(f"The arguments of your `{name}` call must be a JSON object.")
    return arguments


def _required_text(name: str, arguments: dict[str, Any], key: str) -> str:
    value = arguments.get(key)
    if not isinstance(value, str) or not value.strip():
        raise FormatError(f"Your `{name}` call needs a non-empty string argument `{key}`.")
    return value


def _optional_line(name: str, arguments: dict[str, Any], key: str) -> int | None:
    value = arguments.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FormatError(f"`{key}` of a `{name}` call must be a positive whole number.")
    return value


def parse_shell(arguments: dict[str, Any]) -> ShellAction:
    command = _required_text("shell", arguments, "command")
    timeout = arguments.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise FormatError("The `timeout` of a `shell` call must be a positive number of seconds.")
    return ShellAction(command=command, timeout=float(timeout) if timeout is not None else None)


def _optional_string(name: str, arguments: dict[str, Any], key: str, default: str = "") -> str:
    value = arguments.get(key) or default
    if not isinstance(value, str):
        raise FormatError(f"`{key}` of a `{name}` call must be a string.")
    return value.strip() or default


def parse_read_file(arguments: dict[str, Any]) -> ReadFileAction:
    path = _required_text("read_file", arguments, "path")
    start = _optional_line("read_file", arguments, "start_line") or 1
    end = _optional_line("read_file", arguments, "end_line")
    if end is not None and end < start:
        raise FormatError("`end_line` must not be before `start_line`.")
    repo = _optional_string("read_file", arguments, "repo")
    return ReadFileAction(path=path, start_line=start, end_line=end, repo=repo)


def parse_search(arguments: dict[str, Any]) -> SearchAction:
    pattern = _required_text("search", arguments, "pattern")
    path = _optional_string("search", arguments, "path", ".")
    return SearchAction(pattern, path, _optional_string("search", arguments, "repo"))


def parse_map(arguments: dict[str, Any]) -> MapAction:
    tokens = _optional_line("map", arguments, "tokens") or MAP_TOKENS
    return MapAction(
        path=_optional_string("map", arguments, "path").strip("/").removeprefix("./"),
        tokens=min(tokens, MAX_MAP_TOKENS),
        repo=_optional_string("map", arguments, "repo"),
    )


def parse_references(arguments: dict[str, Any]) -> ReferencesAction:
    symbol = _required_text("references", arguments, "symbol").strip().strip("`").strip("()")
    if len(symbol) > 200 or not all(c.isalnum() or c in "_.$" for c in symbol):
        raise FormatError("`symbol` must be one name, like `run_task` or `Task.run`.")
    return ReferencesAction(symbol, _optional_string("references", arguments, "repo"))


def parse_apply_patch(arguments: dict[str, Any]) -> ApplyPatchAction:
    return ApplyPatchAction(patch=_required_text("apply_patch", arguments, "patch"))


def _optional_text(arguments: dict[str, Any], key: str) -> str:
    value = arguments.get(key)
    return value.strip() if isinstance(value, str) else ""


def parse_finish(arguments: dict[str, Any]) -> FinishAction:
    """Never refused: a missing title or summary is written by the bot from the change, since
    the work is done and a format slip at the last step must not throw it away."""
    title = next(iter(_optional_text(arguments, "title").splitlines()), "").strip()
    return FinishAction(
        title=title,
        summary=_optional_text(arguments, "summary"),
        not_done=_optional_text(arguments, "not_done"),
    )


def parse_answer(arguments: dict[str, Any]) -> AnswerAction:
    return AnswerAction(text=_required_text("answer", arguments, "text").strip())


def _finding(item: Any) -> Finding:
    if not isinstance(item, dict):
        raise FormatError("Each finding of a `review` call must be an object.")
    path, line = _required_text("review", item, "path").strip(), item.get("line")
    if isinstance(line, bool) or not isinstance(line, int) or line < 1:
        raise FormatError(f"The finding on `{path}` needs a positive line number `line`.")
    severity = str(item.get("severity") or "").strip().upper()
    if severity not in SEVERITIES:
        raise FormatError(f"The finding on `{path}:{line}` needs a severity: P0, P1 or P2.")
    return Finding(path, line, severity, _required_text("review", item, "body").strip())


def parse_review(arguments: dict[str, Any]) -> ReviewAction:
    findings = arguments.get("findings") or []
    if not isinstance(findings, list):
        raise FormatError("`findings` of a `review` call must be a list.")
    summary = _optional_text(arguments, "summary")
    if not summary and not findings:
        raise FormatError("Your `review` call needs a `summary` or at least one finding.")
    return ReviewAction(summary=summary, findings=tuple(_finding(item) for item in findings))


PARSERS: dict[str, Callable[[dict[str, Any]], Action]] = {
    "shell": parse_shell,
    "read_file": parse_read_file,
    "search": parse_search,
    "map": parse_map,
    "references": parse_references,
    "apply_patch": parse_apply_patch,
    "finish": parse_finish,
    "answer": parse_answer,
    "review": parse_review,
}


def tool_names(tools: list[dict[str, Any]]) -> list[str]:
    return [tool["function"]["name"] for tool in tools]


def parse_action(name: str, raw_arguments: str, tools: list[dict[str, Any]] = TOOLS) -> Action:
    """Turns one tool call into an action, or raises FormatError saying what to fix."""
    offered = tool_names(tools)
    if name not in offered:
        known = ", ".join(f"`{tool}`" for tool in offered)
        raise FormatError(f"There is no tool named `{name}`. The tools are {known}.")
    return PARSERS[name](_arguments(name, raw_arguments))
