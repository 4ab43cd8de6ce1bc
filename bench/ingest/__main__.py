"""Webhook ingest: codex-bot's receiver under granian and gunicorn against a minimal Probot app.

Same machine, one run, the same payload mix (``deliveries.py``) and the same Redis, loaded by
``wrk`` with ``rotate.lua``, bounded in time and loopback only. Prints a JSON summary.

    .venv/bin/python -m bench.ingest                 # every server, 10 s each after a warm-up
    .venv/bin/python -m bench.ingest --duration 3 --targets granian:2x2,probot

Needs ``wrk`` (Debian package) and, for the baseline, ``npm install`` in bench/ingest/probot.
The time from POST to the 👀 reaction is a separate measurement: ``python -m bench.eyes``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from redis import Redis

from bench.ingest.deliveries import build_mix, write_for_wrk
from sim.stack import stop_process

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PROBOT_DIR = HERE / "probot"
CODEXBOT = ROOT / ".venv" / "bin" / "codexbot"
# granian and gunicorn, at the worker x thread counts worth comparing on a 2-core machine.
DEFAULT_TARGETS = (
    "probot",
    "granian:2x1",
    "granian:2x2",
    "granian:2x4",
    "granian:1x4",
    "gunicorn:2x1",
    "gunicorn:2x4",
    "gunicorn:4x1",
)
SECRET = "bench-webhook-secret"  # noqa: S105 - a made-up secret for a loopback benchmark


@dataclass(frozen=True)
class Target:
    name: str  # "probot", or "<server>:<workers>x<threads>"

    @property
    def server(self) -> str:
        return self.name.split(":", 1)[0]

    @property
    def counts(self) -> tuple[int, int]:
        workers, threads = self.name.split(":", 1)[1].split("x")
        return int(workers), int(threads)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_answering(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: server exited:\n{log.read_text()[-3000:]}")
        try:
            requests.post(url, data=b"{}", timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{url}: no answer within 60 s:\n{log.read_text()[-3000:]}")


def _env(redis_url: str, queue: str, scratch: Path) -> dict[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "OPENAI_", "CODEX_"))
    }
    env.update(
        # codex-bot
        GITHUB_APP_ID="1",
        GITHUB_PRIVATE_KEY=pem,
        GITHUB_WEBHOOK_SECRET=SECRET,
        OPENAI_API_KEY="sk-bench-unused",
        REDIS_URL=redis_url,
        CODEX_QUEUE=f"{queue}-agent",
        CODEX_FAST_QUEUE=queue,
        # Probot
        APP_ID="1",
        PRIVATE_KEY=pem,
        WEBHOOK_SECRET=SECRET,
        HOST="127.0.0.1",
        LOG_LEVEL="warn",
        NODE_ENV="production",
        BENCH_LUA_PATH=str(scratch / "claim_and_enqueue.lua"),
    )
    return env


@contextmanager
def serving(target: Target, env: dict[str, str], scratch: Path) -> Iterator[str]:
    """Start one server on a free loopback port; yield its webhook URL; stop it."""
    port = free_port()
    log = scratch / f"{target.name.replace(':', '-')}.log"
    if target.server == "probot":
        probot = PROBOT_DIR / "node_modules" / ".bin" / "probot"
        if not probot.exists():
            raise RuntimeError(f"the baseline needs `npm install` in {PROBOT_DIR}")
        command = [str(probot), "run", "./index.js"]
        env = {**env, "PORT": str(port)}
        url = f"http://127.0.0.1:{port}/api/github/webhooks"
        cwd = PROBOT_DIR
    else:
        workers, threads = target.counts
        command = [str(CODEXBOT), "--log-level", "WARNING", "serve", "--port", str(port)]
        command += ["--server", target.server, "--workers", str(workers), "--threads", str(threads)]
        url = f"http://127.0.0.1:{port}/webhook"
        cwd = ROOT
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until_answering(url, process, log)
        yield url
    finally:
        stop_process(process)


def run_wrk(url: str, records: Path, run_id: str, args: argparse.Namespace, seconds: float) -> dict:
    command = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(HERE / "rotate.lua"),
        url,
        "--",
        str(records),
        run_id,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True)
    match = re.search(r"^WRK_JSON (\{.*\})$", done.stdout, re.MULTILINE)
    if not match:
        raise RuntimeError(f"wrk printed no summary:\n{done.stdout}\n{done.stderr}")
    return json.loads(match.group(1))


def clean_redis(redis: Redis, queue: str, run_prefix: str) -> int:
    """Delete what a run wrote: its delivery keys, its jobs, its queue."""
    removed = 0
    for pattern in (f"codexbot:delivery:{run_prefix}*", f"rq:job:intake-{run_prefix}*"):
        batch = list(redis.scan_iter(match=pattern, count=1000))
        for start in range(0, len(batch), 500):
            removed += redis.delete(*batch[start : start + 500])
    redis.delete(f"rq:queue:{queue}", f"rq:queue:{queue}-agent")
    redis.srem("rq:queues", f"rq:queue:{queue}", f"rq:queue:{queue}-agent")
    return removed


def measure(target: Target, args: argparse.Namespace, scratch: Path, records: Path) -> dict:
    redis = Redis.from_url(args.redis_url)
    queue = f"bench-ingest-{secrets.token_hex(3)}"
    run_prefix = f"bench-{secrets.token_hex(4)}"
    env = _env(args.redis_url, queue, scratch)
    try:
        with serving(target, env, scratch) as url:
            run_wrk(url, records, run_prefix + "-warm", args, args.warmup)
            result = run_wrk(url, records, run_prefix, args, args.duration)
        result["jobs_queued"] = redis.llen(f"rq:queue:{queue}")
    finally:
        clean_redis(redis, queue, run_prefix)
        redis.close()
    return result


def median_round(runs: list[dict]) -> dict:
    """The round with the median throughput, with every round's throughput beside it."""
    failed = [run for run in runs if "error" in run]
    if failed:
        return failed[0]
    ordered = sorted(runs, key=_throughput)
    chosen = dict(ordered[len(ordered) // 2])
    chosen["rounds_requests_per_s"] = [run["requests_per_s"] for run in runs]
    return chosen


def _throughput(run: dict) -> float:
    return float(run.get("requests_per_s", 0.0))


def summarise(results: dict[str, dict]) -> dict:
    probot = results.get("probot")
    for name, result in results.items():
        if probot and name != "probot" and probot.get("requests_per_s"):
            ratio = result["requests_per_s"] / probot["requests_per_s"]
            result["ratio_to_probot"] = round(ratio, 2)
            # Paired by round (run back to back), which cancels most of the machine's drift.
            pairs = zip(
                result.get("rounds_requests_per_s", []),
                probot.get("rounds_requests_per_s", []),
                strict=False,
            )
            result["ratio_to_probot_by_round"] = [round(ours / base, 2) for ours, base in pairs]
    ours = {name: r for name, r in results.items() if name != "probot" and "requests_per_s" in r}
    best = max(ours, key=lambda name: ours[name]["requests_per_s"], default=None)
    return {"results": results, "fastest": best}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__)
    parser.add_argument("--duration", type=float, default=10, help="seconds measured per target")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per target")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--targets", default=",".join(DEFAULT_TARGETS))
    parser.add_argument("--rounds", type=int, default=3, help="rounds over every target")
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("bench.ingest: needs wrk (apt-get install wrk)", file=sys.stderr)
        return 2
    from app.webhook import CLAIM_AND_ENQUEUE

    targets = [Target(name.strip()) for name in args.targets.split(",") if name.strip()]
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        scratch = Path(tmp)
        (scratch / "claim_and_enqueue.lua").write_text(CLAIM_AND_ENQUEUE)
        mix = build_mix(SECRET)
        records = scratch / "deliveries.bin"
        write_for_wrk(mix, records)
        rounds: dict[str, list[dict]] = {target.name: [] for target in targets}
        # Rounds interleave the targets, so a noisy stretch on the machine hits them all alike.
        for round_number in range(args.rounds):
            for target in targets:
                print(f"bench.ingest: round {round_number + 1}: {target.name}", file=sys.stderr)
                try:
                    rounds[target.name].append(measure(target, args, scratch, records))
                except (RuntimeError, subprocess.SubprocessError) as error:
                    rounds[target.name].append({"error": str(error)[-2000:]})
                print(f"  {rounds[target.name][-1]}", file=sys.stderr, flush=True)
        results = {name: median_round(runs) for name, runs in rounds.items()}
    summary = summarise(results)
    summary["setup"] = {
        "cores": os.cpu_count(),
        "wrk": f"-t{args.threads} -c{args.connections} -d{args.duration:g}s",
        "mix": "100 distinct signed deliveries, 20 % enqueue, 80 % ignored; 20 % duplicates",
        "body_bytes": [min(len(d.body) for d in mix), max(len(d.body) for d in mix)],
        "load_average_after": os.getloadavg(),
    }
    print(json.dumps(summary, indent=2))
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
