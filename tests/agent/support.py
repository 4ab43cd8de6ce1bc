"""Shared pieces of the agent tests: the test scripts, a local shell, task builders.

LocalShell is a TEST DOUBLE for the Docker sandbox: it runs commands with subprocess in a temporary
directory on the host. The agent loop only needs the Environment protocol; the real sandbox is
tested with a real Docker engine in tests/sandbox.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from sim.model import Script
from workers.agent import AgentTask

ROOT = Path(__file__).resolve().parents[2]
DEMO_REPO = ROOT / "sim" / "demo_repo"
DEMO_SCRIPT = ROOT / "sim" / "scripts" / "demo_fix.json"
API_KEY = "sk-sim-agent-tests-0123456789"
MODEL_NAME = "scripted-model"

# Each test's conversation is selected by a unique issue title.
MALFORMED_THEN_FIXED = "malformed calls are fed back"
THREE_MALFORMED = "three malformed calls in a row"
ENDLESS = "a model that never finishes"
RATE_LIMITED = "rate limited once"
UNTRUSTED = "untrusted text stays fenced"
SECRETS = "secrets are masked in the trajectory"
CRASH = "the environment crashes"
SLOW = "a slow model meets the wall clock"
BIG_OUTPUT = "a command prints too much"
RUNS_OUT = "the script runs out"
FILE_TOOLS = "the file tools edit the demo"
STUCK = "the agent repeats itself"
STEERED = "a maintainer steers the agent"
STOPPED = "a maintainer stops the agent"
ASKED = "where is word_count defined"
CONTEXT = "the context window fills up"
NESTED = "nested instructions apply"
SERVER_ERROR = "the model server fails once"
MAPPED = "which modules depend on which"
BAD_CALLS_IN_ONE_REPLY = "one reply holds several bad calls"
FINISH_AFTER_FAILURE = "finish comes after a failed call"
FINISH_WRITTEN_FIRST = "finish is written before the edit"
REPO_NAMED_LOOSELY = "the own repository named loosely"
MAPPED_ANSWER = (
    "| Module | Owns | Used by |\n| --- | --- | --- |\n"
    "| textstats/core.py:4 | `word_count` | textstats/__init__.py:3 |\n"
    "| octo/shop:store/store.go:7 | `Open` | octo/shop:cmd/server/main.go:8 |\n\n"
    "Not textstats/core.py:99, octo/shop:store/store.go:99, octo/secret:x.py:1 "
    "or textstats/made_up.py:2."
)

BAD_HUNK = """--- a/textstats/core.py
+++ b/textstats/core.py
@@ -8,1 +8,1 @@
-    return len(text.split("  "))
+    return len(text.split())
"""
GOOD_EDIT = """textstats/core.py
<<<<<<< SEARCH
    return len(text.split(" "))
=======
    return len(text.split())
>>>>>>> REPLACE
"""
ANSWER = (
    "`word_count` is defined at textstats/core.py:4 and returns at `textstats/core.py:8`; "
    "the tests are in tests/test_core.py:1 (not textstats/core.py:999, nor nowhere/gone.py:3)."
)


def shell(command: str, **extra: object) -> dict[str, object]:
    return {"tool": "shell", "arguments": {"command": command}, **extra}


def finish(title: str = "Fix the thing", summary: str = "Changed it because.") -> dict[str, object]:
    return {"tool": "finish", "arguments": {"title": title, "summary": summary}}


TEST_SCRIPTS = [
    Script(
        name="mapped",
        match=MAPPED,
        steps=[
            {"tool": "map", "arguments": {"tokens": 500}},
            {"tool": "references", "arguments": {"symbol": "word_count"}},
            {"tool": "map", "arguments": {"repo": "octo/shop", "path": "store"}},
            {"tool": "read_file", "arguments": {"repo": "octo/shop", "path": "store/store.go"}},
            {"tool": "search", "arguments": {"repo": "octo/shop", "pattern": "func Open"}},
            {"tool": "read_file", "arguments": {"repo": "octo/secret", "path": "x.py"}},
            {"tool": "answer", "arguments": {"text": MAPPED_ANSWER}},
        ],
    ),
    Script(
        name="malformed",
        match=MALFORMED_THEN_FIXED,
        steps=[
            {"tool": "shell", "arguments": '{"command": "echo unterminated'},
            {"tool": "grep", "arguments": {"pattern": "x"}},
            shell("echo recovered"),
            {"tool": "read_file", "arguments": {"start_line": 2}},
            {"content": "I believe I am done."},
            finish(),
        ],
    ),
    Script(
        name="three-malformed",
        match=THREE_MALFORMED,
        steps=[
            {"tool": "shell", "arguments": "not json at all"},
            {"tool": "delete_repo", "arguments": {}},
            {"tool": "shell", "arguments": {"timeout": 5}},
            finish(),
        ],
    ),
    Script(name="endless", match=ENDLESS, steps=[shell(f"echo {i}") for i in range(10)]),
    Script(
        name="rate-limited",
        match=RATE_LIMITED,
        steps=[{"error": 429, "retry_after": 1}, shell("echo after the wait"), finish()],
    ),
    Script(name="untrusted", match=UNTRUSTED, steps=[finish()]),
    Script(name="secrets", match=SECRETS, steps=[shell("cat secret.txt"), finish()]),
    Script(name="crash", match=CRASH, steps=[shell("echo hello"), finish()]),
    Script(
        name="slow",
        match=SLOW,
        steps=[{"delay": 0.6}, shell("echo slow"), shell("echo never"), finish()],
    ),
    Script(
        name="big-output",
        match=BIG_OUTPUT,
        steps=[shell("python3 -c \"print('a' * 30000 + 'THE-END')\""), finish()],
    ),
    Script(name="runs-out", match=RUNS_OUT, steps=[shell("echo only step")]),
    Script(
        name="file-tools",
        match=FILE_TOOLS,
        steps=[
            {
                "tool": "read_file",
                "arguments": {"path": "textstats/core.py", "start_line": 4, "end_line": 8},
            },
            {"tool": "search", "arguments": {"pattern": "def (word_count|average)"}},
            {"tool": "read_file", "arguments": {"path": "../../etc/passwd"}},
            {"tool": "apply_patch", "arguments": {"patch": BAD_HUNK}},
            {"tool": "apply_patch", "arguments": {"patch": GOOD_EDIT}},
            shell("python3 -m pytest -q"),
            finish("Count words on any whitespace"),
        ],
    ),
    Script(name="stuck", match=STUCK, steps=[shell("echo same")] * 5 + [finish()]),
    Script(
        name="steered",
        match=STEERED,
        steps=[shell("echo one"), shell("echo two"), finish()],
    ),
    Script(name="stopped", match=STOPPED, steps=[shell(f"echo {i}") for i in range(8)]),
    Script(
        name="asked",
        match=ASKED,
        steps=[
            {"tool": "search", "arguments": {"pattern": "def word_count"}},
            {"tool": "apply_patch", "arguments": {"patch": GOOD_EDIT}},
            {"tool": "answer", "arguments": {"text": ANSWER}},
        ],
    ),
    Script(
        name="context",
        match=CONTEXT,
        steps=[shell(f"python3 -c \"print('{i}' * 3000)\"") for i in range(6)] + [finish()],
    ),
    Script(
        name="nested",
        match=NESTED,
        steps=[
            {"tool": "read_file", "arguments": {"path": "pkg/mod.py"}},
            {"tool": "read_file", "arguments": {"path": "pkg/mod.py"}},
            finish(),
        ],
    ),
    Script(
        name="bad-calls-in-one-reply",
        match=BAD_CALLS_IN_ONE_REPLY,
        steps=[
            {
                "tool_calls": [
                    {"tool": "shell", "arguments": "not json at all"},
                    {"tool": "delete_repo", "arguments": {}},
                    {"tool": "shell", "arguments": {"timeout": 5}},
                    shell("echo ran"),
                ]
            },
            {"tool_calls": [{"tool": "grep", "arguments": {}}, {"tool": "rm", "arguments": {}}]},
            finish(),
        ],
    ),
    Script(
        name="finish-after-failure",
        match=FINISH_AFTER_FAILURE,
        steps=[
            {
                "tool_calls": [
                    {"tool": "apply_patch", "arguments": {"patch": BAD_HUNK}},
                    finish("Too soon"),
                ]
            },
            finish("After reading the error"),
        ],
    ),
    Script(
        name="finish-written-first",
        match=FINISH_WRITTEN_FIRST,
        steps=[
            {
                "tool_calls": [
                    finish("Split on any whitespace"),
                    {"tool": "apply_patch", "arguments": {"patch": GOOD_EDIT}},
                ]
            },
        ],
    ),
    Script(
        name="repo-named-loosely",
        match=REPO_NAMED_LOOSELY,
        steps=[
            {"tool": "read_file", "arguments": {"path": "a.txt", "repo": "demo"}},
            {"tool": "read_file", "arguments": {"path": "a.txt", "repo": "OCTO/Demo"}},
            {"tool": "search", "arguments": {"pattern": "hello", "repo": "this"}},
            {"tool": "read_file", "arguments": {"path": "a.txt", "repo": "somebody/else"}},
            {"tool": "search", "arguments": {"pattern": "hello", "path": "tests/missing.py"}},
            finish(),
        ],
    ),
    Script(
        name="server-error",
        match=SERVER_ERROR,
        steps=[{"error": 500}, shell("echo fine"), {"error": 503}, finish()],
    ),
]


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    output: str
    timed_out: bool = False
    truncated: bool = False


class LocalShell:
    """TEST DOUBLE for sandbox.container.Sandbox: runs bash on the host in ``root``.

    ``python3`` resolves to this virtualenv's interpreter so the demo's ``python3 -m pytest`` works.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.commands: list[str] = []
        self.env = {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(root),
            "PYTHONDONTWRITEBYTECODE": "1",
            "LANG": "C.UTF-8",
        }

    def exec(self, command: str, *, timeout: float) -> ExecResult:
        self.commands.append(command)
        process = subprocess.Popen(
            ["bash", "-c", command],
            cwd=self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            return ExecResult(124, output.decode(errors="replace"), timed_out=True)
        return ExecResult(process.returncode, output.decode(errors="replace"))


def task_titled(
    title: str, body: str = "Please fix it.", test_command: str | None = None
) -> AgentTask:
    return AgentTask(
        repo="octo/demo",
        issue_number=7,
        issue_title=title,
        issue_body=body,
        test_command=test_command,
    )
