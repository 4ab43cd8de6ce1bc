"""Which try wins: the ranking the tests decide, on made-up outcomes; what the tries share."""

from __future__ import annotations

from workers import text
from workers.agent.loop import AgentResult
from workers.agent.text import Comment
from workers.agentbox import TestOutcome
from workers.attempts import SharedRun, TryOutcome, rank, try_id

ONE_LINE = b"diff --git a/m.py b/m.py\n--- a/m.py\n+++ b/m.py\n@@ -1 +1 @@\n-a\n+b\n"
TWO_LINES = ONE_LINE + b"@@ -5 +5 @@\n-c\n+d\n"


def tried(
    number: int,
    exit_code: int | None,
    output: str = "",
    patch: bytes = ONE_LINE,
    steps: int = 3,
    error: str = "",
) -> TryOutcome:
    after = None if exit_code is None else TestOutcome(text.TestRun("pytest", exit_code), output)
    return TryOutcome(
        number,
        try_id("t", number),
        result=AgentResult(status="finished", steps=steps),
        patch=patch,
        after=after,
        error=error,
    )


def order(*tries: TryOutcome) -> list[int]:
    return [one.number for one in rank(list(tries))]


def test_green_beats_red_whatever_the_diff_or_steps() -> None:
    assert order(tried(1, 1, steps=1), tried(2, 0, patch=TWO_LINES, steps=9)) == [2, 1]


def test_then_fewer_failing_tests() -> None:
    two_failing = "FAILED t::a - x\nFAILED t::b - y\n"
    assert order(tried(1, 1, two_failing), tried(2, 1, "FAILED t::a - x\n")) == [2, 1]
    assert tried(3, 1, "no names").failing == 1  # a red run that names none counts one


def test_then_the_smaller_diff_then_fewer_steps_then_the_earlier_try() -> None:
    assert order(tried(1, 0, patch=TWO_LINES), tried(2, 0)) == [2, 1]
    assert order(tried(1, 0, steps=5), tried(2, 0, steps=4)) == [2, 1]
    assert order(tried(1, 0), tried(2, 0)) == [1, 2]


def test_a_try_without_a_change_or_with_an_error_comes_last() -> None:
    nothing = tried(1, None, patch=b"")
    broken = tried(2, None, error="setup failed")
    stopped = tried(3, None)  # stopped before its tests: it still has a change
    assert order(nothing, broken, stopped) == [3, 1, 2]
    assert (nothing.outcome, broken.outcome, stopped.outcome) == ("no change", "error", "stopped")


def test_a_steering_comment_taken_by_one_try_reaches_every_try_once() -> None:
    shared = SharedRun(budget=1000, stop_on_green=True, count=3)
    first = Comment(author="maintainer", permission="admin", body="Keep the API as it is.")
    second = Comment(author="maintainer", permission="admin", body="And add a test.")

    assert shared.deliver([first], 2) == [first]  # try 2 asked first and took it from Redis
    assert shared.deliver([], 1) == [first]
    assert shared.deliver([second], 1) == [second]
    assert shared.deliver([], 3) == [first, second]
    assert shared.deliver([], 2) == [second]
    assert [shared.deliver([], n) for n in (1, 2, 3)] == [[], [], []]
