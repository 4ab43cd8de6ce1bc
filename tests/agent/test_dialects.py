"""The demo task through every dialect of the scripted server: what real model servers do.

Each dialect reproduces a documented behaviour (tool calls as text, no tool support, reasoning,
a context-length refusal, a finish without title); the agent must fix the demo in every one.
The conversation a server sees must only grow from one request to the next, byte for byte.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sim.model import DIALECTS, Script, ScriptedModel, first_user_text, load_scripts
from tests.agent.support import (
    API_KEY,
    DEMO_REPO,
    DEMO_SCRIPT,
    MODEL_NAME,
    LocalShell,
    finish,
    shell,
)
from workers.agent import AgentLimits, AgentTask, OpenAIModel, Trajectory, run_agent
from workers.agent.report import steps_of
from workers.agent.textcalls import FINISH_MARKER

FAST = AgentLimits(steps=12, wall_seconds=120, command_timeout=30)
TITLE = "word_count miscounts text with repeated whitespace"
REMEMBERED = "remember that the endpoint takes no tools"
SLOW_TWICE = "a model too slow for its share of the time"
BIG = [shell("echo " + "x" * 3000), shell("echo " + "y" * 3000)]
RECOGNISED = {"hermes": "hermes", "fenced_json": "fenced_json", "mistral": "mistral"}


@pytest.fixture(scope="module")
def dialect_server() -> Iterator[ScriptedModel]:
    """A server of its own, serving the demo's dialect copies."""
    remembered = Script(
        name="remembered", match=REMEMBERED, dialect="no_tools", steps=[finish(summary="Done.")]
    )
    slow = Script(
        name="slow-twice",
        match=SLOW_TWICE,
        steps=[*BIG, {"delay": 3.0}, shell("echo never"), finish()],
    )
    scripts = [*load_scripts(DEMO_SCRIPT), remembered, slow]
    with ScriptedModel(scripts, api_key=API_KEY) as server:
        yield server


def dialect_task(dialect: str) -> AgentTask:
    _, _, body = (DEMO_REPO / "issue.md").read_text().partition("\n")
    title = f"{TITLE} [{dialect}]"
    return AgentTask("octo/textstats", 1, title, body, test_command="python3 -m pytest -q")


def pytest_passes(path: Path) -> bool:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=path,
        capture_output=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
    )
    return done.returncode == 0


def client(server: ScriptedModel, name: str) -> OpenAIModel:
    """A client of its own model name: a learned protocol is remembered per base URL and model."""
    return OpenAIModel(server.base_url, API_KEY, f"{MODEL_NAME}-{name}", timeout=20, max_retries=0)


def requests_of(server: ScriptedModel, dialect: str) -> list[dict[str, Any]]:
    marker = dialect if dialect == REMEMBERED else f"[{dialect}]"
    return [r["body"] for r in server.requests if marker in first_user_text(r["body"]["messages"])]


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_the_demo_is_fixed_in_every_dialect(
    dialect: str, dialect_server: ScriptedModel, demo_workdir: Path, trajectory: Trajectory
) -> None:
    model = client(dialect_server, dialect)
    try:
        result = run_agent(dialect_task(dialect), LocalShell(demo_workdir), model, FAST, trajectory)
    finally:
        model.close()

    assert result.status == "finished", result.reason
    assert pytest_passes(demo_workdir)
    records = trajectory.read()
    tools = [r for r in records if r["type"] == "tool"]
    assert [r["name"] for r in tools] == ["shell"] * 5 + ["finish"]
    assert not any("error" in r for r in tools)
    notes = [note for view in steps_of(records) for note in view.notes]
    assert {body["max_tokens"] for body in requests_of(dialect_server, dialect)} == {4096}
    if dialect in RECOGNISED:
        assert {r.get("recognised") for r in tools} == {RECOGNISED[dialect]}
        assert f"tool call read from the reply's text ({dialect})" in notes
    if dialect == "no_tools":
        assert [r["protocol"] for r in records if r["type"] == "protocol"] == ["text"]
        assert any(note.startswith("switched to the text protocol: ") for note in notes)
        assert {r.get("recognised") for r in tools} == {"shell_block", "finish_marker"}
        assert result.title == "Count words on any whitespace in word_count"
    if dialect == "no_title":
        assert result.title == "" and "str.split()" in result.summary
    if dialect == "reasoning":
        thoughts = [r["reasoning"] for r in records if r["type"] == "response"]
        assert len(thoughts) == 6 and all("let me think" in t for t in thoughts)
        sent = json.dumps(requests_of(dialect_server, dialect)[-1]["messages"])
        assert "let me think" not in sent and "<think>" not in sent
        assert "reasoning_content" not in sent
    if dialect == "context_limit":
        refused = [r for r in records if r["type"] == "context" and r["forced"]]
        assert len(refused) == 1 and refused[0]["elided_tool_results"] >= 1
    else:
        answered = requests_of(dialect_server, dialect)
        if dialect == "no_tools":  # the first request, refused for its tools, is not answered
            answered = [body for body in answered if "tools" not in body]
        assert_prefix_stable(answered)


def assert_prefix_stable(answered: list[dict[str, Any]]) -> None:
    """Servers reuse their processed prompt up to the first changed byte: each request repeats
    the one before it byte for byte and adds to it."""
    assert len(answered) == 6
    for earlier, later in zip(answered, answered[1:], strict=False):
        sent = [json.dumps(m) for m in earlier["messages"]]
        assert [json.dumps(m) for m in later["messages"][: len(sent)]] == sent
        assert len(later["messages"]) > len(sent)
        assert later.get("tools") == earlier.get("tools")


def test_the_text_protocol_is_remembered_for_the_endpoint(
    dialect_server: ScriptedModel, workdir: Path, tmp_path: Path
) -> None:
    """After one refusal, later runs against the same base URL and model start in text."""
    model = client(dialect_server, "remembered")
    sent: list[list[dict[str, Any]]] = []
    try:
        for run in ("first", "second"):
            trajectory = Trajectory(tmp_path / f"{run}.jsonl", lambda text: text)
            before = len(requests_of(dialect_server, REMEMBERED))
            task = AgentTask("octo/textstats", 1, REMEMBERED, "Nothing to do.")
            result = run_agent(task, LocalShell(workdir), model, FAST, trajectory)
            assert result.status == "finished" and result.title == "Fix the thing"
            sent.append(requests_of(dialect_server, REMEMBERED)[before:])
    finally:
        model.close()
    first, second = sent
    assert ["tools" in body for body in first] == [True, False]  # refused, then text
    assert ["tools" in body for body in second] == [False]  # text from the start
    assert FINISH_MARKER in second[0]["messages"][0]["content"]


def test_a_model_call_that_times_out_is_compacted_and_tried_once_more(
    dialect_server: ScriptedModel, local_shell: LocalShell, trajectory: Trajectory
) -> None:
    """A call may take half the time left; when it runs out, the history is compacted and the
    call tried again with what is left, then the run ends on its time limit."""
    model = client(dialect_server, "slow")
    limits = AgentLimits(wall_seconds=4, command_timeout=2)
    task = AgentTask("octo/textstats", 1, SLOW_TWICE, "Be quick.")
    try:
        result = run_agent(task, local_shell, model, limits, trajectory)
    finally:
        model.close()

    assert result.status == "limits_exceeded"
    assert "waiting for the model" in result.reason
    assert local_shell.commands == [step["arguments"]["command"] for step in BIG]
    records = trajectory.read()
    requests = [r for r in records if r["type"] == "request"]
    assert [r["step"] for r in requests] == [1, 2, 3, 3]  # the third step asked twice
    (compacted,) = [r for r in records if r["type"] == "context"]
    assert compacted["forced"] and compacted["elided_tool_results"] == 1
    assert requests[-1]["messages"][3]["content"].startswith("[older tool output removed")
