"""Run the GitHub simulator as its own process.

    python -m sim.github --port 0 --webhook-url URL --app-id 1 --public-key app.pub.pem \\
        --data-dir /tmp/sim  [--webhook-secret-file PATH | env GITHUB_SIM_WEBHOOK_SECRET]

Prints one JSON line (``{"url": ..., "api_url": ...}``) once listening, then serves until
SIGINT/SIGTERM. Seed and inspect it through ``/_sim/...`` (see ``server.admin_blueprint``).
Prefer the secret file or environment variable: a secret in argv is visible in ``ps``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

import structlog

from sim.github.simulator import GitHubSim

SECRET_ENV = "GITHUB_SIM_WEBHOOK_SECRET"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sim.github", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--webhook-url", default=None)
    parser.add_argument("--webhook-secret", default=None, help=f"discouraged; use {SECRET_ENV}")
    parser.add_argument("--webhook-secret-file", type=Path, default=None)
    parser.add_argument("--app-id", type=int, required=True)
    parser.add_argument("--public-key", type=Path, required=True, help="the app's public key (PEM)")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--token-ttl-seconds", type=float, default=None)
    return parser.parse_args(argv)


def webhook_secret(args: argparse.Namespace) -> str:
    if args.webhook_secret_file is not None:
        return args.webhook_secret_file.read_text("utf-8").strip()
    return os.environ.get(SECRET_ENV) or args.webhook_secret or ""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # stdout carries the one "ready" line; logs go to stderr.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    sim = GitHubSim(
        app_id=args.app_id,
        app_public_key_pem=args.public_key.read_bytes(),
        webhook_url=args.webhook_url,
        webhook_secret=webhook_secret(args),
        data_dir=args.data_dir,
        port=args.port,
        token_ttl_seconds=args.token_ttl_seconds,
    )
    with sim:
        sys.stdout.write(json.dumps({"url": sim.url, "api_url": sim.api_url}) + "\n")
        sys.stdout.flush()
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
