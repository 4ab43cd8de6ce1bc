"""Webhooks missed while the receiver was down come back, each once: through
``codexbot redeliver`` run by hand, and through the workers' periodic reconciliation.

The real receiver and fast-lane worker run as processes; the receiver is stopped while a
maintainer labels five issues (GitHub records five failed deliveries), then started again.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq.job import Job

from codexbot.commands import MARKER
from sim.github import Delivery
from sim.stack import BIN, Stack, wait_until
from tests.conftest import REDIS_URL

pytestmark = [pytest.mark.slow]

MISSED = 5


def stack_with(tmp_path: Path, **env: str) -> Stack:
    """The receiver and the fast lane only: intake runs, tasks stay queued (not the point)."""
    Redis.from_url(REDIS_URL).flushdb()
    return Stack(data_dir=tmp_path / "stack", redis_url=REDIS_URL, run_worker=False, extra_env=env)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with stack_with(tmp_path) as running:
        running.start_fast_worker("worker-fast")
        yield running


def label_while_the_receiver_is_down(stack: Stack, name: str) -> tuple[str, list[int], list[str]]:
    full_name, first = stack.seed(full_name=f"octo-org/{name}")
    numbers = [first["number"]] + [
        stack.github.create_issue(full_name, f"Issue {n}", "See title.")["number"]
        for n in range(MISSED - 1)
    ]
    stack.stop_process("receiver")
    missed: list[Delivery] = [stack.github.add_label(full_name, n, "codex") for n in numbers]
    assert [d.status_code for d in missed] == [0] * MISSED
    stack.start_receiver()
    stack.wait_for_receiver()
    return full_name, numbers, [d.delivery_id for d in missed]


def redeliver(stack: Stack, *args: str) -> list[str]:
    """``codexbot redeliver``, the real command, with the bot's environment: its stdout lines."""
    result = subprocess.run(
        [str(BIN / "codexbot"), "redeliver", *args],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def redeliveries(stack: Stack) -> Counter[str]:
    """How many times GitHub redelivered each guid, by what the simulator sent."""
    return Counter(w.delivery.delivery_id for w in stack.github.webhooks if w.delivery.redelivery)


def assert_each_recovered_once(stack: Stack, full_name: str, numbers: list[int], guids: list[str]):
    stack.github.wait_for_echoes()
    wait_until(lambda: redeliveries(stack) == Counter(guids), 30, "the redeliveries")
    answers = [w.delivery for w in stack.github.webhooks if w.delivery.redelivery]
    assert [a.status_code for a in answers] == [202] * MISSED
    assert not any(json.loads(a.response_body).get("duplicate") for a in answers)
    for guid in guids:
        intake = wait_until(
            lambda guid=guid: (
                (j := Job.fetch(f"intake-{guid}", connection=stack.redis)).is_finished and j
            ),
            30,
            f"the intake of {guid}",
        )
        assert intake.return_value() == "fix"
    for number in numbers:
        progress = [
            c for c in stack.github.issue_comments(full_name, number) if MARKER in c["body"]
        ]
        assert len(progress) == 1, progress


def test_redeliver_recovers_every_missed_delivery_once(stack: Stack) -> None:
    full_name, numbers, guids = label_while_the_receiver_is_down(stack, "missed-cli")

    planned = redeliver(stack, "--since", "1h", "--dry-run")
    assert {line.split()[0] for line in planned[:-1] if "would redeliver" in line} == set(guids)
    assert planned[-1].endswith(f"{MISSED} would redeliver")
    assert "issues.labeled  0 failed to connect to host  would redeliver" in planned[0]
    assert redeliveries(stack) == Counter()

    done = redeliver(stack, "--since", "1h")
    assert {line.split()[0] for line in done[:-1] if line.endswith("  redelivered")} == set(guids)
    assert_each_recovered_once(stack, full_name, numbers, guids)

    again = redeliver(stack, "--since", "1h")
    assert not [line for line in again if line.endswith("redelivered")]
    assert again[-1].endswith(f"{MISSED} delivered")
    stack.github.wait_for_echoes()
    assert redeliveries(stack) == Counter(guids)


def test_the_workers_reconcile_on_their_own(tmp_path: Path) -> None:
    with stack_with(tmp_path, CODEX_REDELIVER_INTERVAL="1") as stack:
        stack.start_fast_worker("worker-fast")
        # The host is down: the receiver and the worker that runs the reconciliation.
        stack.stop_process("worker-fast")
        full_name, numbers, guids = label_while_the_receiver_is_down(stack, "missed-loop")
        stack.start_fast_worker("worker-fast")
        assert_each_recovered_once(stack, full_name, numbers, guids)
        # Rounds go on, one per second: none asks again.
        checked = stack.redis.get("codexbot:redeliver:checked")
        wait_until(
            lambda: stack.redis.get("codexbot:redeliver:checked") != checked, 30, "two more rounds"
        )
        checked = stack.redis.get("codexbot:redeliver:checked")
        wait_until(
            lambda: stack.redis.get("codexbot:redeliver:checked") != checked, 30, "one more round"
        )
        stack.github.wait_for_echoes()
        assert redeliveries(stack) == Counter(guids)
