"""Write the webhook fixtures in ``tests/fixtures/`` from the GitHub simulator.

Each fixture is a payload exactly as the simulator delivers it (the simulator's payloads are
validated against GitHub's webhook descriptions), with its loopback URLs rewritten to
github.com's and its timestamps fixed, so the files read like real GitHub deliveries and
regenerating them changes only ids and commit shas. Names are ``<event>__<action>.json``,
plus ``issue_comment__created_on_pr.json`` for a comment on a pull request.

Usage: python scripts/make_fixtures.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script: make `sim` importable
    sys.path.insert(0, str(REPO_ROOT))

from sim.github import GitHubSim, generate_app_key  # noqa: E402
from sim.github.simulator import QuietRequestHandler  # noqa: E402

FULL_NAME = "octo-org/textstats"
INSTALLATION_ID = 1
APP_ID = 1
MAINTAINER = "octo-maintainer"
FIXED_TIME = "2025-01-15T10:00:00Z"
WEBHOOK_URL = "https://codex-bot.example.com/webhook"
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
SOURCE_FILES = {
    "textstats/__init__.py": (
        "def word_count(text):\n"
        '    """Number of words in text."""\n'
        '    return len(text.split(" "))\n'
    ),
    "tests/test_textstats.py": (
        "from textstats import word_count\n\n\n"
        "def test_word_count():\n"
        '    assert word_count("a  b") == 2\n'
    ),
}
ISSUE_TITLE = "word_count miscounts text with repeated whitespace"
ISSUE_BODY = 'word_count("a  b") returns 3; it should return 2.'
FIX = 'def word_count(text):\n    """Number of words in text."""\n    return len(text.split())\n'


@contextmanager
def accepting_receiver() -> Iterator[str]:
    """A loopback endpoint that accepts every delivery (the payloads are recorded by the sim)."""

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        Request(environ).get_data()
        return Response("accepted", status=202)(environ, start_response)

    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietRequestHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/webhook"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def record_scenario(sim: GitHubSim, source: Path) -> dict[str, dict[str, Any]]:
    """Drive the simulator through every fixture's event; return name -> payload."""
    for path, text in SOURCE_FILES.items():
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        (source / path).write_text(text)
    sim.create_repo(FULL_NAME, source, installation_id=INSTALLATION_ID)
    sim.set_permission(FULL_NAME, MAINTAINER, "maintain")
    fixtures: dict[str, dict[str, Any]] = {}

    def last(name: str) -> None:
        fixtures[name] = sim.webhooks[-1].payload

    sim.ping()
    last("ping")
    sim.install_app("octo-org", INSTALLATION_ID, sender=MAINTAINER)
    last("installation__created")
    sim.add_installation_repositories(INSTALLATION_ID, [FULL_NAME], sender=MAINTAINER)
    last("installation_repositories__added")

    # Opening an issue with a label delivers issues.opened (carrying it), then issues.labeled.
    issue, _ = sim.open_issue(FULL_NAME, ISSUE_TITLE, ISSUE_BODY, user=MAINTAINER, labels=["codex"])
    last("issues__opened")
    sim.add_label(FULL_NAME, issue["number"], "codex", sender=MAINTAINER)
    last("issues__labeled")
    comment, _ = sim.comment(
        FULL_NAME, issue["number"], "/codex fix also handle tabs", user=MAINTAINER
    )
    last("issue_comment__created")
    sim.edit_comment(comment["id"], "/codex fix also handle tabs and newlines", user=MAINTAINER)
    last("issue_comment__edited")

    branch = f"codex/issue-{issue['number']}"
    sim.push_as(
        FULL_NAME, branch, {"textstats/__init__.py": FIX}, "Split on any whitespace", sim.bot_login
    )
    pull = sim.open_pull(
        FULL_NAME,
        branch,
        "Count words separated by any whitespace",
        f"Closes #{issue['number']}.",
        user=sim.bot_login,
    )
    sim.comment(FULL_NAME, pull["number"], "/codex fix add a test for tabs", user=MAINTAINER)
    last("issue_comment__created_on_pr")
    sim.submit_review(
        FULL_NAME,
        pull["number"],
        "/codex please keep the docstring in sync",
        user=MAINTAINER,
        state="changes_requested",
        comments=[
            {
                "path": "textstats/__init__.py",
                "line": 3,
                "body": "/codex handle None as an empty text here",
            }
        ],
    )
    fixtures["pull_request_review__submitted"] = sim.webhooks[-2].payload
    last("pull_request_review_comment__created")
    return fixtures


def normalize(payload: Any, base_url: str, webhook_url: str) -> Any:
    """github.com URLs instead of the simulator's loopback ones; one fixed timestamp."""
    text = json.dumps(payload).replace(webhook_url, WEBHOOK_URL)
    text = text.replace(f"{base_url}/api/v3", "https://api.github.com")
    text = text.replace(base_url, "https://github.com")
    text = text.replace(base_url.split("://", 1)[1], "github.com")
    text = TIMESTAMP.sub(FIXED_TIME, text)
    return json.loads(text)


def make_fixtures(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with (
        tempfile.TemporaryDirectory(prefix="make-fixtures-") as scratch,
        accepting_receiver() as url,
    ):
        _, public_pem = generate_app_key()
        sim = GitHubSim(
            app_id=APP_ID,
            app_public_key_pem=public_pem,
            webhook_url=url,
            webhook_secret=secrets.token_hex(16),  # nothing checks the signatures here
            data_dir=Path(scratch) / "sim",
        )
        with sim:
            source = Path(scratch) / "source"
            fixtures = record_scenario(sim, source)
            for name, payload in sorted(fixtures.items()):
                target = out / f"{name}.json"
                document = normalize(payload, sim.url, url)
                target.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
                written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "tests" / "fixtures")
    args = parser.parse_args(argv)
    for path in make_fixtures(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
