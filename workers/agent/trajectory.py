"""The agent's trajectory: one redacted JSON record per line, written as the run goes, to the
store every host reads (``workers.trajectories``), to a file, or both."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workers.trajectories import parse_lines

RECORD_TYPES = frozenset(
    {
        "start",  # what the task is: repo, number, mode, limits, tools
        "instructions",  # the repository instruction files used, and why
        "request",  # each model request: the messages and tools sent
        "response",  # each model response, its token counts and duration
        "tool",  # each tool call: arguments, output shown to the model, duration
        "steering",  # comments that arrived while the agent worked
        "context",  # old tool results elided to fit the context window
        "protocol",  # the run switched to the text protocol, and why
        "error",
        "result",  # the last record: status, steps, tokens, seconds
        "patch",  # one of several tries: its change, kept after its result (workers.attempts)
    }
)


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
    """Appends JSON records to ``path`` and gives each to ``keep`` (a store's append for the
    task); every string goes through ``redactor`` first.

    Each record is written as it comes (the file is opened and closed per record), so whatever
    happened before a crash is kept.
    """

    def __init__(
        self,
        path: Path | None,
        redactor: Callable[[str], str],
        listener: Callable[[dict[str, Any]], None] | None = None,
        keep: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self._redact = redactor
        self._listener = listener  # sees each redacted record: a live progress display
        self._keep = keep

    def redact(self, text: str) -> str:
        return self._redact(text)

    def record(self, type: str, step: int, **fields: Any) -> None:
        if type not in RECORD_TYPES:
            raise ValueError(f"unknown trajectory record type {type!r}")
        entry = {"type": type, "step": step, "time": time.time(), **fields}
        redacted = redact_value(entry, self._redact)
        line = json.dumps(redacted, ensure_ascii=False)
        if self._keep is not None:
            self._keep(line)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as file:
                file.write(line + "\n")
        if self._listener is not None:
            self._listener(redacted)

    def read(self) -> list[dict[str, Any]]:
        """All records so far in the file (for tests and benches)."""
        return read_records(self.path) if self.path is not None else []


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a trajectory file; a line a crash cut short is skipped."""
    if not path.exists():
        return []
    with path.open(encoding="utf-8", errors="replace") as file:
        return parse_lines(file)
