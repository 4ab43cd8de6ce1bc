"""File tools over the Environment's one primitive, ``exec``: read, search, write.

Everything runs inside the sandbox, so the worker never touches the workspace directly and the
Environment protocol stays one method. Files move as base64 in chunks, so output caps and the
kernel's argument size limit never cut them silently.
"""

from __future__ import annotations

import base64
import binascii
import posixpath
import shlex
from typing import Protocol

from workers.agent.tools import FormatError

CHUNK = 24_000  # bytes of file per exec (base64: 32 KB of output, under every cap)
WRITE_CHUNK = 60_000  # bytes of file per write command (80 KB of base64, under 128 KB)
MAX_FILE_BYTES = 2_000_000
FILE_TIMEOUT = 30.0


class ExecLike(Protocol):
    @property
    def exit_code(self) -> int: ...
    @property
    def output(self) -> str: ...
    @property
    def timed_out(self) -> bool: ...
    @property
    def truncated(self) -> bool: ...


class Environment(Protocol):
    def exec(self, command: str, *, timeout: float) -> ExecLike: ...


def workspace_path(path: str) -> str:
    """A path relative to the repository root, or FormatError when it leaves the workspace."""
    if not path or "\x00" in path or "\n" in path:
        raise FormatError("`path` must be a file path relative to the repository root.")
    cleaned = path.strip()
    if cleaned.startswith("/workspace/"):
        cleaned = cleaned[len("/workspace/") :]
    if cleaned.startswith("/"):
        raise FormatError(f"`{path}` is outside the repository; use a path relative to its root.")
    normal = posixpath.normpath(cleaned)
    if normal == ".." or normal.startswith("../"):
        raise FormatError(f"`{path}` is outside the repository; use a path relative to its root.")
    if normal == ".git" or normal.startswith(".git/"):
        raise FormatError("The `.git` directory is managed by the bot; leave it alone.")
    return normal


class CodeReader(Protocol):
    """The repository's code as the worker reads it, at the task's commit, with the related
    repositories the task may read (`workers.coderepos.CodeRepos`). Unknown repositories and
    unreadable requests raise FormatError."""

    @property
    def own_name(self) -> str: ...
    def is_own(self, repo: str | None) -> bool: ...
    def repositories(self) -> list[str]: ...
    def map(self, repo: str | None, under: str, budget: int) -> str: ...
    def references(self, symbol: str, repo: str | None) -> str: ...
    def text_of(self, repo: str | None, path: str) -> str | None: ...
    def search(self, repo: str | None, pattern: str, under: str, cap: int) -> list[str]: ...
    def line_count(self, reference: str) -> int | None: ...


class Workspace:
    """Reads and writes the repository inside ``env``; ``code`` (when the worker has it) maps
    it and reads the related repositories. ``repo`` is the task's repository (owner/name)."""

    def __init__(self, env: Environment, code: CodeReader | None = None, repo: str = "") -> None:
        self.env = env
        self.code = code
        self.repo = code.own_name if code is not None else repo

    def _run(self, command: str) -> ExecLike:
        return self.env.exec(command, timeout=FILE_TIMEOUT)

    def read_bytes(self, path: str) -> bytes | None:
        """The file's bytes, None when it is not a regular file."""
        quoted = shlex.quote(path)
        size = self._run(f"test -f {quoted} && stat -c %s -- {quoted}")
        if size.exit_code != 0:
            return None
        try:
            total = int(size.output.strip().splitlines()[-1])
        except (IndexError, ValueError):
            raise FormatError(f"could not read `{path}`: unexpected output") from None
        if total > MAX_FILE_BYTES:
            raise FormatError(f"`{path}` is {total} bytes; too large to read whole.")
        data = b""
        while len(data) < total:
            chunk = self._run(
                f"tail -c +{len(data) + 1} -- {quoted} | head -c {CHUNK} | base64 -w0"
            )
            if chunk.exit_code != 0 or chunk.truncated:
                raise FormatError(f"could not read `{path}` (exit code {chunk.exit_code}).")
            # base64 -w0 prints one line; a note the sandbox prepends stays on lines before it
            lines = chunk.output.strip().splitlines()
            try:
                piece = base64.b64decode(lines[-1] if lines else "", validate=True)
            except binascii.Error:
                raise FormatError(f"could not read `{path}`: unexpected output") from None
            if not piece:
                break
            data += piece
        return data

    def read_text(self, path: str) -> str | None:
        data = self.read_bytes(path)
        return None if data is None else data.decode("utf-8", errors="replace")

    def write_text(self, path: str, content: str) -> None:
        data = content.encode("utf-8")
        quoted = shlex.quote(path)
        temp = shlex.quote(f"{path}.codex-tmp")
        parent = shlex.quote(posixpath.dirname(path) or ".")
        steps = [f"mkdir -p -- {parent} && : > {temp}"]
        for start in range(0, len(data), WRITE_CHUNK):
            encoded = base64.b64encode(data[start : start + WRITE_CHUNK]).decode()
            steps.append(f"printf %s {encoded} | base64 -d >> {temp}")
        # cat then rm keeps the file's mode when it exists
        steps.append(f"cat {temp} > {quoted} && rm -f {temp}")
        for step in steps:
            done = self._run(step)
            if done.exit_code != 0:
                self._run(f"rm -f {temp}")
                raise FormatError(f"could not write `{path}`: {done.output.strip()[:300]}")

    def delete(self, path: str) -> None:
        done = self._run(f"rm -f -- {shlex.quote(path)}")
        if done.exit_code != 0:
            raise FormatError(f"could not delete `{path}`: {done.output.strip()[:300]}")

    def exists(self, path: str) -> bool:
        return self._run(f"test -f {shlex.quote(path)}").exit_code == 0


def numbered(text: str, first: int, last: int | None) -> tuple[str, int]:
    """Lines ``first``..``last`` (1-based, inclusive) as ``  12\\tcode``; and the file's length."""
    lines = text.splitlines()
    end = len(lines) if last is None else min(last, len(lines))
    width = len(str(max(end, 1)))
    shown = [f"{n:>{width}}\t{lines[n - 1]}" for n in range(max(first, 1), end + 1)]
    return "\n".join(shown), len(lines)


def search_command(pattern: str, path: str, limit: int) -> str:
    """grep -E over the workspace (``.git`` skipped), at most ``limit`` + 1 matching lines; the
    command exits with grep's status (2: an error, told in lines starting `grep: `)."""
    return (
        f"grep -rnIE --exclude-dir=.git --color=never -e {shlex.quote(pattern)} "
        f"-- {shlex.quote(path)} 2>&1 | head -n {limit + 1} | cut -c1-400; "
        'exit "${PIPESTATUS[0]}"'
    )
