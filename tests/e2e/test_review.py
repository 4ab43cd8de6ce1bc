"""The bot as a reviewer: `/codex review` on a pull request, and `review: auto` in codex.yml."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from redis import Redis

from codexbot.commands import MARKER
from sim.stack import DEMO_REPO, DEMO_SCRIPTS, Stack, wait_until
from tests.conftest import REDIS_URL
from tests.e2e.conftest import SCRIPTS
from tests.e2e.test_triggers import intake_result

pytestmark = [pytest.mark.docker, pytest.mark.slow]
PUBLIC_URL = "https://codexbot.example.com"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_url):
    """The e2e stack, with a public URL: task pages are linked from check runs."""
    Redis.from_url(redis_url).flushdb()
    with Stack(
        data_dir=tmp_path_factory.mktemp("stack"),
        redis_url=REDIS_URL,
        script_dirs=(DEMO_SCRIPTS, SCRIPTS),
        extra_env={"CODEX_PUBLIC_URL": PUBLIC_URL},
    ) as running:
        yield running


LONGEST_WORD = '''

def longest_word(text: str) -> str:
    """Return the longest word in ``text``."""
    return max(text.split(" "), key=len)
'''


def person_opens_pull(
    stack: Stack, tmp_path: Path, name: str, *, config: str | None = None, draft: bool = False
) -> tuple[str, int]:
    """A repository (with `config` as its codex.yml), and a PR a maintainer opened on it."""
    repo = tmp_path / f"{name}-repo"
    shutil.copytree(DEMO_REPO, repo, ignore=shutil.ignore_patterns("issue.md"))
    if config is not None:
        (repo / ".github").mkdir()
        (repo / ".github" / "codex.yml").write_text(config)
    issue = tmp_path / f"{name}.md"
    issue.write_text("Unused issue\nThe pull request is what counts.\n")
    full_name, _ = stack.seed(repo, issue, full_name=f"octo-org/{name}")
    core = (DEMO_REPO / "textstats" / "core.py").read_text() + LONGEST_WORD
    stack.github.push_as(full_name, "longest", {"textstats/core.py": core}, "Add longest_word")
    pull = stack.github.open_pull(
        full_name,
        "longest",
        "Add a longest_word helper",
        "It returns the longest word.",
        draft=draft,
    )
    return full_name, pull["number"]


def assert_one_review_of_longest_word(stack: Stack, full_name: str, number: int) -> None:
    reviews = [r for r in stack.github.reviews(full_name, number) if MARKER in r["body"]]
    assert len(reviews) == 1
    body = reviews[0]["body"]
    assert reviews[0]["state"] == "COMMENTED"
    assert "2 findings (P0 1, P2 1)" in body
    assert "2 findings were left out: not on a line this pull request changes." in body
    assert "textstats/core.py:19" in body and "ghost.py" not in body  # a made-up reference
    comments = stack.github.review_comments(full_name, number)
    placed = [(c["path"], c["line"], c["side"], c["body"].split(":")[0]) for c in comments]
    assert placed == [
        ("textstats/core.py", 21, "RIGHT", "**P0** (must fix)"),
        ("textstats/core.py", 19, "RIGHT", "**P2** (nit)"),
    ]
    assert all(c["pull_request_review_id"] == reviews[0]["id"] for c in comments)


def test_codex_review_posts_one_review_with_findings_on_the_diff_and_pushes_nothing(
    stack, tmp_path
):
    full_name, number = person_opens_pull(stack, tmp_path, "review-cmd")
    refs_before = stack.github.branch_sha(full_name, "longest")
    pushes_before = len(stack.github.pushes)
    _, delivery = stack.github.comment(full_name, number, "/codex review check the edge cases")
    task_id = json.loads(delivery.response_body)["task_id"]
    stack.task_ids.append(task_id)
    outcome = stack.wait_for_task(task_id)
    assert outcome["answer"] == "Reviewed: 2 findings (P0 1, P2 1)."
    assert_one_review_of_longest_word(stack, full_name, number)
    assert len(stack.github.pushes) == pushes_before  # nothing pushed
    assert stack.github.branch_sha(full_name, "longest") == refs_before
    assert len(stack.github.pulls(full_name)) == 1
    # The task's check run, on the commit it reviewed.
    (check,) = stack.github.check_runs(full_name, refs_before)
    assert (check["name"], check["status"], check["conclusion"]) == (
        "codex-bot",
        "completed",
        "success",
    )
    assert check["details_url"] == f"{PUBLIC_URL}/tasks/{task_id}"
    assert "Reviewed: 2 findings (P0 1, P2 1)." in check["output"]["summary"]
    assert stack.model is not None
    asked = stack.model.chat_requests_for("Add a longest_word helper")[0]["body"]
    assert [t["function"]["name"] for t in asked["tools"]] == [
        "shell",
        "read_file",
        "search",
        "map",
        "references",
        "review",
    ]
    first = asked["messages"][1]["content"]
    assert "+def longest_word(text: str) -> str:" in first  # the diff is in the prompt
    assert "check the edge cases" in first


def test_review_auto_reviews_a_pull_opened_by_a_person_and_only_then(stack, tmp_path):
    full_name, number = person_opens_pull(stack, tmp_path, "review-auto", config="review: auto\n")
    delivery = stack.github.pull_request_event(full_name, number, "opened")
    task_id = json.loads(delivery.response_body)["task_id"]
    stack.task_ids.append(task_id)
    stack.wait_for_task(task_id)
    assert_one_review_of_longest_word(stack, full_name, number)
    reactions = stack.github.reactions(full_name, number=number)
    assert "eyes" not in [r["content"] for r in reactions]  # nobody asked: no 👀

    off_name, off_number = person_opens_pull(stack, tmp_path, "review-off")
    delivery = stack.github.pull_request_event(off_name, off_number, "opened")
    assert intake_result(stack, json.loads(delivery.response_body)["task_id"]) == "nothing to do"
    assert stack.github.issue_comments(off_name, off_number) == []

    # A draft is reviewed once marked ready, not when opened.
    draft_name, draft_number = person_opens_pull(
        stack, tmp_path, "review-draft", config="review: auto\n", draft=True
    )
    opened = stack.github.pull_request_event(draft_name, draft_number, "opened")
    assert opened.status_code == 204  # nothing to do for a draft
    ready = stack.github.pull_request_event(
        draft_name, draft_number, "ready_for_review", draft=False
    )
    ready_task = json.loads(ready.response_body)["task_id"]
    stack.task_ids.append(ready_task)
    stack.wait_for_task(ready_task)
    wait_until(
        lambda: stack.github.reviews(draft_name, draft_number), 30, "the review of the draft"
    )
