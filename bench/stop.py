"""Time from `/codex stop` (the stop flag set in Redis) to the agent run's end, mid-command.

    .venv/bin/python -m bench.stop [--runs 5] [--redis-url redis://127.0.0.1:6379/14]

One real sandbox and the scripted model on loopback. Each run's agent starts a command that
would sleep 60 s; once it sleeps, the stop flag is set the way `/codex stop` sets it, and the time
until ``run_agent`` returns is taken. Prints every run and the median in ms as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import docker
from redis import Redis

from codexbot import keys
from codexbot.redact import Redactor
from sandbox.container import Sandbox
from sandbox.image import DEFAULT_IMAGE, ensure_image
from sim.model import Script, ScriptedModel
from sim.stack import wait_until
from workers.agent import AgentLimits, AgentResult, AgentTask, OpenAIModel, Trajectory, run_agent
from workers.tasks import request_stop, stop_reason

LONG_COMMAND = "setsid sleep 61 & sleep 60"
TITLE = "A maintainer stops a long command"
SCRIPT = Script(
    name="stop",
    match=TITLE,
    steps=[
        {"tool": "shell", "arguments": {"command": LONG_COMMAND}},
        {"tool": "finish", "arguments": {"title": "Done", "summary": "Done."}},
    ],
)


def sleepers(box: Sandbox) -> list[str]:
    """The sleep commands alive in the container, as the engine sees its processes."""
    processes = box.client.api.top(box.container_id, ps_args="-eo pid,args")["Processes"] or []
    return [row[-1] for row in processes if row[-1].startswith("sleep 6")]


def run_and_stop(
    box: Sandbox, redis: Redis, model: OpenAIModel, trajectory: Trajectory, reason: str
) -> tuple[AgentResult, float]:
    """Runs the long command and stops the task once both sleeps run; the result, and the
    seconds from setting the stop flag to the run's end."""
    task_id = f"stop-{uuid.uuid4().hex[:8]}"
    stopped_at: list[float] = []

    def stop_once_it_sleeps() -> None:
        wait_until(lambda: len(sleepers(box)) == 2, 60, "the agent's command to run")
        request_stop(redis, task_id, reason)
        stopped_at.append(time.monotonic())

    stopper = threading.Thread(target=stop_once_it_sleeps, daemon=True)
    stopper.start()
    task = AgentTask(repo="octo-org/stop", issue_number=1, issue_title=TITLE, issue_body="Wait.")
    try:
        result = run_agent(
            task,
            box,
            model,
            AgentLimits(),
            trajectory,
            should_stop=lambda: stop_reason(redis, task_id),
        )
    finally:
        returned = time.monotonic()
        stopper.join(timeout=60)
        redis.delete(keys.cancel(task_id))
    return result, returned - stopped_at[0] if stopped_at else float("inf")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stop", description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args(argv)
    client = docker.from_env()
    ensure_image(client, DEFAULT_IMAGE)
    redis = Redis.from_url(args.redis_url)
    latencies = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        ScriptedModel([SCRIPT]) as server,
        Sandbox(client, image=DEFAULT_IMAGE, task_id=f"bench-stop-{uuid.uuid4().hex[:8]}") as box,
    ):
        model = OpenAIModel(server.base_url, "sk-bench", "scripted-model")
        for run in range(args.runs):
            trajectory = Trajectory(Path(tmp) / f"{run}.jsonl", Redactor([]))
            result, seconds = run_and_stop(box, redis, model, trajectory, "stopped by the bench")
            if result.status != "stopped":
                raise SystemExit(f"run {run} ended {result.status}: {result.reason}")
            latencies.append(round(seconds * 1000))
        model.close()
    print(json.dumps({"stop_ms": latencies, "median_ms": statistics.median(latencies)}))


if __name__ == "__main__":
    main()
