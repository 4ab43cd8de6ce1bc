"""The workers' Redis client: one that rides out a short Redis restart instead of failing work.

A task writes its record, its lease and each trajectory record to Redis while it runs; a Redis
restarted under it (an upgrade, a failover, AOF reload) is gone for a second or a few. Commands
are retried on connection errors with a capped exponential backoff for about half a minute, then
the error propagates as before.
"""

from __future__ import annotations

from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

RETRIES = 20  # with the backoff below: about 30 s of waiting in all
BACKOFF = ExponentialBackoff(cap=2.0, base=0.05)


def connect(url: str) -> Redis:
    return Redis.from_url(
        url,
        retry=Retry(BACKOFF, RETRIES),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
