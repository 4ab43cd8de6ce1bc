"""tests/fixtures/ hold real GitHub payload shapes, generated from the simulator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scripts.make_fixtures import make_fixtures
from tests.openapi.validate import validate_webhook

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
EXPECTED = {
    "issues__labeled",
    "issues__opened",
    "issue_comment__created",
    "issue_comment__created_on_pr",
    "issue_comment__edited",
    "pull_request_review__submitted",
    "pull_request_review_comment__created",
    "ping",
    "installation__created",
    "installation_repositories__added",
}


def shape(node: Any) -> Any:
    """The keys and value types of a JSON document, without the values."""
    if isinstance(node, dict):
        return {key: shape(value) for key, value in node.items()}
    if isinstance(node, list):
        return [shape(item) for item in node[:1]]
    return type(node).__name__


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_is_what_github_sends(name: str) -> None:
    payload = json.loads((FIXTURES / f"{name}.json").read_text("utf-8"))
    event, _, action = name.partition("__")
    if action:
        assert payload["action"] == action.removesuffix("_on_pr")
    validate_webhook(event, payload.get("action"), payload)
    text = json.dumps(payload)
    assert "127.0.0.1" not in text and "localhost" not in text


def test_fixtures_are_what_the_script_makes_now(tmp_path: Path) -> None:
    made = {path.stem: path for path in make_fixtures(tmp_path)}
    assert set(made) == EXPECTED
    for name, path in made.items():
        committed = json.loads((FIXTURES / f"{name}.json").read_text("utf-8"))
        assert shape(json.loads(path.read_text("utf-8"))) == shape(committed), (
            f"{name}: run `python scripts/make_fixtures.py`"
        )


def test_fixtures_tell_a_consistent_story() -> None:
    def load(name: str) -> dict[str, Any]:
        return json.loads((FIXTURES / f"{name}.json").read_text("utf-8"))

    opened, on_pr = load("issues__opened"), load("issue_comment__created_on_pr")
    assert [label["name"] for label in opened["issue"]["labels"]] == ["codex"]
    assert "pull_request" not in load("issue_comment__created")["issue"]
    assert on_pr["issue"]["pull_request"]["url"].endswith(f"/pulls/{on_pr['issue']['number']}")
    edited = load("issue_comment__edited")
    assert edited["changes"]["body"]["from"] == load("issue_comment__created")["comment"]["body"]
    review = load("pull_request_review__submitted")
    comment = load("pull_request_review_comment__created")["comment"]
    assert review["review"]["state"] == "changes_requested"
    assert comment["pull_request_review_id"] == review["review"]["id"]
    assert comment["commit_id"] == review["review"]["commit_id"]
    assert comment["diff_hunk"].startswith("@@ ")
    assert review["pull_request"]["user"]["login"].endswith("[bot]")
