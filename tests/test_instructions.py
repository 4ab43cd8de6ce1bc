"""Instruction files: AGENTS.md from the root down, nearest last; fallbacks when there is none."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.instructions import InstructionFile, applicable, discover_instructions


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({}, []),
        ({"README.md": "x"}, []),
        ({".github/copilot-instructions.md": "c"}, [".github/copilot-instructions.md"]),
        ({"CLAUDE.md": "a", ".github/copilot-instructions.md": "c"}, ["CLAUDE.md"]),
        (
            {"AGENTS.md": "r", "CLAUDE.md": "a", "src/api/AGENTS.md": "n", "src/AGENTS.md": "m"},
            ["AGENTS.md", "src/AGENTS.md", "src/api/AGENTS.md"],
        ),
        ({"node_modules/x/AGENTS.md": "no", "lib/AGENTS.md": "yes"}, ["lib/AGENTS.md"]),
    ],
)
def test_discovery(tmp_path: Path, files: dict[str, str], expected: list[str]) -> None:
    assert [f.path for f in discover_instructions(tree(tmp_path, files))] == expected


def test_symlinked_instruction_files_are_not_followed(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("host secret")
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "AGENTS.md").symlink_to(tmp_path / "secret")
    assert discover_instructions(tmp_path / "repo") == []


FILES = [
    InstructionFile("AGENTS.md", "root"),
    InstructionFile("src/AGENTS.md", "src"),
    InstructionFile("src/api/AGENTS.md", "api"),
    InstructionFile("docs/AGENTS.md", "docs"),
]


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        ([""], ["AGENTS.md"]),
        (["src/api/views.py"], ["AGENTS.md", "src/AGENTS.md", "src/api/AGENTS.md"]),
        (["./src/util.py"], ["AGENTS.md", "src/AGENTS.md"]),
        (["srcs/x.py"], ["AGENTS.md"]),
        (["docs/a.md", "src/b.py"], ["AGENTS.md", "docs/AGENTS.md", "src/AGENTS.md"]),
    ],
)
def test_applicable_chain_is_root_first_nearest_last(paths: list[str], expected: list[str]) -> None:
    assert [f.path for f in applicable(FILES, paths)] == expected


def test_fallback_files_govern_the_root() -> None:
    claude = InstructionFile("CLAUDE.md", "c")
    assert applicable([claude], ["deep/down/file.py"]) == [claude]
