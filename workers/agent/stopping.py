"""A stop that arrives while a tool runs: the running command is cancelled at once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import structlog

log = structlog.get_logger(__name__)


@contextmanager
def cancel_on_stop(
    should_stop: Callable[[], str | None],
    cancel: Callable[[str], object],
    stopped: Callable[[str], None],
    interval: float,
) -> Iterator[None]:
    """Every `interval` seconds while the block runs, ask `should_stop`; on a reason, tell
    `stopped` and `cancel` the command running now, and each one that starts after it (a tool
    may run several), until the block ends."""
    done = threading.Event()

    def watch() -> None:
        while not done.wait(interval):
            try:
                reason = should_stop()
            except Exception as error:  # noqa: BLE001 - the loop asks again after the tool
                log.warning("agent.stop_watch_failed", error=str(error)[:200])
                return
            if reason:
                stopped(reason)
                cancel(reason)
                while not done.wait(interval):
                    cancel(reason)
                return

    watcher = threading.Thread(target=watch, name="stop-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
