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
KIND_NAMES = {"fix": "fix", "ask": "question", "review": "review follow-up"}


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


def progress_comment(view: ProgressView) -> str:
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
    return "\n".join(lines) + f"\n\n{MARKER}\n"


class Progress:
    def __init__(
        self, repo: Repository, number: int, view: ProgressView, comment_id: int | None = None
    ) -> None:
        self._repo = repo
        self._number = number
        self.view = view
        self.comment_id = comment_id

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
