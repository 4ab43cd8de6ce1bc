"""What the reconciliation asks GitHub to redeliver, decided from the attempts and Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from workers.githubapp import HookDelivery
from workers.redeliver import (
    DELIVERED,
    GAVE_UP,
    RECEIVER_DOWN,
    RECORDED,
    REDELIVERED,
    WAITING,
    Event,
    decide,
    parse_duration,
)

AT = datetime(2026, 1, 1, tzinfo=UTC)


def attempt(id: int, status_code: int, redelivery: bool = False) -> HookDelivery:
    return HookDelivery(
        id=id,
        guid="g",
        delivered_at=AT,
        redelivery=redelivery,
        status="OK" if status_code else "failed to connect to host",
        status_code=status_code,
        event="issues",
        action="labeled",
    )


@pytest.mark.parametrize(
    ("attempts", "recorded", "asked", "latest_success", "expected"),
    [
        ([attempt(1, 202)], True, set(), 1, DELIVERED),
        ([attempt(1, 204)], False, set(), 1, DELIVERED),  # nothing to do: never recorded
        ([attempt(1, 202)], False, set(), 1, REDELIVERED),  # acknowledged, then lost by Redis
        ([attempt(1, 0)], False, set(), None, REDELIVERED),
        ([attempt(1, 503)], False, set(), None, REDELIVERED),
        ([attempt(1, 0)], True, set(), None, RECORDED),  # enqueued, the answer came too late
        ([attempt(1, 0)], False, {1}, 5, WAITING),  # asked; GitHub has not sent it yet
        ([attempt(2, 202, True), attempt(1, 0)], True, {1}, 2, DELIVERED),
        ([attempt(2, 0, True), attempt(1, 0)], False, {1}, None, RECEIVER_DOWN),
        ([attempt(2, 0, True), attempt(1, 0)], False, {1}, 3, REDELIVERED),  # up again
        ([attempt(4, 0, True), attempt(1, 0)], False, {1, 2, 3}, 9, GAVE_UP),
    ],
)
def test_decide(attempts, recorded, asked, latest_success, expected) -> None:
    event = Event(attempts=attempts, recorded=recorded, asked=frozenset(asked))
    assert decide(event, latest_success) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90s", timedelta(seconds=90)), ("30m", timedelta(minutes=30)), ("6h", timedelta(hours=6))]
    + [("2d", timedelta(days=2))],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "6", "h", "-1h", "6 hours", "1w"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)
