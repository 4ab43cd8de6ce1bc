"""The task's progress comment against the simulator, posted from its own thread."""

from __future__ import annotations

from codexbot.commands import MARKER
from sim.github import GitHubSim
from workers.github import Repository
from workers.progress import LiveProgress, Progress, ProgressView

from .conftest import OWNER_REPO


def test_live_progress_ends_on_the_last_state_in_one_comment(github: GitHubSim, token: str) -> None:
    number = github.create_issue(OWNER_REPO, "Fix the adder", "It subtracts.")["number"]
    repo = Repository(OWNER_REPO, token=token, api_url=github.api_url)
    live = LiveProgress(Progress(repo, number, ProgressView("queued", "t1", "fix", "alice")), repo)
    for step in range(1, 20):  # faster than GitHub answers: the edits merge
        live.update("running", step=step)
    live.update("done", step=None, detail="Opened: https://example.test/pull/1")
    live.close()
    bodies = [c["body"] for c in github.issue_comments(OWNER_REPO, number) if MARKER in c["body"]]
    assert len(bodies) == 1
    assert bodies[0].startswith("**codex-bot: ✅ Done**")
    assert "Opened: https://example.test/pull/1" in bodies[0]
