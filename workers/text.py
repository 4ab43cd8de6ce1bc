"""Text the bot writes: branch names, commit messages, PR bodies, comments.

Pure functions: data in, string out, no I/O. Table tests in tests/test_text.py.
"""

from __future__ import annotations

import re
import textwrap
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from codexbot.commands import MARKER
from codexbot.textutil import backticks_beyond, fence

SUBJECT_LIMIT = 72
BODY_WIDTH = 72


@dataclass(frozen=True)
class TestRun:
    command: str
    exit_code: int
    tail: str = ""

    @property
    def passed(self) -> bool:
        return self.exit_code == 0


# Every keyword GitHub closes an issue with, before `#N`, `GH-N`, `owner/repo#N` or an issue URL.
CLOSING_REFERENCE = re.compile(
    r"(?i)\b(close[sd]?|fix(?:e[sd])?|resolve[sd]?)(\s*:?\s*)"
    r"((?:[\w.-]+/[\w.-]+)?#(\d+)|gh-(\d+)|https?://\S+?/(?:issues|pull)/(\d+))"
)
MENTION = re.compile(r"(?<![\w@])@(?=[A-Za-z0-9])")
HTML_COMMENT_START = re.compile(r"<!--")
ZWJ = "\u200d"  # zero-width joiner: invisible, and GitHub no longer sees a mention or a keyword


def defuse(text: str, own_issue: int | None = None) -> str:
    """Text from the model or a repository, unable to close issues, ping people or hide text.

    A closing keyword before a reference to anything but ``own_issue`` (in this repository) is
    split from it and the `#` from the number by a zero-width joiner, so GitHub acts on neither;
    so is the `@` of a mention (`@team`, `@org/team`) and an HTML comment's `<!--`.
    """

    def keep_own(match: re.Match[str]) -> str:
        keyword, gap, reference = match.group(1), match.group(2), match.group(3)
        if own_issue is not None and reference == f"#{own_issue}":
            return match.group(0)
        reference = re.sub(r"(#|-)(?=\d)", rf"\1{ZWJ}", reference, count=1)
        return f"{keyword}{ZWJ}{gap or ' '}{reference}"

    text = CLOSING_REFERENCE.sub(keep_own, text)
    text = MENTION.sub("@" + ZWJ, text)
    return HTML_COMMENT_START.sub("<" + ZWJ + "!--", text)


def code_span(text: str) -> str:
    """``text`` as one inline code span that nothing in it can end or break into lines.

    Control characters (a newline in a file name) are shown escaped, as `\\x0a`; the span's
    backtick run is longer than any inside it.
    """
    shown = re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", defuse(text))
    ticks = backticks_beyond(shown, 1)
    pad = " " if shown.startswith("`") or shown.endswith("`") or not shown.strip() else ""
    return f"{ticks}{pad}{shown}{pad}{ticks}"


_FENCE_LINE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def close_fences(text: str) -> str:
    """Markdown with a code fence left open closed at its end, so it cannot swallow what follows."""
    opened: str | None = None
    for line in text.splitlines():
        opener = _FENCE_LINE.match(line)
        if opener is None:
            continue
        mark = opener.group(1)
        if opened is None:
            opened = mark
        elif mark[0] == opened[0] and len(mark) >= len(opened) and not line.strip()[len(mark) :]:
            opened = None
    return text if opened is None else f"{text.rstrip()}\n{opened}"


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


BRANCH_PREFIX = "codex/"  # every branch the bot pushes to starts so; it pushes to no other


def branch_name(issue_number: int, title: str) -> str:
    return f"{BRANCH_PREFIX}issue-{issue_number}-{slugify(title)}"


def pull_branch_name(pull_number: int) -> str:
    """The bot's branch for work on a pull request whose head is not its own."""
    return f"{BRANCH_PREFIX}pr-{pull_number}"


def commit_subject(subject: str, limit: int = SUBJECT_LIMIT) -> str:
    """One line, no trailing period, capitalised, at most ``limit`` characters (cut at a word)."""
    line = " ".join(CLOSING_REFERENCE.sub("", subject.replace("`", "")).split())
    line = defuse(line).rstrip(".!;:, ").strip()
    if not line:
        return "Update code"
    line = line[0].upper() + line[1:]
    if len(line) <= limit:
        return line
    cut = line[: limit + 1].rsplit(" ", 1)[0]
    if len(cut) > limit or len(cut) < limit // 2:
        cut = line[:limit]
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


CONVENTIONAL = re.compile(
    r"^(feat|fix|docs|style|refactor|perf|test|tests|build|ci|chore|revert)(\([^)]{1,40}\))?!?: "
)
COMPONENT = re.compile(r"^([A-Za-z0-9_.\-/]{1,40}): \S")
PLAIN_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,39}")
REVERT_OR_MERGE = re.compile(r"^(Merge |Revert |fixup! |squash! )")


@dataclass(frozen=True)
class Conventions:
    """How a repository writes commit subjects, learned from its recent history."""

    style: Literal["plain", "component", "conventional"] = "plain"
    capitalise: bool = True
    scoped: bool = False  # conventional commits with a `(scope)`


def learn_conventions(subjects: Iterable[str], limit: int = 50) -> Conventions:
    """The majority style of the last ``limit`` subjects (merges and reverts ignored)."""
    usable = [
        s.strip() for s in list(subjects)[:limit] if s.strip() and not REVERT_OR_MERGE.match(s)
    ]
    if not usable:
        return Conventions()
    conventional = [m for s in usable if (m := CONVENTIONAL.match(s))]
    component = [s for s in usable if not CONVENTIONAL.match(s) and COMPONENT.match(s)]
    half = len(usable) / 2
    if len(conventional) > half:
        style: Literal["plain", "component", "conventional"] = "conventional"
    elif len(component) > half:
        style = "component"
    else:
        style = "plain"
    rests = [_without_prefix(s) for s in usable]
    letters = [r[0] for r in rests if r and r[0].isalpha()]
    upper = sum(1 for c in letters if c.isupper())
    return Conventions(
        style=style,
        capitalise=upper * 2 >= len(letters) if letters else True,
        scoped=sum(1 for m in conventional if m.group(2)) * 2 > len(conventional),
    )


def _without_prefix(subject: str) -> str:
    match = CONVENTIONAL.match(subject)
    if match:
        return subject[match.end() :]
    match = COMPONENT.match(subject)
    return subject[match.end() - 1 :] if match else subject


def component_for(changed_files: Sequence[str]) -> str | None:
    """The part of the tree a change is in: the most common top directory, or a root file's stem."""
    if not changed_files:
        return None
    heads = []
    for path in changed_files:
        parts = path.split("/")
        heads.append(parts[0] if len(parts) > 1 else parts[0].rsplit(".", 1)[0])
    head, _ = Counter(heads).most_common(1)[0]
    # A directory's name is data: only a plain name becomes a prefix (never `Closes #2: ...`).
    return head if PLAIN_COMPONENT.fullmatch(head) else None


def conventional_subject(
    subject: str, conventions: Conventions, *, component: str | None = None, kind: str = "fix"
) -> str:
    """The model's subject in the repository's style, within the subject limit."""
    rest = " ".join(_without_prefix(" ".join(subject.split())).split()).rstrip(".!;:, ")
    prefix = ""
    if conventions.style == "conventional":
        scope = f"({component})" if conventions.scoped and component else ""
        prefix = f"{kind}{scope}: "
    elif conventions.style == "component" and component:
        prefix = f"{component}: "
    rest = commit_subject(rest, SUBJECT_LIMIT - len(prefix))
    if not conventions.capitalise and not rest[:2].isupper():
        rest = rest[0].lower() + rest[1:]
    return prefix + rest


def co_author_trailer(name: str, email: str) -> str:
    """A ``Co-authored-by`` trailer; newlines and angle brackets cannot break out of it."""
    clean_name = re.sub(r"[\r\n<>]", "", name).strip() or "unknown"
    clean_email = re.sub(r"[\s<>]", "", email)
    return f"Co-authored-by: {clean_name} <{clean_email}>"


def noreply_email(login: str, user_id: int) -> str:
    return f"{user_id}+{login}@users.noreply.github.com"


def commit_message(
    subject: str,
    body: str,
    issue_number: int | None,
    *,
    conventions: Conventions | None = None,
    component: str | None = None,
    co_author: str | None = None,
) -> str:
    """Subject, blank line, wrapped body saying what and why, ``Fixes #N``, optional trailer.

    ``co_author`` is a finished trailer from ``co_author_trailer``.
    """
    body = re.sub(rf"(?im)^\s*(fixes|closes|resolves)\s+#{issue_number}\s*$", "", body)
    body = re.sub(r"(?im)^\s*co-authored-by:.*$", "", body)
    body = defuse(body, issue_number)
    if conventions is None:
        line = commit_subject(subject)
    else:
        line = conventional_subject(subject, conventions, component=component)
    parts = [line]
    wrapped = wrap_paragraphs(body)
    if wrapped:
        parts.append(wrapped)
    if issue_number is not None:
        parts.append(f"Fixes #{issue_number}")
    if co_author:
        parts.append(co_author)
    return "\n\n".join(parts) + "\n"


def _test_line(label: str, run: TestRun | None) -> str:
    if run is None:
        return f"- {label}: not run (no test command found)"
    verdict = "passed" if run.passed else "failed"
    return f"- {label}: {verdict} (exit code {run.exit_code})"


STOP_REASONS = {
    "limits_exceeded": "the agent reached a limit",
    "stuck": "the agent was stuck repeating itself",
    "stopped": "the task was stopped",
    "error": "the agent stopped with an error",
}


def draft_line(
    tests_after: TestRun | None, status: str = "finished", reason: str = ""
) -> str | None:
    """The PR's first line when it is a draft, or None when it is ready for review."""
    if status != "finished":
        why = STOP_REASONS.get(status, f"the agent ended with status {status}")
        detail = f": {defuse(reason.strip())}" if reason.strip() else ""
        return f"**Draft: {why}{detail}. The work so far is on this branch.**"
    if tests_after is None:
        return "**Draft: no test command was found, so nothing proves this change.**"
    if not tests_after.passed:
        return "**Draft: the tests still fail after this change.**"
    return None


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
    status: str = "finished",
    reason: str = "",
    pre_existing: Sequence[str] = (),
    task_url: str | None = None,
    template: str | None = None,
    tries: str = "",
) -> str:
    """The PR's body; with the repository's pull-request ``template`` (from its default branch),
    our summary fills the template's first section and our details follow the template.
    ``tries``: the table `tries_section` writes, when several tries ran."""
    lines: list[str] = []
    first = draft_line(tests_after, status, reason)
    if first:
        lines += [first, ""]
    summary = close_fences(defuse(summary, issue_number)).strip() or "(the agent gave no summary)"
    notes = [" ".join(defuse(note, issue_number).split()) for note in notes]
    if template is not None and template.strip() and len(template) <= MAX_TEMPLATE_CHARS:
        lines += [fill_template(template, summary), "", "---", ""]
    else:
        lines += ["## Summary", "", summary, ""]
    lines += ["## Changes", ""]
    lines += [f"- {code_span(path)}" for path in changed_files] or ["- (none)"]
    lines += ["", "## Tests", ""]
    if tests_before or tests_after:
        command = (tests_after or tests_before).command  # type: ignore[union-attr]
        lines += [f"Command: {code_span(command)}", ""]
    lines += [_test_line("Before", tests_before), _test_line("After", tests_after)]
    if pre_existing:
        shown = ", ".join(code_span(name) for name in list(pre_existing)[:20])
        more = f" and {len(pre_existing) - 20} more" if len(pre_existing) > 20 else ""
        lines += ["", f"Failing before this change too (pre-existing): {shown}{more}."]
    for label, run in (("before", tests_before), ("after", tests_after)):
        if run is not None and run.tail:
            lines += ["", f"Last lines {label} the change:", "", fence(run.tail.rstrip(), "")]
    if notes:
        lines += ["", "## Could not do", ""] + [f"- {note}" for note in notes]
    if tries:
        lines += ["", tries.rstrip()]
    footer = f"<sub>codex-bot: {steps} steps, {tokens} tokens"
    footer += f"; [task log]({task_url})" if task_url else ""
    lines += ["", f"Fixes #{issue_number}", "", footer + ".</sub>", MARKER]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class TryRow:
    """One try of a task, as the pull request's table shows it (every cell worded by the bot)."""

    number: int
    outcome: str  # "passed", "failed", "no tests", "stopped", "no change", "error"
    failing: int | None  # failing tests after it; None when its tests did not run
    added: int
    removed: int
    steps: int
    tokens: int
    link: str = ""  # its trajectory's page


def tries_section(rows: Sequence[TryRow], chosen: int, green_first: int | None = None) -> str:
    """The pull request's table of a task's tries, the chosen one marked; ``green_first``: the
    try that passed the tests while the others still ran, and stopped them."""
    lines = [
        "## Tries",
        "",
        f"{len(rows)} tries ran in parallel and the tests chose try {chosen}: passing tests "
        "first, then fewer failing tests, then the smaller diff, then fewer steps.",
    ]
    if green_first is not None:
        lines += [
            "",
            f"Try {green_first} passed the tests first, so the tries still running were stopped "
            "(`attempts_stop_on_green`).",
        ]
    lines += [
        "",
        "| Try | Outcome | Failing tests | Diff | Steps | Tokens | Trajectory |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        mark = f"**{row.number}** (chosen)" if row.number == chosen else str(row.number)
        failing = "-" if row.failing is None else str(row.failing)
        link = f"[log]({row.link})" if row.link else "-"
        lines.append(
            f"| {mark} | {row.outcome} | {failing} | +{row.added} -{row.removed} | {row.steps} "
            f"| {row.tokens} | {link} |"
        )
    lines += ["", "Another try's change: `/codex fix --use-attempt N` publishes try N's instead."]
    return "\n".join(lines) + "\n"


MAX_TEMPLATE_CHARS = 20_000  # GitHub takes 65,536 for a whole body; ours needs room too
TEMPLATE_HEADING = re.compile(r"^ {0,3}#{1,6}\s")
FENCE_LINE = re.compile(r"^ {0,3}(```|~~~)")


def fill_template(template: str, summary: str) -> str:
    """The template with ``summary`` under its first heading (its own text there, often a
    comment asking for a description, kept after it); without a heading, the summary first.
    Every other heading and checklist of the template is kept as it is."""
    lines = template.replace("\r\n", "\n").strip("\n").split("\n")
    in_fence = False
    for index, line in enumerate(lines):
        if FENCE_LINE.match(line):
            in_fence = not in_fence
        elif not in_fence and TEMPLATE_HEADING.match(line):
            return "\n".join([*lines[: index + 1], "", summary, "", *lines[index + 1 :]])
    return "\n".join([summary, "", *lines])


# `path:line`, `path:a-b`, or `owner/name:path:line` for a file of a related repository.
REFERENCE = re.compile(
    r"`?(?<![\w/.-])((?:[\w.-]+/[\w.-]+:)?(?:[\w.-]+/)*[\w.-]+\.[A-Za-z0-9]{1,10}):(\d+)"
    r"(?:-(\d+))?`?"
)


def verify_references(answer: str, lines_in: Callable[[str], int | None]) -> str:
    """Removes each ``path:line`` (or ``path:a-b``) reference whose file or line does not exist.

    ``lines_in(path)`` returns the number of lines in the file, or None when there is no such file;
    a reference into another repository reaches it as ``owner/name:path``.
    """

    def check(match: re.Match[str]) -> str:
        path, first = match.group(1), int(match.group(2))
        last = int(match.group(3) or first)
        total = lines_in(path)
        if total is None or not 1 <= first <= last <= total:
            return ""
        return match.group(0)

    checked = REFERENCE.sub(check, answer)
    checked = re.sub(r"\(\s*\)|\[\s*\]", "", checked)  # brackets left empty by a removal
    return re.sub(r"[ \t]{2,}", " ", re.sub(r"[ \t]+([,.;:)])", r"\1", checked)).strip()


def tail_lines(text: str, lines: int = 15, limit: int = 2000) -> str:
    tail = "\n".join(text.rstrip().splitlines()[-lines:])
    return tail[-limit:]


def ci_rounds_over(rounds: int) -> str:
    """What the bot says when its pull request's CI fails after its last round of fixes."""
    noun = "round" if rounds == 1 else "rounds"
    return (
        f"The CI still fails after {rounds} {noun} of fixes by codex-bot, the most this "
        "repository's `fix_ci_rounds` allows, so I stop here. Over to you: a `/codex fix` "
        "with instructions starts a new task."
    )


def lost_worker_note(attempt: int, attempts: int, how: str = "lost") -> str:
    """The progress comment's line when a task runs again because its worker was lost (or
    "stopped": a restart that outlasted its grace period)."""
    return f"The worker running this was {how}; retrying, attempt {attempt} of {attempts}."


def lost_worker_reason(attempts: int) -> str:
    """Why a task failed after its worker was lost on every attempt."""
    return (
        f"the worker running it was lost on each of its {attempts} attempts (a crash, an "
        "out-of-memory kill or a lost host); ask again to start over"
    )
