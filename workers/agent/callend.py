"""Where a streamed reply can be cut: after the calls it writes as text (`textcalls`), once the
model writes on past them, so a slow local model does not keep generating for nobody."""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator

from workers.agent.textcalls import (
    FENCE,
    FINISH_MARKER,
    MISTRAL,
    MISTRAL_NAMED,
    recognise_text_protocol,
    recognise_tool_calls,
)

OPEN_FENCE = re.compile(r"^[ \t]*(?:`{3,}|~{3,})", re.MULTILINE)


# What a reply may write after a complete call before it counts as running on (a made-up result,
# a plan for later) rather than leading into its next call: a line or two of bridging prose.
RUN_ON_CHARS = 300
# A block left open after the last call is read on this far: it may be the next call, writing a
# whole file.
OPEN_BLOCK_CHARS = 20_000


def call_end(text: str, tools: Collection[str], *, text_protocol: bool = False) -> int | None:
    """Where a streamed reply can be cut, or None while it should be read on.

    Complete: a closed `<tool_call>` tag, a fenced block closed by its own line, a whole JSON
    value after `[TOOL_CALLS]`, a whole JSON object outside any open fence or tag, and under the
    text protocol the finish marker's line. What the text holds up to there must read as a call
    (or as a call that cannot be read: the model closed it, so reading on changes nothing).

    The text protocol takes one block a reply: cut after the first. Otherwise several calls in
    one reply all run, so the cut comes after the last complete call only once the model writes
    on past it (more than ``RUN_ON_CHARS`` of text that opens no further call): a model that
    invents the call's result, or keeps talking, is not waited for."""
    recognise = recognise_text_protocol if text_protocol else recognise_tool_calls
    last, seen = None, 0
    for end in sorted(set(_closing_points(text, text_protocol))):
        found = recognise(text[:end], tools)
        complete = len(found.calls) + bool(found.problem)
        if complete > seen:
            if text_protocol:
                return end
            last, seen = end, complete
    if last is None:
        return None
    after = text[last:]
    if _being_written(after):
        return last if len(after) > OPEN_BLOCK_CHARS else None
    return last if len(after.strip()) > RUN_ON_CHARS else None


def _being_written(after: str) -> bool:
    """Whether the text after the last complete call ends inside what may be the next one: an
    open fence or tag, or a JSON value (bare, or after `[TOOL_CALLS]`) not closed yet."""
    if _inside_open_block(after):
        return True
    # The closing brace of a call written with a doubled one (`{{...}}}`) leads nowhere.
    rest = after.lstrip().removeprefix("}").lstrip()
    if rest.startswith(MISTRAL):
        rest = rest[len(MISTRAL) :]
        named = MISTRAL_NAMED.match(rest)
        rest = rest[named.end() :] if named else rest
        rest = rest.lstrip()
        if not rest:
            return True
    return rest.startswith(("{", "[")) and _json_end(rest, 0) is None


def _closing_points(text: str, text_protocol: bool) -> Iterator[int]:
    for match in re.finditer(r"</tool_call>", text):
        yield match.end()
    for match in FENCE.finditer(text):
        if text.startswith("\n", match.end()):  # a line of its own: no info string follows
            yield match.end()
    for part in re.finditer(re.escape(MISTRAL), text):
        named = MISTRAL_NAMED.match(text, part.end())
        start = named.end() if named else part.end()
        with_value = _json_end(text, start + len(text[start:]) - len(text[start:].lstrip()))
        if with_value is not None:
            yield with_value
    index = text.find("{")
    while index != -1:
        end = _json_end(text, index)
        if end is not None and not _inside_open_block(text[:end]) and MISTRAL not in text[:end]:
            yield end
        index = text.find("{", end or index + 1)
    if text_protocol:
        for match in re.finditer(rf"^[ \t]*{FINISH_MARKER}[ \t]*$", text, re.MULTILINE):
            yield match.end()


def _json_end(text: str, start: int) -> int | None:
    try:
        _, end = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError:
        return None
    return int(end)


def _inside_open_block(text: str) -> bool:
    """Whether a fence or a `<tool_call>` tag is open at the end of ``text``."""
    return len(OPEN_FENCE.findall(text)) % 2 == 1 or text.count("<tool_call>") > text.count(
        "</tool_call>"
    )
