"""The one progress comment per task, edited in place as the task advances.

``progress_comment`` is pure (table tests in tests/test_progress.py); ``Progress`` posts it once
and edits it after. ``LiveProgress`` edits it from a thread of its own, so a running task never
waits for GitHub. A failed edit is logged, never fatal: progress is a courtesy, the PR is the
result.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from codexbot.commands import MARKER
from workers.github import GitHubError, Repository
from workers.text import close_fences, defuse

log = structlog.get_logger()

HEADLINES = {
    "queued": "⏳ Queued",
    "preparing": "📦 Preparing the workspace",
    "running": "🛠️ Working",
    "testing": "🧪 Running the tests",
    "publishing": "📤 Publishing",
    "done": "✅ Done",
    "failed": "❌ Failed",
    "stopped": "⏹️ Stopped",
}
KIND_NAMES = {
    "fix": "fix",
    "ask": "question",
    "review": "review follow-up",
    "code_review": "review",
    "fix_ci": "fix of the failing CI",
}


@dataclass(frozen=True)
class ProgressView:
    state: str
    task_id: str
    kind: str
    requested_by: str
    step: int | None = None
    detail: str = ""
    link: str = ""
    steered: int = 0
    commit: str = ""  # the commit the task works on or produced: where its check run is


def progress_comment(view: ProgressView) -> str:
    return f"{progress_text(view)}\n\n{MARKER}\n"


def progress_text(view: ProgressView) -> str:
    headline = HEADLINES.get(view.state, view.state)
    if view.state == "running" and view.step:
        headline += f" (step {view.step})"
    kind = KIND_NAMES.get(view.kind, view.kind)
    lines = [f"**codex-bot: {headline}**", ""]
    lines.append(f"Task `{view.task_id}`: {kind} asked by @{view.requested_by}.")
    if view.detail:
        lines += ["", close_fences(defuse(view.detail.strip()))]
    if view.link:
        lines += ["", f"Details: {view.link}"]
    if view.steered:
        noun = "comment" if view.steered == 1 else "comments"
        lines += ["", f"Took {view.steered} new {noun} into account while working."]
    return "\n".join(lines)


CHECK_NAME = "codex-bot"
CONCLUSIONS = {"done": "success", "failed": "failure", "stopped": "neutral"}


def check_run_fields(view: ProgressView) -> dict[str, Any]:
    """The task's check run as the API takes it: queued, in progress with the progress text, or
    completed with a conclusion; its details link is the task's page."""
    fields: dict[str, Any] = {
        "external_id": view.task_id,
        "output": {
            "title": HEADLINES.get(view.state, view.state),
            "summary": progress_text(view),
        },
    }
    if view.state in CONCLUSIONS:
        fields.update(status="completed", conclusion=CONCLUSIONS[view.state])
    else:
        fields["status"] = "queued" if view.state == "queued" else "in_progress"
    if view.link.startswith(("https://", "http://")):
        fields["details_url"] = view.link
    return fields


def moved_on_fields(commit: str) -> dict[str, Any]:
    """A check run left behind when the task pushed a commit: its run continues there."""
    return {
        "status": "completed",
        "conclusion": "neutral",
        "output": {
            "title": "Continued on a newer commit",
            "summary": f"The task pushed {commit[:12]}; its check run continues there.",
        },
    }


class CheckRun:
    """The check run of one task, on the commit in its view; when the task pushes a commit the
    run moves there (the one before is completed as neutral)."""

    def __init__(self, repo: Repository) -> None:
        self._repo = repo
        self._id: int | None = None
        self._commit = ""

    def show(self, view: ProgressView) -> None:
        if not view.commit:
            return
        fields = check_run_fields(view)
        if self._id is not None and view.commit == self._commit:
            self._repo.update_check_run(self._id, fields)
            return
        if self._id is not None:
            self._repo.update_check_run(self._id, moved_on_fields(view.commit))
        self._id = self._repo.create_check_run(view.commit, CHECK_NAME, fields)
        self._commit = view.commit


class Progress:
    def __init__(
        self,
        repo: Repository,
        number: int,
        view: ProgressView,
        comment_id: int | None = None,
        checks: CheckRun | None = None,
    ) -> None:
        self._repo = repo
        self._number = number
        self.view = view
        self.comment_id = comment_id
        self._checks = checks

    def update(self, state: str | None = None, **changes: object) -> None:
        self.change(state, **changes)
        self.post()

    def change(self, state: str | None = None, **changes: object) -> None:
        """The view changes here; `post` shows it."""
        fields = dict(changes)
        if state is not None:
            fields["state"] = state
        self.view = ProgressView(**{**self.view.__dict__, **fields})  # type: ignore[arg-type]

    def post(self) -> None:
        body = progress_comment(self.view)
        try:
            if self.comment_id is None:
                self.comment_id = self._repo.comment(self._number, body).id
            else:
                self._repo.edit_comment(self.comment_id, body)
        except GitHubError:
            log.warning("progress comment not updated", exc_info=True, state=self.view.state)
        if self._checks is not None:
            try:
                self._checks.show(self.view)
            except GitHubError:
                log.warning("check run not updated", exc_info=True, state=self.view.state)


class LiveProgress:
    """A task's progress comment, posted by a thread of its own: `update` returns at once.

    Updates that arrive while an edit is under way are merged: the next edit shows the latest
    view. `close` posts whatever is pending, waits for it and closes the repository client, which
    must be this object's alone (PyGithub's connection is not shared between threads).
    """

    def __init__(
        self, progress: Progress, repo: Repository, may_post: Callable[[], bool] = lambda: True
    ) -> None:
        self._progress = progress
        self._repo = repo
        self._may_post = may_post  # False once another attempt owns the task: it shows its own
        self._changed = threading.Condition()
        self._pending = False
        self._closing = False
        self._thread = threading.Thread(target=self._post_changes, name="progress", daemon=True)
        self._thread.start()

    def update(self, state: str | None = None, **changes: object) -> None:
        with self._changed:
            self._progress.change(state, **changes)
            self._pending = True
            self._changed.notify()

    def close(self) -> None:
        with self._changed:
            self._closing = True
            self._changed.notify()
        self._thread.join()
        self._repo.close()

    def _post_changes(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending or self._closing)
                if not self._pending:
                    return
                self._pending = False
            try:
                if self._may_post():
                    self._progress.post()
            except Exception:  # noqa: BLE001 - a courtesy; the thread must outlive any failure
                log.warning("progress comment not updated", exc_info=True)
