"""Tool calls written as text, JSON repaired without guessing, and what the bot writes when the
model gave no title or summary: table tests of pure functions."""

from __future__ import annotations

import json

import pytest

from workers.agent.callend import call_end
from workers.agent.model import split_reasoning
from workers.agent.text import diff_counts, written_summary, written_title
from workers.agent.textcalls import (
    FINISH_MARKER,
    Unreadable,
    loads_repaired,
    recognise_text_protocol,
    recognise_tool_calls,
)

TOOLS = ["shell", "read_file", "search", "apply_patch", "finish"]
LS = {"command": "ls"}


def calls_of(text: str, text_protocol: bool = False) -> tuple[str, list[tuple[str, dict]], str]:
    found = (recognise_text_protocol if text_protocol else recognise_tool_calls)(text, TOOLS)
    return found.dialect, [(c.name, json.loads(c.arguments)) for c in found.calls], found.problem


@pytest.mark.parametrize(
    ("text", "dialect", "calls"),
    [
        # Hermes / Qwen: tags, several in order, one left open at the end of the reply.
        (
            'Let me look.\n<tool_call>\n{"name": "shell", "arguments": {"command": "ls"}}\n'
            '</tool_call>\n<tool_call>{"name": "read_file", "arguments": {"path": "a.py"}}',
            "hermes",
            [("shell", LS), ("read_file", {"path": "a.py"})],
        ),
        # Mistral: a JSON list after the marker, or v11's name[ARGS]{...}.
        (
            '[TOOL_CALLS] [{"name": "shell", "arguments": {"command": "ls"}}, '
            '{"name": "finish", "arguments": {"summary": "Done."}}]',
            "mistral",
            [("shell", LS), ("finish", {"summary": "Done."})],
        ),
        ('[TOOL_CALLS]shell[ARGS]{"command": "ls"}', "mistral", [("shell", LS)]),
        # Fenced JSON, as Qwen2.5-Coder writes under llama.cpp's default template.
        (
            'I will run:\n```json\n{\n  "name": "shell",\n  "arguments": {"command": "ls"},\n}\n```',
            "fenced_json",
            [("shell", LS)],
        ),
        # OpenAI's own shape written out, arguments as a string.
        (
            '```json\n{"type": "function", "function": {"name": "shell", '
            '"arguments": "{\\"command\\": \\"ls\\"}"}}\n```',
            "fenced_json",
            [("shell", LS)],
        ),
        # A bare object in prose.
        (
            'Next: {"name": "search", "parameters": {"pattern": "def x"}} and then more.',
            "bare_json",
            [("search", {"pattern": "def x"})],
        ),
        # Doubled outer braces (a template's escape), fenced or bare.
        (
            '```json\n{{"name": "finish", "arguments": {"summary": "Done."}}}\n```',
            "fenced_json",
            [("finish", {"summary": "Done."})],
        ),
        ('{{"name": "shell", "arguments": {"command": "ls"}}}', "bare_json", [("shell", LS)]),
        # As Qwen2.5-Coder-1.5B writes under llama-server: several in one fence, and the last
        # bare one cut by the stream before its outer brace closed.
        (
            '```json\n{{"name": "shell", "arguments": {"command": "ls"}}}\n\n'
            '{{"name": "finish", "arguments": {"title": "T"}}}\n```',
            "fenced_json",
            [("shell", LS), ("finish", {"title": "T"})],
        ),
        (
            '{{"name": "shell", "arguments": {"command": "ls"}}}\n\n'
            '{{"name": "search", "arguments": {"pattern": "x"}}',
            "bare_json",
            [("shell", LS), ("search", {"pattern": "x"})],
        ),
        # Fenced and bare calls in one reply all run, in the order written.
        (
            '{"name": "shell", "arguments": {"command": "ls"}}\n```json\n'
            '{"name": "finish", "arguments": {}}\n```',
            "bare_json",
            [("shell", LS), ("finish", {})],
        ),
        # Prose quoting JSON that is no call of ours is not a call.
        ('The config is {"name": "demo", "arguments": []}.', "", []),
        ('```json\n{"steps": 3}\n```', "", []),
        ("Just thinking out loud.", "", []),
    ],
)
def test_tool_calls_written_as_text_are_recognised(text, dialect, calls) -> None:
    assert calls_of(text) == (dialect, calls, "")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            '<tool_call>{"name": "shell", "arguments": {"command": "ls"</tool_call>',
            "Your `<tool_call>` block is not valid JSON (Expecting ',' delimiter",
        ),
        ('<tool_call>{"name": "rm", "arguments": {}}</tool_call>', "must hold an object with"),
        ('```json\n{"name": "shell", "arguments": {command: ls}}\n```', "fenced JSON tool call"),
    ],
)
def test_a_call_meant_but_unreadable_is_named_precisely(text: str, problem: str) -> None:
    _, calls, said = calls_of(text)
    assert calls == [] and problem in said


@pytest.mark.parametrize(
    ("text", "calls", "problem"),
    [
        # A fenced call that cannot be read hides no call after it.
        (
            '```json\n{"name": "shell", "arguments": {command: ls}}\n```\nThen '
            '{"name": "finish", "arguments": {}}',
            [("finish", {})],
            "Your fenced JSON tool call is not valid JSON (Expecting property name",
        ),
        # A bare object naming a tool that is no JSON (a Python raw string) is told, not dropped.
        (
            '{{"name": "search", "arguments": {"pattern": r"if not year % 4:", "path": "."}}}}',
            [],
            "Your JSON tool call is not valid JSON (Expecting value",
        ),
        # Braces in prose are no call, and hide none.
        (
            'The set {1, 2 and {"name": "shell", "arguments": {"command": "ls"}}',
            [("shell", LS)],
            "",
        ),
    ],
)
def test_an_unreadable_call_is_told_beside_the_readable_ones(text, calls, problem) -> None:
    _, found, said = calls_of(text)
    assert found == calls and said.startswith(problem)


@pytest.mark.parametrize(
    ("text", "dialect", "calls"),
    [
        ("Running the tests.\n```bash\npython3 -m pytest -q\n```", "shell_block",
         [("shell", {"command": "python3 -m pytest -q"})]),
        ("```\nls -R\n```", "shell_block", [("shell", {"command": "ls -R"})]),
        (f"Title: Count words on any whitespace\nIt now splits on runs.\n\n{FINISH_MARKER}",
         "finish_marker",
         [("finish", {"title": "Count words on any whitespace",
                      "summary": "It now splits on runs."})]),
        (f"Done.\n```bash\necho {FINISH_MARKER}\n```", "finish_marker",
         [("finish", {"title": "", "summary": "Done."})]),
        ('<tool_call>{"name": "shell", "arguments": {"command": "ls"}}</tool_call>', "hermes",
         [("shell", LS)]),
        ("I am not sure what to do.", "", []),
    ],
)  # fmt: skip
def test_the_text_protocol_reads_one_shell_block_or_the_marker(text, dialect, calls) -> None:
    assert calls_of(text, text_protocol=True) == (dialect, calls, "")


def test_the_text_protocol_refuses_several_shell_blocks() -> None:
    _, calls, problem = calls_of("```bash\nls\n```\nthen\n```bash\npwd\n```", text_protocol=True)
    assert calls == [] and "2 shell blocks; send exactly one" in problem


@pytest.mark.parametrize(
    ("raw", "value", "repairs"),
    [
        ('{"a": 1}', {"a": 1}, []),
        ('```json\n{"a": 1}\n```', {"a": 1}, ["fence removed"]),
        ('{"a": [1, 2,],}', {"a": [1, 2]}, ["trailing commas removed"]),
        ('{"a": "x,}"}', {"a": "x,}"}, []),
        ('{"a": "q\\",]",}', {"a": 'q",]'}, ["trailing commas removed"]),
        ('"{\\"a\\": 1}"', {"a": 1}, ["string-encoded JSON decoded"]),
        ('"just text"', "just text", []),
    ],
)
def test_json_is_repaired_only_where_the_meaning_is_plain(raw, value, repairs) -> None:
    assert loads_repaired(raw) == (value, repairs)


@pytest.mark.parametrize("raw", ["{'a': 1}", '{"a": 1', "{a: 1}", '{"a": 1} {"b": 2}'])
def test_json_that_needs_a_guess_is_not_repaired(raw: str) -> None:
    with pytest.raises(Unreadable, match="at position"):
        loads_repaired(raw)


@pytest.mark.parametrize(
    ("content", "kept", "thoughts"),
    [
        ("<think>\nhmm\n</think>\n\nDone.", "Done.", "hmm"),
        ("Plan first.</think>The answer.", "The answer.", "Plan first."),
        ("No thinking here.", "No thinking here.", ""),
        (None, None, ""),
    ],
)
def test_think_blocks_are_kept_apart_from_the_content(content, kept, thoughts) -> None:
    assert split_reasoning(content) == (kept, thoughts)


PATCH = """diff --git a/textstats/core.py b/textstats/core.py
--- a/textstats/core.py
+++ b/textstats/core.py
@@ -1,2 +1,2 @@
-    return len(text.split(" "))
+    return len(text.split())
diff --git a/NEWS.md b/NEWS.md
--- a/NEWS.md
+++ b/NEWS.md
@@ -0,0 +1,2 @@
+- word_count counts any whitespace
+
"""


@pytest.mark.parametrize(
    ("summary", "issue_title", "changed", "title"),
    [
        ("Fixed word_count to split on any whitespace. It used a space.", "Bug", [],
         "Fix word_count to split on any whitespace"),
        ("Changes the parser to accept tabs", "x", [], "Change the parser to accept tabs"),
        ("Stopped counting empty strings as words.", "x", [], "Stop counting empty strings as words"),
        ("word_count split on single spaces.", "word_count miscounts text", [],
         "Fix word_count miscounts text"),
        ("", "Add a --json flag", [], "Add a --json flag"),
        ("", "", ["a.py", "b.py", "c.py", "d.py"], "Change a.py, b.py, c.py and 1 more"),
        ("", "", [], "Update code"),
    ],
)  # fmt: skip
def test_the_bot_writes_a_title_the_model_did_not_give(summary, issue_title, changed, title):
    assert written_title(summary, issue_title, changed) == title


def test_the_bot_writes_a_summary_from_the_diff() -> None:
    assert diff_counts(PATCH) == [("textstats/core.py", 1, 1), ("NEWS.md", 2, 0)]
    assert written_summary(PATCH) == (
        "The agent gave no summary; the change, from its diff:\n\n"
        "- `textstats/core.py`: 1 line(s) added, 1 removed\n"
        "- `NEWS.md`: 2 line(s) added, 0 removed"
    )
    assert written_summary("") == "The agent gave no summary."


CALL = '{"name": "shell", "arguments": {"command": "ls"}}'
ON = "The output shows the files; next I will read the tests and then change the code. " * 5


@pytest.mark.parametrize(
    ("text", "text_protocol", "kept"),
    [
        # Written on past its last complete call (more than a line or two that opens no next
        # call: a made-up result, a plan): the reply stops where that call ends.
        (
            f"<tool_call>\n{CALL}\n</tool_call>\n{ON}",
            False,
            f"<tool_call>\n{CALL}\n</tool_call>",
        ),
        (
            f"<tool_call>{CALL}</tool_call>\nThen:\n<tool_call>{CALL}</tool_call>{ON}",
            False,
            f"<tool_call>{CALL}</tool_call>\nThen:\n<tool_call>{CALL}</tool_call>",
        ),
        (f"```json\n{CALL}\n```\n```\nfile.py\n```\n{ON}", False, f"```json\n{CALL}\n```"),
        (f"[TOOL_CALLS] [{CALL}, {CALL}] {ON}", False, f"[TOOL_CALLS] [{CALL}, {CALL}]"),
        (f'[TOOL_CALLS]shell{{"command": "ls"}} {ON}', False, '[TOOL_CALLS]shell{"command": "ls"}'),
        (f"I will run {CALL} {ON}", False, f"I will run {CALL}"),
        ("```bash\nls\n```\n", True, "```bash\nls\n```"),
        (f"Fixed.\n{FINISH_MARKER}\nmore", True, f"Fixed.\n{FINISH_MARKER}"),
        # Closed but unreadable: the model is done with it, a precise error follows.
        (
            f'<tool_call>{{"name": "shell", </tool_call>{ON}',
            False,
            '<tool_call>{"name": "shell", </tool_call>',
        ),
        # Read on: a next call being written (a tag or fence open, JSON not closed), or a line
        # of prose that may lead into one: several calls in one reply all run.
        (f"<tool_call>\n{CALL}\n</tool_call>\n<tool_call>{{", False, None),
        (f"<tool_call>{CALL}</tool_call>\n```json\n{{{ON}", False, None),
        (f'{CALL}\n{{"name": "finish", {ON}', False, None),
        (f'{{{CALL}}}\n\n{{{{"name": "finish", {ON}', False, None),  # doubled braces
        (f"[TOOL_CALLS] [{CALL}] [TOOL_CALLS] [", False, None),
        (f"```json\n{CALL}\n```\nNow", False, None),
        (f"I will run {CALL} and then", False, None),
        # Not yet: a tag or fence still open, a list not closed, a fence whose line goes on,
        # JSON that names no tool, a shell block under the native protocol.
        (f"<tool_call>\n{CALL}", False, None),
        (f"```json\n{CALL}", False, None),
        (f"```json\n{CALL}\n```", False, None),
        (f"[TOOL_CALLS] [{CALL}", False, None),
        ('See {"a": 1} here', False, None),
        ("```bash\nls\n```\n", False, None),
        ("```bash\nls\n", True, None),
        ("COMPLETE_TASK_AND_SUB", True, None),
    ],
)
def test_where_a_complete_call_ends_in_a_streamed_reply(
    text: str, text_protocol: bool, kept: str | None
) -> None:
    end = call_end(text, TOOLS, text_protocol=text_protocol)
    assert (None if end is None else text[:end]) == kept
