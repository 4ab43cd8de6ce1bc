"""Tolerant, never lossy: what a small real model got wrong in the real-model bench, each a
conversation through the real SDK client and the scripted model server."""

from __future__ import annotations

from pathlib import Path

from sim.model import ScriptedModel
from tests.agent.support import (
    BAD_CALLS_IN_ONE_REPLY,
    FINISH_AFTER_FAILURE,
    FINISH_WRITTEN_FIRST,
    REPO_NAMED_LOOSELY,
    LocalShell,
    task_titled,
)
from tests.agent.test_loop import FAST, last_request, tool_results
from workers.agent import OpenAIModel, Trajectory, run_agent


def test_a_reply_counts_once_however_many_of_its_calls_fail(
    model_server: ScriptedModel, model: OpenAIModel, local_shell: LocalShell, trajectory: Trajectory
) -> None:
    """Three bad calls in one reply are one malformed reply, and its valid call still runs."""
    result = run_agent(task_titled(BAD_CALLS_IN_ONE_REPLY), local_shell, model, FAST, trajectory)

    assert result.status == "finished", result.reason
    assert result.steps == 3
    assert local_shell.commands == ["echo ran"]
    results = tool_results(last_request(model_server, BAD_CALLS_IN_ONE_REPLY))
    assert [r.startswith("Error:") for r in results] == [True, True, True, False, True, True]


def test_finish_after_a_failed_call_of_the_same_reply_is_not_run(
    model_server: ScriptedModel, model: OpenAIModel, local_shell: LocalShell, trajectory: Trajectory
) -> None:
    result = run_agent(task_titled(FINISH_AFTER_FAILURE), local_shell, model, FAST, trajectory)

    assert result.status == "finished", result.reason
    assert result.title == "After reading the error" and result.steps == 2
    patched, finished = tool_results(last_request(model_server, FINISH_AFTER_FAILURE))
    assert patched.startswith("Error: The patch was not applied")
    assert "`finish` was not run because call 1 (`apply_patch`) failed" in finished
    refused = [r for r in trajectory.read() if r["type"] == "tool" and r.get("name") == "finish"]
    assert "was not run" in refused[0]["error"]


def test_a_finish_written_before_the_edit_submits_the_edit(
    model_server: ScriptedModel,
    model: OpenAIModel,
    demo_workdir: Path,
    local_shell: LocalShell,
    trajectory: Trajectory,
) -> None:
    """A small model writes `finish` first and its edit after it in the same reply: the edit
    runs, then the submission."""
    core = demo_workdir / "textstats" / "core.py"
    result = run_agent(task_titled(FINISH_WRITTEN_FIRST), local_shell, model, FAST, trajectory)

    assert result.status == "finished", result.reason
    assert result.title == "Split on any whitespace" and result.steps == 1
    assert "return len(text.split())" in core.read_text()
    ran = [r["name"] for r in trajectory.read() if r["type"] == "tool"]
    assert ran == ["apply_patch", "finish"]


def test_the_own_repository_however_named_and_grep_errors_as_errors(
    model_server: ScriptedModel,
    model: OpenAIModel,
    workdir: Path,
    local_shell: LocalShell,
    trajectory: Trajectory,
) -> None:
    """A task without related repositories is not offered `repo`; the own name (short, any
    case), `this`, or an unknown name reads the task's own. A missing path is grep's error."""
    (workdir / "a.txt").write_text("hello\n")
    result = run_agent(task_titled(REPO_NAMED_LOOSELY), local_shell, model, FAST, trajectory)

    assert result.status == "finished", result.reason
    body = last_request(model_server, REPO_NAMED_LOOSELY)
    offered = {tool["function"]["name"]: tool["function"]["parameters"] for tool in body["tools"]}
    assert all("repo" not in parameters["properties"] for parameters in offered.values())
    short, full, searched, unknown, missing = tool_results(body)
    assert short.startswith("a.txt: lines 1-1 of 1") and full == short
    assert searched.startswith("1 match(es)") and "a.txt:1:hello" in searched
    assert unknown.startswith("Note: `somebody/else` is not a repository of this task; read")
    assert unknown.endswith(short)
    assert missing.startswith("Error: The search failed: tests/missing.py: No such file")
