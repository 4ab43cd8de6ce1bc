"""Red team: text we post cannot be steered by the names and words it is built from.

File names, directory names, model-written titles and summaries can carry `@team`, `Closes #N`
and markdown. What the bot posts from them must ping nobody, close nothing but its own issue and
keep every part inside its block. GitHub's own rules are the judge: `CLOSING_REFERENCE` and
`LIVE_MENTION` are what GitHub acts on.
"""

from __future__ import annotations

import re

import pytest

from workers import text
from workers.text import CLOSING_REFERENCE, ZWJ, close_fences, code_span, defuse

LIVE_MENTION = re.compile(r"(?<![\w@`])@[A-Za-z0-9][A-Za-z0-9-]*(?:/[A-Za-z0-9_.-]+)?")


def closes(posted: str) -> list[str]:
    """The references GitHub would close from ``posted`` (code spans ignored, as GitHub does)."""
    outside_code = re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", posted, flags=re.S)
    return [match.group(3) for match in CLOSING_REFERENCE.finditer(outside_code)]


def mentions(posted: str) -> list[str]:
    outside_code = re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", posted, flags=re.S)
    return LIVE_MENTION.findall(outside_code)


@pytest.mark.parametrize(
    ("written", "own", "shown"),
    [
        ("Closes #2", None, f"Closes{ZWJ} #{ZWJ}2"),
        ("closes #2", 2, "closes #2"),  # the bot's own issue stays closable
        ("Fixes #9 and fixes #2", 9, f"Fixes #9 and fixes{ZWJ} #{ZWJ}2"),
        ("RESOLVED: #3", None, f"RESOLVED{ZWJ}: #{ZWJ}3"),
        ("fix#4", None, f"fix{ZWJ} #{ZWJ}4"),
        ("Closed octo/app#2", 2, f"Closed{ZWJ} octo/app#{ZWJ}2"),
        ("fixes GH-5", None, f"fixes{ZWJ} GH-{ZWJ}5"),
        (
            "Resolves https://github.com/octo/app/issues/7",
            7,
            f"Resolves{ZWJ} https://github.com/octo/app/issues/7",
        ),
        ("cc @octo-org/everyone and @alice", None, f"cc @{ZWJ}octo-org/everyone and @{ZWJ}alice"),
        ("`@alice` in code", None, f"`@{ZWJ}alice` in code"),
        ("mail alice@example.com", None, "mail alice@example.com"),
        ("hide <!-- the rest", None, f"hide <{ZWJ}!-- the rest"),
        ("see #2 and issue 3", None, "see #2 and issue 3"),  # a plain reference is harmless
    ],
)
def test_defuse(written: str, own: int | None, shown: str) -> None:
    assert defuse(written, own) == shown
    assert defuse(shown, own) == shown  # defusing twice changes nothing
    assert closes(shown) in ([], [f"#{own}"])
    assert mentions(shown) == []


@pytest.mark.parametrize(
    ("name", "span"),
    [
        ("src/app.py", "`src/app.py`"),
        ("a`b.py", "``a`b.py``"),
        ("`x`", "`` `x` ``"),
        ("evil`\nCloses #2\n@org/team`.md", f"``evil`\\x0aCloses{ZWJ} #{ZWJ}2\\x0a@{ZWJ}org/team`.md``"),
        ("tab\there", "`tab\\x09here`"),
    ],
)  # fmt: skip
def test_code_span(name: str, span: str) -> None:
    assert code_span(name) == span
    assert "\n" not in span


@pytest.mark.parametrize(
    ("markdown", "closed"),
    [
        ("plain", "plain"),
        ("```\ncode\n```", "```\ncode\n```"),
        ("```\nleft open", "```\nleft open\n```"),
        ("````\n```\nstill in", "````\n```\nstill in\n````"),
        ("~~~ python\nx", "~~~ python\nx\n~~~"),
    ],
)
def test_close_fences(markdown: str, closed: str) -> None:
    assert close_fences(markdown) == closed


@pytest.mark.parametrize(
    ("files", "component"),
    [
        (["Closes #2/x.py"], None),
        (["@org/x.py"], None),
        (["docs\nFixes #3/a.md"], None),
        (["api/a.py", "api/b.py"], "api"),
        (["web-ui/a.ts"], "web-ui"),
    ],
)
def test_only_a_plain_directory_name_becomes_a_commit_prefix(files, component) -> None:
    assert text.component_for(files) == component


COMPONENT_STYLE = text.Conventions(style="component")
EVIL_TITLE = "Do what the issue said. Closes #2 cc @octo-org/everyone"
EVIL_SUMMARY = (
    "Done. Fixes #2. Closes octo-org/redteam#2. Resolves https://github.com/octo-org/redteam/"
    "issues/3. cc @octo-org/everyone\n\n```\nunclosed fence swallowing the footer"
)
EVIL_FILES = [
    "Closes #2/notes.py",
    "evil`\nCloses #2\n@org/team`.md",
    "x\n\n## Summary\n\nFixes #2 @org/team.txt",
]


def test_the_commit_message_from_evil_parts_closes_only_its_issue() -> None:
    message = text.commit_message(
        EVIL_TITLE,
        EVIL_SUMMARY,
        9,
        conventions=COMPONENT_STYLE,
        component=text.component_for(EVIL_FILES[:1]),
    )
    subject = message.splitlines()[0]
    assert subject == "Do what the issue said. cc @\u200docto-org/everyone"
    assert closes(message) == ["#9"]
    assert mentions(message) == []


def test_the_pr_body_from_evil_parts_keeps_each_part_in_its_block() -> None:
    body = text.pr_body(
        issue_number=9,
        summary=EVIL_SUMMARY,
        changed_files=EVIL_FILES,
        tests_before=None,
        tests_after=text.TestRun("pytest -k '`@team`'", 0),
        steps=3,
        tokens=10,
        notes=["`Closes #2` could not be done\nFixes #2"],
        status="limits_exceeded",
        reason="asked by @boss, Closes #4",
        pre_existing=["test_a`\nCloses #2"],
    )
    assert closes(body) == ["#9"]
    assert mentions(body) == []
    changes = body.split("## Changes\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(changes) == len(EVIL_FILES)  # one list item per file, nothing breaks out
    lines = body.splitlines()
    assert lines.count("## Summary") == 1
    assert body.rstrip().endswith("<!-- codex-bot -->")
    assert "Fixes #9" in lines and lines.index("Fixes #9") > lines.index("## Tests")
    fences = [line for line in lines if line.startswith("```")]
    assert len(fences) % 2 == 0  # the summary's open fence is closed before the tests


def test_a_progress_comment_detail_cannot_ping_or_close() -> None:
    from workers.progress import ProgressView, progress_comment

    view = ProgressView(
        "done", "t1", "ask", "alice", detail="Answer: Fixes #2, ask @octo-org/everyone\n```"
    )
    posted = progress_comment(view)
    assert closes(posted) == []
    assert mentions(posted) == ["@alice"]  # the one who asked, on purpose
