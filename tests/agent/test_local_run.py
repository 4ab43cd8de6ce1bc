"""`codexbot run`: the agent on a local checkout, in the real sandbox, leaving a branch there."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sim.model import ScriptedModel
from tests.agent.support import API_KEY, DEMO_REPO
from workers.agent.cli import run as run_command

pytestmark = pytest.mark.docker


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


def run_on(checkout: Path, model_server: ScriptedModel, tmp_path: Path, redis_url: str) -> Any:
    """`codexbot run` with the demo issue's title as the task."""
    title = (DEMO_REPO / "issue.md").read_text().splitlines()[0]
    return CliRunner().invoke(
        run_command,
        ["--repo", str(checkout), "--task", title, "--model", "scripted-model",
         "--base-url", model_server.base_url, "--data-dir", str(tmp_path / "data")],
        env={"OPENAI_API_KEY": API_KEY, "REDIS_URL": redis_url},
    )  # fmt: skip


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    repo = tmp_path / "textstats"
    shutil.copytree(DEMO_REPO, repo, ignore=shutil.ignore_patterns("issue.md", "__pycache__"))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    for subject in ("textstats: add word_count", "textstats: add averages", "tests: cover core"):
        git(repo, "-c", "user.name=Dev", "-c", "user.email=dev@example.com",
            "commit", "-q", "--allow-empty", "-m", subject)  # fmt: skip
    (repo / "scratch.txt").write_text("uncommitted work the run must not touch\n")
    return repo


def test_run_leaves_the_fix_as_a_branch_and_the_worktree_alone(
    model_server: ScriptedModel, checkout: Path, tmp_path: Path, docker_client, redis_url: str
) -> None:
    head = git(checkout, "rev-parse", "HEAD")
    result = run_on(checkout, model_server, tmp_path, redis_url)

    assert result.exit_code == 0, result.output
    assert "tests before: failed (exit 1) (python3 -m pytest -q)" in result.output
    assert "tests after: passed" in result.output
    assert "step   1  model" in result.output and "shell: ls -R" in result.output
    branch = next(line for line in result.output.splitlines() if line.startswith("branch: "))
    name = branch.split()[1]
    assert name.startswith("codex/word-count-miscounts")
    assert (
        git(checkout, "rev-parse", "HEAD") == head
        and git(checkout, "branch", "--show-current") == "main"
    )
    assert (checkout / "scratch.txt").exists() and 'text.split(" ")' in (
        checkout / "textstats" / "core.py"
    ).read_text()
    assert git(checkout, "rev-parse", f"{name}~1") == head
    assert "text.split()" in git(checkout, "show", f"{name}:textstats/core.py")
    message = git(checkout, "log", "-1", "--format=%B", name)
    assert message.startswith("textstats: count words on any whitespace in word_count\n\n")
    assert "Fixes #" not in message
    trajectory = next(
        line for line in result.output.splitlines() if line.startswith("trajectory: ")
    )
    assert API_KEY not in Path(trajectory.split()[1]).read_text()


def test_run_refuses_to_start_without_a_key(checkout: Path) -> None:
    result = CliRunner().invoke(
        run_command, ["--repo", str(checkout), "--task", "x"], env={"OPENAI_API_KEY": ""}
    )
    assert result.exit_code == 1 and "set OPENAI_API_KEY" in result.output


def test_run_works_under_the_checkouts_codex_yml_and_its_change_guard(
    model_server: ScriptedModel, checkout: Path, tmp_path: Path, docker_client, redis_url: str
) -> None:
    (checkout / ".github").mkdir()
    (checkout / ".github" / "codex.yml").write_text(
        'test: python3 -m pytest -q tests\nprotected_paths: ["textstats/core.py"]\n'
    )
    git(checkout, "add", ".github")
    git(checkout, "-c", "user.name=Dev", "-c", "user.email=dev@example.com",
        "commit", "-q", "-m", "ci: codex config")  # fmt: skip
    result = run_on(checkout, model_server, tmp_path, redis_url)

    assert result.exit_code == 1, result.output
    assert "no change was made; no branch created" in result.output
    assert git(checkout, "branch", "--list", "codex/*") == ""
    (trajectory,) = (tmp_path / "data" / "trajectories").glob("local-*.jsonl")
    recorded = trajectory.read_text()
    assert "python3 -m pytest -q tests`" in recorded, "the test command of codex.yml"
    assert "[refused: " in recorded and "textstats/core.py" in recorded
