"""The demo issue through every dialect of the scripted model server, end to end: a signed
label, the real worker and sandbox, and a pull request whose tests pass. Also: a run that ends on
malformed replies after it fixed the bug still publishes its work, as a draft saying why."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sim.model import DIALECTS
from sim.stack import DEMO_REPO, Stack

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TITLE = "word_count miscounts text with repeated whitespace"


def seed_issue(stack: Stack, name: str, title: str, tmp_path: Path) -> tuple[str, int]:
    body = (DEMO_REPO / "issue.md").read_text().partition("\n")[2]
    issue_file = tmp_path / f"{name}.md"
    issue_file.write_text(f"{title}\n{body}")
    repo = tmp_path / f"{name}-repo"
    shutil.copytree(DEMO_REPO, repo, ignore=shutil.ignore_patterns("issue.md", ".pytest_cache"))
    full_name, issue = stack.seed(repo, issue_file, full_name=f"octo-org/{name}")
    return full_name, issue["number"]


@pytest.fixture(scope="module")
def dialect_runs(stack: Stack, tmp_path_factory) -> dict[str, dict]:
    """Every dialect's task, labelled at once and run to its end."""
    tmp_path = tmp_path_factory.mktemp("dialects")
    started = {}
    for dialect in DIALECTS:
        name = f"dialect-{dialect.replace('_', '-')}"
        full_name, number = seed_issue(stack, name, f"{TITLE} [{dialect}]", tmp_path)
        started[dialect] = (full_name, stack.label(full_name, number)[1])
    return {
        dialect: {"repo": full_name, "outcome": stack.wait_for_task(task_id, timeout=600)}
        for dialect, (full_name, task_id) in started.items()
    }


@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_every_dialect_ends_in_a_pull_request_whose_tests_pass(dialect_runs, stack, dialect):
    run = dialect_runs[dialect]
    outcome = run["outcome"]
    assert outcome["status"] == "finished"
    assert outcome["tests_after"]["exit_code"] == 0
    (pull,) = stack.github.pulls(run["repo"])
    assert pull["draft"] is False
    assert "- After: passed (exit code 0)" in pull["body"]
    assert "text.split()" in outcome["patch"]
    if dialect == "no_title":  # the bot wrote the subject from the model's summary
        assert pull["title"] == "Fix word_count miscounts text with repeated whitespace [no_title]"
    else:
        assert pull["title"] == "Count words on any whitespace in word_count"


def test_malformed_replies_after_a_fix_publish_a_draft_that_says_why(stack, tmp_path):
    full_name, number = seed_issue(
        stack, "unreadable", "A fix, then replies the bot cannot read", tmp_path
    )
    outcome = stack.wait_for_task(stack.label(full_name, number)[1], timeout=300)

    assert outcome["status"] == "error" and outcome["draft"] is True
    (pull,) = stack.github.pulls(full_name)
    assert pull["draft"] is True
    assert pull["body"].startswith("**Draft: the agent stopped with an error: 3 malformed")
    assert "- After: passed (exit code 0)" in pull["body"]
    assert "`textstats/core.py`" in pull["body"]
