"""Patches the model sends through ``apply_patch``: parsing and applying them, as pure functions.

Two forms are accepted, each naming its files:

* a unified diff (``--- a/path``, ``+++ b/path``, ``@@ -l,n +l,n @@`` hunks), as ``git diff``
  writes it; ``/dev/null`` creates or deletes a file;
* search/replace blocks, one or more per file::

      path/to/file.py
      <<<<<<< SEARCH
      old lines
      =======
      new lines
      >>>>>>> REPLACE

A hunk applies where its old lines occur exactly, nearest to the line number it states; when
they occur nowhere, the error names the file and the hunk and says what differs, so the model
can correct it. Nothing is written unless every hunk of every file applies.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
SEARCH_MARK = re.compile(r"^<{5,9} SEARCH\s*$")
DIVIDER = re.compile(r"^={5,9}\s*$")
REPLACE_MARK = re.compile(r"^>{5,9} REPLACE\s*$")


class PatchError(Exception):
    """The patch cannot be read or applied; the message is shown to the model."""


@dataclass
class Hunk:
    old: list[str]
    new: list[str]
    line: int = 0  # 1-based line the hunk says it starts at; 0 when unknown (search/replace)
    header: str = ""


@dataclass
class FilePatch:
    path: str
    hunks: list[Hunk] = field(default_factory=list)
    create: bool = False
    delete: bool = False


def _strip_prefix(name: str) -> str:
    name = name.split("\t", 1)[0].strip()
    if name.startswith(("a/", "b/")):
        return name[2:]
    return name


def parse_unified(text: str) -> list[FilePatch]:
    files: list[FilePatch] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not (line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ ")):
            i += 1
            continue
        old_name, new_name = line[4:], lines[i + 1][4:]
        create = old_name.strip() == "/dev/null"
        delete = new_name.strip() == "/dev/null"
        current = FilePatch(
            path=_strip_prefix(old_name if delete else new_name), create=create, delete=delete
        )
        files.append(current)
        i += 2
        while i < len(lines) and (header := HUNK_HEADER.match(lines[i])):
            hunk = Hunk(old=[], new=[], line=int(header.group(1)), header=lines[i])
            i += 1
            while i < len(lines) and not lines[i].startswith(("@@", "--- ", "diff --git")):
                body = lines[i]
                if body.startswith("\\"):  # "\ No newline at end of file"
                    i += 1
                    continue
                tag, content = (body[:1], body[1:]) if body else (" ", "")
                if tag in (" ", "-"):
                    hunk.old.append(content)
                if tag in (" ", "+"):
                    hunk.new.append(content)
                if tag not in (" ", "-", "+"):
                    break
                i += 1
            current.hunks.append(hunk)
    if not files:
        raise PatchError(
            "The patch has no file headers. Send a unified diff (`--- a/path`, `+++ b/path`, "
            "`@@ ... @@` hunks) or search/replace blocks (a path line, then `<<<<<<< SEARCH`, "
            "the old lines, `=======`, the new lines, `>>>>>>> REPLACE`)."
        )
    for patch in files:
        if not patch.hunks and not patch.delete:
            raise PatchError(f"The patch for `{patch.path}` has no `@@` hunks.")
    return files


def parse_search_replace(text: str) -> list[FilePatch]:
    files: dict[str, FilePatch] = {}
    lines = text.splitlines()
    path = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if not SEARCH_MARK.match(line):
            if line.strip() and not line.startswith("```"):
                path = line.strip().strip("`").strip()
            i += 1
            continue
        if not path:
            raise PatchError("A search/replace block must follow a line naming its file.")
        block_start = i + 1
        old: list[str] = []
        new: list[str] = []
        i += 1
        while i < len(lines) and not DIVIDER.match(lines[i]):
            old.append(lines[i])
            i += 1
        i += 1
        while i < len(lines) and not REPLACE_MARK.match(lines[i]):
            new.append(lines[i])
            i += 1
        if i >= len(lines):
            raise PatchError(
                f"The search/replace block for `{path}` starting at line {block_start} of the "
                "patch has no `>>>>>>> REPLACE` line."
            )
        i += 1
        entry = files.setdefault(path, FilePatch(path=path))
        entry.hunks.append(Hunk(old=old, new=new, header=f"block {len(entry.hunks) + 1}"))
    return list(files.values())


def parse_patch(text: str) -> list[FilePatch]:
    if any(SEARCH_MARK.match(line) for line in text.splitlines()):
        return parse_search_replace(text)
    return parse_unified(text)


def _occurrences(lines: list[str], block: list[str]) -> list[int]:
    if not block:
        return []
    size = len(block)
    return [i for i in range(len(lines) - size + 1) if lines[i : i + size] == block]


def _describe_miss(path: str, index: int, hunk: Hunk, lines: list[str]) -> str:
    name = f"hunk {index} of `{path}`" + (f" ({hunk.header})" if hunk.header else "")
    squeezed = [" ".join(line.split()) for line in lines]
    wanted = [" ".join(line.split()) for line in hunk.old]
    if _occurrences(squeezed, wanted):
        return f"{name} does not apply: its old lines match only if whitespace is ignored."
    first = next((line for line in hunk.old if line.strip()), "")
    where = [n + 1 for n, line in enumerate(lines) if first and line == first]
    hint = (
        f"its first line `{first.strip()[:80]}` occurs at line(s) {where[:5]}, but the lines "
        "after it differ"
        if where
        else f"its first line `{first.strip()[:80]}` does not occur in the file"
    )
    return f"{name} does not apply: {hint}. Read the file again and resend the hunk."


def apply_hunks(path: str, text: str, hunks: list[Hunk]) -> str:
    """Applies every hunk to ``text``; PatchError names the file and the first hunk that fails."""
    trailing_newline = text.endswith("\n") or not text
    lines = text.splitlines()
    shift = 0
    for index, hunk in enumerate(hunks, start=1):
        if not hunk.old:  # pure insertion: at its stated line, or at the end
            at = min(max(hunk.line + shift, 0), len(lines)) if hunk.line else len(lines)
            lines[at:at] = hunk.new
            shift += len(hunk.new)
            continue
        found = _occurrences(lines, hunk.old)
        if not found:
            raise PatchError(_describe_miss(path, index, hunk, lines))
        if not hunk.line and len(found) > 1:
            raise PatchError(
                f"hunk {index} of `{path}` ({hunk.header}) is ambiguous: its search lines occur "
                f"{len(found)} times (at lines {[n + 1 for n in found[:5]]}). Add context lines."
            )
        target = hunk.line - 1 + shift
        at = min(found, key=lambda n: abs(n - target))
        lines[at : at + len(hunk.old)] = hunk.new
        shift += len(hunk.new) - len(hunk.old)
    out = "\n".join(lines)
    return out + "\n" if lines and trailing_newline else out


@dataclass(frozen=True)
class FileChange:
    path: str
    content: str | None  # None: delete the file


def plan_patch(text: str, read: Callable[[str], str | None]) -> list[FileChange]:
    """The new content of every file the patch touches; ``read`` returns None for a missing file.

    Raises PatchError before anything is written when any hunk does not apply.
    """
    changes: list[FileChange] = []
    for patch in parse_patch(text):
        current = read(patch.path)
        if patch.delete:
            if current is None:
                raise PatchError(f"`{patch.path}` cannot be deleted: it does not exist.")
            changes.append(FileChange(patch.path, None))
            continue
        if current is None:
            if not (patch.create or all(not hunk.old for hunk in patch.hunks)):
                raise PatchError(
                    f"`{patch.path}` does not exist. To create it, use `--- /dev/null` and "
                    "`+++ b/<path>`, or an empty SEARCH section."
                )
            current = ""
        changes.append(FileChange(patch.path, apply_hunks(patch.path, current, patch.hunks)))
    return changes
