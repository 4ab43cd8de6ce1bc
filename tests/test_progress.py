import pytest

from codexbot.commands import MARKER
from workers.progress import (
    HEADLINES,
    ProgressView,
    check_run_fields,
    progress_comment,
    progress_text,
)


@pytest.mark.parametrize(
    ("view", "expected"),
    [
        (ProgressView("queued", "t1", "fix", "alice"), "**codex-bot: ⏳ Queued**"),
        (
            ProgressView("running", "t1", "fix", "alice", step=4),
            "**codex-bot: 🛠️ Working (step 4)**",
        ),
        (ProgressView("testing", "t1", "review", "bob"), "**codex-bot: 🧪 Running the tests**"),
        (ProgressView("done", "t1", "ask", "carol"), "**codex-bot: ✅ Done**"),
        (ProgressView("stopped", "t1", "fix", "alice"), "**codex-bot: ⏹️ Stopped**"),
    ],
)
def test_headline_names_the_state(view, expected):
    body = progress_comment(view)
    assert body.splitlines()[0] == expected
    assert body.rstrip().endswith(MARKER)


def test_body_names_task_kind_requester_detail_and_steering():
    view = ProgressView(
        "failed", "abc", "review", "bob", detail="I could not finish: boom", steered=2
    )
    body = progress_comment(view)
    assert "Task `abc`: review follow-up asked by @bob." in body
    assert "I could not finish: boom" in body
    assert "Took 2 new comments into account while working." in body


def test_one_steering_comment_is_singular():
    body = progress_comment(ProgressView("running", "a", "fix", "x", step=2, steered=1))
    assert "Took 1 new comment into account" in body


@pytest.mark.parametrize(
    ("state", "link", "expected"),
    [
        ("queued", "", {"status": "queued"}),
        ("running", "https://bot.example/tasks/t1", {"status": "in_progress"}),
        ("done", "", {"status": "completed", "conclusion": "success"}),
        ("failed", "", {"status": "completed", "conclusion": "failure"}),
        ("stopped", "", {"status": "completed", "conclusion": "neutral"}),
    ],
)
def test_check_run_fields(state, link, expected):
    view = ProgressView(state, "t1", "fix", "octo", detail="Opened: https://x/pull/2", link=link)
    fields = check_run_fields(view)
    assert {k: fields[k] for k in expected} == expected
    assert ("conclusion" in fields) == ("conclusion" in expected)
    assert fields["external_id"] == "t1"
    assert fields["output"]["title"] == HEADLINES[state]
    assert fields["output"]["summary"] == progress_text(view)
    assert MARKER not in fields["output"]["summary"]
    assert fields.get("details_url") == (link or None)
