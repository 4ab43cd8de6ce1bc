"""The code the agent's `map` and `references` tools read, on the worker: the task's own
repository at its commit, and read-only related repositories (`/codex ask --repo owner/other`,
`repos:` in `.github/codex.yml`), each only when the asker may read it and the App is installed
on it under the task's installation.

Related repositories are read here, from their mirrors, never put in the sandbox: the agent
reads them through tools (`read_file`, `search`, `map`, `references` with `repo`), so a fix task
may read them but changes only its own repository. Their references read `owner/name:path:line`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from codexbot.commands import repo_options
from workers.agent.tools import FormatError
from workers.checkout import Git, GitError
from workers.codemap import (
    MAX_FILE_BYTES,
    CodeIndex,
    Reference,
    cached_index,
    find_references,
    render_map,
    render_references,
    safe_path,
)

log = structlog.get_logger(__name__)

READ_ROLES = frozenset({"admin", "maintain", "write", "triage", "read"})
SOURCE_LINE_CHARS = 160
MAX_RELATED = 5


@dataclass
class Snapshot:
    """One repository at one commit, read through git (a checkout or a bare mirror)."""

    full_name: str
    git_dir: Path
    sha: str
    cache_dir: Path | None = None
    _index: CodeIndex | None = None
    _texts: dict[str, str | None] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def git(self) -> Git:
        return Git(self.git_dir)

    def index(self) -> CodeIndex:
        with self._lock:
            if self._index is None:
                self._index = cached_index(self.git, self.sha, self.cache_dir)
            return self._index

    def text(self, path: str) -> str | None:
        """The file at the commit, None when it is not a file there (or too large to read)."""
        if path not in self._texts:
            if len(self._texts) > 200:
                self._texts.clear()
            self._texts[path] = self._read(path)
        return self._texts[path]

    def _read(self, path: str) -> str | None:
        try:
            if self.git("cat-file", "-t", f"{self.sha}:{path}") != "blob":
                return None
            if int(self.git("cat-file", "-s", f"{self.sha}:{path}")) > MAX_FILE_BYTES * 4:
                raise FormatError(f"`{path}` is too large to read whole.")
            data = self.git.raw("cat-file", "blob", f"{self.sha}:{path}")
        except GitError:
            return None
        return data.decode("utf-8", errors="replace")

    def line_count(self, path: str) -> int | None:
        text = self.text(path)
        return None if text is None else len(text.splitlines())

    def source_line(self, path: str, line: int) -> str:
        lines = (self.text(path) or "").splitlines()
        shown = lines[line - 1].strip() if 0 < line <= len(lines) else ""
        return "".join(c if c.isprintable() else " " for c in shown)[:SOURCE_LINE_CHARS]

    def search(self, pattern: str, under: str, cap: int) -> list[str]:
        """``path:line:text`` of lines matching an extended regular expression (git grep)."""
        try:
            out = self.git.raw(
                "--literal-pathspecs",  # a path is a path, not pathspec magic
                *("grep", "-n", "-I", "-E", "--no-color", "-e", pattern, self.sha, "--", under),
            )
        except GitError as error:
            if "failed (1)" in str(error):  # no match
                return []
            raise FormatError(f"the search failed: {str(error)[-200:]}") from None
        found = []
        for raw in out.decode("utf-8", errors="replace").splitlines()[: cap + 1]:
            line = raw.removeprefix(f"{self.sha}:")
            if safe_path(line.split(":", 1)[0]):
                found.append(line[:400])
        return found


class CodeRepos:
    """What the agent's code tools read: the task's repository, and the related ones."""

    def __init__(self, own: Snapshot, related: Sequence[Snapshot] = ()) -> None:
        self.own = own
        self._all = {own.full_name.lower(): own} | {s.full_name.lower(): s for s in related}

    @property
    def own_name(self) -> str:
        return self.own.full_name

    def repositories(self) -> list[str]:
        return [snapshot.full_name for snapshot in self._all.values()]

    def snapshot(self, repo: str | None) -> Snapshot:
        found = self._all.get((repo or self.own.full_name).strip().lower())
        if found is None:
            names = ", ".join(f"`{name}`" for name in self.repositories())
            raise FormatError(f"`{repo}` is not a repository of this task; they are {names}.")
        return found

    def is_own(self, repo: str | None) -> bool:
        return self.snapshot(repo) is self.own

    def cite(self, snapshot: Snapshot, path: str) -> str:
        """How an answer cites a file: `path` in the task's repository, `owner/name:path` else."""
        return path if snapshot is self.own else f"{snapshot.full_name}:{path}"

    def map(self, repo: str | None, under: str, budget: int) -> str:
        snapshot = self.snapshot(repo)
        shown = render_map(snapshot.index(), budget, under)
        others = [name for name in self.repositories() if name != snapshot.full_name]
        header = f"Repository {snapshot.full_name}"
        if snapshot is not self.own:
            header += f" (read-only; cite its files as `{snapshot.full_name}:path:line`)"
        if others:
            header += f". Also readable: {', '.join(others)} (pass `repo`)"
        return f"{header}.\n{shown}"

    def references(self, symbol: str, repo: str | None) -> str:
        chosen = [self.snapshot(repo)] if repo else list(self._all.values())
        parts = []
        for snapshot in chosen:
            found = find_references(snapshot.index(), symbol)
            cited = [Reference(self.cite(snapshot, r.path), r.line, r.definition) for r in found]

            def line_of(ref: Reference, snapshot: Snapshot = snapshot) -> str:
                return snapshot.source_line(ref.path.rsplit(":", 1)[-1], ref.line)

            text = render_references(cited, symbol, line_of)
            parts.append(f"In {snapshot.full_name}: {text}" if len(chosen) > 1 else text)
        return "\n\n".join(parts)

    def text_of(self, repo: str | None, path: str) -> str | None:
        return self.snapshot(repo).text(path)

    def search(self, repo: str | None, pattern: str, under: str, cap: int) -> list[str]:
        snapshot = self.snapshot(repo)
        return [self.cite(snapshot, line) for line in snapshot.search(pattern, under, cap)]

    def line_count(self, reference: str) -> int | None:
        """Lines in the file a reference names (`path` or `owner/name:path`), None if none."""
        repo, _, path = reference.rpartition(":")
        try:
            return self.snapshot(repo or None).line_count(path)
        except FormatError:
            return None


# -- which related repositories a task may read ------------------------------------------------


def wanted_repositories(question: str, configured: Sequence[str], own: str) -> list[str]:
    """Those named by `--repo` in the question and `repos:` in the config, each once, not the
    task's own, at most MAX_RELATED."""
    named, _ = repo_options(question)
    chosen: list[str] = []
    for name in [*named, *configured]:
        if name.lower() != own.lower() and name.lower() not in [c.lower() for c in chosen]:
            chosen.append(name)
    return chosen[:MAX_RELATED]


def readable_related(
    wanted: Sequence[str],
    *,
    installation_id: int,
    asker: str,
    installation_of: Callable[[str], int | None],
    role_of: Callable[[str, str], str],
) -> tuple[list[str], list[str]]:
    """The repositories the task may read, and a note for each refused: only those the App is
    installed on under the task's installation, and the asker may read."""
    allowed, refused = [], []
    for name in wanted:
        if installation_of(name) != installation_id:
            refused.append(f"{name}: the App is not installed there for this installation")
        elif role_of(name, asker) not in READ_ROLES:
            refused.append(f"{name}: @{asker} has no read access")
        else:
            allowed.append(name)
    return allowed, refused
