"""Several tries at one task, chosen by the tests: the scripted model's flaky mode makes a try
take a wrong fix, and the pull request is the try whose tests pass."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from redis import Redis

from sim.stack import DEMO_REPO, DEMO_SCRIPTS, Stack
from tests.conftest import REDIS_URL
from tests.e2e.conftest import SCRIPTS

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CAP = 2
BUDGET = 40_000  # tokens shared by a task's tries: the fixes fit, the budget script does not


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_url) -> Iterator[Stack]:
    Redis.from_url(redis_url).flushdb()
    stack = Stack(
        data_dir=tmp_path_factory.mktemp("stack"),
        redis_url=REDIS_URL,
        script_dirs=(DEMO_SCRIPTS, SCRIPTS),
        extra_env={"CODEX_MAX_ATTEMPTS": str(CAP), "CODEX_ATTEMPTS_TOKENS": str(BUDGET)},
    )
    stack.extra_env["CODEX_PUBLIC_URL"] = stack.receiver_url  # the PR links each try's page
    with stack as running:
        yield running


def seed(stack: Stack, tmp_path: Path, name: str, title: str, config: str) -> tuple[str, int]:
    repo = tmp_path / f"{name}-repo"
    shutil.copytree(DEMO_REPO, repo, ignore=shutil.ignore_patterns("issue.md", "__pycache__"))
    (repo / ".github").mkdir()
    (repo / ".github" / "codex.yml").write_text(config)
    issue_file = tmp_path / f"{name}.md"
    issue_file.write_text(f"{title}\nword_count counts empty words between repeated spaces.\n")
    full_name, issue = stack.seed(repo, issue_file, full_name=f"octo-org/{name}")
    return full_name, issue["number"]


def branch_file(stack: Stack, full_name: str, branch: str, tmp_path: Path) -> str:
    clone = tmp_path / f"clone-{branch.replace('/', '-')}-{len(list(tmp_path.iterdir()))}"
    bare = str(stack.github.bare_repo_path(full_name))
    subprocess.run(["git", "clone", "-q", "-b", branch, bare, str(clone)], check=True)
    return (clone / "textstats" / "core.py").read_text()


def last_result(stack: Stack, trajectory_id: str) -> dict:
    return [r for r in stack.trajectory(trajectory_id) if r["type"] == "result"][-1]


@pytest.fixture(scope="module")
def two_tries(stack: Stack, tmp_path_factory) -> dict:
    """Try 1 takes a wrong fix (the flaky seed), try 2 the right one; both run to their end."""
    tmp = tmp_path_factory.mktemp("tries")
    config = "attempts: 2\nattempts_stop_on_green: false\n"
    full_name, number = seed(stack, tmp, "tries-fix", "Count words with tries", config)
    _, task_id = stack.label(full_name, number)
    outcome = stack.wait_for_task(task_id, timeout=300)
    return {"repo": full_name, "number": number, "task_id": task_id, "outcome": outcome}


def test_the_pull_request_is_the_try_whose_tests_pass(stack, two_tries, tmp_path):
    outcome = two_tries["outcome"]
    assert outcome["chosen_try"] == 2, outcome["tries"]
    [pull] = stack.github.pulls(two_tries["repo"])
    assert pull["draft"] is False
    code = branch_file(stack, two_tries["repo"], pull["head"]["ref"], tmp_path)
    assert "text.split()" in code and "attempted fix" not in code
    body = pull["body"]
    assert "## Tries" in body and "chose try 2" in body
    rows = [line for line in body.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1].startswith("| 1 | failed | 1 |") and "+1 -0" in rows[1]
    assert rows[2].startswith("| **2** (chosen) | passed | 0 |") and "+1 -1" in rows[2]
    assert "stopped" not in body  # attempts_stop_on_green: false
    for number in (1, 2):
        page = f"{stack.receiver_url}/tasks/{two_tries['task_id']}-try{number}"
        assert f"[log]({page})" in rows[number]
        assert requests.get(page, timeout=10).status_code == 200
    # Each try kept its own trajectory, with its change.
    for number in (1, 2):
        records = stack.trajectory(f"{two_tries['task_id']}-try{number}")
        assert [r for r in records if r["type"] == "patch"], f"try {number} kept its patch"
    wrong = stack.model.chat_requests_for("Count words with tries")
    assert {r["body"].get("seed") for r in wrong} == {1, 2}


def test_use_attempt_publishes_the_named_try(stack, two_tries, tmp_path):
    calls = len(stack.model.chat_requests_for("Count words with tries"))
    _, delivery = stack.github.comment(
        two_tries["repo"], two_tries["number"], "/codex fix --use-attempt 1"
    )
    task_id = json.loads(delivery.response_body)["task_id"]
    stack.task_ids.append(task_id)
    outcome = stack.wait_for_task(task_id, timeout=300)
    [pull] = stack.github.pulls(two_tries["repo"])  # the same pull request, its branch moved on
    assert outcome["pr_url"] == pull["html_url"]
    code = branch_file(stack, two_tries["repo"], pull["head"]["ref"], tmp_path)
    assert "attempted fix" in code and 'text.split(" ")' in code  # try 1's change, as it was
    assert outcome["tests_after"]["exit_code"] != 0  # the tests judge it like any change
    assert len(stack.model.chat_requests_for("Count words with tries")) == calls, "no model call"


def test_a_green_try_asked_for_by_command_stops_the_others(stack, tmp_path):
    full_name, number = seed(stack, tmp_path, "tries-green", "Count words, stop on green", "")
    _, delivery = stack.github.comment(full_name, number, "/codex fix --attempts 2")
    task_id = json.loads(delivery.response_body)["task_id"]
    stack.task_ids.append(task_id)
    outcome = stack.wait_for_task(task_id, timeout=300)
    assert outcome["chosen_try"] == 2
    stopped = last_result(stack, f"{task_id}-try1")
    assert stopped["status"] == "stopped"
    assert stopped["reason"] == "try 2 passed the tests first"
    [pull] = stack.github.pulls(full_name)
    assert "Try 2 passed the tests first, so the tries still running were stopped" in pull["body"]
    assert "| 1 | stopped | - |" in pull["body"]


@pytest.fixture(scope="module")
def budget_run(stack: Stack, tmp_path_factory) -> dict:
    """Tries that never finish, asked for more than the cap allows."""
    tmp = tmp_path_factory.mktemp("budget")
    full_name, number = seed(stack, tmp, "tries-budget", "Count words on a budget", "attempts: 9\n")
    _, task_id = stack.label(full_name, number)
    return {"task_id": task_id, "outcome": stack.wait_for_task(task_id, timeout=300)}


def test_tries_share_one_token_budget(stack, budget_run):
    task_id = budget_run["task_id"]
    assert budget_run["outcome"]["status"] == "stopped"
    results = [last_result(stack, f"{task_id}-try{n}") for n in (1, 2)]
    for result in results:
        assert result["status"] == "stopped"
        assert result["reason"] == f"the tries' shared budget of {BUDGET} tokens is spent"
        assert result["steps"] < 25  # the script has 25 steps before its finish
    spent = sum(r["prompt_tokens"] + r["completion_tokens"] for r in results)
    assert spent >= BUDGET


def test_tries_are_capped_by_the_setting(stack, budget_run):
    task_id = budget_run["task_id"]
    assert all(stack.trajectory(f"{task_id}-try{n}") for n in range(1, CAP + 1))
    assert not stack.trajectory(f"{task_id}-try{CAP + 1}")
