"""Routes a webhook event to the trigger handlers registered for it (after gidgethub's Router)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
    """What a handler may use: the settings and a way to enqueue work. Nothing else."""

    def __init__(self, settings: Settings, enqueue: Callable[..., Enqueued]) -> None:
        self.settings = settings
        self.enqueue = enqueue
