"""A pull request reviewed by the agent (`/codex review`, or `review: auto` in codex.yml).

The agent reads the change in a checkout of the PR's head (nothing is pushed) and ends with
findings, each a `path:line` with a severity. A finding is posted as an inline comment only when
its line is one the diff shows on the new side (an added or a context line): GitHub refuses a
comment anywhere else, and a finding the model placed elsewhere is as made up as an `/codex ask`
reference to a line that does not exist. Those are dropped and counted in the summary.

    lines = commentable_lines(diff)           # {path: {line, ...}}, pure
    review = build_review(result, lines, ...) # the body and inline comments to post, pure
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codexbot.commands import MARKER
from codexbot.textutil import cap_output
from workers import checkout
from workers.agent.tools import SEVERITIES
from workers.repofiles import RepoFileError, read_repo_file
from workers.text import close_fences, defuse, verify_references

PROMPT_DIFF_BYTES = 60_000  # of the diff shown to the agent; the rest it reads with its tools
SEVERITY_NAMES = {"P0": "must fix", "P1": "should fix", "P2": "nit"}
_FILE_HEADER = re.compile(r"^\+\+\+ (?:b/(.*)|/dev/null)$")
_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@")
MAX_FILE_BYTES = 5 * 1024 * 1024


def pull_diff(start: checkout.Checkout, base_ref: str) -> str:
    """The pull request's change: its head (checked out) against where it meets the base."""
    base = checkout.merge_base(start, base_ref)
    return checkout.Git(start.path)("diff", "--no-color", "--no-ext-diff", base, "HEAD")


def prompt_diff(diff: str) -> str:
    return cap_output(diff, PROMPT_DIFF_BYTES)[0]


def commentable_lines(diff: str) -> dict[str, set[int]]:
    """For each file of a unified diff, the new file's lines inside its hunks (added or context):
    the lines a review comment on the `RIGHT` side may sit on."""
    lines: dict[str, set[int]] = {}
    path: str | None = None
    number = 0
    for line in diff.splitlines():
        header = _FILE_HEADER.match(line)
        if header:
            path = header.group(1)
            continue
        hunk = _HUNK.match(line)
        if hunk:
            number = int(hunk.group(1))
            continue
        if path is None or line.startswith(("---", "diff ", "index ")) or not line:
            continue
        if line[0] in "+ ":
            lines.setdefault(path, set()).add(number)
            number += 1
    return lines


@dataclass(frozen=True)
class Review:
    body: str
    comments: list[dict[str, Any]] = field(default_factory=list)  # path, line, side, body
    severities: list[str] = field(default_factory=list)  # of each comment
    dropped: int = 0


def counts(severities: list[str]) -> str:
    """`2 findings (P0 1, P2 1)`."""
    seen = Counter(severities)
    noun = "finding" if len(severities) == 1 else "findings"
    detail = ", ".join(f"{s} {seen[s]}" for s in SEVERITIES if seen[s])
    return f"{len(severities)} {noun}" + (f" ({detail})" if detail else "")


def comment_body(severity: str, body: str) -> str:
    text = close_fences(defuse(body.strip()))
    return f"**{severity}** ({SEVERITY_NAMES[severity]}): {text}\n\n{MARKER}\n"


def review_body(summary: str, severities: list[str], dropped: int, task_url: str) -> str:
    lines = ["**codex-bot review**", "", close_fences(defuse(summary.strip() or "No summary."))]
    lines += ["", f"{counts(severities)}; P0 must fix, P1 should fix, P2 nit."]
    if dropped:
        noun = "finding was" if dropped == 1 else "findings were"
        lines += ["", f"{dropped} {noun} left out: not on a line this pull request changes."]
    if task_url:
        lines += ["", f"Details: {task_url}"]
    return "\n".join(lines) + f"\n\n{MARKER}\n"


def build_review(
    summary: str,
    findings: list[dict[str, Any]],
    lines: dict[str, set[int]],
    lines_in: Callable[[str], int | None],
    task_url: str = "",
) -> Review:
    """The review to post: findings on commentable lines, most severe first; the rest dropped.
    References in the summary to files or lines that do not exist are removed, as in answers."""
    placed = [(str(f["path"]).removeprefix("./"), f) for f in findings]
    kept = [(path, f) for path, f in placed if f["line"] in lines.get(path, ())]
    kept.sort(key=lambda pair: SEVERITIES.index(pair[1]["severity"]))
    severities = [f["severity"] for _, f in kept]
    comments = [
        {
            "path": path,
            "line": f["line"],
            "side": "RIGHT",
            "body": comment_body(f["severity"], f["body"]),
        }
        for path, f in kept
    ]
    dropped = len(findings) - len(kept)
    body = review_body(verify_references(summary, lines_in), severities, dropped, task_url)
    return Review(body, comments, severities, dropped)


def line_counter(root: Path) -> Callable[[str], int | None]:
    """Lines of a file of the checkout (None when there is none), read as the bot reads files
    of a checkout: never through a symlink."""

    def lines_in(path: str) -> int | None:
        try:
            data = read_repo_file(root, path, MAX_FILE_BYTES)
        except (RepoFileError, ValueError, OSError):
            return None
        return None if data is None else len(data.splitlines())

    return lines_in
