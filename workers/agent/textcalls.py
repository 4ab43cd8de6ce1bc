"""Tool calls a model wrote as text, and JSON a model got almost right.

A server without a tool-call parser for its model (llama.cpp under a template it cannot parse, vLLM
without ``--tool-call-parser``) returns the call in the message text. The shapes seen in practice,
tried in this order, the first that yields a call winning:

- ``hermes``: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (Hermes, Qwen);
- ``mistral``: ``[TOOL_CALLS]`` and a JSON list of calls, or ``[TOOL_CALLS]name{...}`` (v11+);
- ``fenced_json``: a fenced ```json block holding a call (Qwen2.5-Coder under llama.cpp);
- ``bare_json``: a JSON object with ``name`` and ``arguments`` in the prose; with the fenced ones,
  in the order written.

Doubled outer braces (``{{"name": ...}}``, a prompt template's escape) are undone when what they
hold is a call of ours.

Under the text protocol (an endpoint without tool support) two more: ``shell_block``, one fenced
bash block, and ``finish_marker``, the line ``COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT``.

A call is recognised only when it names a tool the agent offers, so prose that quotes JSON is not
mistaken for one. What cannot be read is reported precisely and fed back, never guessed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

from workers.agent.model import ToolCall

FINISH_MARKER = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"
# What the model is told when a reply holds nothing to run, under each protocol.
NO_CALL = (
    "Your reply had no tool call. Use a tool: `shell` to run a command, "
    "`finish` when the fix is done and the tests pass."
)
NO_COMMAND = (
    "Your reply had no command. Put exactly one command in a ```bash block, or end your reply "
    f"with the line {FINISH_MARKER} when the work is done."
)
HERMES = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)
MISTRAL = "[TOOL_CALLS]"
MISTRAL_NAMED = re.compile(r"\s*([A-Za-z_][\w.-]*)\s*(?:\[ARGS\])?\s*(?=\{)")
FENCE = re.compile(
    r"^(`{3,}|~{3,})[ \t]*([\w+-]*)[^\n]*\n(.*?)^\1[ \t]*$", re.DOTALL | re.MULTILINE
)
JSON_FENCES = frozenset({"json", "jsonc", "json5", "tool_call", "tool", ""})
SHELL_FENCES = frozenset({"bash", "sh", "shell", "console", "zsh"})
# A finding written as text: `P1 path/to/file.py:12 what is wrong` (a list bullet allowed).
FINDING_LINE = re.compile(r"^\s*(?:[-*]\s+)?\**(P[012])\**[:\s]+`?([^\s`:]+):(\d+)`?[:\s-]*(.+)$")
OBJECT_START = re.compile(r'\{\{?\s*"')  # how a JSON object (or a doubled one) starts
TRAILING_COMMA = re.compile(r",(\s*[}\]])")


class Unreadable(ValueError):
    """Text that is meant as JSON but cannot be read without guessing; the message says where."""


@dataclass(frozen=True)
class Recognised:
    """The calls found in a reply's text, the shape they came in, and what could not be read."""

    dialect: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    problem: str = ""


# -- JSON, repaired only where the intent is unambiguous ---------------------------------------


def strip_fence(text: str) -> str:
    """The inside of a text that is one fenced block, else the text."""
    stripped = text.strip()
    match = FENCE.fullmatch(stripped + "\n") or FENCE.fullmatch(stripped)
    return match.group(3) if match else stripped


def _outside_strings(text: str, start: int = 0) -> Iterator[tuple[int, str, bool]]:
    """Each character from ``start`` with whether it stands outside a JSON string."""
    in_string = escaped = False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            yield index, char, False
        else:
            in_string = char == '"'
            yield index, char, not in_string


def drop_trailing_commas(text: str) -> str:
    """Removes commas before a closing bracket, outside strings only."""
    return "".join(
        char
        for index, char, outside in _outside_strings(text)
        if not (outside and char == "," and TRAILING_COMMA.match(text, index))
    )


def loads_repaired(text: str) -> tuple[Any, list[str]]:
    """JSON from ``text`` and the repairs it took: a fence around it, trailing commas, an object
    encoded as a JSON string. Unreadable (message: what is wrong, and where) when none helps."""
    repairs: list[str] = []
    candidate = text.strip()
    unfenced = strip_fence(candidate)
    if unfenced != candidate:
        repairs.append("fence removed")
        candidate = unfenced
    try:
        value = json.loads(candidate)
    except json.JSONDecodeError as error:
        fixed = drop_trailing_commas(candidate)
        try:
            value = json.loads(fixed)
        except json.JSONDecodeError:
            raise Unreadable(f"{error.msg} at position {error.pos}") from None
        repairs.append("trailing commas removed")
    if isinstance(value, str) and value.strip()[:1] in ("{", "["):
        try:
            inner, more = loads_repaired(value)
        except Unreadable:
            return value, repairs
        return inner, [*repairs, "string-encoded JSON decoded", *more]
    return value, repairs


# -- calls in text -----------------------------------------------------------------------------


def _call_parts(value: Any) -> tuple[str, Any] | None:
    """(name, arguments) of a call object in any of the usual spellings, or None."""
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("function"), dict):  # OpenAI's own shape, written out as text
        value = value["function"]
    name = value.get("name", value.get("tool"))
    if not isinstance(name, str):
        return None
    for key in ("arguments", "parameters", "args", "input"):
        if key in value:
            return name, value[key]
    return name, {} if set(value) <= {"name", "tool", "type", "id"} else None


def _arguments_text(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


def _calls_in(value: Any, tools: Collection[str], prefix: str) -> list[ToolCall]:
    items = value if isinstance(value, list) else [value]
    calls: list[ToolCall] = []
    for item in items:
        parts = _call_parts(item)
        if parts is None or parts[0] not in tools or parts[1] is None:
            return []
        calls.append(ToolCall(f"{prefix}_{len(calls)}", parts[0], _arguments_text(parts[1])))
    return calls


def _named_call_problem(text: str, tools: Collection[str]) -> bool:
    """Whether unreadable JSON is plainly meant as a call of one of our tools."""
    return any(re.search(rf'"(?:name|tool)"\s*:\s*"{re.escape(t)}"', text) for t in tools)


def _undoubled(text: str, tools: Collection[str], prefix: str) -> list[ToolCall]:
    """The call inside an object written with a doubled opening brace, as a prompt template
    escapes it (`{{"name": ...}}}`; the last brace may be missing where the stream was cut), when
    what it holds is a call of one of our tools; else the error inside (Unreadable)."""
    stripped = text.strip()
    if not stripped.startswith("{{"):
        return []
    try:
        value, end = json.JSONDecoder().raw_decode(stripped, 1)
    except json.JSONDecodeError as error:
        raise Unreadable(f"{error.msg} at position {error.pos}") from None
    if stripped[end:].strip() not in ("", "}"):
        return []
    return _calls_in(value, tools, prefix)


def _read_block(block: str, tools: Collection[str], prefix: str) -> list[ToolCall]:
    """The calls one block holds: one JSON value, or objects one after another, each of them
    maybe with a doubled opening brace, undone only when what it holds reads as a call of one
    of our tools. Else the first error (Unreadable)."""
    try:
        value, _ = loads_repaired(block)
    except Unreadable:
        parts = _objects(block)
        if not parts:
            raise
        calls: list[ToolCall] = []
        for part in parts:
            found = _part_calls(part, tools, f"{prefix}_{len(calls)}")
            if not found:
                raise
            calls += found
        return calls
    return _calls_in(value, tools, prefix)


def _part_calls(part: str, tools: Collection[str], prefix: str) -> list[ToolCall]:
    try:
        value, _ = loads_repaired(part)
    except Unreadable:
        found = _undoubled(part, tools, prefix)
        if not found:
            raise
        return found
    return _calls_in(value, tools, prefix)


def _objects(text: str) -> list[str]:
    """The objects a text holds one after another (only space between them), else none."""
    parts: list[str] = []
    index = 0
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index == len(text):
            return parts
        if text[index] != "{":
            return []
        end = _balanced_end(text, index)
        parts.append(text[index:end])
        index = end


def _from_blocks(
    dialect: str, blocks: list[str], tools: Collection[str], *, strict: bool
) -> Recognised | None:
    """Calls in each block in order. ``strict``: every block is meant as a call (a tag says so),
    so one that cannot be read is a problem to report at once; else such blocks are prose, or,
    when plainly meant as a call, a problem told beside the calls of the other blocks."""
    calls: list[ToolCall] = []
    problem = ""
    for block in blocks:
        try:
            found = _read_block(block, tools, f"text_{dialect}_{len(calls)}")
        except Unreadable as error:
            if strict or _named_call_problem(block, tools):
                said = f"Your {describe(dialect)} is not valid JSON ({error})."
                if strict:
                    return Recognised(dialect, problem=said)
                problem = problem or said
            continue
        if not found and strict:
            return Recognised(
                dialect,
                problem=f"Your {describe(dialect)} must hold an object with `name` (one of "
                f"{', '.join(f'`{t}`' for t in tools)}) and `arguments`.",
            )
        calls += found
    return Recognised(dialect, calls, problem) if calls or problem else None


def describe(dialect: str) -> str:
    return {
        "hermes": "`<tool_call>` block",
        "mistral": "`[TOOL_CALLS]` list",
        "fenced_json": "fenced JSON tool call",
        "bare_json": "JSON tool call",
    }.get(dialect, "tool call")


def hermes(text: str, tools: Collection[str]) -> Recognised | None:
    blocks = [m.group(1) for m in HERMES.finditer(text)]
    return _from_blocks("hermes", blocks, tools, strict=True) if blocks else None


def mistral(text: str, tools: Collection[str]) -> Recognised | None:
    if MISTRAL not in text:
        return None
    calls: list[ToolCall] = []
    for part in text.split(MISTRAL)[1:]:
        named = MISTRAL_NAMED.match(part)
        if named and named.group(1) in tools:  # v11+: [TOOL_CALLS]name[ARGS]{...}
            try:
                arguments, _ = json.JSONDecoder().raw_decode(part, named.end())
            except json.JSONDecodeError as error:
                problem = f"({error.msg} at position {error.pos})"
                return Recognised(
                    "mistral",
                    problem=f"Your `[TOOL_CALLS]` arguments are not valid JSON {problem}.",
                )
            call_id = f"text_mistral_{len(calls)}"
            calls.append(ToolCall(call_id, named.group(1), _arguments_text(arguments)))
            continue
        found = _from_blocks("mistral", [_leading_json(part)], tools, strict=True)
        if found is None or found.problem:
            return found
        calls += [
            ToolCall(f"text_mistral_{len(calls) + i}", c.name, c.arguments)
            for i, c in enumerate(found.calls)
        ]
    return Recognised("mistral", calls) if calls else None


def _leading_json(text: str) -> str:
    """The JSON value at the start of ``text`` (what follows it is prose), or all of it."""
    stripped = text.strip()
    try:
        _, end = json.JSONDecoder().raw_decode(stripped)
    except json.JSONDecodeError:
        return stripped
    return stripped[:end]


def fences(text: str) -> Iterator[tuple[str, str]]:
    """(language, body) of each fenced block."""
    for match in FENCE.finditer(text):
        yield match.group(2).lower(), match.group(3)


def json_calls(text: str, tools: Collection[str]) -> Recognised | None:
    """Calls as JSON objects, in ```json fences (``fenced_json``) and bare in the prose
    (``bare_json``), in the order written: one that cannot be read hides none of the others."""
    fenced = [m for m in FENCE.finditer(text) if m.group(2).lower() in JSON_FENCES]
    prose = text
    for match in fenced:  # blanked, so that what is left keeps its positions
        prose = prose[: match.start()] + " " * (match.end() - match.start()) + prose[match.end() :]
    found: list[tuple[int, Recognised]] = []
    for match in fenced:
        block = _from_blocks("fenced_json", [match.group(3)], tools, strict=False)
        if block is not None:
            found.append((match.start(), block))
    found += bare_json(prose, tools)
    if not found:
        return None
    found.sort(key=lambda item: item[0])
    calls: list[ToolCall] = []
    for _, part in found:
        for call in part.calls:
            calls.append(ToolCall(f"text_{part.dialect}_{len(calls)}", call.name, call.arguments))
    problem = next((part.problem for _, part in found if part.problem), "")
    return Recognised(found[0][1].dialect, calls, problem)


def bare_json(text: str, tools: Collection[str]) -> list[tuple[int, Recognised]]:
    """Objects in the prose that name one of our tools, each with where it starts. One that
    names a tool but cannot be read is a problem to tell, never skipped in silence."""
    decoder = json.JSONDecoder()
    found: list[tuple[int, Recognised]] = []
    index = text.find("{")
    while index != -1:
        try:
            value, end = decoder.raw_decode(text, index)
        except json.JSONDecodeError:
            block = text[index : _balanced_end(text, index)]
            meant = _from_blocks("bare_json", [block], tools, strict=False)
            if meant is None or not OBJECT_START.match(block):
                index = text.find("{", index + 1)
                continue
            found.append((index, meant))
            index = text.find("{", index + len(block))
            continue
        calls = _calls_in(value, tools, f"text_bare_json_{len(found)}")
        if calls:
            found.append((index, Recognised("bare_json", calls)))
        index = text.find("{", end if calls or isinstance(value, dict) else index + 1)
    return found


def _balanced_end(text: str, start: int) -> int:
    """Where the braces opened at ``start`` close (strings in double quotes skipped), or the end
    of the text."""
    depth = 0
    for index, char, outside in _outside_strings(text, start):
        if outside and char == "{":
            depth += 1
        elif outside and char == "}":
            depth -= 1
            if depth == 0:
                return index + 1
    return len(text)


TOOL_CALL_SHAPES = (hermes, mistral, json_calls)


def recognise_tool_calls(text: str, tools: Collection[str]) -> Recognised:
    """Tool calls written in the text, in the first shape that has any; empty when none."""
    for shape in TOOL_CALL_SHAPES:
        found = shape(text, tools)
        if found is not None:
            return found
    return Recognised()


# -- the text protocol -------------------------------------------------------------------------


def _finish_arguments(prose: str, tools: Collection[str]) -> tuple[str, dict[str, Any]]:
    """The finish (or answer) call a reply ending with the marker stands for."""
    lines = [line for line in prose.splitlines() if line.strip() != FINISH_MARKER]
    if "review" in tools:
        return "review", _review_arguments(lines)
    if "answer" in tools and "finish" not in tools:
        return "answer", {"text": "\n".join(lines).strip()}
    title, summary = "", []
    for line in lines:
        label, _, rest = line.partition(":")
        if label.strip().lower() in ("title", "commit title", "subject") and rest.strip():
            title = title or rest.strip()
        else:
            summary.append(line.removeprefix("Summary:").removeprefix("summary:"))
    return "finish", {"title": title, "summary": "\n".join(summary).strip()}


def _review_arguments(lines: list[str]) -> dict[str, Any]:
    findings, summary = [], []
    for line in lines:
        found = FINDING_LINE.match(line)
        if found:
            severity, path, number, body = found.groups()
            findings.append({"path": path, "line": int(number), "severity": severity, "body": body})
        else:
            summary.append(line)
    return {"summary": "\n".join(summary).strip(), "findings": findings}


def recognise_text_protocol(text: str, tools: Collection[str]) -> Recognised:
    """Under the text protocol: one fenced shell block runs; the marker line finishes. Tool calls
    written as JSON are still honoured first."""
    found = recognise_tool_calls(text, tools)
    if found.calls or found.problem:
        return found
    blocks = [body for language, body in fences(text) if language in SHELL_FENCES or not language]
    prose = FENCE.sub("", text)
    finishing = any(line.strip() == FINISH_MARKER for line in prose.splitlines())
    marker_blocks = [b for b in blocks if b.strip() == f"echo {FINISH_MARKER}"]
    commands = [b for b in blocks if b.strip() and b not in marker_blocks]
    finishing = finishing or bool(marker_blocks)
    if len(commands) > 1:
        return Recognised(
            "shell_block",
            problem=f"Your reply has {len(commands)} shell blocks; send exactly one per reply "
            "and wait for its output.",
        )
    calls = [
        ToolCall("text_shell_0", "shell", json.dumps({"command": command.strip()}))
        for command in commands
        if "shell" in tools
    ]
    if finishing:
        name, arguments = _finish_arguments(prose, tools)
        calls.append(ToolCall(f"text_{name}_{len(calls)}", name, json.dumps(arguments)))
        return Recognised("finish_marker", calls)
    return Recognised("shell_block", calls) if calls else Recognised()
