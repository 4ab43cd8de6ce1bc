"""GET /metrics: Prometheus figures for the receiver.

Counters and the ack-latency histogram are kept per process; under a multi-process server
(``codexbot serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker starts) prometheus_client
keeps them in files that one scrape sums over every worker. Queue depths and tasks by state are
read from Redis at scrape time, so they are the same whichever worker answers. So are the
workers' figures (tasks, model calls, GitHub answers, sandboxes: `codexbot.fleetmetrics`), which
every worker on every host adds to Redis: one scrape of any receiver sees the whole fleet.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import structlog
from flask import Blueprint, Response, current_app
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue

from app import dashboard
from codexbot import fleetmetrics, keys
from codexbot.settings import Settings

blueprint = Blueprint("metrics", __name__)
blueprint.before_request(dashboard.require_token)
log = structlog.get_logger()

# GitHub retries a delivery it did not get an answer to within 10 s; the interesting range is
# well under that.
ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
# The events an App can be sent; any other header value is counted as "other", so a hostile
# sender cannot grow the label set.
KNOWN_EVENTS = frozenset(
    {
        "issues",
        "issue_comment",
        "pull_request",
        "pull_request_review",
        "pull_request_review_comment",
        "pull_request_review_thread",
        "push",
        "ping",
        "installation",
        "installation_repositories",
        "check_run",
        "check_suite",
        "status",
        "workflow_run",
        "workflow_job",
        "create",
        "delete",
        "label",
        "repository",
        "member",
        "star",
        "watch",
        "fork",
    }
)
TASK_STATE_PREFIX = keys.tasks_in_state("")


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class ReceiverMetrics:
    """The receiver's own instruments, registered on a registry of the app's own."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        shared = multiprocess_dir() is not None
        # In multi-process mode the values live in files; the instruments register nowhere
        # and a scrape reads the files instead.
        self.registry = CollectorRegistry()
        own = None if shared else self.registry
        self.deliveries = Counter(
            "codexbot_deliveries",
            "Webhook deliveries received, by event and what the receiver did with them.",
            ["event", "outcome"],
            registry=own,
        )
        self.ack_seconds = Histogram(
            "codexbot_ack_seconds",
            "Time from a POST /webhook arriving to its answer being ready.",
            ["outcome"],
            buckets=ACK_BUCKETS,
            registry=own,
        )
        if shared:
            multiprocess.MultiProcessCollector(self.registry)
        self.registry.register(RedisGauges(settings, redis))
        self.registry.register(WorkerFigures(redis))

    def count(self, event: str, outcome: str, seconds: float) -> None:
        label = event if event in KNOWN_EVENTS else ("unverified" if not event else "other")
        self.deliveries.labels(event=label, outcome=outcome).inc()
        self.ack_seconds.labels(outcome=outcome).observe(seconds)


class RedisGauges(Collector):
    """Queue depths and tasks by state, read from Redis when scraped (one pipeline)."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.queues = {
            "agent": Queue(settings.codex_queue, connection=redis),
            "intake": Queue(settings.codex_fast_queue, connection=redis),
        }
        self.redis = redis

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            state_keys = sorted(
                key.decode() if isinstance(key, bytes) else key
                for key in self.redis.scan_iter(match=TASK_STATE_PREFIX + "*", count=100)
            )
            pipe = self.redis.pipeline(transaction=False)
            for queue in self.queues.values():
                pipe.llen(queue.key)  # what Queue.count reads, here in the one pipeline
            for key in state_keys:
                pipe.scard(key)
            counts = pipe.execute()
        except RedisError as error:
            log.warning("metrics: redis unavailable", error=str(error))
            return
        depth = GaugeMetricFamily(
            "codexbot_queue_depth", "Jobs waiting in each RQ queue.", labels=["lane", "queue"]
        )
        for (lane, queue), count in zip(self.queues.items(), counts, strict=False):
            depth.add_metric([lane, queue.name], count)
        yield depth
        tasks = GaugeMetricFamily("codexbot_tasks", "Tasks in each state.", labels=["state"])
        for key, count in zip(state_keys, counts[len(self.queues) :], strict=True):
            tasks.add_metric([key.removeprefix(TASK_STATE_PREFIX)], count)
        yield tasks


class WorkerFigures(Collector):
    """What the workers recorded in Redis (`codexbot.fleetmetrics`), read when scraped."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def collect(self) -> Iterator[Metric]:
        try:
            yield from fleetmetrics.collect(self.redis)
        except RedisError as error:
            log.warning("metrics: redis unavailable", error=str(error))


@blueprint.get("/metrics")
def export_metrics() -> Response:
    metrics: ReceiverMetrics = current_app.extensions["metrics"]
    return Response(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST)
