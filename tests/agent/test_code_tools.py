"""`map` and `references` through the agent loop, with a related repository read-only: the
real SDK client against the scripted model server, the demo repository in the LocalShell test
double, the code read on the "worker" side through git."""

from __future__ import annotations

import shutil
from pathlib import Path

from sim.model import ScriptedModel
from tests.agent.support import MAPPED, LocalShell
from tests.workers.test_codemap import FIXTURES, committed
from workers.agent import AgentLimits, OpenAIModel, Trajectory, run_agent
from workers.agent.text import AgentTask
from workers.coderepos import CodeRepos, Snapshot

FAST = AgentLimits(steps=12, wall_seconds=60, command_timeout=30)


def test_the_agent_maps_follows_names_reads_a_related_repository_and_cites_it(
    model_server: ScriptedModel,
    model: OpenAIModel,
    demo_workdir: Path,
    trajectory: Trajectory,
    tmp_path: Path,
) -> None:
    shutil.copytree(demo_workdir, tmp_path / "own")  # the worker's checkout, beside the sandbox
    own_git, own_sha = committed(tmp_path / "own")
    for name, text in FIXTURES.items():
        (tmp_path / "shop" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "shop" / name).write_text(text)
    shop_git, shop_sha = committed(tmp_path / "shop")
    cache = tmp_path / "codemap"
    code = CodeRepos(
        Snapshot("octo/textstats", own_git.cwd, own_sha, cache),
        [Snapshot("octo/shop", shop_git.cwd, shop_sha, cache)],
    )
    task = AgentTask(
        "octo/textstats",
        3,
        "Question",
        "",
        mode="ask",
        question=MAPPED,
        code_tools=True,
        related=("octo/shop",),
    )
    result = run_agent(task, LocalShell(demo_workdir), model, FAST, trajectory, code=code)

    assert result.status == "answered"
    body = model_server.chat_requests_for(MAPPED)[-1]["body"]
    assert [t["function"]["name"] for t in body["tools"]] == [
        "shell", "read_file", "search", "map", "references", "answer"
    ]  # fmt: skip
    assert "`octo/shop`" in body["messages"][1]["content"]  # the prompt names it
    shown = [m["content"] for m in body["messages"] if m["role"] == "tool"]
    assert "textstats/core.py (#1, imported by 1)" in shown[0]
    assert "textstats/core.py:4 (function) def word_count(text: str) -> int:" in shown[1]
    assert "tests/test_core.py:17 assert word_count(text) == expected" in shown[1]
    assert "Repository octo/shop (read-only" in shown[2] and "store/store.go (#1" in shown[2]
    assert "octo/shop:store/store.go: lines 1-9 of 9" in shown[3]
    assert "octo/shop:store/store.go:7:func Open()" in shown[4]
    assert "`octo/secret` is not a repository of this task" in shown[5]
    answer = result.answer
    assert "textstats/core.py:4" in answer and "textstats/__init__.py:3" in answer
    assert "octo/shop:store/store.go:7" in answer and "octo/shop:cmd/server/main.go:8" in answer
    for made_up in ("core.py:99", "store.go:99", "octo/secret", "made_up.py"):
        assert made_up not in answer
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [f"{own_sha}-v1.json", f"{shop_sha}-v1.json"]
    )
