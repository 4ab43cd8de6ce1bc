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


# -- conventions learned from recent subjects ------------------------------------------------

PLAIN = ["Fix the parser", "Add a flag", "Update docs", "Merge pull request #3 from x/y"]
COMPONENT = ["net: fix a leak", "mm: add a knob", "sched: say more", "Fix typo"]
CONVENTIONAL = ["fix(api): handle empty body", "feat(cli): add --json", "chore: bump deps"]
CONVENTIONAL_PLAIN_SCOPE = ["fix: handle empty body", "feat: add --json", "docs: more"]


@pytest.mark.parametrize(
    ("subjects", "expected"),
    [
        ([], text.Conventions()),
        (PLAIN, text.Conventions("plain", capitalise=True)),
        (COMPONENT, text.Conventions("component", capitalise=False)),
        (CONVENTIONAL, text.Conventions("conventional", capitalise=False, scoped=True)),
        (CONVENTIONAL_PLAIN_SCOPE, text.Conventions("conventional", capitalise=False)),
        (['Revert "x"', "Merge branch 'a'"], text.Conventions()),
    ],
)
def test_learn_conventions(subjects, expected):
    assert text.learn_conventions(subjects) == expected


def test_only_the_last_fifty_subjects_count():
    subjects = ["Fix a thing"] * 50 + ["fix: old style"] * 100
    assert text.learn_conventions(subjects).style == "plain"


@pytest.mark.parametrize(
    ("subject", "conventions", "component", "expected"),
    [
        (
            "Count words on any whitespace.",
            text.Conventions(),
            "textstats",
            "Count words on any whitespace",
        ),
        (
            "Count words",
            text.Conventions("component", False),
            "textstats",
            "textstats: count words",
        ),
        ("Count words", text.Conventions("component", True), None, "Count words"),
        ("fix: Count words", text.Conventions("conventional", False), "x", "fix: count words"),
        (
            "Count words",
            text.Conventions("conventional", False, True),
            "core",
            "fix(core): count words",
        ),
        (
            "URL parsing fails",
            text.Conventions("component", False),
            "net",
            "net: URL parsing fails",
        ),
        ("x" * 100, text.Conventions("component", True), "abc", "abc: " + "X" + "x" * 66),
    ],
)
def test_conventional_subject(subject, conventions, component, expected):
    result = text.conventional_subject(subject, conventions, component=component)
    assert result == expected and len(result) <= 72


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ([], None),
        (["textstats/core.py", "tests/test_core.py", "textstats/x.py"], "textstats"),
        (["setup.py"], "setup"),
    ],
)
def test_component_for(files, expected):
    assert text.component_for(files) == expected


def test_commit_message_with_conventions_and_co_author():
    trailer = text.co_author_trailer("Ada\nLovelace <x>", text.noreply_email("ada", 42))
    message = text.commit_message(
        "Count words on any whitespace",
        "word_count split on single spaces.\n\nCo-authored-by: Evil <evil@example.com>",
        7,
        conventions=text.Conventions("component", capitalise=False),
        component="textstats",
        co_author=trailer,
    )
    assert message == (
        "textstats: count words on any whitespace\n\n"
        "word_count split on single spaces.\n\n"
        "Fixes #7\n\n"
        "Co-authored-by: AdaLovelace x <42+ada@users.noreply.github.com>\n"
    )


# -- PR body ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("after", "status", "reason", "first"),
    [
        (text.TestRun("make test", 0), "finished", "", "## Summary"),
        (text.TestRun("make test", 2), "finished", "", "**Draft: the tests still fail"),
        (None, "finished", "", "**Draft: no test command was found"),
        (
            text.TestRun("make test", 0),
            "limits_exceeded",
            "step limit reached (30 model calls)",
            "**Draft: the agent reached a limit: step limit reached (30 model calls). The work",
        ),
        (text.TestRun("make test", 0), "stuck", "", "**Draft: the agent was stuck"),
        (
            text.TestRun("make test", 0),
            "stopped",
            "stopped by @ada",
            "**Draft: the task was stopped",
        ),
    ],
)
def test_pr_body_first_line(after, status, reason, first):
    body = text.pr_body(
        issue_number=3, summary="s", changed_files=["a.py"], tests_before=None,
        tests_after=after, steps=1, tokens=2, status=status, reason=reason,
    )  # fmt: skip
    assert body.startswith(first)


def test_pr_body_has_every_section():
    body = text.pr_body(
        issue_number=3,
        summary="Fixed it.",
        changed_files=["a.py", "b/c.py"],
        tests_before=text.TestRun("pytest", 1, "FAILED t::a\nFAILED t::b\n2 failed"),
        tests_after=text.TestRun("pytest", 1, "FAILED t::b\n1 failed"),
        steps=6,
        tokens=1234,
        notes=["Could not reproduce on Windows."],
        pre_existing=["t::b"],
        task_url="https://bot.example/tasks/abc",
    )
    for part in [
        "## Summary\n\nFixed it.",
        "- `a.py`\n- `b/c.py`",
        "Command: `pytest`",
        "- Before: failed (exit code 1)\n- After: failed (exit code 1)",
        "Failing before this change too (pre-existing): `t::b`.",
        "Last lines before the change:\n\n```\nFAILED t::a",
        "Last lines after the change:\n\n```\nFAILED t::b\n1 failed\n```",
        "## Could not do\n\n- Could not reproduce on Windows.",
        "Fixes #3",
        "6 steps, 1234 tokens; [task log](https://bot.example/tasks/abc).",
    ]:
        assert part in body, part


# -- answers with verified references --------------------------------------------------------

LINES = {"app/webhook.py": 120, "README.md": 10}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("See app/webhook.py:42.", "See app/webhook.py:42."),
        ("See `app/webhook.py:42-50`.", "See `app/webhook.py:42-50`."),
        ("See app/webhook.py:420 for it.", "See for it."),
        ("Parsing (app/parse.py:3) happens first.", "Parsing happens first."),
        ("Both README.md:1 and app/webhook.py:0.", "Both README.md:1 and."),
        ("Range app/webhook.py:100-200 is too long.", "Range is too long."),
        (
            "No references, just http://x.io:8080 prose.",
            "No references, just http://x.io:8080 prose.",
        ),
    ],
)
def test_verify_references(answer, expected):
    assert text.verify_references(answer, LINES.get) == expected


@pytest.mark.parametrize(
    ("template", "filled"),
    [
        (
            "## Description\n<!-- what and why -->\n\n## Checklist\n- [ ] tests\n",
            "## Description\n\nSUMMARY\n\n<!-- what and why -->\n\n## Checklist\n- [ ] tests",
        ),
        ("Intro line\r\n# Why\r\n", "Intro line\n# Why\n\nSUMMARY\n"),
        (
            "```\n# not a heading\n```\n### Real\n",
            "```\n# not a heading\n```\n### Real\n\nSUMMARY\n",
        ),
        ("- [ ] tested\n", "SUMMARY\n\n- [ ] tested"),
        ("#hashtag, no heading\n", "SUMMARY\n\n#hashtag, no heading"),
    ],
)
def test_fill_template_puts_the_summary_under_the_first_heading(template, filled):
    assert text.fill_template(template, "SUMMARY") == filled


def test_pr_body_follows_a_template_and_keeps_our_details_below():
    plain = {"issue_number": 3, "summary": "Fixed it.", "changed_files": ["a.py"], "steps": 1}
    plain |= {"tests_before": None, "tests_after": None, "tokens": 2}
    body = text.pr_body(**plain, template="## What\n\n## Checklist\n- [ ] docs\n")
    assert "\n\n## What\n\nFixed it.\n\n\n## Checklist\n- [ ] docs\n\n---\n\n## Changes" in body
    assert "## Summary" not in body and body.rstrip().endswith(text.MARKER)
    huge = text.pr_body(**plain, template="## What\n" + "x" * text.MAX_TEMPLATE_CHARS)
    assert "\n\n## Summary\n\nFixed it." in huge  # too big to follow: ours alone


def test_tries_section_marks_the_chosen_try_and_links_each_trajectory():
    rows = [
        text.TryRow(1, "failed", 2, 1, 0, 3, 1800, "https://bot.example/tasks/t-try1"),
        text.TryRow(2, "passed", 0, 1, 1, 4, 2600, "https://bot.example/tasks/t-try2"),
        text.TryRow(3, "stopped", None, 0, 0, 1, 400, ""),
    ]
    section = text.tries_section(rows, chosen=2, green_first=2)
    assert section.startswith("## Tries\n\n3 tries ran in parallel and the tests chose try 2")
    assert "Try 2 passed the tests first, so the tries still running were stopped" in section
    assert (
        "| 1 | failed | 2 | +1 -0 | 3 | 1800 | [log](https://bot.example/tasks/t-try1) |" in section
    )
    assert "| **2** (chosen) | passed | 0 | +1 -1 | 4 | 2600 | [log](" in section
    assert "| 3 | stopped | - | +0 -0 | 1 | 400 | - |" in section
    assert "`/codex fix --use-attempt N`" in section
    assert "stopped (`attempts_stop_on_green`)" not in text.tries_section(rows, chosen=2)


def test_pr_body_carries_the_tries_table_before_its_footer():
    body = text.pr_body(
        issue_number=3, summary="Fixed.", changed_files=["a.py"], tests_before=None,
        tests_after=text.TestRun("pytest", 0), steps=4, tokens=10, tries="## Tries\n\ntable\n",
    )  # fmt: skip
    assert body.index("## Tries") > body.index("## Tests")
    assert body.index("## Tries") < body.index("Fixes #3")
