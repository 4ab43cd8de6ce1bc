"""The bot's own share of a task's wall time, with the model answering after a fixed delay.

    .venv/bin/python -m bench.agent.overhead [--delay 5] [--files 200]

Runs the whole bot (sim.stack: receiver, worker, sandbox, simulator) on the demo issue, an issue on
a generated repository of ``--files`` files, and a second issue there (the repository's next task,
whose workspace stands on the tree the first one left: `sandbox.layers`). The scripted model waits
``--delay`` seconds before each answer. Model time is the sum of the model calls' durations in the
task's trajectory; the bot's own time is everything else from task start to PR and comment
(checkout, container, tests before and after, tool calls, publishing). Target: at most 5 %.

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

from codexbot.logs import configure_logging
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.agent.overhead")
    parser.add_argument("--delay", type=float, default=5.0, help="seconds per model answer")
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args(argv)
    configure_logging(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        scripts = Path(tmp) / "scripts"
        scripts.mkdir()
        demo = json.loads((DEMO_SCRIPTS / "demo_fix.json").read_text())
        (scripts / "demo.json").write_text(json.dumps(delayed(demo, args.delay)))
        (scripts / "big.json").write_text(json.dumps(delayed(big_script(), args.delay)))
        repo = big_repository(Path(tmp) / "big", args.files)
        issue_file = Path(tmp) / "big.md"
        issue_file.write_text(f"{BIG_TITLE}\nEvery module greets with '!' except module_37.\n")
        with Stack(
            data_dir=Path(tmp) / "stack", redis_url=args.redis_url, script_dirs=(scripts,)
        ) as stack:
            # a warm-up task first, so both measured runs find a warm worker and image
            results = {}
            for name, seed in (
                ("warm-up (demo)", lambda: stack.seed(full_name="octo-org/warm")),
                ("demo", lambda: stack.seed(full_name="octo-org/textstats")),
                (
                    f"{args.files}-file repository",
                    lambda: stack.seed(repo, issue_file, "octo-org/big"),
                ),
                (
                    # Its next task: the workspace now stands on the tree the first one left.
                    f"{args.files}-file repository, next task",
                    lambda: (
                        "octo-org/big",
                        stack.github.create_issue("octo-org/big", BIG_TITLE, "Once more."),
                    ),
                ),
            ):
                full_name, issue = seed()
                results[name] = measure(stack, full_name, issue)
        shutil.rmtree(repo, ignore_errors=True)
    results.pop("warm-up (demo)")
    print(json.dumps({"delay_s": args.delay, "results": results}, indent=2))


if __name__ == "__main__":
    main()
