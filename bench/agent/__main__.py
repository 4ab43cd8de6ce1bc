"""Run SWE-bench-style tasks through the agent and report the resolved rate.

    python -m bench.agent --tasks bench/agent/tasks --base-url URL --model NAME [--json]
    python -m bench.agent --real-model [--only TASK]      # llama-server from `make real-model`
    python -m bench.agent --flaky 0.5 --attempts 1,3      # the scripted model, flaky; N tries

``--attempts 1,3`` runs every task with one try, then with three at once (each in its own
sandbox, model seeds 1..N, so try k plays the same in both), the bot's own test run choosing
among them as `workers.attempts` does, the first green try stopping the others; the hidden tests
then judge the chosen try. ``--flaky RATE`` serves `sim/scripts/bench_agent_tasks.json` from the
scripted model in flaky mode: each run takes a wrong fix with that probability (``--flaky-seed``).

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
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from codexbot.logs import configure_logging
from codexbot.redact import Redactor
from sim.model import Flaky, ScriptedModel, load_scripts
from sim.realmodel import MODEL_NAME, RealModel, cost
from workers import text
from workers.agent.loop import AgentLimits, AgentResult, run_agent
from workers.agent.model import OpenAIModel
from workers.agent.text import AgentTask
from workers.agent.trajectory import Trajectory
from workers.agent.workspace import Workspace
from workers.agentbox import TestOutcome
from workers.attempts import SharedRun, TryOutcome, rank
from workers.instructions import discover_instructions
from workers.testcmd import find_test_command

HIDDEN_TIMEOUT = 600
TASKS = Path(__file__).parent / "tasks"
SCRIPTS = Path(__file__).parents[2] / "sim" / "scripts" / "bench_agent_tasks.json"
TRIES_BUDGET = 10_000_000  # tokens shared by a task's tries: no limit for the scripted model


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
    task_dir: Path,
    args: argparse.Namespace,
    scratch: Path,
    server: RealModel | None = None,
    tries: int = 1,
) -> dict[str, Any]:
    spec = json.loads((task_dir / "task.json").read_text())
    work, head = prepare(task_dir, scratch / f"n{tries}")
    found = find_test_command(work)
    task = AgentTask(
        repo=task_dir.name, issue_number=1, issue_title=spec["title"], issue_body=spec["body"],
        test_command=found.command if found else None,
        instructions=tuple(discover_instructions(work)),
    )  # fmt: skip
    before = server.metrics() if server else None
    shared = SharedRun(TRIES_BUDGET, stop_on_green=True)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=tries) as pool:
        runs = [
            pool.submit(run_try, task_dir, spec, args, scratch, work, head, task, shared, number)
            for number in range(1, tries + 1)
        ]
        outcomes = [run.result() for run in runs]
    seconds = time.monotonic() - started
    chosen, hidden = (
        rank([one for one, _ in outcomes])[0],
        dict((one.number, verdict) for one, verdict in outcomes),
    )
    result = chosen.result or AgentResult(status="error")
    model_seconds = max(one.result.model_seconds if one.result else 0.0 for one, _ in outcomes)
    row = {
        "task": task_dir.name,
        "resolved": hidden[chosen.number][0],
        "status": result.status,
        "reason": result.reason,
        "steps": sum(one.result.steps for one, _ in outcomes if one.result),
        "tokens": sum(one.tokens for one, _ in outcomes),
        "seconds": round(seconds, 2),
        "model_seconds": model_seconds,
        "bot_seconds": round(seconds - model_seconds, 2),
        "hidden_tail": hidden[chosen.number][1],
    }
    if tries > 1:
        row["chosen_try"] = chosen.number
        row["tries"] = [one.outcome for one, _ in outcomes]
    if server and before:
        row["server"] = cost(before, server.metrics())
    return row


def run_try(
    task_dir: Path,
    spec: dict[str, Any],
    args: argparse.Namespace,
    scratch: Path,
    work: Path,
    head: str,
    task: AgentTask,
    shared: SharedRun,
    number: int,
) -> tuple[TryOutcome, tuple[bool, list[str]]]:
    """One try in its own sandbox: the agent, the visible tests (the bot's choice), then the
    hidden tests (the verdict, looked at only for the chosen try)."""
    import docker

    from sandbox.changes import ChangeGuard, ChangePolicy
    from sandbox.container import Sandbox

    def spend(record: dict) -> None:
        if record.get("type") == "response":
            shared.spend(record.get("prompt_tokens", 0) + record.get("completion_tokens", 0))

    api_key = os.environ.get("OPENAI_API_KEY") or "none"
    name = f"{work.parent.name}-{task_dir.name}-try{number}"
    trajectory = Trajectory(
        scratch / "trajectories" / f"{name}.jsonl", Redactor([api_key]), listener=spend
    )
    limits = AgentLimits(steps=args.steps, wall_seconds=args.wall_seconds)
    one = TryOutcome(number, name)
    client = docker.from_env()
    model = OpenAIModel(args.base_url, api_key, args.model, seed=number)
    try:
        with Sandbox(client, image=args.image, task_id=f"bench-{name}") as sandbox:
            sandbox.put_workspace(work)
            guard = ChangeGuard(sandbox, head, ChangePolicy())
            one.result = run_agent(
                task, sandbox, model, limits, trajectory,
                should_stop=lambda: shared.stop_reason(number),
            )  # fmt: skip
            one.patch = guard.result().patch
            if one.patch.strip() and shared.stop_reason(number) is None and task.test_command:
                shown = sandbox.exec(task.test_command, timeout=HIDDEN_TIMEOUT)
                run = text.TestRun(task.test_command, shown.exit_code)
                one.after = TestOutcome(run, shown.output)
                if one.green:
                    shared.passed(number)
            files = Workspace(sandbox)
            hidden = task_dir / "hidden"
            for path in sorted(hidden.rglob("*")) if hidden.is_dir() else []:
                if path.is_file():
                    files.write_text(path.relative_to(hidden).as_posix(), path.read_text())
            verdict = sandbox.exec(spec["test"], timeout=HIDDEN_TIMEOUT)
    finally:
        model.close()
        client.close()
    return one, (verdict.exit_code == 0, verdict.output.strip().splitlines()[-1:] or [""])


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


def run_suite(
    tasks: list[Path], args: argparse.Namespace, scratch: Path, server: RealModel | None, tries: int
) -> dict[str, Any]:
    rows = []
    for task_dir in tasks:
        row = run_task(task_dir, args, scratch, server, tries)
        rows.append(row)
        if not args.json:
            print_row(row)
    resolved = sum(row["resolved"] for row in rows)
    summary = {
        "model": args.model, "attempts": tries, "tasks": len(rows), "resolved": resolved,
        "resolved_rate": round(resolved / len(rows), 3),
        "steps_total": sum(r["steps"] for r in rows),
        "tokens_total": sum(r["tokens"] for r in rows),
        "seconds_total": round(sum(r["seconds"] for r in rows), 1),
    }  # fmt: skip
    if not args.json:
        print(f"attempts {tries}: resolved {resolved}/{len(rows)} "
              f"({100 * summary['resolved_rate']:.0f} %), {summary['steps_total']} steps, "
              f"{summary['tokens_total']} tokens, {summary['seconds_total']} s")  # fmt: skip
    return {"summary": summary, "tasks": rows}


def attempt_counts(value: str) -> list[int]:
    counts = [int(part) for part in value.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("a list of whole numbers above 0, like 1,3")
    return counts


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
    parser.add_argument(
        "--flaky", type=float, help="serve the scripted model, a run going wrong at this rate"
    )
    parser.add_argument("--flaky-seed", type=int, default=0)
    parser.add_argument(
        "--attempts", type=attempt_counts, default=[1], help="tries per task, e.g. 1,3"
    )
    parser.add_argument("--image", default="codexbot-sandbox:latest")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--wall-seconds", type=float, default=900)
    parser.add_argument("--only", action="append", help="run only these task names")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    models = sum((args.real_model, args.flaky is not None, bool(args.base_url or args.model)))
    if models != 1:
        parser.error("give one of --base-url and --model, --real-model or --flaky")
    if args.base_url and not args.model or args.model and not args.base_url:
        parser.error("--base-url and --model go together")
    configure_logging(level=logging.WARNING)
    tasks = sorted(p for p in args.tasks.iterdir() if (p / "task.json").is_file())
    if args.only:
        tasks = [t for t in tasks if t.name in args.only]
    if not tasks:
        parser.error(f"no task directories (with task.json) in {args.tasks}")
    reports = []
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp, ExitStack() as running:
        server = None
        if args.real_model:
            server = RealModel()
            args.base_url, args.model = running.enter_context(server), MODEL_NAME
        if args.flaky is not None:
            logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request
            flaky = Flaky(args.flaky, args.flaky_seed)
            scripted = running.enter_context(ScriptedModel(load_scripts(SCRIPTS), flaky=flaky))
            args.base_url, args.model = scripted.base_url, "scripted-model"
        for tries in args.attempts:
            reports.append(run_suite(tasks, args, Path(tmp), server, tries))
    if args.json:
        print(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
    elif len(reports) > 1:
        print("\n| Attempts | Resolved | Wall time | Tokens |\n| --- | --- | --- | --- |")
        for report in reports:
            summary = report["summary"]
            print(f"| {summary['attempts']} | {summary['resolved']}/{summary['tasks']} "
                  f"({100 * summary['resolved_rate']:.0f} %) | {summary['seconds_total']} s "
                  f"| {summary['tokens_total']} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
