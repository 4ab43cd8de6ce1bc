"""The agent's trajectory: one redacted JSON record per line, written as the run goes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RECORD_TYPES = frozenset({"request", "response", "tool", "result", "error"})


def redact_value(value: Any, redact: Callable[[str], str]) -> Any:
    """Applies ``redact`` to every string in a JSON-like value, keys included."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_value(k, redact): redact_value(v, redact) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(item, redact) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))  # anything else is stored as its (redacted) text


class Trajectory:
    """Appends JSONL records to ``path``; every string goes through ``redactor`` first.

    The file is opened and closed per record, so whatever happened before a crash is on disk.
    """

    def __init__(self, path: Path, redactor: Callable[[str], str]) -> None:
        self.path = Path(path)
        self._redact = redactor

    def redact(self, text: str) -> str:
        return self._redact(text)

    def record(self, type: str, step: int, **fields: Any) -> None:
        if type not in RECORD_TYPES:
            raise ValueError(f"unknown trajectory record type {type!r}")
        entry = {"type": type, "step": step, "time": time.time(), **fields}
        line = json.dumps(redact_value(entry, self._redact), ensure_ascii=False)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as file:
            file.write(line + "\n")

    def read(self) -> list[dict[str, Any]]:
        """All records so far (for tests and the task pages)."""
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as file:
            return [json.loads(line) for line in file if line.strip()]
