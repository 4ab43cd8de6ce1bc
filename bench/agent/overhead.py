"""The bot's own share of a task's wall time, with the model answering after a fixed delay.

    .venv/bin/python -m bench.agent.overhead [--delay 5] [--files 200] [--pool 0,1]

Runs the whole bot (sim.stack: receiver, worker, sandbox, simulator) on the demo issue, an issue on
a generated repository of ``--files`` files, and a second issue there (the repository's next task,
whose workspace stands on the tree the first one left: `sandbox.layers`). The scripted model waits
``--delay`` seconds before each answer. Model time is the sum of the model calls' durations in the
task's trajectory; the bot's own time is everything else from task start to PR and comment
(checkout, container, tests before and after, tool calls, publishing). Target: at most 3 %.

``--pool 0,1`` runs the whole sequence once per warm-pool size (`CODEX_POOL_SIZE`, a stack of
its own each, repositories named apart), so before and after come from one run.

Total is the job's wall time, start to end, whatever runs at once inside it. What overlaps: the
discussion and the model client are gathered while the container starts; the tests before run
while the model answers its first request (the agent's first command waits for them); the change
is pushed while the tests after run; the container is removed while the pull request is opened
and the task reports. The model's time counts only its calls, so none of that hides in it.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import docker
from redis import Redis

from codexbot import keys
from codexbot.logs import configure_logging
from sandbox.labels import REPO_LABEL
from sandbox.mirror import mirror_volume_name
from sim.stack import DEMO_SCRIPTS, Stack

BIG_TITLE = "Greeting in module_37 forgets the exclamation mark"


def delayed(script: dict[str, Any], delay: float) -> dict[str, Any]:
    steps = []
    for step in script["steps"]:
        steps += [{"delay": delay}, step]
    return {**script, "steps": steps}


def big_repository(root: Path, files: int) -> Path:
    """``files`` files: modules in ten packages, a test per module, a README and config."""
    root.mkdir(parents=True)
    (root / "README.md").write_text("# many modules\n")
    (root / "pyproject.toml").write_text("[tool.pytest.ini_options]\ntestpaths = ['tests']\n")
    (root / "tests").mkdir()
    modules = (files - 2) // 2
    for n in range(modules):
        package = root / f"pkg{n % 10}"
        package.mkdir(exist_ok=True)
        mark = "" if n == 37 else "!"
        (package / f"module_{n}.py").write_text(
            f'def greet(name):\n    """Greets {n}."""\n    return "hello " + name + "{mark}"\n'
        )
        (root / "tests" / f"test_module_{n}.py").write_text(
            f"from pkg{n % 10}.module_{n} import greet\n\n\n"
            f"def test_greet():\n    assert greet('x') == 'hello x!'\n"
        )
    return root


def big_script() -> dict[str, Any]:
    def shell(command: str) -> dict[str, Any]:
        return {"tool": "shell", "arguments": {"command": command}}

    return {
        "name": "big_repo",
        "match": BIG_TITLE,
        "steps": [
            shell("ls | head; git ls-files | wc -l"),
            {"tool": "search", "arguments": {"pattern": "def greet", "path": "pkg7"}},
            {"tool": "read_file", "arguments": {"path": "pkg7/module_37.py"}},
            {
                "tool": "apply_patch",
                "arguments": {
                    "patch": 'pkg7/module_37.py\n<<<<<<< SEARCH\n    return "hello " + name + ""\n'
                    '=======\n    return "hello " + name + "!"\n>>>>>>> REPLACE\n'
                },
            },
            shell("python3 -m pytest -q tests/test_module_37.py"),
            {
                "tool": "finish",
                "arguments": {
                    "title": "Add the missing exclamation mark to module_37's greeting",
                    "summary": "greet() in pkg7/module_37.py left out the exclamation mark "
                    "every other module adds; its test now passes.",
                },
            },
        ],
    }


def measure(stack: Stack, full_name: str, issue: dict[str, Any]) -> dict[str, Any]:
    _, task_id = stack.label(full_name, issue["number"])
    outcome = stack.wait_for_task(task_id, timeout=900)
    records = stack.trajectory(task_id)
    model_ms = round(1000 * sum(r.get("duration", 0) for r in records if r["type"] == "response"))
    total_ms = outcome["timings_ms"]["total"]
    return {
        "total_ms": total_ms,
        "model_ms": model_ms,
        "bot_ms": total_ms - model_ms,
        "bot_share_pct": round(100 * (total_ms - model_ms) / total_ms, 2),
        "steps": outcome.get("steps"),
        "stages_ms": outcome["timings_ms"],
    }


def forget_repositories(redis_url: str, names: list[str]) -> None:
    """Remove the engine-side mirrors and trees of `names`, so each run's tasks find them new."""
    client, redis = docker.from_env(), Redis.from_url(redis_url)
    try:
        for name in names:
            for selector in ({"name": mirror_volume_name(name)}, {"label": f"{REPO_LABEL}={name}"}):
                for volume in client.volumes.list(filters=selector):
                    volume.remove(force=True)
            redis.delete(keys.trees(name))
    finally:
        client.close()
        redis.close()


def run_sequence(args: argparse.Namespace, tmp: Path, pool_size: int) -> dict[str, Any]:
    """The warm-up and the three measured tasks on one stack with a pool of `pool_size`."""
    scripts = tmp / "scripts"
    scripts.mkdir(parents=True)
    demo = json.loads((DEMO_SCRIPTS / "demo_fix.json").read_text())
    (scripts / "demo.json").write_text(json.dumps(delayed(demo, args.delay)))
    (scripts / "big.json").write_text(json.dumps(delayed(big_script(), args.delay)))
    repo = big_repository(tmp / f"big-{pool_size}", args.files)
    issue_file = tmp / "big.md"
    issue_file.write_text(f"{BIG_TITLE}\nEvery module greets with '!' except module_37.\n")
    suffix = f"-pool{pool_size}"  # each sequence's repositories are new to the engine
    big = f"octo-org/big{suffix}"
    forget_repositories(
        args.redis_url, [f"octo-org/{n}{suffix}" for n in ("warm", "textstats")] + [big]
    )
    with Stack(
        data_dir=tmp / f"stack-{pool_size}",
        redis_url=args.redis_url,
        script_dirs=(scripts,),
        extra_env={"CODEX_POOL_SIZE": str(pool_size)},
    ) as stack:
        # a warm-up task first, so the measured runs find a warm worker and image
        results = {}
        for name, seed in (
            ("warm-up (demo)", lambda: stack.seed(full_name=f"octo-org/warm{suffix}")),
            ("demo", lambda: stack.seed(full_name=f"octo-org/textstats{suffix}")),
            (f"{args.files}-file repository", lambda: stack.seed(repo, issue_file, big)),
            (
                # Its next task: the workspace now stands on the tree the first one left.
                f"{args.files}-file repository, next task",
                lambda: (big, stack.github.create_issue(big, BIG_TITLE, "Once more.")),
            ),
        ):
            full_name, issue = seed()
            results[name] = measure(stack, full_name, issue)
    shutil.rmtree(repo, ignore_errors=True)
    results.pop("warm-up (demo)")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.agent.overhead")
    parser.add_argument("--delay", type=float, default=5.0, help="seconds per model answer")
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--pool", default="1", help="warm-pool sizes to run the sequence with, in turn: 0,1,0,1"
    )
    args = parser.parse_args(argv)
    configure_logging(level=logging.WARNING)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run, size in enumerate(int(n) for n in args.pool.split(",")):
            results[f"pool {size} (run {run + 1})"] = run_sequence(args, Path(tmp) / str(run), size)
    print(json.dumps({"delay_s": args.delay, "results": results}, indent=2))


if __name__ == "__main__":
    main()
