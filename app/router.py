"""Routes a webhook event to the trigger handlers registered for it (after gidgethub's Router)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis import Redis

from codexbot import keys
from codexbot.settings import Settings


@dataclass(frozen=True)
class Delivery:
    """One verified webhook delivery, as the handlers see it."""

    id: str
    event: str
    payload: dict[str, Any]

    @property
    def action(self) -> str | None:
        action = self.payload.get("action")
        return action if isinstance(action, str) else None


@dataclass(frozen=True)
class Enqueued:
    task_id: str


Handler = Callable[[Delivery, "Context"], Enqueued | None]


class Router:
    """Handlers keyed by (event, action); routers combine by passing others to the constructor."""

    def __init__(self, *others: Router) -> None:
        self._handlers: dict[tuple[str, str | None], list[Handler]] = defaultdict(list)
        for other in others:
            for key, handlers in other._handlers.items():
                self._handlers[key].extend(handlers)

    def register(self, event: str, action: str | None = None) -> Callable[[Handler], Handler]:
        def decorator(handler: Handler) -> Handler:
            self._handlers[(event, action)].append(handler)
            return handler

        return decorator

    def handles(self, event: str) -> bool:
        return any(key[0] == event for key in self._handlers)

    def dispatch(self, delivery: Delivery, context: Context) -> list[Enqueued]:
        handlers = self._handlers.get((delivery.event, None), [])
        if delivery.action is not None:
            handlers = handlers + self._handlers.get((delivery.event, delivery.action), [])
        results = (handler(delivery, context) for handler in handlers)
        return [result for result in results if result is not None]


class Context:
    """What a handler may use: the settings, a way to enqueue work, and one cheap question."""

    def __init__(
        self, settings: Settings, enqueue: Callable[..., Enqueued], redis: Redis | None = None
    ) -> None:
        self.settings = settings
        self.enqueue = enqueue
        self._redis = redis

    def task_running(self, repo: str, number: int) -> bool:
        """Whether an issue or PR has a task at work now (so a plain comment may steer it)."""
        return self._redis is not None and bool(self._redis.exists(keys.target(repo, number)))
