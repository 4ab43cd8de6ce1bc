"""The demo task through a real model: llama-server with Qwen2.5-Coder-1.5B (``make real-model``).

Opt-in and slow (minutes per model call on 2 shared cores): ``pytest -m real_model
tests/e2e/test_real_model.py``. The model is too weak to be asked for a fix; the test asks what a
user would see of the wiring: the task ends within its limits in an outcome the issue states (a
pull request, a draft, or a comment naming why it stopped), never a crash, and what the agent did
is on record.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from sim.realmodel import MODEL_NAME, RealModel, cost, missing
from sim.stack import DEMO_REPO, Stack, StackError
from tests.conftest import REDIS_URL

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.docker,  # so `-m "not docker"` leaves it out as well
    pytest.mark.slow,
    pytest.mark.skipif(missing() is not None, reason=missing() or ""),
    pytest.mark.timeout(1800),
]

STEPS = 8
WALL_SECONDS = 900


@pytest.fixture(scope="module")
def real_model() -> Iterator[RealModel]:
    server = RealModel()
    with server:
        yield server


def limited_demo_repo(root: Path) -> Path:
    """The demo repository with small limits in its `.github/codex.yml`."""
    repo = root / "textstats"
    shutil.copytree(DEMO_REPO, repo, ignore=shutil.ignore_patterns("issue.md", "__pycache__"))
    (repo / ".github").mkdir()
    (repo / ".github" / "codex.yml").write_text(
        f"limits: {{steps: {STEPS}, wall_seconds: {WALL_SECONDS}}}\n"
    )
    return repo


def test_the_demo_task_ends_in_a_clear_outcome(real_model, tmp_path):
    Redis.from_url(REDIS_URL).flushdb()
    before = real_model.metrics()
    with Stack(
        data_dir=tmp_path / "stack",
        redis_url=REDIS_URL,
        model_base_url=real_model.base_url,
        model_name=MODEL_NAME,
    ) as stack:
        repo, issue = stack.seed(limited_demo_repo(tmp_path), DEMO_REPO / "issue.md")
        _, task_id = stack.label(repo, issue["number"])
        try:
            outcome: dict | None = stack.wait_for_task(task_id, timeout=WALL_SECONDS + 600)
            failure = ""
        except StackError as error:  # the task failed: its comment must say why
            outcome, failure = None, str(error)
        comments = [c["body"] for c in stack.github.issue_comments(repo, issue["number"])]
        pulls = stack.github.pulls(repo)
        records = stack.trajectory(task_id)
        logs = stack.logs()
    # Shown with `-s`: what the run cost the server and how it ended (README, "Real model").
    print(json.dumps({"server": cost(before, real_model.metrics()), "result": records[-1:]}))
    print("\n".join(comments))

    shown = "\n".join(comments)
    assert "internal error" not in shown, shown
    assert "Traceback" not in shown, shown
    if outcome is not None:
        assert outcome["pr_url"], outcome
        assert outcome["steps"] <= STEPS
        tools = [r for r in records if r["type"] == "tool"]
        assert tools, "a pull request without a single tool call"
    else:
        assert "timed out" not in failure, failure  # it ended by itself, within its limits
        assert "I could not finish this task: " in shown, (failure, shown, logs[-3000:])
        assert pulls == [], pulls

    # What the agent did is on record: the task, each model answer, the end.
    kinds = [r["type"] for r in records]
    assert kinds[0] == "start" and kinds[-1] == "result", kinds
    assert "response" in kinds, kinds
    result = records[-1]
    assert result["steps"] <= STEPS
    assert result["status"] != "error" or result.get("reason"), result
    # Every command the model had run in the sandbox came back with its exit code.
    for record in records:
        if record["type"] == "tool" and record.get("name") == "shell" and "error" not in record:
            assert isinstance(record.get("exit_code"), int), record
