"""What a trigger hands to the worker: one request, from the receiver to the intake lane to the
task's record. The receiver builds it from the payload (`app.requests`), RQ carries its fields
as the intake job's keyword arguments, `workers.intake` acts on it, and `workers.tasks` keeps
it in the task's record.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

# The kinds that start a task: "review" is a follow-up on the bot's own PR (a review asked for
# changes), "code_review" the bot reviewing a PR (`/codex review`, or `review: auto`).
# "fix_ci": more work on the bot's own PR whose CI failed.
TaskKind = Literal["fix", "ask", "review", "code_review", "fix_ci"]
# "auto_review": a PR opened or made ready by a person; a "code_review" if the policy says so.
RequestKind = Literal[TaskKind, "auto_review", "help", "stop", "unknown", "steer"]
TASK_KINDS: frozenset[str] = frozenset(get_args(TaskKind))


@dataclass(frozen=True)
class TaskRequest:
    kind: RequestKind
    repo: str  # owner/name
    number: int  # the issue or pull request
    installation_id: int
    sender: str
    is_pull: bool
    task_id: str
    delivery_id: str
    sender_id: int | None = None
    comment_id: int | None = None
    comment_type: str | None = None  # "issue" or "review" (which API the comment is under)
    review_id: int | None = None
    text: str = ""  # what was asked, or the comment passed on to a running task

    def fields(self) -> dict[str, Any]:
        """The request as JSON-able keyword arguments (what RQ stores for the intake job)."""
        return asdict(self)
