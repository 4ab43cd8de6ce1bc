"""Reading `/codex` commands out of comment text. Pure functions; table tests in tests/.

A command is a line that starts with `/codex` (leading spaces allowed, case-insensitive), outside
fenced code blocks, `>` quotes and HTML comments (`<!-- ... -->`, which GitHub does not show; one
left open hides the rest of the text). Only the first command in a text counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

COMMANDS = {
    "fix": "`/codex fix [--attempts N] [instructions]`: work on this issue or pull request and "
    "push the result (N tries in parallel, the tests choose; `--use-attempt K` publishes try K "
    "of the last such task instead)",
    "ask": (
        "`/codex ask [--repo owner/other] <question>`: answer a question about the code, "
        "without changing it (`--repo` also reads another repository of this installation)"
    ),
    "review": "`/codex review [focus]`: review this pull request, with inline comments",
    "stop": "`/codex stop`: stop the task running for this issue or pull request",
    "help": "`/codex help`: show this list",
}
CommandName = Literal["fix", "ask", "review", "stop", "help", "unknown"]
_NAMES: dict[str, CommandName] = {
    "fix": "fix",
    "ask": "ask",
    "review": "review",
    "stop": "stop",
    "help": "help",
}
MARKER = "<!-- codex-bot -->"  # hidden in every comment the bot posts, so it never answers itself
_COMMAND_LINE = re.compile(r"^ {0,3}/codex(?:\s+(?P<word>\S+))?(?:[ \t]+(?P<rest>.*))?$", re.I)
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CLOSED_COMMENT = re.compile(r"<!--.*?-->")


@dataclass(frozen=True)
class Command:
    name: CommandName  # one of COMMANDS, or "unknown"
    argument: str  # what follows the command word on its line, and the lines after it
    word: str  # the command word as written (for "unknown")

    @property
    def known(self) -> bool:
        return self.name in COMMANDS


def _live_lines(text: str) -> list[tuple[int, str]]:
    """Lines outside fenced code blocks, quotes and HTML comments, with their index."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    live: list[tuple[int, str]] = []
    fence: str | None = None
    in_comment = False
    for index, line in enumerate(lines):
        if in_comment:
            in_comment = "-->" not in line
            continue
        opener = _FENCE.match(line)
        if fence is not None:
            if opener and opener.group(1)[0] == fence[0] and len(opener.group(1)) >= len(fence):
                fence = None
            continue
        if opener:
            fence = opener.group(1)
            continue
        if line.lstrip().startswith(">"):
            continue
        shown, opens, _ = _CLOSED_COMMENT.sub("", line).partition("<!--")
        in_comment = bool(opens)
        live.append((index, shown))
    return live


def parse_command(text: str | None) -> Command | None:
    """The first `/codex` command in ``text``, or None when there is none."""
    if not text:
        return None
    for _, line in _live_lines(text):
        match = _COMMAND_LINE.match(line.rstrip())
        if not match:
            continue
        word = (match.group("word") or "").strip()
        name = _NAMES.get(word.lower(), "help" if not word else "unknown")
        argument = (match.group("rest") or "").strip()
        return Command(name=name, argument=argument[:4000], word=word[:40])
    return None


_FIX_OPTION = re.compile(r"^--(?P<name>attempts|use-attempt)(?:=|\s+)(?P<value>\S+)\s*", re.I)


@dataclass(frozen=True)
class FixOptions:
    """The options a `/codex fix` starts with (`--attempts N`, `--use-attempt K`), and the rest
    of its text: the maintainer's instructions."""

    attempts: int | None = None
    use_attempt: int | None = None
    text: str = ""
    problem: str = ""  # an option with a value that is not a whole number above 0


def fix_options(argument: str) -> FixOptions:
    """Options at the start of a fix's ``argument``, in any order; the text after them."""
    found: dict[str, int] = {}
    rest = argument.strip()
    while match := _FIX_OPTION.match(rest):
        name, value = match.group("name").lower(), match.group("value")
        if not value.isdigit() or int(value) < 1 or len(value) > 6:
            return FixOptions(text=rest, problem=f"`--{name}` takes a whole number above 0")
        found[name] = int(value)
        rest = rest[match.end() :]
    return FixOptions(found.get("attempts"), found.get("use-attempt"), rest.strip())


_REPO_OPTION = re.compile(
    r"^--repo(?:=|\s+)(?P<name>[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100})(?:\s+|$)"
)


def repo_options(argument: str) -> tuple[tuple[str, ...], str]:
    """The `--repo owner/name` options at the start of a command's argument, and the rest."""
    names: list[str] = []
    rest = argument.strip()
    while match := _REPO_OPTION.match(rest):
        names.append(match.group("name"))
        rest = rest[match.end() :].lstrip()
    return tuple(names), rest


def help_text() -> str:
    return "\n".join(f"- {line}" for line in COMMANDS.values())
