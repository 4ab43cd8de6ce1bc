"""Model clients kept between tasks: one idle OpenAI client per server, key and options in each
worker process.

Making a client costs tens of milliseconds (its HTTP client builds a TLS context), and a new one
opens a new connection (a TLS handshake to a hosted model) on its first call: both were on the
path of every task's first model call. A client is one task's at a time (`take`), given back when
its task closes its model (`give_back`); one abandoned by a call that ran past its deadline is
closed instead, never given back. A process keeps at most one idle client per key.

A task worker forks a process per task: it makes one idle client at its start (`prepare`), so
that every task's process starts with one (it never opened a connection: nothing is shared).
"""

from __future__ import annotations

import threading
from typing import Any

import openai

DEFAULT_TIMEOUT = 120.0  # seconds per read, unless a call's own deadline says more
DEFAULT_RETRIES = 3

_idle: dict[tuple[Any, ...], openai.OpenAI] = {}
_lock = threading.Lock()


def options(
    base_url: str | None,
    api_key: str,
    timeout: float = DEFAULT_TIMEOUT,
    max_retries: int = DEFAULT_RETRIES,
) -> dict[str, Any]:
    """What a client is made with, and kept by."""
    return dict(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries)


def prepare(options: dict[str, Any]) -> None:
    """Make an idle client now, off a task's path."""
    give_back(options, openai.OpenAI(**options))


def _key(options: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted(options.items()))


def take(options: dict[str, Any]) -> openai.OpenAI:
    """An idle client made with `options`, or a new one."""
    with _lock:
        client = _idle.pop(_key(options), None)
    return client if client is not None else openai.OpenAI(**options)


def give_back(options: dict[str, Any], client: openai.OpenAI) -> None:
    """Keep `client` for the next task with the same `options`, unless one is kept already."""
    if not client.is_closed():
        with _lock:
            if _key(options) not in _idle:
                _idle[_key(options)] = client
                return
    client.close()
