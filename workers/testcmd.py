"""Finding a repository's test command from the files it holds."""

from __future__ import annotations

import re
from pathlib import Path

PYTEST = "python3 -m pytest -q"


def _has_pytest_config(root: Path) -> bool:
    if (root / "pytest.ini").is_file() or (root / "conftest.py").is_file():
        return True
    for name, marker in (
        ("pyproject.toml", "[tool.pytest"),
        ("setup.cfg", "[tool:pytest]"),
        ("tox.ini", "[pytest]"),
    ):
        path = root / name
        if path.is_file() and marker in path.read_text(errors="replace"):
            return True
    tests = root / "tests"
    return tests.is_dir() and any(tests.glob("test_*.py"))


def _makefile_has_test(root: Path) -> bool:
    makefile = root / "Makefile"
    return makefile.is_file() and bool(
        re.search(r"(?m)^test:", makefile.read_text(errors="replace"))
    )


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
