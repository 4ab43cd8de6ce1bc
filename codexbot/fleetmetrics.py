"""The workers' metrics, kept in Redis so one scrape of the receiver's /metrics sees every host.

Task workers are RQ work horses, forked per job, on as many hosts as an operator runs: no file
or port of one host sees them all. So a worker adds what it measured to a hash per metric in
Redis (one pipeline per event: `HINCRBY`, `HINCRBYFLOAT`, `HSET`), and the receiver reads the
hashes when it is scraped (`collect`, one pipeline). A Redis error is logged and forgotten: a
figure is never worth failing a task.

    meter = WorkerMetrics(redis)
    meter.task_finished("fix", "done", 93.2)
    meter.model_call(2.4, prompt_tokens=900, completion_tokens=120)
    meter.github_answered("octo-org", status=None, remaining=4990, limit=5000)
    meter.sandboxes_seen(engine_id, engine_name, 3)

Counters and histograms only grow; a gauge (rate limit, live sandboxes) is the last value
reported, with the time it was reported: a sandbox count older than `SANDBOXES_FRESH_SECONDS`
(its engine's workers stopped reporting) is not shown.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import structlog
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError

from codexbot import keys

log = structlog.get_logger()

# A task takes from seconds (a question) to the better part of an hour (a fix with slow tests).
TASK_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, math.inf)
# One chat completion: well under a second for a hosted model's short reply, minutes for a
# self-hosted one reading a long prompt.
MODEL_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, math.inf)
# The reaper reports every 15 s; four rounds missed and its engine's count is not shown.
SANDBOXES_FRESH_SECONDS = 60.0
APP_ACCOUNT = "(app)"  # the App's own JWT: a name no GitHub login can have


@dataclass(frozen=True)
class Family:
    name: str  # as exported, without `_total` (prometheus_client adds it to a counter)
    kind: str  # counter, histogram or gauge
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()

    @property
    def key(self) -> str:
        return keys.metric(self.name)


TASKS_FINISHED = Family(
    "codexbot_tasks_finished",
    "counter",
    "Tasks ended, by kind and outcome (done, failed, stopped, taken_over).",
    ("kind", "outcome"),
)
TASK_SECONDS = Family(
    "codexbot_task_duration_seconds",
    "histogram",
    "Time from a task job starting on a worker to its end, by kind.",
    ("kind",),
    TASK_BUCKETS,
)
MODEL_TOKENS = Family(
    "codexbot_model_tokens",
    "counter",
    "Tokens the model API reported, by type (prompt, completion).",
    ("type",),
)
MODEL_SECONDS = Family(
    "codexbot_model_call_seconds",
    "histogram",
    "Time of one call to the model API, retries included, by result (ok, error).",
    ("result",),
    MODEL_BUCKETS,
)
MODEL_ERRORS = Family(
    "codexbot_model_errors",
    "counter",
    "Model API calls that failed, by kind (timeout, context_too_long, tools_unsupported, api).",
    ("kind",),
)
GITHUB_ERRORS = Family(
    "codexbot_github_api_errors",
    "counter",
    "GitHub API answers with a status of 400 or more (and `network`: no answer), by status.",
    ("status",),
)
RATE_REMAINING = Family(
    "codexbot_github_rate_limit_remaining",
    "gauge",
    "X-RateLimit-Remaining last seen, by account (an installation's; `(app)`: the App's JWT).",
    ("account",),
)
RATE_LIMIT = Family(
    "codexbot_github_rate_limit",
    "gauge",
    "X-RateLimit-Limit last seen, by account.",
    ("account",),
)
SANDBOXES = Family(
    "codexbot_sandboxes",
    "gauge",
    "Task containers of this deployment on each Docker engine, as its workers last counted.",
    ("engine", "host"),
)
# What the workers write; the rate-limit gauges share one hash (RATE_REMAINING's).
FAMILIES = (
    TASKS_FINISHED,
    TASK_SECONDS,
    MODEL_TOKENS,
    MODEL_SECONDS,
    MODEL_ERRORS,
    GITHUB_ERRORS,
    RATE_REMAINING,
    SANDBOXES,
)


def _field(*parts: str) -> str:
    return json.dumps(parts, separators=(",", ":"))


def _bound(value: float) -> str:
    return "+Inf" if math.isinf(value) else repr(value)


class WorkerMetrics:
    """What a worker measured, added to the hashes in Redis; never raises."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    def task_finished(self, kind: str, outcome: str, seconds: float) -> None:
        self._write(
            lambda pipe: (
                pipe.hincrby(TASKS_FINISHED.key, _field(kind, outcome), 1),
                self._observe(pipe, TASK_SECONDS, (kind,), seconds),
            )
        )

    def model_call(
        self,
        seconds: float,
        *,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        error: str | None = None,
    ) -> None:
        def add(pipe: Pipeline) -> None:
            self._observe(pipe, MODEL_SECONDS, ("error" if error else "ok",), seconds)
            if error:
                pipe.hincrby(MODEL_ERRORS.key, _field(error), 1)
            for kind, tokens in (("prompt", prompt_tokens), ("completion", completion_tokens)):
                if tokens:
                    pipe.hincrby(MODEL_TOKENS.key, _field(kind), tokens)

        self._write(add)

    def github_answered(
        self, account: str, *, status: str | None, remaining: int, limit: int
    ) -> None:
        """One GitHub API answer: its error status (None: a success), and the rate limit it
        showed (a negative `remaining`: none shown)."""
        if status is None and remaining < 0:
            return

        def add(pipe: Pipeline) -> None:
            if status is not None:
                pipe.hincrby(GITHUB_ERRORS.key, _field(status), 1)
            if remaining >= 0:
                seen = json.dumps([remaining, limit, time.time()])
                pipe.hset(RATE_REMAINING.key, _field(account.lower()), seen)

        self._write(add)

    def sandboxes_seen(self, engine: str, host: str, count: int) -> None:
        self._write(
            lambda pipe: pipe.hset(
                SANDBOXES.key, _field(engine, host), json.dumps([count, time.time()])
            )
        )

    @staticmethod
    def _observe(pipe: Pipeline, family: Family, labels: tuple[str, ...], value: float) -> None:
        # One bucket per observation (the first bound it fits under); `collect` sums them up.
        bound = next(b for b in family.buckets if value <= b)
        pipe.hincrby(family.key, _field(*labels, _bound(bound)), 1)
        pipe.hincrbyfloat(family.key, _field(*labels, "sum"), value)
        pipe.hincrby(family.key, _field(*labels, "count"), 1)

    def _write(self, add: Callable[[Pipeline], object]) -> None:
        try:
            pipe = self._redis.pipeline(transaction=False)
            add(pipe)
            pipe.execute()
        except RedisError as error:
            log.warning("metrics: not recorded", error=str(error))


# -- the receiver's side: the hashes as Prometheus metrics, read when scraped ------------------


def collect(redis: Redis, now: float | None = None) -> list[Metric]:
    """Every worker-side metric from Redis (one pipeline). Raises RedisError."""
    pipe = redis.pipeline(transaction=False)
    for family in FAMILIES:
        pipe.hgetall(family.key)
    hashes = [{_decode(k): _decode(v) for k, v in raw.items()} for raw in pipe.execute()]
    read = dict(zip(FAMILIES, hashes, strict=True))
    now = time.time() if now is None else now
    return [
        *(_counter(family, read[family]) for family in (TASKS_FINISHED, MODEL_TOKENS)),
        _histogram(TASK_SECONDS, read[TASK_SECONDS]),
        _histogram(MODEL_SECONDS, read[MODEL_SECONDS]),
        *(_counter(family, read[family]) for family in (MODEL_ERRORS, GITHUB_ERRORS)),
        *_rate_limits(read[RATE_REMAINING]),
        _sandboxes(read[SANDBOXES], now),
    ]


def metric_names(metrics: Iterable[Metric]) -> set[str]:
    """The names a query can use: a counter's `_total`, a histogram's series."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    return {
        family.name + suffix for family in metrics for suffix in suffixes.get(family.type, ("",))
    }


def _decode(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _entries(fields: dict[str, str]) -> Iterator[tuple[list[str], str]]:
    for field, value in sorted(fields.items()):
        try:
            parts = json.loads(field)
        except ValueError:
            continue
        if isinstance(parts, list) and all(isinstance(part, str) for part in parts):
            yield parts, value


def _counter(family: Family, fields: dict[str, str]) -> Metric:
    metric = CounterMetricFamily(family.name, family.help, labels=family.labels)
    for labels, value in _entries(fields):
        if len(labels) == len(family.labels):
            metric.add_metric(labels, float(value))
    return metric


def _histogram(family: Family, fields: dict[str, str]) -> Metric:
    metric = HistogramMetricFamily(family.name, family.help, labels=family.labels)
    series: dict[tuple[str, ...], dict[str, float]] = {}
    for parts, value in _entries(fields):
        if len(parts) == len(family.labels) + 1:
            series.setdefault(tuple(parts[:-1]), {})[parts[-1]] = float(value)
    for labels, counts in series.items():
        running, buckets = 0.0, []
        for bound in family.buckets:
            running += counts.get(_bound(bound), 0.0)
            buckets.append((_bound(bound), running))
        metric.add_metric(list(labels), buckets, counts.get("sum", 0.0))
    return metric


def _gauge_values(fields: dict[str, str], width: int) -> Iterator[tuple[list[str], list[float]]]:
    for labels, raw in _entries(fields):
        try:
            values = json.loads(raw)
        except ValueError:
            continue
        if len(labels) == width and isinstance(values, list):
            yield labels, [float(v) for v in values]


def _rate_limits(fields: dict[str, str]) -> Iterator[Metric]:
    remaining = GaugeMetricFamily(RATE_REMAINING.name, RATE_REMAINING.help, labels=["account"])
    limit = GaugeMetricFamily(RATE_LIMIT.name, RATE_LIMIT.help, labels=["account"])
    for labels, values in _gauge_values(fields, 1):
        remaining.add_metric(labels, values[0])
        limit.add_metric(labels, values[1])
    yield remaining
    yield limit


def _sandboxes(fields: dict[str, str], now: float) -> Metric:
    metric = GaugeMetricFamily(SANDBOXES.name, SANDBOXES.help, labels=list(SANDBOXES.labels))
    for labels, (count, seen) in _gauge_values(fields, len(SANDBOXES.labels)):
        if now - seen <= SANDBOXES_FRESH_SECONDS:
            metric.add_metric(labels, count)
    return metric
