"""Red CI on the bot's own pull request sends it back to work, at most `fix_ci_rounds` times."""

from __future__ import annotations

import json
import shutil

import pytest

from codexbot.commands import MARKER
from sim.stack import DEMO_REPO, wait_until
from tests.e2e.test_triggers import intake_result

pytestmark = [pytest.mark.docker, pytest.mark.slow]

FAILED_LOG = "".join(f"step {n}: ok\n" for n in range(300)) + (
    "FAILED tests/test_docs.py::test_readme - AssertionError: CI-ONLY-MARKER\n1 failed, 12 passed\n"
)


def test_failed_ci_starts_fixes_on_the_branch_then_stops_after_the_last_round(stack, tmp_path):
    repo = tmp_path / "ci-repo"
    shutil.copytree(DEMO_REPO, repo, ignore=shutil.ignore_patterns("issue.md"))
    (repo / ".github").mkdir()
    (repo / ".github" / "codex.yml").write_text("fix_ci: true\nfix_ci_rounds: 2\n")
    full_name, issue = stack.seed(repo, DEMO_REPO / "issue.md", full_name="octo-org/ci-fix")
    _, task_id = stack.label(full_name, issue["number"])
    branch = stack.wait_for_task(task_id)["branch"]
    (pull,) = stack.github.pulls(full_name)
    first_head = stack.github.branch_sha(full_name, branch)

    jobs = {"docs": ("failure", FAILED_LOG), "lint": ("success", "all clean\n")}
    _, delivery = stack.github.complete_workflow_run(full_name, branch, jobs)
    fix_id = json.loads(delivery.response_body)["task_id"]
    stack.task_ids.append(fix_id)
    outcome = stack.wait_for_task(fix_id)
    assert outcome["branch"] == branch and outcome["pr_url"] == pull["html_url"]
    new_head = stack.github.branch_sha(full_name, branch)
    assert new_head != first_head and outcome["sha"] == new_head
    assert len(stack.github.pulls(full_name)) == 1  # more commits on the same pull request
    assert stack.model is not None
    (asked,) = stack.model.chat_requests_for("CI-ONLY-MARKER")[:1]
    first = asked["body"]["messages"][1]["content"]
    assert "Failing job `docs`" in first and "1 failed, 12 passed" in first
    assert "`lint`" not in first and "step 0: ok" not in first  # the log's tail only
    assert "round 1/2" in first

    # Another CI app's check suite fails: round 2, told what its failing check run reported.
    suite = {"build": ("failure", "make: *** CHECK-SUITE-MARKER Error 2"), "lint": ("success", "")}
    _, delivery = stack.github.complete_check_suite(full_name, branch, suite)
    fix_id = json.loads(delivery.response_body)["task_id"]
    stack.task_ids.append(fix_id)
    outcome = stack.wait_for_task(fix_id)
    assert outcome["sha"] == stack.github.branch_sha(full_name, branch) != new_head
    new_head = outcome["sha"]
    (asked,) = stack.model.chat_requests_for("CHECK-SUITE-MARKER")[:1]
    first = asked["body"]["messages"][1]["content"]
    assert "Failing job `build`" in first and "round 2/2" in first and "`lint`" not in first

    # Red again after the last round: the bot says it stops, and starts nothing.
    _, delivery = stack.github.complete_workflow_run(full_name, branch, jobs)
    stop_id = json.loads(delivery.response_body)["task_id"]
    assert intake_result(stack, stop_id) == "out of rounds"
    said = wait_until(
        lambda: [
            c
            for c in stack.github.issue_comments(full_name, pull["number"])
            if "still fails after 2 rounds" in c["body"]
        ],
        30,
        "the comment that the bot stops",
    )
    assert len(said) == 1 and MARKER in said[0]["body"]
    assert stack.github.branch_sha(full_name, branch) == new_head
