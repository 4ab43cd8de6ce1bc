"""Webhook deliveries are signed and shaped like GitHub's."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid

import pytest

from sim.github import GitHubSim, SimError
from tests.sim.conftest import APP_ID, OWNER_REPO, WEBHOOK_SECRET, WebhookReceiver


def test_labeled_delivery_is_signed_and_complete(
    github: GitHubSim, webhook_receiver: WebhookReceiver
) -> None:
    github.create_issue(OWNER_REPO, "add() subtracts", "It returns a - b.")
    delivery = github.add_label(OWNER_REPO, 1, "codex", sender="octo-maintainer")

    assert delivery.status_code == 202
    assert delivery.response_body == "accepted"
    assert delivery.event == "issues"
    assert delivery.duration_ms > 0
    hook = webhook_receiver.received[-1]
    expected = hmac.new(WEBHOOK_SECRET.encode(), hook.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(hook.headers["X-Hub-Signature-256"], f"sha256={expected}")
    sha1 = hmac.new(WEBHOOK_SECRET.encode(), hook.body, hashlib.sha1).hexdigest()
    assert hook.headers["X-Hub-Signature"] == f"sha1={sha1}"
    assert hook.headers["X-GitHub-Event"] == "issues"
    assert hook.headers["X-GitHub-Delivery"] == delivery.delivery_id
    assert uuid.UUID(delivery.delivery_id).version == 4
    assert hook.headers["X-GitHub-Hook-ID"]
    assert hook.headers["User-Agent"].startswith("GitHub-Hookshot/")
    assert hook.headers["Content-Type"] == "application/json"

    payload = json.loads(hook.body)
    assert payload["action"] == "labeled"
    assert payload["label"]["name"] == "codex"
    assert payload["issue"]["number"] == 1
    assert [label["name"] for label in payload["issue"]["labels"]] == ["codex"]
    assert payload["repository"]["full_name"] == OWNER_REPO
    assert payload["sender"]["login"] == "octo-maintainer"
    assert payload["installation"]["id"] == 7
    assert set(payload["installation"]) == {"id", "node_id"}
    assert hook.headers["X-GitHub-Hook-Installation-Target-ID"] == str(APP_ID)


def test_label_is_visible_through_the_api_after_delivery(github: GitHubSim) -> None:
    github.create_issue(OWNER_REPO, "t", "b")
    github.add_label(OWNER_REPO, 1, "codex")
    assert [label["name"] for label in github.issue(OWNER_REPO, 1)["labels"]] == ["codex"]


def test_deliver_with_explicit_id_and_wrong_secret_is_detectable(
    github: GitHubSim, webhook_receiver: WebhookReceiver
) -> None:
    github.deliver("ping", {"zen": "hi", "hook_id": 1}, delivery_id="fixed-id")
    hook = webhook_receiver.received[-1]
    assert hook.headers["X-GitHub-Delivery"] == "fixed-id"
    forged = hmac.new(b"other-secret", hook.body, hashlib.sha256).hexdigest()
    assert hook.headers["X-Hub-Signature-256"] != f"sha256={forged}"


def test_unreachable_webhook_is_reported_not_raised(github: GitHubSim) -> None:
    github.webhook_url = "http://127.0.0.1:9/unreachable"
    delivery = github.deliver("ping", {"zen": "hi"})
    assert delivery.status_code == 0
    assert "delivery failed" in delivery.response_body


def test_no_webhook_url_is_an_error(github: GitHubSim) -> None:
    github.webhook_url = None
    with pytest.raises(SimError):
        github.deliver("ping", {})


def test_comment_and_edit_deliveries(github: GitHubSim, webhook_receiver: WebhookReceiver) -> None:
    github.create_issue(OWNER_REPO, "t", "b")
    comment, created = github.comment(OWNER_REPO, 1, "/codex fix", user="octo-maintainer")
    edited = github.edit_comment(comment["id"], "/codex fix it")
    assert (created.event, edited.event) == ("issue_comment", "issue_comment")
    first, second = (json.loads(h.body) for h in webhook_receiver.received[-2:])
    assert first["action"] == "created" and first["comment"]["body"] == "/codex fix"
    assert second["action"] == "edited" and second["changes"] == {"body": {"from": "/codex fix"}}
    assert github.issue_comments(OWNER_REPO, 1)[0]["body"] == "/codex fix it"
