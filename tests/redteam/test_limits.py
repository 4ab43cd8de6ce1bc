"""Red team: the limits of a run hold against a model, a repository and an agent that push on them.

A model server that trickles its answer one byte at a time, a maintainer who stops a task while a
long command runs, repository files the bot reads that are symlinks, FIFOs or huge, and an agent
that fills /tmp or memory. Each test runs the real thing: a model server over HTTP on loopback,
a sandbox in Docker, the stop flag in Redis, real files.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from codexbot.redact import Redactor
from sandbox.container import ExecResult
from sim.model import Script, ScriptedModel
from workers.agent import AgentLimits, AgentTask, OpenAIModel, Trajectory, run_agent

API_KEY = "sk-sim-redteam-limits-0123456789"
MODEL_NAME = "scripted-model"
TRICKLING = "a model that trickles its answer"
TRICKLE_SECONDS = 2.0  # between two bytes: the whole answer would take many minutes


def shell(command: str) -> dict[str, object]:
    return {"tool": "shell", "arguments": {"command": command}}


FINISH = {"tool": "finish", "arguments": {"title": "Done", "summary": "Done."}}
SCRIPTS = [
    Script(
        name="trickle",
        match=TRICKLING,
        steps=[shell("echo first"), {"trickle": TRICKLE_SECONDS}, shell("echo second"), FINISH],
    ),
]


@pytest.fixture(scope="module")
def model_server() -> Iterator[ScriptedModel]:
    with ScriptedModel(SCRIPTS, api_key=API_KEY) as server:
        yield server


@pytest.fixture
def trajectory(tmp_path: Path) -> Trajectory:
    return Trajectory(tmp_path / "trajectory.jsonl", Redactor([API_KEY]))


def task_titled(title: str) -> AgentTask:
    return AgentTask(
        repo="octo-org/limits", issue_number=1, issue_title=title, issue_body="Do the thing."
    )


class Echo:
    """The smallest Environment: commands are not run, their text comes back (no sandbox needed
    to test the model side)."""

    def exec(self, command: str, *, timeout: float) -> ExecResult:
        return ExecResult(command, 0, command, False, False, 0)


# ------------------------------------------------------------------------------ wall clock


def test_a_trickling_model_is_cut_off_at_the_wall_limit(
    model_server: ScriptedModel, trajectory: Trajectory
) -> None:
    model = OpenAIModel(model_server.base_url, API_KEY, MODEL_NAME, timeout=60, max_retries=2)
    limits = AgentLimits(wall_seconds=3)
    started = time.monotonic()
    try:
        result = run_agent(task_titled(TRICKLING), Echo(), model, limits, trajectory)
    finally:
        model.close()
    elapsed = time.monotonic() - started

    assert result.status == "limits_exceeded"
    assert "time limit" in result.reason and "model" in result.reason
    assert result.steps == 2  # the first answer came whole; the second trickled
    # The SDK's own 60 s read timeout restarts with every byte; the run ends near its 3 s.
    assert elapsed < 20
