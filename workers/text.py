"""Text the bot writes: branch names, commit messages, PR bodies, comments.

Pure functions: data in, string out, no I/O. Table tests in tests/test_text.py.
"""

from __future__ import annotations

import re
import textwrap
import unicodedata
from dataclasses import dataclass

SUBJECT_LIMIT = 72
BODY_WIDTH = 72
MARKER = "<!-- codex-bot -->"  # hidden in every comment we post, so we never answer ourselves


@dataclass(frozen=True)
class TestRun:
    command: str
    exit_code: int
    tail: str = ""

    @property
    def passed(self) -> bool:
        return self.exit_code == 0


def slugify(text: str, limit: int = 40) -> str:
    """Lower-case ASCII words joined by hyphens, cut at a word boundary."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    slug = ""
    for word in words:
        candidate = f"{slug}-{word}" if slug else word
        if len(candidate) > limit:
            break
        slug = candidate
    return slug or (words[0][:limit] if words else "task")


def branch_name(issue_number: int, title: str) -> str:
    return f"codex/issue-{issue_number}-{slugify(title)}"


def commit_subject(subject: str) -> str:
    """One line, no trailing period, capitalised, at most 72 characters (cut at a word)."""
    line = " ".join(subject.split())
    line = line.rstrip(".!;:, ").strip()
    if not line:
        return "Update code"
    line = line[0].upper() + line[1:]
    if len(line) <= SUBJECT_LIMIT:
        return line
    cut = line[: SUBJECT_LIMIT + 1].rsplit(" ", 1)[0]
    if len(cut) > SUBJECT_LIMIT or len(cut) < SUBJECT_LIMIT // 2:
        cut = line[:SUBJECT_LIMIT]
    return cut.rstrip(".!;:, ")


def wrap_paragraphs(text: str, width: int = BODY_WIDTH) -> str:
    """Re-wrap prose paragraphs at ``width``; keep list items, code and long tokens intact."""
    out: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text.strip()):
        lines = paragraph.splitlines()
        if any(line.startswith(("    ", "\t", "```")) for line in lines):
            out.append(paragraph.rstrip())
            continue
        items = re.split(r"\n(?=\s*(?:[-*]|\d+\.)\s)", paragraph)
        wrapped = []
        for item in items:
            bullet = re.match(r"\s*((?:[-*]|\d+\.)\s+)", item)
            indent = " " * len(bullet.group(1)) if bullet else ""
            wrapped.append(
                textwrap.fill(
                    " ".join(item.split()),
                    width=width,
                    subsequent_indent=indent,
                    break_long_words=False,
                    break_on_hyphens=False,
                )
            )
        out.append("\n".join(wrapped))
    return "\n\n".join(part for part in out if part)


def commit_message(subject: str, body: str, issue_number: int) -> str:
    """Subject, blank line, wrapped body saying what and why, and the closing ``Fixes #N``."""
    body = re.sub(rf"(?im)^\s*(fixes|closes|resolves)\s+#{issue_number}\s*$", "", body)
    parts = [commit_subject(subject)]
    wrapped = wrap_paragraphs(body)
    if wrapped:
        parts.append(wrapped)
    parts.append(f"Fixes #{issue_number}")
    return "\n\n".join(parts) + "\n"


def _fenced(text: str) -> str:
    fence = "`" * max(3, max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence}\n{text.rstrip()}\n{fence}"


def _test_line(label: str, run: TestRun | None) -> str:
    if run is None:
        return f"- {label}: not run (no test command found)"
    verdict = "passed" if run.passed else "failed"
    return f"- {label}: {verdict} (exit code {run.exit_code})"


def pr_body(
    *,
    issue_number: int,
    summary: str,
    changed_files: list[str],
    tests_before: TestRun | None,
    tests_after: TestRun | None,
    steps: int,
    tokens: int,
    notes: list[str] | tuple[str, ...] = (),
) -> str:
    lines: list[str] = []
    if tests_after is None:
        lines += ["**Draft: no test command was found, so nothing proves this change.**", ""]
    elif not tests_after.passed:
        lines += ["**Draft: the tests still fail after this change.**", ""]
    lines += ["## Summary", "", summary.strip() or "(the agent gave no summary)", ""]
    lines += ["## Changes", ""]
    lines += [f"- `{path}`" for path in changed_files] or ["- (none)"]
    lines += ["", "## Tests", ""]
    if tests_before or tests_after:
        command = (tests_after or tests_before).command  # type: ignore[union-attr]
        lines += [f"Command: `{command}`", ""]
    lines += [_test_line("Before", tests_before), _test_line("After", tests_after)]
    if tests_after is not None and tests_after.tail:
        lines += ["", "Last lines after the change:", "", _fenced(tests_after.tail)]
    if notes:
        lines += ["", "## Could not do", ""] + [f"- {note}" for note in notes]
    lines += [
        "",
        f"Fixes #{issue_number}",
        "",
        f"<sub>codex-bot: {steps} steps, {tokens} tokens.</sub>",
        MARKER,
    ]
    return "\n".join(lines) + "\n"


def pr_opened_comment(pr_url: str, tests_after: TestRun | None) -> str:
    if tests_after is None:
        state = "No test command was found; the PR is a draft."
    elif tests_after.passed:
        state = f"The tests pass (`{tests_after.command}`)."
    else:
        state = f"The tests still fail (`{tests_after.command}`); the PR is a draft."
    return f"I opened {pr_url} for this issue. {state}\n\n{MARKER}\n"


def failure_comment(reason: str, task_id: str) -> str:
    return (
        f"I could not finish this task: {reason.strip()}\n\n"
        f"Task `{task_id}`. Nothing was pushed.\n\n{MARKER}\n"
    )


def tail_lines(text: str, lines: int = 15, limit: int = 2000) -> str:
    tail = "\n".join(text.rstrip().splitlines()[-lines:])
    return tail[-limit:]
