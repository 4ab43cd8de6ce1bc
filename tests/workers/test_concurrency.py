"""A check that runs alongside the work it guards still decides: what it refuses wins."""

from __future__ import annotations

import threading

import pytest

from workers.concurrency import alongside, on_a_thread


class Refused(Exception):
    pass


def test_both_sides_run_at_once_and_both_results_come_back() -> None:
    both_started = threading.Barrier(2, timeout=10)  # fails unless the two run at the same time

    def check() -> str:
        both_started.wait()
        return "checked"

    def work() -> int:
        both_started.wait()
        return 7

    assert alongside(check, work) == ("checked", 7)


def test_a_refused_check_stops_what_follows_even_when_the_work_succeeded() -> None:
    pushed = []

    def push() -> None:
        alongside(lambda: (_ for _ in ()).throw(Refused("not the bot's branch")), lambda: "sha")
        pushed.append(True)

    with pytest.raises(Refused, match="not the bot's branch"):
        push()
    assert pushed == []


def test_a_refused_check_is_the_reason_when_the_work_failed_too() -> None:
    def check() -> None:
        raise Refused("the branch moved")

    def work() -> None:
        raise ValueError("the patch does not apply")

    with pytest.raises(Refused, match="the branch moved"):
        alongside(check, work)


def test_the_work_fails_on_its_own_once_the_check_has_ended() -> None:
    ended = threading.Event()

    def check() -> str:
        ended.wait(10)
        return "fine"

    def work() -> None:
        ended.set()
        raise ValueError("the patch does not apply")

    with pytest.raises(ValueError, match="does not apply"):
        alongside(check, work)


def test_on_a_thread_hands_back_a_result_or_an_error() -> None:
    assert on_a_thread(lambda a, b: a + b, 2, 3).result(timeout=10) == 5
    with pytest.raises(Refused):
        on_a_thread(lambda: (_ for _ in ()).throw(Refused())).result(timeout=10)
