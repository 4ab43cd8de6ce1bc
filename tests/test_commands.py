import pytest

from codexbot.commands import FixOptions, fix_options, parse_command


@pytest.mark.parametrize(
    ("text", "name", "argument"),
    [
        ("/codex fix", "fix", ""),
        ("/codex fix please use a regex", "fix", "please use a regex"),
        ("  /CODEX Fix  it", "fix", "it"),
        ("/codex ask where is the parser?", "ask", "where is the parser?"),
        ("/codex stop", "stop", ""),
        ("/codex help", "help", ""),
        ("/codex", "help", ""),
        ("/codex deploy now", "unknown", "now"),
        ("Thanks!\n\n/codex fix\n/codex stop", "fix", ""),
        ("first line\r\n/codex ask why?\r\n", "ask", "why?"),
        ("```\n/codex fix\n```\n/codex ask real one", "ask", "real one"),
        ("~~~~\n/codex fix\n~~~\nstill fenced\n~~~~\n/codex stop", "stop", ""),
        ("<!--\n/codex fix\n-->\n/codex stop", "stop", ""),
        ("<!-- a note --> \n/codex ask shown", "ask", "shown"),
        ("/codex fix it <!-- not this -->", "fix", "it"),
        ("<!-- x --> /codex stop", "stop", ""),
        ("```\n<!--\n```\n/codex fix", "fix", ""),  # in a fence, `<!--` opens no comment
    ],
)
def test_commands_are_found(text, name, argument):
    command = parse_command(text)
    assert command is not None
    assert (command.name, command.argument) == (name, argument)


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "please /codex fix this",  # not at the start of a line
        "> /codex fix",  # a quoted reply never starts a run
        ">> /codex fix",
        "  > /codex fix something",
        "```\n/codex fix\n```",
        "```python\n/codex fix\n",  # an unclosed fence runs to the end
        "    /codex fix",  # four spaces: a code block in Markdown
        "/codexfix",
        "/codex-fix",
        "<!--\n/codex fix\n-->",  # a hidden comment is not a command
        "<!-- one\n two\n/codex fix -->",
        "<!-- left open\n/codex fix\n\nstill hidden",
        "text <!-- hidden\n/codex fix",
        "<!-- a --><!--\n/codex fix",
    ],
)
def test_no_command(text):
    assert parse_command(text) is None


@pytest.mark.parametrize(
    ("argument", "options"),
    [
        ("", FixOptions()),
        ("use a regex", FixOptions(text="use a regex")),
        ("--attempts 3", FixOptions(attempts=3)),
        ("--attempts=3 use a regex", FixOptions(attempts=3, text="use a regex")),
        ("--ATTEMPTS 2 --use-attempt 1", FixOptions(attempts=2, use_attempt=1)),
        ("--use-attempt 2\nthen this", FixOptions(use_attempt=2, text="then this")),
        ("please --attempts 3", FixOptions(text="please --attempts 3")),  # options come first
        ("--attempts 0", FixOptions(text="--attempts 0", problem="`--attempts` takes a whole number above 0")),
        ("--attempts three", FixOptions(text="--attempts three", problem="`--attempts` takes a whole number above 0")),
        ("--use-attempt -1", FixOptions(text="--use-attempt -1", problem="`--use-attempt` takes a whole number above 0")),
    ],
)  # fmt: skip
def test_fix_options(argument, options):
    assert fix_options(argument) == options
