"""Webhook deliveries are signed and shaped like GitHub's."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import uuid

import pytest
import requests

from sim.github import GitHubSim, SimError
from tests.sim.conftest import APP_ID, OWNER_REPO, WEBHOOK_SECRET, WebhookReceiver, app_jwt
from workers.githubapp import GitHubApp


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


def app_client(sim: GitHubSim, private_pem: bytes) -> GitHubApp:
    return GitHubApp(app_id=APP_ID, private_key=private_pem.decode(), api_url=sim.api_url)


def closed_port_url() -> str:
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/webhook"


def test_a_failed_delivery_is_listed_and_redelivered_with_its_guid_and_payload(
    github: GitHubSim, webhook_receiver: WebhookReceiver, app_key: tuple[bytes, bytes]
) -> None:
    github.create_issue(OWNER_REPO, "t", "b")
    github.webhook_url = closed_port_url()
    failed = github.add_label(OWNER_REPO, 1, "codex")
    github.webhook_url = webhook_receiver.url
    ok = github.comment(OWNER_REPO, 1, "thanks")[1]
    app = app_client(github, app_key[0])

    newest, first = list(app.hook_deliveries())[:2]
    assert (newest.guid, newest.status_code, newest.status) == (ok.delivery_id, 202, "OK")
    assert (first.guid, first.event, first.action) == (failed.delivery_id, "issues", "labeled")
    assert (first.status_code, first.status, first.redelivery) == (
        0,
        "failed to connect to host",
        False,
    )
    assert newest.id > first.id

    received = len(webhook_receiver.received)
    app.redeliver(first.id)
    github.wait_for_echoes()
    again = webhook_receiver.received[received]
    assert again.headers["X-GitHub-Delivery"] == failed.delivery_id
    assert json.loads(again.body) == github.webhooks[0].payload
    redelivered = next(iter(app.hook_deliveries()))
    assert (redelivered.guid, redelivered.redelivery, redelivered.status_code) == (
        failed.delivery_id,
        True,
        202,
    )
    assert redelivered.id > newest.id


def test_deliveries_are_paged_by_cursor_newest_first_and_filtered_by_status(
    github: GitHubSim, app_key: tuple[bytes, bytes]
) -> None:
    github.create_issue(OWNER_REPO, "t", "b")
    sent = [github.comment(OWNER_REPO, 1, f"comment {n}")[1] for n in range(4)]
    github.webhook_url = closed_port_url()
    sent.append(github.comment(OWNER_REPO, 1, "missed")[1])
    headers = {"Authorization": f"Bearer {app_jwt(app_key[0])}"}
    url: str | None = f"{github.api_url}/app/hook/deliveries?per_page=2"
    pages = []
    while url:
        answer = requests.get(url, headers=headers, timeout=10)
        assert answer.status_code == 200
        pages.append([item["guid"] for item in answer.json()])
        url = answer.links.get("next", {}).get("url")
        assert url is None or "cursor=v1_" in url
    newest_first = [d.delivery_id for d in reversed(sent)]
    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:]]
    assert [d.guid for d in app_client(github, app_key[0]).hook_deliveries()] == newest_first

    failures = requests.get(
        f"{github.api_url}/app/hook/deliveries?status=failure", headers=headers, timeout=10
    )
    assert [item["guid"] for item in failures.json()] == [sent[-1].delivery_id]
    bad = requests.get(
        f"{github.api_url}/app/hook/deliveries?cursor=bogus", headers=headers, timeout=10
    )
    assert bad.status_code == 400
    assert requests.get(f"{github.api_url}/app/hook/deliveries", timeout=10).status_code == 401
