"""The pure parts of a code review: where comments may sit, and what is posted."""

from __future__ import annotations

import pytest

from codexbot.commands import MARKER, parse_command
from workers import repoconfig
from workers.agent.textcalls import recognise_text_protocol
from workers.agent.tools import Finding, FormatError, parse_review
from workers.review import build_review, commentable_lines, counts

DIFF = """diff --git a/pkg/a.py b/pkg/a.py
index 1111111..2222222 100644
--- a/pkg/a.py
+++ b/pkg/a.py
@@ -1,4 +1,5 @@
 one
-two
+TWO
+two and a half
 three
 four
@@ -20,2 +21,3 @@ def f():
 twenty
+new
 twenty-one
diff --git a/gone.py b/gone.py
deleted file mode 100644
--- a/gone.py
+++ /dev/null
@@ -1 +0,0 @@
-bye
diff --git a/new.txt b/new.txt
new file mode 100644
--- /dev/null
+++ b/new.txt
@@ -0,0 +1,2 @@
+hello
+-- not a header
"""


def test_commentable_lines_are_the_new_sides_lines_inside_hunks():
    assert commentable_lines(DIFF) == {
        "pkg/a.py": {1, 2, 3, 4, 5, 21, 22, 23},
        "new.txt": {1, 2},
    }


LINES = {"pkg/a.py": 30, "new.txt": 2}


@pytest.mark.parametrize(
    ("findings", "kept", "dropped"),
    [
        ([], [], 0),
        ([{"path": "pkg/a.py", "line": 2, "severity": "P2", "body": "nit"}], [("pkg/a.py", 2)], 0),
        ([{"path": "./new.txt", "line": 1, "severity": "P1", "body": "x"}], [("new.txt", 1)], 0),
        ([{"path": "pkg/a.py", "line": 10, "severity": "P0", "body": "outside"}], [], 1),
        ([{"path": "made/up.py", "line": 1, "severity": "P0", "body": "no file"}], [], 1),
        (
            [
                {"path": "pkg/a.py", "line": 22, "severity": "P2", "body": "later"},
                {"path": "pkg/a.py", "line": 3, "severity": "P0", "body": "first"},
            ],
            [("pkg/a.py", 3), ("pkg/a.py", 22)],  # most severe first
            0,
        ),
    ],
)
def test_build_review_keeps_findings_on_the_diff(findings, kept, dropped):
    review = build_review("Fine.", findings, commentable_lines(DIFF), LINES.get)
    assert [(c["path"], c["line"]) for c in review.comments] == kept
    assert all(c["side"] == "RIGHT" and MARKER in c["body"] for c in review.comments)
    assert review.dropped == dropped
    assert ("left out" in review.body) == bool(dropped)


def test_review_text_is_defused_and_references_checked():
    finding = {"path": "pkg/a.py", "line": 2, "severity": "P0", "body": "ask @org/team; Fixes #9"}
    review = build_review(
        "See pkg/a.py:3 and pkg/ghost.py:1.", [finding], commentable_lines(DIFF), LINES.get, "u"
    )
    assert review.comments[0]["body"].startswith("**P0** (must fix): ask @\u200dorg/team")
    assert "pkg/a.py:3" in review.body and "ghost" not in review.body
    assert "Details: u" in review.body and review.body.endswith(f"{MARKER}\n")


@pytest.mark.parametrize(
    ("severities", "shown"),
    [
        ([], "0 findings"),
        (["P1"], "1 finding (P1 1)"),
        (["P2", "P0", "P2"], "3 findings (P0 1, P2 2)"),
    ],
)
def test_counts(severities, shown):
    assert counts(severities) == shown


def test_parse_review_checks_each_finding():
    action = parse_review(
        {"summary": "ok", "findings": [{"path": "a.py", "line": 3, "severity": "p1", "body": "b"}]}
    )
    assert action.findings == (Finding("a.py", 3, "P1", "b"),)
    for bad in (
        {"summary": "", "findings": []},
        {"summary": "s", "findings": "a.py:3"},
        {"summary": "s", "findings": [{"path": "a.py", "line": 0, "severity": "P1", "body": "b"}]},
        {"summary": "s", "findings": [{"path": "a.py", "line": 1, "severity": "P3", "body": "b"}]},
    ):
        with pytest.raises(FormatError):
            parse_review(bad)


def test_a_review_written_as_text():
    reply = "- P0 `a.py:3` breaks\n**P2** b/c.py:9: nit\nLooks fine otherwise.\n"
    found = recognise_text_protocol(reply + "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT", ["review"])
    assert found.calls[0].name == "review"
    assert found.calls[0].arguments == (
        '{"summary": "Looks fine otherwise.", "findings": ['
        '{"path": "a.py", "line": 3, "severity": "P0", "body": "breaks"}, '
        '{"path": "b/c.py", "line": 9, "severity": "P2", "body": "nit"}]}'
    )


def test_the_review_command_and_its_settings():
    command = parse_command("/codex review the error handling")
    assert command is not None and (command.name, command.argument) == (
        "review",
        "the error handling",
    )
    config = repoconfig.parse("review: auto\nfix_ci: true\nfix_ci_rounds: 3\n")
    assert (config.review, config.fix_ci, config.fix_ci_rounds) == ("auto", True, 3)
    assert repoconfig.parse("review: off\n").review == "off"
    assert (repoconfig.DEFAULT.review, repoconfig.DEFAULT.fix_ci) == ("off", False)
    assert repoconfig.DEFAULT.fix_ci_rounds == 2
