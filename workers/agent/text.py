"""Pure text builders for the agent: prompts, fences for untrusted text, capped tool output."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from string import Template

# Text a human reading the issue on GitHub does not see, but a model would: HTML comments (an
# unterminated one hides the rest of the document), zero-width and bidirectional control characters,
# Unicode "tag" characters (invisible ASCII look-alikes), and C0/C1 control characters other than
# tab and newline (terminal escapes).
HTML_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.DOTALL)
INVISIBLE = re.compile(
    "["
    "\u00ad"  # soft hyphen
    "\u061c"  # arabic letter mark
    "\u180e"  # mongolian vowel separator
    "\u200b-\u200f"  # zero-width space/non-joiner/joiner, LRM, RLM
    "\u202a-\u202e"  # bidi embeddings and overrides
    "\u2060-\u2064"  # word joiner, invisible operators
    "\u2066-\u2069"  # bidi isolates
    "\ufeff"  # zero-width no-break space / BOM
    "\U000e0000-\U000e007f"  # tag characters
    "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"  # control characters except \t \n \r
    "]"
)
MIN_FENCE = 3
CUT_MARK = "\n[... {cut} bytes cut from the middle of this output ...]\n"


@dataclass(frozen=True)
class AgentTask:
    """What the agent is asked to do. Title and body are untrusted: the issue author wrote them."""

    repo: str
    issue_number: int
    issue_title: str
    issue_body: str
    test_command: str | None = None


def strip_hidden_text(text: str) -> str:
    """Removes what GitHub does not render: HTML comments, invisible and control characters."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return INVISIBLE.sub("", HTML_COMMENT.sub("", text))


def fence(text: str, info: str = "text") -> str:
    """Wraps text in a backtick fence longer than any backtick run inside, so it cannot close it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    marks = "`" * max(MIN_FENCE, longest + 1)
    return f"{marks}{info}\n{text}\n{marks}"


def cap_output(output: str, limit: int) -> tuple[str, bool]:
    """Keeps the head and tail of ``output`` within ``limit`` UTF-8 bytes, cut mark included."""
    data = output.encode("utf-8", errors="replace")
    if len(data) <= limit:
        return output, False
    mark = CUT_MARK.format(cut=len(data))  # an upper bound on the mark's final length
    half = max(0, limit - len(mark.encode())) // 2
    head = data[:half].decode("utf-8", errors="ignore")
    tail = data[len(data) - half :].decode("utf-8", errors="ignore") if half else ""
    return head + CUT_MARK.format(cut=len(data) - 2 * half) + tail, True


def observation(
    exit_code: int, output: str, *, timed_out: bool, truncated: bool, limit: int
) -> str:
    """What the model sees after a command: the exit code, then the fenced, capped output."""
    shown, cut_here = cap_output(output, limit)
    notes = []
    if timed_out:
        notes.append("the command timed out and was killed")
    if truncated or cut_here:
        notes.append("output was cut to fit the limit")
    header = f"exit code: {exit_code}" + (f" ({'; '.join(notes)})" if notes else "")
    return f"{header}\n{fence(shown, 'output')}"


def _template(name: str) -> Template:
    return Template(resources.files(__package__).joinpath("prompts", name).read_text("utf-8"))


def testing_instruction(test_command: str | None) -> str:
    if test_command:
        return f"Run the project's tests with `{test_command}` before you finish."
    return "Find out how the project runs its tests (README, pyproject, Makefile) and run them."


def system_prompt() -> str:
    return _template("system.md").safe_substitute()


def task_prompt(task: AgentTask) -> str:
    """The first user message. Issue text enters only fenced, cleaned, and labelled as data."""
    return _template("task.md").safe_substitute(
        repo=task.repo,
        issue_number=task.issue_number,
        issue_title=fence(strip_hidden_text(task.issue_title).strip()),
        issue_body=fence(strip_hidden_text(task.issue_body).strip() or "(no description)"),
        test_instruction=testing_instruction(task.test_command),
    )


def initial_messages(task: AgentTask) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": system_prompt()},
        {"role": "user", "content": task_prompt(task)},
    ]
