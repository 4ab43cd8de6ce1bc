"""Run SWE-bench-style tasks through the agent and report the resolved rate.

    python -m bench.agent --tasks bench/agent/tasks --base-url URL --model NAME [--json]
    python -m bench.agent --real-model [--only TASK]      # llama-server from `make real-model`

Each task is a directory: ``task.json`` (``title``, ``body``, ``test``: the hidden test
command), ``repo/`` (the code the agent sees) and ``hidden/`` (files copied over the workspace
after the agent finishes, usually the tests that decide). Each task runs the bot's agent loop in
the bot's sandbox, exactly as a labelled issue would, then the hidden tests run in the same
container: exit code 0 is resolved. The key comes from OPENAI_API_KEY only.

With ``--real-model`` the bench starts ``sim.realmodel`` itself and adds, per task, what the server
did: prompt and generated tokens per second, and the share of prompt tokens served from its cache.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from codexbot.logs import configure_logging
from codexbot.redact import Redactor
from sim.realmodel import MODEL_NAME, RealModel, cost
from workers.agent.loop import AgentLimits, run_agent
from workers.agent.model import OpenAIModel
from workers.agent.text import AgentTask
from workers.agent.trajectory import Trajectory
from workers.agent.workspace import Workspace
from workers.instructions import discover_instructions
from workers.testcmd import find_test_command

HIDDEN_TIMEOUT = 600
TASKS = Path(__file__).parent / "tasks"


def prepare(task_dir: Path, scratch: Path) -> tuple[Path, str]:
    work = scratch / task_dir.name
    shutil.copytree(task_dir / "repo", work)
    identity = ["-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    for args in (
        ["init", "-q", "-b", "main"],
        ["add", "-A"],
        [*identity, "commit", "-qm", "Start"],
    ):
        subprocess.run(["git", *args], cwd=work, check=True, capture_output=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=work, check=True, capture_output=True, text=True
    ).stdout.strip()
    return work, head


def run_task(
    task_dir: Path, args: argparse.Namespace, scratch: Path, server: RealModel | None = None
) -> dict[str, Any]:
    import docker

    from sandbox.container import Sandbox

    spec = json.loads((task_dir / "task.json").read_text())
    work, _ = prepare(task_dir, scratch)
    found = find_test_command(work)
    task = AgentTask(
        repo=task_dir.name, issue_number=1, issue_title=spec["title"], issue_body=spec["body"],
        test_command=found.command if found else None,
        instructions=tuple(discover_instructions(work)),
    )  # fmt: skip
    api_key = os.environ.get("OPENAI_API_KEY") or "none"
    trajectory = Trajectory(
        scratch / "trajectories" / f"{task_dir.name}.jsonl", Redactor([api_key])
    )
    limits = AgentLimits(steps=args.steps, wall_seconds=args.wall_seconds)
    before = server.metrics() if server else None
    started = time.monotonic()
    client = docker.from_env()
    model = OpenAIModel(args.base_url, api_key, args.model)
    try:
        with Sandbox(client, image=args.image, task_id=f"bench-{task_dir.name}") as sandbox:
            sandbox.put_workspace(work)
            result = run_agent(task, sandbox, model, limits, trajectory)
            files = Workspace(sandbox)
            hidden = task_dir / "hidden"
            for path in sorted(hidden.rglob("*")) if hidden.is_dir() else []:
                if path.is_file():
                    files.write_text(path.relative_to(hidden).as_posix(), path.read_text())
            verdict = sandbox.exec(spec["test"], timeout=HIDDEN_TIMEOUT)
    finally:
        model.close()
        client.close()
    seconds = time.monotonic() - started
    row = {
        "task": task_dir.name,
        "resolved": verdict.exit_code == 0,
        "status": result.status,
        "reason": result.reason,
        "steps": result.steps,
        "tokens": result.prompt_tokens + result.completion_tokens,
        "seconds": round(seconds, 2),
        "model_seconds": result.model_seconds,
        "bot_seconds": round(seconds - result.model_seconds, 2),
        "hidden_tail": verdict.output.strip().splitlines()[-1:] or [""],
    }
    if server and before:
        row["server"] = cost(before, server.metrics())
    return row


def print_row(row: dict[str, Any]) -> None:
    mark = "resolved" if row["resolved"] else "UNRESOLVED"
    line = (
        f"{row['task']:<20} {mark:<10} {row['status']:<16} steps {row['steps']:>3}  "
        f"tokens {row['tokens']:>7}  model {row['model_seconds']:>6.1f} s  "
        f"bot {row['bot_seconds']:>6.1f} s"
    )
    if "server" in row:
        served = row["server"]
        line += (
            f"  prompt {served['prompt_tokens_per_second']} tok/s, "
            f"generated {served['generated_tokens_per_second']} tok/s, "
            f"{100 * served['cached_share']:.0f} % of prompt tokens cached"
        )
    if row["reason"]:
        line += f"\n{'':<20} ended: {row['reason']}"
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.agent", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--tasks", type=Path, default=TASKS, help="directory of task directories")
    parser.add_argument("--base-url", help="OpenAI-compatible endpoint")
    parser.add_argument("--model")
    parser.add_argument(
        "--real-model", action="store_true", help="start sim.realmodel and use it (make real-model)"
    )
    parser.add_argument("--image", default="codexbot-sandbox:latest")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--wall-seconds", type=float, default=900)
    parser.add_argument("--only", action="append", help="run only these task names")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.real_model == bool(args.base_url or args.model):
        parser.error("give either --base-url and --model, or --real-model")
    if not args.real_model and not (args.base_url and args.model):
        parser.error("--base-url and --model go together")
    configure_logging(level=logging.WARNING)
    tasks = sorted(p for p in args.tasks.iterdir() if (p / "task.json").is_file())
    if args.only:
        tasks = [t for t in tasks if t.name in args.only]
    if not tasks:
        parser.error(f"no task directories (with task.json) in {args.tasks}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp, ExitStack() as running:
        server = None
        if args.real_model:
            server = RealModel()
            args.base_url, args.model = running.enter_context(server), MODEL_NAME
        for task_dir in tasks:
            row = run_task(task_dir, args, Path(tmp), server)
            rows.append(row)
            if not args.json:
                print_row(row)
    resolved = sum(row["resolved"] for row in rows)
    summary = {
        "model": args.model, "tasks": len(rows), "resolved": resolved,
        "resolved_rate": round(resolved / len(rows), 3),
        "steps_total": sum(r["steps"] for r in rows),
        "tokens_total": sum(r["tokens"] for r in rows),
        "seconds_total": round(sum(r["seconds"] for r in rows), 1),
    }  # fmt: skip
    if args.json:
        print(json.dumps({"summary": summary, "tasks": rows}, indent=2))
    else:
        print(f"resolved {resolved}/{len(rows)} ({100 * summary['resolved_rate']:.0f} %), "
              f"{summary['steps_total']} steps, {summary['tokens_total']} tokens, "
              f"{summary['seconds_total']} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
