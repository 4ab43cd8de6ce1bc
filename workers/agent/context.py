"""The conversation's size: when it nears the model's context window, old tool output goes.

Only tool results are elided, oldest first, each to a one-line note, and the most recent ones
never: what the model said and what it was asked stay as they were. Earlier messages change only
here, so a server's prompt cache holds from one step to the next until the history is compacted.
"""

from __future__ import annotations

import json
from typing import Any

RESULT_PREFIX = "Result of your "  # how a tool's result starts under text calls
ELIDED = "[older tool output removed to fit the context window: {size} characters]"
CONTEXT_SHARE = 0.8  # compact the history when it passes this share of the context window
KEEP_RECENT = 3  # the most recent tool results are never elided


def compact(messages: list[dict[str, Any]], context_tokens: int, *, force: bool) -> int | None:
    """Elide old tool results in place until the history fits; how many were elided, or None
    when it already fitted. ``force`` halves the history whatever its size, keeping only the
    last result."""
    size = estimate_tokens(messages)
    budget = size // 2 if force else context_tokens * CONTEXT_SHARE
    if size <= budget:
        return None
    results = [m for m in messages if is_tool_result(m)]
    elided = 0
    for message in results[:-KEEP_RECENT] if not force else results[:-1]:
        if message["content"].startswith("[older tool output removed"):
            continue
        message["content"] = ELIDED.format(size=len(message["content"]))
        elided += 1
        if estimate_tokens(messages) <= budget:
            break
    return elided


def is_tool_result(message: dict[str, Any]) -> bool:
    """A tool's result: a `tool` message, or under text calls the user message that holds it."""
    if message.get("role") == "tool":
        return True
    content = message.get("content")
    return (
        message.get("role") == "user"
        and isinstance(content, str)
        and content.startswith((RESULT_PREFIX, "[older tool output removed"))
    )


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    return len(json.dumps(messages, ensure_ascii=False)) // 4
