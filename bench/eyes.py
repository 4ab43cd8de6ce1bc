"""Time from a `/codex` comment's POST to the bot's 👀 reaction, while agent tasks run.

    .venv/bin/python -m bench.eyes [--deliveries 200] [--running-tasks 2]

One stack on loopback (simulator, receiver, ``--fast-workers`` intake workers and
``--running-tasks`` task workers). Each task worker is kept busy by a slow scripted task; then
signed ``/codex fix`` comments arrive (back to back, or paced with ``--per-second``) and the
simulator's clock gives, for each, the time from the start of its POST to the 👀 it records.
Prints p50, p99 and max in ms as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

from codexbot.logs import configure_logging
from sim.stack import DEMO_SCRIPTS, Stack, wait_until
from workers import tasks

SCRIPTS = Path(__file__).parent / "scripts"
BUSY_TITLE = "Keep a worker busy for the reaction benchmark"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def running(stack: Stack, task_id: str) -> bool:
    record = tasks.load(stack.redis, task_id)
    return record is not None and record.state == "running"


def keep_workers_busy(stack: Stack, tmp: Path, count: int) -> list[str]:
    issue_file = tmp / "busy.md"
    issue_file.write_text(f"{BUSY_TITLE}\nSleeps, so the worker is busy.\n")
    started = []
    for index in range(count):
        full_name, issue = stack.seed(
            Path(__file__).resolve().parent.parent / "sim" / "demo_repo",
            issue_file,
            full_name=f"octo-org/busy-{index}",
        )
        _, task_id = stack.label(full_name, issue["number"])
        started.append(task_id)
    for task_id in started:
        wait_until(
            lambda t=task_id: (
                (r := tasks.load(stack.redis, t)) is not None and r.state == "running"
            ),
            120,
            f"busy task {task_id} to run",
        )
    return started


def measure(deliveries: int, running_tasks: int, fast_workers: int, per_second: float) -> dict:
    with (
        tempfile.TemporaryDirectory() as tmp,
        Stack(data_dir=Path(tmp), script_dirs=(DEMO_SCRIPTS, SCRIPTS), run_worker=False) as stack,
    ):
        stack.start_worker()
        for index in range(1, running_tasks):
            stack.start_task_worker(f"worker{index}")
        for index in range(1, fast_workers):
            stack.start_fast_worker(f"intake{index}")
        busy = keep_workers_busy(stack, Path(tmp), running_tasks)
        issue_file = Path(tmp) / "asked.md"
        issue_file.write_text("Asked many times\nEach comment asks again.\n")
        full_name, issue = stack.seed(
            Path(__file__).resolve().parent.parent / "sim" / "demo_repo",
            issue_file,
            full_name="octo-org/asked",
        )
        sent = []
        for index in range(deliveries):
            _, delivery = stack.github.comment(
                full_name, issue["number"], f"/codex fix try {index}"
            )
            sent.append(delivery)
        wait_until(
            lambda: all(stack.github.reaction_latency_ms(d) is not None for d in sent),
            120,
            "every 👀",
            interval=0.2,
        )
        latencies = [stack.github.reaction_latency_ms(d) or 0.0 for d in sent]
        still_running = sum(1 for task_id in busy if running(stack, task_id))
    return {
        "deliveries": deliveries,
        "running_tasks": running_tasks,
        "fast_workers": fast_workers,
        "per_second": per_second or "as fast as the simulator sends",
        "tasks_still_running_at_end": still_running,
        "eyes_ms": {
            "p50": round(statistics.median(latencies), 1),
            "p99": round(percentile(latencies, 0.99), 1),
            "max": round(max(latencies), 1),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=200)
    parser.add_argument("--running-tasks", type=int, default=2)
    parser.add_argument("--fast-workers", type=int, default=2, help="intake lane workers")
    parser.add_argument("--per-second", type=float, default=0, help="pace; 0: back to back")
    args = parser.parse_args()
    configure_logging(level=logging.WARNING)
    started = time.monotonic()
    result = measure(args.deliveries, args.running_tasks, args.fast_workers, args.per_second)
    result["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
