"""The soak, small: 1,000 signed deliveries of the real event mix (20 % duplicates, 5 % bad
signatures, 1 % malformed) sent as fast as the receiver answers, while four task workers run a
dozen scripted tasks, two of them are SIGKILLed with their work horse, and the AOF Redis under it
all is restarted once. `python -m bench.soak` is the same run at full size, with its figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.soak.run import INVARIANTS, Options, run

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_a_small_soak_loses_nothing_and_repeats_nothing(tmp_path: Path, docker_client) -> None:
    options = Options(
        deliveries=1000,
        tasks=12,
        replies=6,
        kill_every=4,
        max_kills=2,
        redis_restarts=1,
        lease_seconds=3,
        job_timeout=120,
    )
    report = run(options, tmp_path)
    shown = json.dumps(report, indent=2)
    assert report["kills"] == 2 and report["redis_restarts"] == 1, shown
    assert report["failed"] == [], shown
    assert all(report[name] == 0 for name in INVARIANTS), shown
    assert report["not_acknowledged"] == 0 and report["unexpected_answers"] == 0, shown
    assert report["tasks_by_state"] == {"done": 12}, shown
    assert report["outcomes_ok"] == report["distinct_valid"], shown
