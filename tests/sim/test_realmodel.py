"""``sim.realmodel`` without the real model: what a user sees before ``make real-model``, and
the arithmetic a benchmark reports from llama-server's counters."""

from __future__ import annotations

import os
import subprocess
import sys

from sim.realmodel import COUNTERS, cost, missing, parse_metrics
from sim.stack import ROOT

METRICS = """# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed, excluding cached
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 3000
llamacpp:prompt_tokens_cached_total 9000
llamacpp:prompt_seconds_total 100
llamacpp:tokens_predicted_total 400
llamacpp:tokens_predicted_seconds_total 50
llamacpp:n_decode_total 420
"""


def test_an_empty_cache_names_the_make_target(tmp_path):
    reason = missing(tmp_path)
    assert reason is not None
    assert "make real-model" in reason
    assert str(tmp_path / "bin" / "llama-server") in reason


def test_the_server_command_says_what_to_run_and_exits(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "sim.realmodel"],
        cwd=ROOT,
        env={**os.environ, "CODEX_REAL_MODEL_CACHE": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stdout == ""  # no base URL: nothing is serving
    assert "run `make real-model`" in done.stderr
    assert "Traceback" not in done.stderr


def test_metrics_are_read_by_short_name():
    values = parse_metrics(METRICS)
    assert set(values) == set(COUNTERS)
    assert values["prompt_tokens_total"] == 3000
    assert values["prompt_tokens_cached_total"] == 9000


def test_cost_is_the_difference_between_two_readings():
    zero = dict.fromkeys(COUNTERS, 0.0)
    assert cost(zero, parse_metrics(METRICS)) == {
        "prompt_tokens": 12000,
        "prompt_tokens_cached": 9000,
        "cached_share": 0.75,
        "prompt_tokens_per_second": 30.0,  # processed tokens over prompt seconds
        "generated_tokens": 400,
        "generated_tokens_per_second": 8.0,
        "server_seconds": 150.0,
    }
    assert cost(zero, zero)["cached_share"] == 0.0
