"""The agent's tools: their JSON schemas, and parsing the model's calls into checked actions."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SHELL_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "shell",
        "description": (
            "Run one bash command in the repository root inside the offline sandbox. Returns the "
            "exit code and the combined stdout and stderr (long output is cut in the middle)."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "The bash command to run."},
                "timeout": {
                    "type": "number",
                    "description": "Seconds before the command is killed (capped by the bot).",
                },
            },
            "required": ["command"],
            "additionalProperties": False,
        },
    },
}

FINISH_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "finish",
        "description": "End the task once the fix is complete and the tests pass.",
        "parameters": {
            "type": "object",
            "properties": {
                "title": {
                    "type": "string",
                    "description": "Commit subject in the imperative mood, under 72 characters.",
                },
                "summary": {
                    "type": "string",
                    "description": "Two or three sentences: what changed and why.",
                },
            },
            "required": ["title", "summary"],
            "additionalProperties": False,
        },
    },
}

TOOLS: list[dict[str, Any]] = [SHELL_TOOL, FINISH_TOOL]


class FormatError(Exception):
    """A tool call the agent cannot act on; the message is fed back to the model."""


@dataclass(frozen=True)
class ShellAction:
    command: str
    timeout: float | None


@dataclass(frozen=True)
class FinishAction:
    title: str
    summary: str


def _arguments(name: str, raw: str) -> dict[str, Any]:
    try:
        arguments = json.loads(raw or "{}")
    except json.JSONDecodeError as error:
        raise FormatError(
            f"The arguments of your `{name}` call are not valid JSON ({error.msg} at position "
            f"{error.pos}). Send a JSON object matching the tool's schema."
        ) from None
    if not isinstance(arguments, dict):
        raise FormatError(f"The arguments of your `{name}` call must be a JSON object.")
    return arguments


def _required_text(name: str, arguments: dict[str, Any], key: str) -> str:
    value = arguments.get(key)
    if not isinstance(value, str) or not value.strip():
        raise FormatError(f"Your `{name}` call needs a non-empty string argument `{key}`.")
    return value


def parse_shell(arguments: dict[str, Any]) -> ShellAction:
    command = _required_text("shell", arguments, "command")
    timeout = arguments.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise FormatError("The `timeout` of a `shell` call must be a positive number of seconds.")
    return ShellAction(command=command, timeout=float(timeout) if timeout is not None else None)


def parse_finish(arguments: dict[str, Any]) -> FinishAction:
    title = _required_text("finish", arguments, "title").strip().splitlines()[0].strip()
    summary = _required_text("finish", arguments, "summary").strip()
    return FinishAction(title=title, summary=summary)


PARSERS: dict[str, Callable[[dict[str, Any]], ShellAction | FinishAction]] = {
    "shell": parse_shell,
    "finish": parse_finish,
}


def parse_action(name: str, raw_arguments: str) -> ShellAction | FinishAction:
    """Turns one tool call into an action, or raises FormatError saying what to fix."""
    parser = PARSERS.get(name)
    if parser is None:
        known = ", ".join(f"`{tool}`" for tool in PARSERS)
        raise FormatError(f"There is no tool named `{name}`. The tools are {known}.")
    return parser(_arguments(name, raw_arguments))
