"""Soak: the bot on loopback (GitHub simulator, scripted model, real receiver and workers, an AOF
Redis of its own, the Docker engine) under a stream of signed deliveries of the real event mix
(20 % duplicates, 5 % bad signatures, 1 % malformed; most ignored, some starting a task, some
answered with a comment), sent as fast as the receiver answers, while 4 task workers run
scripted tasks, a chaos loop SIGKILLs a task worker (with its work horse) every few seconds and
starts another, and Redis is restarted mid-run. Prints one JSON object; exits 1 when an
invariant failed (`failed` names them).

    .venv/bin/python -m bench.soak                         # 10,000 deliveries, a kill every 20 s
    .venv/bin/python -m bench.soak --deliveries 1000 --kill-every 5 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import fields
from pathlib import Path

import structlog

from bench.soak.run import Options, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    defaults = Options()
    parser.add_argument("--deliveries", type=int, default=defaults.deliveries)
    parser.add_argument("--tasks", type=int, default=0, help="tasks started (0: N/250, >= 4)")
    parser.add_argument("--replies", type=int, default=0, help="answered by comment (0: N/500)")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="task workers")
    parser.add_argument("--kill-every", type=float, default=defaults.kill_every, help="seconds")
    parser.add_argument("--max-kills", type=int, default=0, help="0: until every task ended")
    parser.add_argument("--redis-restarts", type=int, default=defaults.redis_restarts)
    parser.add_argument("--connections", type=int, default=defaults.connections)
    parser.add_argument("--lease-seconds", type=int, default=defaults.lease_seconds)
    parser.add_argument("--job-timeout", type=int, default=defaults.job_timeout)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--json", action="store_true", help="one line of JSON, not indented")
    args = parser.parse_args(argv)
    # The simulator logs as it goes: on stderr, so stdout holds the one JSON object.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    options = Options(**{f.name: getattr(args, f.name) for f in fields(Options)})
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        report = run(options, Path(tmp))
    print(json.dumps(report, indent=None if args.json else 2))
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
