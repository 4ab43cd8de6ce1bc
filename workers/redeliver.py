"""Missed webhooks come back: GitHub never redelivers on its own, so we ask it to.

``reconcile`` reads the App's recent deliveries (``GET /app/hook/deliveries``), groups the
attempts by guid (the X-GitHub-Delivery id an event keeps through its redeliveries) and asks
GitHub to send again (``POST /app/hook/deliveries/{id}/attempts``) each event that

- no attempt delivered (a connection refused, a timeout, a 5xx) and Redis never recorded, or
- the receiver acknowledged with 202 (a task queued) but Redis no longer holds (lost data).

Each ask is claimed in Redis first (one set per guid, of the attempt ids asked for), so the CLI
and the workers' loop, run at once or one after the other, never ask twice for one attempt. An
event whose redelivery failed too is asked for again only after the receiver has answered
something since (it is up again), and at most ``MAX_ASKS`` times.

The workers run it every ``CODEX_REDELIVER_INTERVAL`` seconds (``start_reconciler``), one
worker per round; ``codexbot redeliver`` runs it by hand.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog
from redis import Redis

from codexbot import keys
from workers.github import GitHubError
from workers.githubapp import GitHubApp, HookDelivery

log = structlog.get_logger()

MAX_ASKS = 3
# GitHub keeps deliveries for three days: nothing older can be redelivered.
RETENTION = timedelta(days=3)
# The loop's first round looks this far back; later rounds from the previous one, less a margin
# for deliveries that were still being attempted when it looked.
FIRST_LOOKBACK = timedelta(hours=6)
MARGIN = timedelta(minutes=10)
DURATION = re.compile(r"^(\d+)([smhd])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}

# What reconcile did for one event, as printed.
DELIVERED = "delivered"
RECORDED = "recorded"  # no attempt succeeded, but the receiver had recorded it (a slow answer)
REDELIVERED = "redelivered"
WOULD_REDELIVER = "would redeliver"
WAITING = "asked, waiting for GitHub"
RECEIVER_DOWN = "redelivery failed, waiting for the receiver"
GAVE_UP = f"gave up after {MAX_ASKS} asks"


def parse_duration(text: str) -> timedelta:
    """``"6h"`` -> six hours; ``s``, ``m``, ``h`` and ``d`` are understood."""
    match = DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as 90s, 30m, 6h or 2d")
    return timedelta(**{UNITS[match.group(2)]: int(match.group(1))})


@dataclass(frozen=True)
class Event:
    """An event's attempts, newest first, and what Redis knows of it."""

    attempts: list[HookDelivery]
    recorded: bool
    asked: frozenset[int]

    @property
    def newest(self) -> HookDelivery:
        return self.attempts[0]


def decide(event: Event, latest_success: int | None) -> str:
    """What to do for one event (pure; ``REDELIVERED`` means ask GitHub now).

    ``latest_success`` is the id of the newest attempt, of any event, that the receiver
    answered with 2xx: after it, the receiver was up (GitHub numbers attempts in order)."""
    delivered = [a for a in event.attempts if a.succeeded]
    if delivered and (event.recorded or all(a.status_code != 202 for a in delivered)):
        return DELIVERED
    if not delivered and event.recorded:
        return RECORDED
    if event.newest.id in event.asked:
        return WAITING
    if len(event.asked) >= MAX_ASKS:
        return GAVE_UP
    if event.asked and (latest_success is None or latest_success < event.newest.id):
        return RECEIVER_DOWN
    return REDELIVERED


def line(event: Event, outcome: str) -> str:
    """One printed line: guid, event.action, the newest attempt's status, what was done."""
    newest = event.newest
    name = f"{newest.event}.{newest.action}" if newest.action else newest.event
    status = f"{newest.status_code} {newest.status}".strip()
    return f"{newest.guid}  {name}  {status}  {outcome}"


@dataclass
class Report:
    since: datetime
    lines: list[str] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(self.outcomes.items()))
        total = sum(self.outcomes.values())
        return f"{total} events since {self.since:%Y-%m-%d %H:%M:%S} UTC: {counts or 'none'}"


def group_by_guid(deliveries: Iterable[HookDelivery], since: datetime) -> list[list[HookDelivery]]:
    """Attempts per guid, newest first, reading GitHub's newest-first list up to ``since``."""
    groups: dict[str, list[HookDelivery]] = {}
    for delivery in deliveries:
        if delivery.delivered_at < since:
            break
        groups.setdefault(delivery.guid, []).append(delivery)
    return list(groups.values())


def reconcile(app: GitHubApp, redis: Redis, *, since: datetime, dry_run: bool = False) -> Report:
    """Ask GitHub to redeliver every event since ``since`` the receiver never got; see above."""
    groups = group_by_guid(app.hook_deliveries(), since)
    pipe = redis.pipeline(transaction=False)
    for attempts in groups:
        pipe.exists(keys.delivery(attempts[0].guid))
        pipe.smembers(keys.redelivery_asks(attempts[0].guid))
    answers = pipe.execute()
    latest_success = max(
        (a.id for attempts in groups for a in attempts if a.succeeded), default=None
    )
    report = Report(since=since)
    for index, attempts in enumerate(groups):
        asked = frozenset(int(member) for member in answers[2 * index + 1])
        event = Event(attempts=attempts, recorded=bool(answers[2 * index]), asked=asked)
        outcome = decide(event, latest_success)
        if outcome == REDELIVERED:
            outcome = WOULD_REDELIVER if dry_run else ask(app, redis, event.newest)
        report.lines.append(line(event, outcome))
        report.outcomes[outcome.split(":")[0]] += 1
    return report


def ask(app: GitHubApp, redis: Redis, attempt: HookDelivery) -> str:
    """Claim the ask in Redis, then ask GitHub; an ask that GitHub refused is released."""
    key = keys.redelivery_asks(attempt.guid)
    if not redis.sadd(key, attempt.id):
        return WAITING  # another run asked a moment ago
    redis.expire(key, int(RETENTION.total_seconds()))
    try:
        app.redeliver(attempt.id)
    except GitHubError as error:
        redis.srem(key, attempt.id)
        return f"failed: {error}"
    log.info("redelivery asked", delivery_id=attempt.guid, attempt=attempt.id)
    return REDELIVERED


def round_since(redis: Redis, now: datetime) -> datetime:
    """Where the loop's round starts looking: the previous round, less a margin, at most
    three days back (GitHub's retention); six hours back when no round ran before."""
    checked = redis.get(keys.REDELIVER_CHECKED)
    if checked is None:
        return now - FIRST_LOOKBACK
    previous = datetime.fromtimestamp(float(checked), UTC)
    return max(previous - MARGIN, now - RETENTION)


def run_round(app: GitHubApp, redis: Redis, interval: int, owner: str) -> Report | None:
    """One round of the workers' loop, if no other worker has claimed this interval's."""
    if not redis.set(keys.REDELIVER_ROUND, owner, nx=True, ex=interval):
        return None
    now = datetime.now(UTC)
    report = reconcile(app, redis, since=round_since(redis, now))
    redis.set(keys.REDELIVER_CHECKED, now.timestamp())
    log.info("redelivery round", summary=report.summary(), **report.outcomes)
    return report


def start_reconciler(app: GitHubApp, redis: Redis, interval: int, owner: str) -> threading.Event:
    """Run ``run_round`` every ``interval`` seconds on a daemon thread; set the event to stop."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                run_round(app, redis, interval, owner)
            except Exception:  # noqa: BLE001 - the loop must outlive a bad round; logged
                log.exception("redelivery round failed")
            stop.wait(max(interval - (time.monotonic() - started), 1))

    threading.Thread(target=loop, name="codexbot-redeliver", daemon=True).start()
    return stop
