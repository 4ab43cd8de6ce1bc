"""A trajectory made readable: summaries for `codexbot task ls`, steps for `task show` and the
task page. Pure functions over the JSONL records."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis import Redis

from codexbot import keys
from workers import tasks
from workers.agent.trajectory import read_records
from workers.trajectories import TrajectoryStore

TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass
class TaskSummary:
    id: str
    repo: str = ""
    number: int | None = None
    mode: str = ""
    title: str = ""
    state: str = "unknown"
    started: float | None = None
    ended: float | None = None
    steps: int = 0
    tokens: int = 0
    seconds: float | None = None
    reason: str = ""
    pr_url: str = ""

    @property
    def duration(self) -> float | None:
        if self.seconds is not None:
            return self.seconds
        if self.started is not None and self.ended is not None:
            return max(0.0, self.ended - self.started)
        return None


@dataclass
class ToolView:
    name: str
    label: str  # the command, the path, the pattern...
    output: str = ""
    exit_code: int | None = None
    error: str = ""
    duration: float | None = None


@dataclass
class StepView:
    number: int
    thought: str = ""  # the model's text beside its tool calls
    model_seconds: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tools: list[ToolView] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # steering, context, instructions, errors


def trajectory_file(directory: Path, task_id: str) -> Path | None:
    """The task's trajectory path, or None for an id that is not a plain name."""
    if not TASK_ID.match(task_id):
        return None
    return directory / f"{task_id}.jsonl"


def summarize(task_id: str, records: list[dict[str, Any]]) -> TaskSummary:
    summary = TaskSummary(id=task_id)
    if not records:
        return summary
    summary.started = records[0].get("time")
    summary.ended = records[-1].get("time")
    summary.state = "running"
    for record in records:
        kind = record.get("type")
        if kind == "start":
            summary.repo = str(record.get("repo", ""))
            summary.number = record.get("number")
            summary.mode = str(record.get("mode", ""))
            summary.title = str(record.get("title", ""))
        elif kind == "response":
            summary.tokens += int(record.get("prompt_tokens", 0)) + int(
                record.get("completion_tokens", 0)
            )
        elif kind == "result":
            summary.state = str(record.get("status", "unknown"))
            summary.steps = int(record.get("step", 0))
            summary.seconds = record.get("seconds")
            summary.reason = str(record.get("reason", ""))
        summary.steps = max(summary.steps, int(record.get("step", 0) or 0))
    return summary


def _with_arguments(record: dict[str, Any]) -> dict[str, Any]:
    """A failed call keeps its raw arguments; parsed, they label it like a good one."""
    raw = record.get("arguments")
    if not isinstance(raw, str):
        return record
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        return record
    if not isinstance(parsed, dict):
        return record
    if record.get("name") == "apply_patch" and isinstance(parsed.get("patch"), str):
        files = re.findall(r"(?m)^\+\+\+ (?:b/)?(\S+)", parsed["patch"])
        parsed["files"] = files or ["patch"]
    return {**parsed, **record}


def _tool_label(record: dict[str, Any]) -> str:
    record = _with_arguments(record)
    name = record.get("name", "")
    if "command" in record:
        return str(record["command"])
    if name == "read_file":
        return (
            f"{record.get('path', '')} {record.get('start_line', '')}-{record.get('end_line', '')}"
        )
    if name == "search":
        return f"/{record.get('pattern', '')}/ in {record.get('path', '.')}"
    if name == "apply_patch":
        return ", ".join(record.get("files", [])) or "patch"
    if name == "finish":
        return str(record.get("title", ""))
    if name == "answer":
        return "answer"
    return str(record.get("arguments", ""))[:200]


def _tool_output(record: dict[str, Any]) -> str:
    if record.get("name") == "finish":
        return "\n\n".join(p for p in (record.get("summary"), record.get("not_done")) if p)
    if record.get("name") == "answer":
        return str(record.get("text", ""))
    if record.get("name") == "apply_patch" and "patch" in record:
        return f"{record['patch']}\n{record.get('output', '')}"
    return str(record.get("output", ""))


def steps_of(records: list[dict[str, Any]]) -> list[StepView]:
    steps: dict[int, StepView] = {}

    def step(number: int) -> StepView:
        return steps.setdefault(number, StepView(number))

    for record in records:
        kind, number = record.get("type"), int(record.get("step", 0) or 0)
        if kind == "response":
            view = step(number)
            view.thought = str((record.get("message") or {}).get("content") or "")
            view.model_seconds = record.get("duration")
            view.prompt_tokens = int(record.get("prompt_tokens", 0))
            view.completion_tokens = int(record.get("completion_tokens", 0))
        elif kind == "tool":
            if record.get("recognised"):
                note = f"tool call read from the reply's text ({record['recognised']})"
                if note not in step(number).notes:
                    step(number).notes.append(note)
            step(number).tools.append(
                ToolView(
                    name=str(record.get("name", "")),
                    label=_tool_label(record),
                    output=_tool_output(record),
                    exit_code=record.get("exit_code"),
                    error=str(record.get("error", "")),
                    duration=record.get("duration"),
                )
            )
        elif kind == "instructions" and record.get("files"):
            step(number).notes.append(
                "instructions used: " + ", ".join(record["files"]) + f" ({record.get('reason')})"
            )
        elif kind == "steering":
            authors = ", ".join(f"@{c.get('author')}" for c in record.get("comments", []))
            step(number).notes.append(f"new comments from {authors} joined the conversation")
        elif kind == "protocol":
            step(number).notes.append(
                f"switched to the {record.get('protocol')} protocol: {record.get('reason')}"
            )
        elif kind == "context":
            step(number).notes.append(
                f"{record.get('elided_tool_results')} old tool result(s) elided to fit the context"
            )
        elif kind == "error":
            step(number).notes.append(f"error: {record.get('error')}: {record.get('message')}")
    return [steps[n] for n in sorted(steps)]


def load(
    store: TrajectoryStore, task_id: str, directory: Path | None = None
) -> list[dict[str, Any]]:
    """A task's records from the store every host reads, else from a trajectory file in
    ``directory`` (`codexbot run`, or written before trajectories moved to the store)."""
    if not TASK_ID.match(task_id):
        return []
    records = store.read(task_id)
    path = trajectory_file(directory, task_id) if directory is not None else None
    if not records and path is not None:
        records = read_records(path)
    return records


def with_record(summary: TaskSummary, record: tasks.TaskRecord) -> TaskSummary:
    """The summary with what the task's record knows: where, what for, how far it got."""
    summary.repo = record.request.repo or summary.repo
    summary.number = record.request.number or summary.number
    summary.mode = record.request.kind or summary.mode
    summary.state = record.state or summary.state
    summary.pr_url = record.pr_url
    summary.reason = record.reason or summary.reason
    summary.started = record.created or summary.started
    if record.state in tasks.FINAL_STATES and summary.seconds is None:
        summary.ended = record.updated
    return summary


def task_records(client: Redis) -> dict[str, tasks.TaskRecord]:
    """The task records the intake lane wrote (read with ``workers.tasks``, their one reader)."""
    prefix = keys.task("")
    found: dict[str, tasks.TaskRecord] = {}
    for key in client.scan_iter(match=f"{prefix}*", count=500):
        task_id = key.decode()[len(prefix) :]
        if ":" in task_id or client.type(key) != b"hash":
            continue
        record = tasks.load(client, task_id)
        if record is not None:
            found[task_id] = record
    return found


def recent_tasks(
    client: Redis,
    store: TrajectoryStore,
    limit: int,
    summaries: dict[str, TaskSummary] | None = None,
) -> list[TaskSummary]:
    """The newest tasks, newest first: trajectories in the store and task records in Redis,
    beside ``summaries`` already known (trajectory files)."""
    found = dict(summaries or {})
    for task_id in store.recent(limit):
        found[task_id] = summarize(task_id, store.read(task_id))
    for task_id, record in task_records(client).items():
        with_record(found.setdefault(task_id, TaskSummary(id=task_id)), record)
    newest = sorted(found.values(), key=lambda s: s.started or 0, reverse=True)
    return newest[:limit]


def utc_time(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def clip(text: str, lines: int = 12) -> str:
    """The head and tail of long output, for the readable views."""
    all_lines = text.splitlines()
    if len(all_lines) <= lines:
        return text
    half = lines // 2
    cut = len(all_lines) - 2 * half
    return "\n".join([*all_lines[:half], f"... {cut} lines ...", *all_lines[-half:]])


def render_text(summary: TaskSummary, steps: list[StepView], full: bool = False) -> str:
    """`codexbot task show`: the run as a person reads it."""
    where = f"{summary.repo}#{summary.number}" if summary.repo else "(unknown task)"
    duration = f"{summary.duration:.1f} s" if summary.duration is not None else "?"
    lines = [
        f"task {summary.id}: {where} [{summary.mode or 'fix'}]",
        f"title: {summary.title}",
        f"state: {summary.state}  steps: {summary.steps}  tokens: {summary.tokens}  "
        f"duration: {duration}",
    ]
    if summary.reason:
        lines.append(f"reason: {summary.reason}")
    for view in steps:
        if view.number == 0 and not view.tools:
            lines += [f"  - {note}" for note in view.notes]
            continue
        model = f"{view.model_seconds:.2f} s" if view.model_seconds is not None else "?"
        lines.append("")
        lines.append(
            f"step {view.number}  (model {model}, "
            f"{view.prompt_tokens}+{view.completion_tokens} tokens)"
        )
        if view.thought.strip():
            lines += ["  " + line for line in view.thought.strip().splitlines()]
        for tool in view.tools:
            status = f" -> exit {tool.exit_code}" if tool.exit_code is not None else ""
            status = f" -> ERROR {tool.error}" if tool.error else status
            lines.append(f"  [{tool.name}] {tool.label}{status}")
            body = tool.output if full else clip(tool.output)
            lines += ["    | " + line for line in body.splitlines()]
        lines += [f"  - {note}" for note in view.notes]
    return "\n".join(lines) + "\n"


def as_json(summary: TaskSummary) -> str:
    data = {**summary.__dict__, "duration": summary.duration}
    return json.dumps(data, ensure_ascii=False)
