"""A real model on loopback: llama.cpp's ``llama-server`` with Qwen2.5-Coder-1.5B-Instruct.

    python -m sim.realmodel [--port N]

Serves the GGUF that ``make real-model`` put in the cache (``$CODEX_REAL_MODEL_CACHE``, default
``/var/cache/codexbot-real-model``), waits until it has loaded, prints its OpenAI-compatible base
URL (``http://127.0.0.1:N/v1``) as the first line on stdout and runs until killed. From Python::

    with RealModel() as base_url:
        ...  # any key and any model name will do: the server has one model and no key

``RealModel.metrics()`` reads the server's own counters (prompt tokens processed and served from
its cache, generated tokens, seconds spent on each) so a benchmark can report what a run cost.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import requests

from sim.stack import free_port, stop_process, wait_until

DEFAULT_CACHE = Path("/var/cache/codexbot-real-model")
GGUF = Path("model/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")
SERVER = Path("bin/llama-server")
MODEL_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m"
CONTEXT = 16384
# Two threads for two cores; on a machine busy with other work one thread is faster (the two
# wait for each other whenever either is descheduled): CODEX_REAL_MODEL_THREADS=1.
THREADS = int(os.environ.get("CODEX_REAL_MODEL_THREADS") or 2)
LOAD_TIMEOUT = 300  # mapping a 1.1 GB file and warming up; seconds on a busy machine

# The counters of llama-server's /metrics a run's cost is computed from.
COUNTERS = (
    "prompt_tokens_total",  # processed, excluding those served from the prompt cache
    "prompt_tokens_cached_total",
    "prompt_seconds_total",
    "tokens_predicted_total",
    "tokens_predicted_seconds_total",
)


class RealModelError(Exception):
    """The real model cannot run; the message says what to do."""


def cache_dir() -> Path:
    return Path(os.environ.get("CODEX_REAL_MODEL_CACHE") or DEFAULT_CACHE)


def missing(cache: Path | None = None) -> str | None:
    """Why the real model cannot start from ``cache``, or None when it can."""
    cache = cache or cache_dir()
    absent = [str(cache / part) for part in (SERVER, GGUF) if not (cache / part).is_file()]
    if not absent:
        return None
    return (
        f"the real model is not built: {' and '.join(absent)} missing; "
        "run `make real-model` (about 15 minutes and 1.1 GB, once)"
    )


def parse_metrics(text: str) -> dict[str, float]:
    """The ``llamacpp:`` counters of a Prometheus text page, by short name."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("llamacpp:"):
            name, _, value = line.partition(" ")
            values[name.removeprefix("llamacpp:")] = float(value)
    return {name: values.get(name, 0.0) for name in COUNTERS}


def cost(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What the server did between two ``metrics()`` readings, as a benchmark reports it."""
    d = {name: after[name] - before[name] for name in COUNTERS}
    processed, cached = d["prompt_tokens_total"], d["prompt_tokens_cached_total"]
    prompt = processed + cached
    return {
        "prompt_tokens": int(prompt),
        "prompt_tokens_cached": int(cached),
        "cached_share": round(cached / prompt, 3) if prompt else 0.0,
        "prompt_tokens_per_second": round(processed / d["prompt_seconds_total"], 1)
        if d["prompt_seconds_total"]
        else 0.0,
        "generated_tokens": int(d["tokens_predicted_total"]),
        "generated_tokens_per_second": round(
            d["tokens_predicted_total"] / d["tokens_predicted_seconds_total"], 1
        )
        if d["tokens_predicted_seconds_total"]
        else 0.0,
        "server_seconds": round(d["prompt_seconds_total"] + d["tokens_predicted_seconds_total"], 1),
    }


@dataclass
class RealModel:
    """``llama-server`` from the cache, started on enter and stopped on exit."""

    port: int = 0
    cache: Path = field(default_factory=cache_dir)
    context: int = CONTEXT
    threads: int = THREADS
    log_path: Path | None = None  # the server's own output; default: beside the model

    def __post_init__(self) -> None:
        self.port = self.port or free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.root}/v1"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> str:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self.base_url

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def command(self) -> list[str]:
        return [
            str(self.cache / SERVER),
            "--jinja",
            "--metrics",
            "-c", str(self.context),
            "-t", str(self.threads),
            "-m", str(self.cache / GGUF),
            "--alias", MODEL_NAME,
            "--host", "127.0.0.1",
            "--port", str(self.port),
        ]  # fmt: skip

    def start(self) -> None:
        reason = missing(self.cache)
        if reason:
            raise RealModelError(reason)
        self.log_path = self.log_path or self.cache / "logs" / f"llama-server-{self.port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        wait_until(self._healthy, LOAD_TIMEOUT, f"llama-server on port {self.port}", interval=0.5)

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RealModelError(
                f"llama-server exited with {self.process.returncode} while loading; "
                f"its log ({self.log_path}) ends:\n{self.log_tail()}"
            )
        try:  # 503 while loading, refused before listening
            return requests.get(f"{self.root}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def metrics(self) -> dict[str, float]:
        answer = requests.get(f"{self.root}/metrics", timeout=10)
        answer.raise_for_status()
        return parse_metrics(answer.text)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process(process)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sim.realmodel", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--context", type=int, default=CONTEXT, help="context window in tokens")
    parser.add_argument("--threads", type=int, default=THREADS)
    args = parser.parse_args(argv)

    def stop_on_signal(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop_on_signal)
    model = RealModel(port=args.port, context=args.context, threads=args.threads)
    try:
        with model as base_url:
            print(base_url, flush=True)
            print(f"model {MODEL_NAME}; server log {model.log_path}", file=sys.stderr)
            assert model.process is not None
            code = model.process.wait()
            print(f"llama-server exited with {code}:\n{model.log_tail()}", file=sys.stderr)
            return 1
    except RealModelError as error:
        print(f"sim.realmodel: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
