"""Where a review comment sits in a pull request's diff, computed as GitHub computes it.

``position`` counts lines down from the file's first ``@@`` hunk header (the line below it is
1) and keeps counting through later hunk headers; ``diff_hunk`` is the hunk from its header
down to the commented line. Pure: takes the file's unified diff as text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@")


@dataclass(frozen=True)
class DiffPlace:
    position: int
    diff_hunk: str


def locate_line(file_diff: str, line: int, side: str = "RIGHT") -> DiffPlace | None:
    """The place of ``line`` (head's numbering for RIGHT, base's for LEFT), or None when that
    line is not part of the diff (GitHub refuses such a comment)."""
    lines = file_diff.splitlines()
    first = next((i for i, text in enumerate(lines) if text.startswith("@@")), None)
    if first is None:
        return None
    position = -1
    old = new = 0
    hunk_start = first
    for index in range(first, len(lines)):
        text = lines[index]
        position += 1
        header = HUNK_HEADER.match(text)
        if header:
            old, new = int(header[1]), int(header[2])
            hunk_start = index
            continue
        if text.startswith("\\"):  # "\ No newline at end of file"
            continue
        here: int | None
        if text.startswith("+"):
            here = new if side == "RIGHT" else None
            new += 1
        elif text.startswith("-"):
            here = old if side == "LEFT" else None
            old += 1
        else:
            here = new if side == "RIGHT" else old
            old += 1
            new += 1
        if here == line:
            return DiffPlace(position=position, diff_hunk="\n".join(lines[hunk_start : index + 1]))
    return None
