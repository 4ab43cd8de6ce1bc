import pytest

from workers import text


@pytest.mark.parametrize(
    ("number", "title", "expected"),
    [
        (
            7,
            "word_count miscounts text with repeated whitespace",
            "codex/issue-7-word-count-miscounts-text-with-repeated",
        ),
        (1, "Crash on ÜNICODE input!!", "codex/issue-1-crash-on-unicode-input"),
        (3, "   ", "codex/issue-3-task"),
        (4, "$(rm -rf /); `id`", "codex/issue-4-rm-rf-id"),
        (5, "a" * 80, "codex/issue-5-" + "a" * 40),
        (6, "../../refs/heads/main", "codex/issue-6-refs-heads-main"),
    ],
)
def test_branch_name(number, title, expected):
    assert text.branch_name(number, title) == expected


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("count words on any whitespace.", "Count words on any whitespace"),
        ("Fix   spacing\nin two lines", "Fix spacing in two lines"),
        ("", "Update code"),
        ("word " * 30, "Word" + " word" * 13),
        ("x" * 100, "X" + "x" * 71),
    ],
)
def test_commit_subject(subject, expected):
    assert text.commit_subject(subject) == expected
    assert len(text.commit_subject(subject)) <= 72


def test_commit_message_shape():
    body = (
        "word_count split on single spaces, so repeated spaces and tabs gave wrong counts. "
        "It now uses str.split(), which splits on any run of whitespace.\n\nFixes #9"
    )
    message = text.commit_message("Count words on any whitespace.", body, 9)
    subject, blank, *rest = message.rstrip("\n").split("\n")
    assert subject == "Count words on any whitespace"
    assert blank == ""
    assert all(len(line) <= 72 for line in rest)
    assert message.count("Fixes #9") == 1
    assert message.rstrip().endswith("Fixes #9")


def test_wrap_keeps_lists_and_code():
    wrapped = text.wrap_paragraphs("- " + "item " * 20 + "\n- second\n\n    code   stays\n")
    lines = wrapped.splitlines()
    assert lines[0].startswith("- item")
    assert lines[1].startswith("  item")
    assert "    code   stays" in lines


def test_pr_body_says_draft_when_tests_fail():
    after = text.TestRun("pytest -q", 1, "1 failed")
    body = text.pr_body(
        issue_number=2,
        summary="Did it.",
        changed_files=["a.py"],
        tests_before=text.TestRun("pytest -q", 1),
        tests_after=after,
        steps=3,
        tokens=100,
    )
    assert body.startswith("**Draft: the tests still fail")
    assert "- `a.py`" in body and "Fixes #2" in body and "exit code 1" in body
    assert text.MARKER in body


def test_pr_body_with_passing_tests_fences_output_safely():
    after = text.TestRun("pytest -q", 0, "````\n3 passed")
    body = text.pr_body(
        issue_number=2,
        summary="Did it.",
        changed_files=[],
        tests_before=None,
        tests_after=after,
        steps=1,
        tokens=1,
    )
    assert body.startswith("## Summary")
    assert "`````\n````\n3 passed\n`````" in body
