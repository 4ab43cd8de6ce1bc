"""What a command leaves: its reply from the exec server, and the notes added to its output.

The notes tell the agent, inside the output it reads, what happened to its command beyond what
the command printed: a timeout, a stop, processes left running, a restarted sandbox.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from codexbot.textutil import capped_text
from sandbox.hardening import WORKSPACE

RESTART_NOTE = (
    "[the sandbox had stopped (its main process was killed) and was restarted; "
    "/workspace is intact, but /tmp, the home directory and background processes were reset]\n"
)
SERVER_RESTART_NOTE = (
    "[the sandbox's command server had been killed and was restarted; "
    "the working directory is back to /workspace]\n"
)
SERVER_LOST_NOTE = "\n[the command killed the sandbox's command server; it will be restarted]"


class SandboxError(RuntimeError):
    """The sandbox could not be created, used or removed."""


@dataclass(frozen=True)
class ExecResult:
    command: str
    exit_code: int
    output: str  # stdout and stderr interleaved, decoded, capped to head and tail
    timed_out: bool
    truncated: bool
    duration_ms: int
    cwd: str = WORKSPACE  # where the next command starts
    killed_leftovers: tuple[str, ...] = ()  # processes the command left running, now killed
    notes: tuple[str, ...] = ()  # what it ran into: killed for memory, /tmp full (also in output)
    stopped: str | None = None  # why it was cancelled (a stop, say) before its end
    lost: bool = False  # it killed the exec server: its end is unknown
    ended_in: str | None = None  # the directory it ended in (kept as `cwd` unless run elsewhere)


@dataclass
class Reply:
    """The exec server's answer for one command, output as bytes (head and tail)."""

    exit_code: int
    timed_out: bool
    total: int
    head: bytes
    tail: bytes
    cwd: str
    duration_ms: int
    strays: list[str] = field(default_factory=list)
    stopped: str | None = None
    notes: list[str] = field(default_factory=list)  # out of memory, /tmp full
    lost: bool = False  # the command killed the exec server
    ended_in: str | None = None  # the directory the command ended in, when known

    @classmethod
    def without_output(
        cls, exit_code: int, started: float, *, timed_out: bool = False, lost: bool = False
    ) -> Reply:
        """A command the server never answered for (it was lost, or wedged); `started` monotonic."""
        return cls(
            exit_code=exit_code,
            timed_out=timed_out,
            total=0,
            head=b"",
            tail=b"",
            cwd=WORKSPACE,
            duration_ms=int((time.monotonic() - started) * 1000),
            lost=lost,
        )

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def data(self) -> bytes:
        return self.head + self.tail

    def text(self) -> str:
        return capped_text(self.head, self.tail, self.total)


def timeout_note(timeout: float) -> str:
    return f"\n[timed out after {timeout:g} s: the command and its process group were killed]"


def leftovers_note(names: list[str] | tuple[str, ...]) -> str:
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (
        f"\n[killed {len(names)} process(es) the command left running: {shown}; "
        "background processes do not outlive their command here]"
    )


def stopped_note(reason: str) -> str:
    return f"\n[stopped: {reason}]"


def exec_result(command: str, reply: Reply, *, timeout: float, before: str = "") -> ExecResult:
    """The command's result as the agent reads it: `before` (restart notes), the output, then
    what happened to the command."""
    text = before + reply.text()
    if reply.timed_out:
        text += timeout_note(timeout)
    if reply.stopped:
        text += stopped_note(reply.stopped)
    if reply.strays:
        text += leftovers_note(reply.strays)
    text += "".join(f"\n[{note}]" for note in reply.notes)
    if reply.lost:
        text += SERVER_LOST_NOTE
    return ExecResult(
        command=command,
        exit_code=reply.exit_code,
        output=text,
        timed_out=reply.timed_out,
        truncated=reply.truncated,
        duration_ms=reply.duration_ms,
        cwd=reply.cwd or WORKSPACE,
        killed_leftovers=tuple(reply.strays),
        notes=tuple(reply.notes),
        stopped=reply.stopped,
        lost=reply.lost,
        ended_in=reply.ended_in,
    )
