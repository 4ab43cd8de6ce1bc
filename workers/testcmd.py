"""The repository's test command, and what its output says failed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import structlog

from workers.repofiles import RepoFileError, read_repo_file

log = structlog.get_logger(__name__)

PYTEST = "python3 -m pytest -q"
MAX_READ_BYTES = 1_000_000  # of a file detection searches: its first megabyte
AGENTS_MD_BYTES = 100_000


def _text(root: Path, name: str, max_bytes: int = MAX_READ_BYTES) -> str:
    """The start of a file detection reads; "" when it is missing or not a regular file of the
    checkout (a symlink, a FIFO: skipped, with a note in the log)."""
    try:
        data = read_repo_file(root, name, max_bytes, cut=True)
    except RepoFileError as error:
        log.warning("testcmd.file_skipped", reason=str(error))
        return ""
    return "" if data is None else data.decode("utf-8", errors="replace")


def _has_pytest_config(root: Path) -> bool:
    if (root / "pytest.ini").is_file() or (root / "conftest.py").is_file():
        return True
    for name, marker in (
        ("pyproject.toml", "[tool.pytest"),
        ("setup.cfg", "[tool:pytest]"),
        ("tox.ini", "[pytest]"),
    ):
        if marker in _text(root, name):
            return True
    tests = root / "tests"
    return tests.is_dir() and any(tests.glob("test_*.py"))


def _makefile_has_test(root: Path) -> bool:
    return bool(re.search(r"(?m)^test:", _text(root, "Makefile")))


def detect_test_command(root: Path) -> str | None:
    """The command a careful contributor would run first, or None when nothing says."""
    if _has_pytest_config(root):
        return PYTEST
    if (root / "package.json").is_file():
        return "npm test"
    if (root / "go.mod").is_file():
        return "go test ./..."
    if (root / "Cargo.toml").is_file():
        return "cargo test"
    if _makefile_has_test(root):
        return "make test"
    return None


# ------------------------------------------------------------------------------------------------
# Where the command comes from: .github/codex.yml `test`, else AGENTS.md, else detection.

TESTING_HEADING = re.compile(r"(?im)^#{1,6}\s+.*\b(test|testing|tests)\b.*$")
FENCE = re.compile(
    r"(?ms)^(`{3,}|~{3,})[ \t]*(?:sh|bash|shell|console|zsh)?[ \t]*\n(.*?)^\1[ \t]*$"
)


def command_from_agents_md(text: str) -> str | None:
    """The first command in a fenced block under a heading that mentions testing."""
    for heading in TESTING_HEADING.finditer(text):
        section = text[heading.end() :]
        block = FENCE.search(section)
        if block is None or re.search(r"(?m)^#{1,6}\s", section[: block.start()]):
            continue  # no fence, or the first one is under a later heading
        for line in block.group(2).splitlines():
            line = line.strip().removeprefix("$ ").strip()
            if line and not line.startswith("#"):
                return line
    return None


@dataclass(frozen=True)
class TestCommand:
    __test__ = False  # not a pytest class

    command: str
    source: str  # ".github/codex.yml", "AGENTS.md" or "detected"


def find_test_command(root: Path, configured: str | None = None) -> TestCommand | None:
    """``configured`` (from codex.yml) wins; then the root AGENTS.md; then detection."""
    if configured and configured.strip():
        return TestCommand(configured.strip(), ".github/codex.yml")
    command = command_from_agents_md(_text(root, "AGENTS.md", AGENTS_MD_BYTES))
    if command:
        return TestCommand(command, "AGENTS.md")
    detected = detect_test_command(root)
    return TestCommand(detected, "detected") if detected else None


# ------------------------------------------------------------------------------------------------
# Reading test output: which tests failed, and which of those failed before the change too.

FAILED_PATTERNS = (
    re.compile(r"(?m)^(?:FAILED|ERROR) (\S+?)(?: - .*)?$"),  # pytest -rA/-ra summary
    re.compile(r"(?m)^--- FAIL: (\S+)"),  # go test
    re.compile(r"(?m)^test (\S+) \.\.\. FAILED$"),  # cargo test
    re.compile(r"(?m)^\s+(?:\d+\) |✕ |× )(.+?)\s*(?:\(\d+ ?m?s\))?$"),  # mocha / jest
    re.compile(r"(?m)^(?:FAIL|ERROR): (\w+ \([\w.]+\))"),  # unittest
)


def failed_tests(output: str) -> list[str]:
    """The names of the failing tests a test run printed, in order, without repeats."""
    names: list[str] = []
    for pattern in FAILED_PATTERNS:
        for match in pattern.finditer(output):
            name = match.group(1).strip()
            if name and name not in names:
                names.append(name)
    return names


@dataclass(frozen=True)
class Comparison:
    pre_existing: list[str]  # failed before and after the change
    fixed: list[str]  # failed before, pass after
    new: list[str]  # pass before, fail after


def compare_runs(before_output: str | None, after_output: str | None) -> Comparison:
    before = failed_tests(before_output or "")
    after = failed_tests(after_output or "")
    return Comparison(
        pre_existing=[name for name in after if name in before],
        fixed=[name for name in before if name not in after],
        new=[name for name in after if name not in before],
    )
