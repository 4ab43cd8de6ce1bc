"""Who is acting (users, bots, the app itself, permission levels) and the reactions they see."""

from __future__ import annotations

import json
import time

import pytest
import requests

from sim.github import GitHubSim
from tests.sim.conftest import APP_ID, OWNER_REPO, WebhookReceiver, api


@pytest.mark.parametrize(
    ("role", "permission", "push"),
    [
        ("admin", "admin", True),
        ("maintain", "write", True),
        ("write", "write", True),
        ("triage", "read", False),
        ("read", "read", False),
        ("none", "none", False),
    ],
)
def test_permission_levels(
    github: GitHubSim, token: str, role: str, permission: str, push: bool
) -> None:
    github.set_permission(OWNER_REPO, "alice", role)
    body = api(github, "GET", f"/repos/{OWNER_REPO}/collaborators/alice/permission", token).json()
    assert (body["permission"], body["role_name"]) == (permission, role)
    assert body["user"]["login"] == "alice"
    assert body["user"]["permissions"]["push"] is push


def test_non_collaborators_read_public_repos_only(github: GitHubSim, token: str) -> None:
    github.add_user("passer-by")
    path = f"/repos/{OWNER_REPO}/collaborators/passer-by/permission"
    assert api(github, "GET", path, token).json()["permission"] == "none"  # private repo
    github.require_repo(OWNER_REPO).private = False
    public = api(github, "GET", path, token).json()
    assert (public["permission"], public["role_name"]) == ("read", "read")
    missing = api(
        github, "GET", f"/repos/{OWNER_REPO}/collaborators/nobody-at-all/permission", token
    )
    assert missing.status_code == 404


def test_comments_by_bots_and_by_the_app(
    github: GitHubSim, webhook_receiver: WebhookReceiver
) -> None:
    github.create_issue(OWNER_REPO, "t", "b")
    github.comment(OWNER_REPO, 1, "/codex fix", user="ci-helper[bot]")
    github.comment(OWNER_REPO, 1, "/codex fix", user=github.bot_login)
    github.comment(OWNER_REPO, 1, "/codex fix", user="octo-maintainer")
    other_bot, own, human = (json.loads(h.body)["comment"] for h in webhook_receiver.received)
    assert other_bot["user"]["type"] == "Bot" and other_bot["performed_via_github_app"] is None
    assert own["user"] == {**own["user"], "login": "codex-bot[bot]", "type": "Bot"}
    assert own["performed_via_github_app"]["id"] == APP_ID
    assert human["user"]["type"] == "User" and human["performed_via_github_app"] is None
    assert human["author_association"] == "COLLABORATOR"
    assert other_bot["author_association"] == "NONE"


def test_edit_delivers_the_previous_body(
    github: GitHubSim, webhook_receiver: WebhookReceiver
) -> None:
    github.create_issue(OWNER_REPO, "t", "b")
    comment, _ = github.comment(OWNER_REPO, 1, "please look")
    github.edit_comment(comment["id"], "please look\n/codex fix", user="octo-maintainer")
    edited = json.loads(webhook_receiver.received[-1].body)
    assert edited["action"] == "edited"
    assert edited["changes"] == {"body": {"from": "please look"}}
    assert edited["comment"]["body"] == "please look\n/codex fix"
    assert edited["sender"]["login"] == "octo-maintainer"


def test_the_apps_own_actions_are_delivered_when_asked(
    github: GitHubSim, token: str, webhook_receiver: WebhookReceiver
) -> None:
    github.create_issue(OWNER_REPO, "t", "b")
    api(github, "POST", f"/repos/{OWNER_REPO}/issues/1/comments", token, {"body": "quiet"})
    github.wait_for_echoes()
    assert webhook_receiver.received == []

    github.echo_app_events = True
    made = api(github, "POST", f"/repos/{OWNER_REPO}/issues/1/comments", token, {"body": "Queued"})
    comment_id = made.json()["id"]
    api(
        github,
        "PATCH",
        f"/repos/{OWNER_REPO}/issues/comments/{comment_id}",
        token,
        {"body": "Running"},
    )
    github.wait_for_echoes()
    hooks = sorted(
        (json.loads(h.body) for h in webhook_receiver.received), key=lambda p: p["action"]
    )
    assert [(p["action"], p["sender"]["login"]) for p in hooks] == [
        ("created", github.bot_login),
        ("edited", github.bot_login),
    ]
    assert hooks[1]["changes"]["body"]["from"] == "Queued"
    assert hooks[0]["comment"]["performed_via_github_app"]["slug"] == "codex-bot"


def test_reactions_are_listed_with_timestamps(github: GitHubSim, token: str) -> None:
    github.create_issue(OWNER_REPO, "t", "b")
    comment, delivery = github.comment(OWNER_REPO, 1, "/codex fix")
    assert github.reaction_latency_ms(delivery) is None
    before = time.monotonic() * 1000
    for path, content in (
        (f"/issues/comments/{comment['id']}/reactions", "eyes"),
        (f"/issues/comments/{comment['id']}/reactions", "rocket"),
        ("/issues/1/reactions", "eyes"),
    ):
        assert (
            api(
                github, "POST", f"/repos/{OWNER_REPO}{path}", token, {"content": content}
            ).status_code
            == 201
        )
    on_comment = api(
        github, "GET", f"/repos/{OWNER_REPO}/issues/comments/{comment['id']}/reactions", token
    ).json()
    assert [r["content"] for r in on_comment] == ["eyes", "rocket"]
    assert on_comment[0]["user"]["login"] == github.bot_login and on_comment[0]["created_at"]
    only_eyes = api(
        github,
        "GET",
        f"/repos/{OWNER_REPO}/issues/comments/{comment['id']}/reactions?content=eyes",
        token,
    ).json()
    assert [r["content"] for r in only_eyes] == ["eyes"]
    on_issue = api(github, "GET", f"/repos/{OWNER_REPO}/issues/1/reactions", token).json()
    assert [r["content"] for r in on_issue] == ["eyes"]
    assert api(github, "GET", f"/repos/{OWNER_REPO}/issues/9/reactions", token).status_code == 404

    records = github.reaction_records(OWNER_REPO, comment_id=comment["id"])
    assert [r.content for r in records] == ["eyes", "rocket"]
    assert before <= records[0].monotonic_ms <= records[1].monotonic_ms <= time.monotonic() * 1000
    assert abs(records[0].unix_ms - time.time() * 1000) < 60_000
    latency = github.reaction_latency_ms(delivery)
    assert latency is not None
    assert latency == records[0].monotonic_ms - delivery.started_monotonic_ms
    assert 0 < latency < 10_000
    remote = requests.get(f"{github.url}/_sim/reactions", timeout=10).json()
    assert [(r["content"], r["monotonic_ms"]) for r in remote[:2]] == [
        (r.content, r.monotonic_ms) for r in records
    ]
    assert github.reaction_latency_ms(delivery, "rocket") == (
        records[1].monotonic_ms - delivery.started_monotonic_ms
    )


def test_labelled_issue_latency_is_measured_on_the_issue(github: GitHubSim, token: str) -> None:
    github.create_issue(OWNER_REPO, "t", "b")
    delivery = github.add_label(OWNER_REPO, 1, "codex")
    api(github, "POST", f"/repos/{OWNER_REPO}/issues/1/reactions", token, {"content": "eyes"})
    latency = github.reaction_latency_ms(delivery)
    assert latency is not None and latency > 0
