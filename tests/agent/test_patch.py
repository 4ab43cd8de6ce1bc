"""apply_patch's parsing and applying, as pure functions: table tests."""

from __future__ import annotations

import pytest

from workers.agent.patch import PatchError, plan_patch

FILES = {"a.py": "one\ntwo\nthree\nfour\n", "b.txt": "x\ny\n"}


def read(path: str) -> str | None:
    return FILES.get(path)


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        (
            "--- a/a.py\n+++ b/a.py\n@@ -2,2 +2,2 @@\n two\n-three\n+THREE\n",
            {"a.py": "one\ntwo\nTHREE\nfour\n"},
        ),
        (  # wrong line numbers: the hunk applies where its lines are
            "--- a/a.py\n+++ b/a.py\n@@ -40,1 +40,1 @@\n-four\n+4\n",
            {"a.py": "one\ntwo\nthree\n4\n"},
        ),
        (  # two files, two hunks
            "--- a/a.py\n+++ b/a.py\n@@ -1,1 +1,1 @@\n-one\n+1\n@@ -4,1 +4,2 @@\n four\n+five\n"
            "--- a/b.txt\n+++ b/b.txt\n@@ -1 +1 @@\n-x\n+z\n",
            {"a.py": "1\ntwo\nthree\nfour\nfive\n", "b.txt": "z\ny\n"},
        ),
        (
            "--- /dev/null\n+++ b/new/c.py\n@@ -0,0 +1,2 @@\n+print(1)\n+print(2)\n",
            {"new/c.py": "print(1)\nprint(2)\n"},
        ),
        ("--- a/b.txt\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-x\n-y\n", {"b.txt": None}),
        (
            "a.py\n<<<<<<< SEARCH\ntwo\nthree\n=======\n2\n3\n>>>>>>> REPLACE\n",
            {"a.py": "one\n2\n3\nfour\n"},
        ),
        (
            "```\nb.txt\n<<<<<<< SEARCH\ny\n=======\nY\n>>>>>>> REPLACE\n```\n",
            {"b.txt": "x\nY\n"},
        ),
        ("made.md\n<<<<<<< SEARCH\n=======\n# Title\n>>>>>>> REPLACE\n", {"made.md": "# Title\n"}),
    ],
)
def test_patches_apply(patch: str, expected: dict[str, str | None]) -> None:
    assert {c.path: c.content for c in plan_patch(patch, read)} == expected


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ("just some words", "no file headers"),
        (
            "--- a/a.py\n+++ b/a.py\n@@ -1,1 +1,1 @@\n-one\n+1\n@@ -3,1 +3,1 @@\n-tree\n+3\n",
            r"hunk 2 of `a.py` \(@@ -3,1 \+3,1 @@\) does not apply: its first line `tree` does "
            "not occur",
        ),
        (
            "--- a/a.py\n+++ b/a.py\n@@ -2,2 +2,2 @@\n two\n-four\n+4\n",
            r"hunk 1 of `a.py`.*first line `two` occurs at line\(s\) \[2\], but the lines after",
        ),
        ("--- a/a.py\n+++ b/a.py\n@@ -1 +1 @@\n-one  \n+1\n", "match only if whitespace"),
        ("--- a/gone.py\n+++ b/gone.py\n@@ -1 +1 @@\n-a\n+b\n", "`gone.py` does not exist"),
        ("b.txt\n<<<<<<< SEARCH\nx\n=======\nz\n", "has no `>>>>>>> REPLACE`"),
        ("<<<<<<< SEARCH\nx\n=======\nz\n>>>>>>> REPLACE\n", "must follow a line naming"),
        ("--- a/a.py\n+++ b/a.py\n", "has no `@@` hunks"),
    ],
)
def test_patches_that_do_not_apply_say_where(patch: str, message: str) -> None:
    with pytest.raises(PatchError, match=message):
        plan_patch(patch, read)


def test_ambiguous_search_block_is_refused() -> None:
    with pytest.raises(PatchError, match="occur 2 times"):
        plan_patch("f\n<<<<<<< SEARCH\nx\n=======\nz\n>>>>>>> REPLACE\n", lambda _: "x\ny\nx\n")
