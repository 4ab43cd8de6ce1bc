"""Two text helpers every side uses: output capped to head and tail, and a safe code fence.

One copy for the sandbox (command output), the agent (what the model sees) and the text we post.
The exec server (`sandbox/execserver.py`) keeps its own head-and-tail buffer: it runs alone in
the container with the standard library and cannot import this.
"""

from __future__ import annotations

import re

MIN_FENCE = 3


def cut_marker(cut_bytes: int) -> str:
    return f"\n[... {cut_bytes} bytes cut ...]\n"


def _whole_characters_at_end(data: bytes) -> bytes:
    """``data`` without a UTF-8 character that a cut split at its end."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:  # a continuation byte: look further back for its lead
            continue
        needed = 1 if byte < 0xC0 else 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
        return data[:-back] if needed > back else data
    return data


def _whole_characters_at_start(data: bytes) -> bytes:
    """``data`` without the continuation bytes a cut left at its start."""
    skip = 0
    while skip < min(3, len(data)) and data[skip] & 0xC0 == 0x80:
        skip += 1
    return data[skip:]


def capped_text(head: bytes, tail: bytes, total: int) -> str:
    """Output kept as head and tail of `total` bytes, the cut between them marked.

    Invalid UTF-8 is shown as U+FFFD; a character the cut split is counted as cut, not shown.
    """
    if total <= len(head) + len(tail):
        return (head + tail).decode("utf-8", errors="replace")
    head, tail = _whole_characters_at_end(head), _whole_characters_at_start(tail)
    cut = total - len(head) - len(tail)
    return (
        head.decode("utf-8", errors="replace")
        + cut_marker(cut)
        + tail.decode("utf-8", errors="replace")
    )


class CappedOutput:
    """Keeps the first and last `limit // 2` bytes of a stream and counts what falls between."""

    def __init__(self, limit: int) -> None:
        self.head_limit = max(limit, 0) // 2
        self.tail_limit = max(limit, 0) - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data and self.tail_limit:
            self.tail += data[-self.tail_limit :]
            if len(self.tail) > self.tail_limit:
                del self.tail[: len(self.tail) - self.tail_limit]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def data(self) -> bytes:
        return bytes(self.head + self.tail)

    def text(self) -> str:
        return capped_text(bytes(self.head), bytes(self.tail), self.total)


def cap_output(output: str, limit: int) -> tuple[str, bool]:
    """Keeps the head and tail of ``output`` within ``limit`` UTF-8 bytes, cut mark included;
    True when something was cut."""
    data = output.encode("utf-8", errors="replace")
    if len(data) <= limit:
        return output, False
    mark_bytes = len(cut_marker(len(data)).encode())  # the longest the mark can be
    capped = CappedOutput(max(0, limit - mark_bytes))
    capped.add(data)
    return capped.text(), True


def backticks_beyond(text: str, at_least: int = MIN_FENCE) -> str:
    """A backtick run longer than any in ``text`` (and ``at_least`` long): nothing in it ends it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(at_least, longest + 1)


def fence(text: str, info: str = "text") -> str:
    """Wraps text in a backtick fence longer than any backtick run inside, so it cannot close it."""
    marks = backticks_beyond(text)
    return f"{marks}{info}\n{text}\n{marks}"
