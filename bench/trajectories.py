"""What keeping trajectories in Redis costs: time per appended record, space, time to read.

    .venv/bin/python -m bench.trajectories [--records 1000] [--redis-url redis://127.0.0.1:6379/0]

Appends a run's worth of records shaped like the agent's (two tool records of 40 lines of
output, then a request carrying the last 30 messages) to a scratch trajectory, reads it back and
deletes it. Prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import time

from redis import Redis

from codexbot import keys
from workers.trajectories import RedisTrajectories


def agent_like_lines(count: int) -> list[str]:
    messages: list[dict[str, str]] = []
    lines = []
    for step in range(count):
        output = "\n".join(f"tests/test_{i}.py::test_case_{step} PASSED [{i}%]" for i in range(40))
        messages.append({"role": "tool", "content": output})
        if step % 3 == 2:
            lines.append(json.dumps({"type": "request", "step": step, "messages": messages[-30:]}))
        else:
            lines.append(json.dumps({"type": "tool", "step": step, "output": output}))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    redis = Redis.from_url(args.redis_url)
    store = RedisTrajectories(redis)
    task_id = f"bench-{secrets.token_hex(4)}"
    lines = agent_like_lines(args.records)
    took = []
    try:
        for line in lines:
            start = time.perf_counter()
            store.append(task_id, line)
            took.append(time.perf_counter() - start)
        start = time.perf_counter()
        read = store.read(task_id)
        read_seconds = time.perf_counter() - start
        stored = redis.memory_usage(keys.trajectory(task_id)) or 1
    finally:
        redis.delete(keys.trajectory(task_id))
        redis.zrem(keys.TRAJECTORIES, task_id)
        redis.close()
    raw = sum(len(line) for line in lines)
    figures = {
        "records": len(read),
        "append_ms_median": round(1000 * statistics.median(took), 3),
        "append_ms_p99": round(1000 * sorted(took)[int(0.99 * (len(took) - 1))], 3),
        "append_ms_total": round(1000 * sum(took)),
        "raw_mb": round(raw / 1e6, 2),
        "stored_mb": round(stored / 1e6, 2),
        "compression": round(raw / stored, 1),
        "read_all_ms": round(1000 * read_seconds),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
