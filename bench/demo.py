"""Time the demo's issue -> PR loop stage by stage over several runs; print medians.

    .venv/bin/python -m bench.demo [--runs 5]

All runs share one stack (one receiver, one worker), as a running installation would; the first
run is reported apart as "cold" (sandbox image layers and Python imports not yet warm).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
from pathlib import Path

from codexbot.logs import configure_logging
from sim.stack import Stack


def run_once(stack: Stack, index: int) -> dict[str, int]:
    full_name, issue = stack.seed(full_name=f"octo-org/textstats-{index}")
    delivery, task_id = stack.label(full_name, issue["number"])
    outcome = stack.wait_for_task(task_id, timeout=600)
    return {"ack": round(delivery.duration_ms), **outcome["timings_ms"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    configure_logging(level=logging.WARNING)  # stdout is for the figures
    with tempfile.TemporaryDirectory() as tmp, Stack(data_dir=Path(tmp)) as stack:
        runs = [run_once(stack, index) for index in range(args.runs)]
    warm = runs[1:] or runs
    medians = {stage: round(statistics.median(run[stage] for run in warm)) for stage in runs[0]}
    print(json.dumps({"cold": runs[0], "warm_median": medians, "runs": len(runs)}, indent=2))


if __name__ == "__main__":
    main()
