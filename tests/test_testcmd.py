"""The test command (codex.yml, else AGENTS.md, else detection) and reading test output."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.testcmd import (
    TestCommand,
    command_from_agents_md,
    compare_runs,
    detect_test_command,
    failed_tests,
    find_test_command,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("# Project\n\n## Testing\n\n```sh\nmake check\n```\n", "make check"),
        ("## How to run the tests\n\n```\n$ tox -e py311\n```\n", "tox -e py311"),
        ("## Tests\n```bash\n# all of them\npytest -x\n```\n", "pytest -x"),
        ("## Build\n```\nmake\n```\n## Testing\nRun it.\n", None),
        ("## Testing\nno fence here\n## Other\n```\nrm -rf /\n```\n", None),
        ("```\nmake test\n```\n", None),
    ],
)
def test_command_from_agents_md(text: str, expected: str | None) -> None:
    assert command_from_agents_md(text) == expected


def test_codex_yml_wins_then_agents_md_then_detection(tmp_path: Path) -> None:
    (tmp_path / "go.mod").write_text("module x\n")
    assert find_test_command(tmp_path) == TestCommand("go test ./...", "detected")
    (tmp_path / "AGENTS.md").write_text("## Testing\n```\ngo test -race ./...\n```\n")
    assert find_test_command(tmp_path) == TestCommand("go test -race ./...", "AGENTS.md")
    assert find_test_command(tmp_path, "make ci") == TestCommand("make ci", ".github/codex.yml")
    assert detect_test_command(tmp_path) == "go test ./..."


def test_no_command_at_all(tmp_path: Path) -> None:
    assert find_test_command(tmp_path, "  ") is None


PYTEST = """..F.E
=========================== short test summary info ============================
FAILED tests/test_a.py::test_one - assert 1 == 2
FAILED tests/test_b.py::test_two
ERROR tests/test_c.py::test_three - RuntimeError
2 failed, 2 passed, 1 error in 0.1s
"""
GO = "--- FAIL: TestParse (0.00s)\n--- FAIL: TestLex (0.01s)\nFAIL\n"
CARGO = "test parser::tests::empty ... FAILED\ntest ok_one ... ok\n"
UNITTEST = "FAIL: test_x (pkg.tests.TestY)\nERROR: test_z (pkg.tests.TestY)\n"


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (
            PYTEST,
            [
                "tests/test_a.py::test_one",
                "tests/test_b.py::test_two",
                "tests/test_c.py::test_three",
            ],
        ),
        (GO, ["TestParse", "TestLex"]),
        (CARGO, ["parser::tests::empty"]),
        (UNITTEST, ["test_x (pkg.tests.TestY)", "test_z (pkg.tests.TestY)"]),
        ("all good\n3 passed\n", []),
    ],
)
def test_failed_tests(output: str, expected: list[str]) -> None:
    assert failed_tests(output) == expected


def test_compare_runs_names_pre_existing_fixed_and_new() -> None:
    before = "FAILED t.py::a\nFAILED t.py::b\n"
    after = "FAILED t.py::b\nFAILED t.py::c\n"
    result = compare_runs(before, after)
    assert result.pre_existing == ["t.py::b"]
    assert result.fixed == ["t.py::a"]
    assert result.new == ["t.py::c"]
    assert compare_runs(None, None).pre_existing == []
