"""The task-suite runner, against the scripted model: it resolves what the script fixes and
reports what it does not."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from bench.agent.__main__ import main as bench_main
from sim.model import ScriptedModel, load_scripts
from tests.agent.support import ROOT

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def bench_model() -> Iterator[ScriptedModel]:
    with ScriptedModel(load_scripts(ROOT / "sim" / "scripts" / "bench_agent_tasks.json")) as server:
        yield server


def test_runner_reports_resolved_rate_steps_and_tokens(
    bench_model: ScriptedModel, capsys: pytest.CaptureFixture[str], docker_client
) -> None:
    code = bench_main(
        ["--tasks", str(ROOT / "bench" / "agent" / "tasks"), "--base-url", bench_model.base_url,
         "--model", "scripted-model", "--only", "leap_year", "--only", "title_case", "--json"]
    )  # fmt: skip

    assert code == 0
    report = json.loads(capsys.readouterr().out)
    rows = {row["task"]: row for row in report["tasks"]}
    assert rows["leap_year"]["resolved"] is True and rows["leap_year"]["steps"] == 6
    assert rows["title_case"]["resolved"] is False  # the script never edits it
    assert report["summary"]["resolved"] == 1 and report["summary"]["resolved_rate"] == 0.5
    assert all(row["tokens"] > 0 and row["seconds"] > 0 for row in rows.values())
    # The bot's own seconds: the task's wall time less the model's share.
    assert all(
        row["bot_seconds"] == pytest.approx(row["seconds"] - row["model_seconds"], abs=0.02)
        for row in rows.values()
    )


def test_every_shipped_task_is_complete() -> None:
    tasks = sorted((ROOT / "bench" / "agent" / "tasks").iterdir())
    assert len(tasks) == 10
    for task in tasks:
        spec = json.loads((task / "task.json").read_text())
        assert spec["title"] and spec["body"] and spec["test"]
        assert (task / "repo").is_dir() and any((task / "hidden").rglob("test_*.py"))
