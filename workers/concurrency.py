"""What a task does meanwhile: stage timings, work on a helper thread, cleanup at the very end."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

log = structlog.get_logger()
T = TypeVar("T")


@dataclass
class Timings:
    """Milliseconds per named stage of one task."""

    stages: dict[str, int] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.stages[name] = round((time.monotonic() - started) * 1000)


class Cleanup:
    """What the job waits for only at its very end, done meanwhile: the sandbox goes while the
    task reports. A failure is logged; what is left carries the task's labels for the reaper."""

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []

    def start(self, what: str, fn: Callable[[], object]) -> None:
        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(self._run, what, fn), name=what)
        thread.start()
        self._threads.append(thread)

    @staticmethod
    def _run(what: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception:  # noqa: BLE001 - after the result: for the operator, not the user
            log.exception("cleanup failed", what=what)

    def wait(self) -> None:
        for thread in self._threads:
            thread.join()


def in_background(pool: Executor, fn: Callable[..., T], *args: Any) -> Future[T]:
    """`fn(*args)` on the pool, logging with this task's bound context."""
    return pool.submit(contextvars.copy_context().run, fn, *args)


def alongside(check: Callable[[], T], work: Callable[[], Any]) -> tuple[T, Any]:
    """`work()` here while `check()` runs on a thread of its own; both have ended when this
    returns or raises, and what `check` raises wins: a refused check is the reason shown even
    when `work` failed too, as when the check ran first."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="check") as pool:
        checked = in_background(pool, check)
        try:
            done = work()
        except BaseException:
            checked.result()
            raise
        return checked.result(), done


def on_a_thread(fn: Callable[..., T], *args: Any) -> Future[T]:
    """`fn(*args)` on a thread of its own, logging with this task's bound context; nothing waits
    for it but whoever asks for its result."""
    done: Future[T] = Future()
    context = contextvars.copy_context()

    def run() -> None:
        try:
            done.set_result(context.run(fn, *args))
        except BaseException as error:  # noqa: BLE001 - handed to whoever asks for the result
            done.set_exception(error)

    threading.Thread(target=run, name=getattr(fn, "__name__", "helper"), daemon=True).start()
    return done
