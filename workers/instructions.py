"""Repository instruction files: AGENTS.md from the root down, else CLAUDE.md, else Copilot's.

As the AGENTS.md convention says, the file nearest to the code being changed wins on conflict:
files are ordered root first, nearest last, and the prompt says so. Discovery reads the checkout
on the worker (before the sandbox starts); ``applicable`` picks the chain for a path as the agent
moves through the tree.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog

from workers.repofiles import RepoFileError, read_repo_file

log = structlog.get_logger(__name__)

AGENTS = "AGENTS.md"
FALLBACKS = ("CLAUDE.md", ".github/copilot-instructions.md")
MAX_FILES = 50
MAX_BYTES = 32_000  # of each file shown to the model
SKIP_DIRS = frozenset({".git", "node_modules", ".venv", "venv", "__pycache__", "vendor", "dist"})


@dataclass(frozen=True)
class InstructionFile:
    """A repository instruction file (AGENTS.md, CLAUDE.md, copilot-instructions.md)."""

    path: str  # relative to the repository root, with forward slashes
    text: str

    @property
    def directory(self) -> str:
        """The directory the file governs: its own ('' for the root; fallbacks govern the root)."""
        if posixpath.basename(self.path) != AGENTS:
            return ""
        return posixpath.dirname(self.path)


def _read(root: Path, relative: str) -> InstructionFile | None:
    """The file's first MAX_BYTES; None when missing or not a regular file of the checkout (a
    link could point outside it, a FIFO would never end): skipped, with a note in the log."""
    try:
        data = read_repo_file(root, relative, MAX_BYTES, cut=True)
    except RepoFileError as error:
        log.warning("instructions.file_skipped", reason=str(error))
        return None
    return None if data is None else InstructionFile(relative, data.decode("utf-8", "replace"))


def discover_instructions(root: Path) -> list[InstructionFile]:
    """Every AGENTS.md in the checkout, root first; with none, CLAUDE.md, then Copilot's file."""
    found: list[InstructionFile] = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        if AGENTS in files:
            relative = Path(directory, AGENTS).relative_to(root).as_posix()
            file = _read(root, relative)
            if file is not None:
                found.append(file)
        if len(found) >= MAX_FILES:
            break
    if found:
        return sorted(found, key=lambda f: (f.path.count("/"), f.path))
    for name in FALLBACKS:
        file = _read(root, name)
        if file is not None:
            return [file]
    return []


def _relative(path: str) -> str:
    normal = posixpath.normpath(path or ".")
    return "" if normal == "." else normal.removeprefix("/workspace/")


def _within(path: str, directory: str) -> bool:
    return directory == "" or path == directory or path.startswith(directory + "/")


def applicable(files: Iterable[InstructionFile], paths: Iterable[str]) -> list[InstructionFile]:
    """The files that govern any of ``paths``: each path's chain from the root, nearest last."""
    wanted = [_relative(p) for p in paths]
    chosen = [f for f in files if any(_within(p, f.directory) for p in wanted)]
    return sorted(chosen, key=lambda f: (f.directory.count("/") + bool(f.directory), f.path))
