"""The workers' Redis client: one that rides out a short Redis restart instead of failing work.

A task writes its record, its lease and each trajectory record to Redis while it runs; a Redis
restarted under it (an upgrade, a failover, AOF reload) is gone for a second or a few. Commands
are retried on connection errors with a capped exponential backoff for about half a minute, then
the error propagates as before. The receiver's client waits less: GitHub gives up on a delivery
after 10 s.
"""

from __future__ import annotations

from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

RETRIES = 20  # with the backoff below: about 30 s of waiting in all
BACKOFF = ExponentialBackoff(cap=2.0, base=0.05)
# The receiver answers GitHub within its 10 s: a connection refused (Redis restarting, AOF
# loading) is tried again for about 5 s, a stalled one is not (its 5 s socket timeout fails it).
RECEIVER_RETRIES = 6


def connect(url: str) -> Redis:
    return Redis.from_url(
        url,
        retry=Retry(BACKOFF, RETRIES),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


def connect_receiver(url: str) -> Redis:
    """The receiver's client: rides out a Redis restart of a few seconds instead of answering
    503, and still answers within GitHub's 10 s when Redis is gone for longer."""
    return Redis.from_url(
        url,
        socket_timeout=5,
        socket_connect_timeout=2,
        retry=Retry(BACKOFF, RECEIVER_RETRIES),
        retry_on_error=[RedisConnectionError],
    )
