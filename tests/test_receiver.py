"""The receiver over real HTTP with real Redis: what GitHub sees, and what lands in the queue."""

from __future__ import annotations

import copy
import json
import uuid
from urllib.parse import urlencode

import pytest
import requests
from rq import Queue

from tests.conftest import load_fixture
from tests.openapi.validate import validate_webhook


def labeled(label: str = "codex", number: int = 7, **issue_extra) -> dict:
    """A real ``issues.labeled`` payload (tests/fixtures), with the label and issue varied."""
    payload = copy.deepcopy(load_fixture("issues__labeled.json"))
    payload["label"]["name"] = label
    payload["issue"]["labels"] = [dict(payload["label"])]
    payload["issue"].update(number=number, **issue_extra)
    payload["repository"]["full_name"] = "octo-org/textstats"
    payload["installation"]["id"] = 3
    return payload


def test_the_fixture_is_what_github_sends():
    validate_webhook("issues", "labeled", load_fixture("issues__labeled.json"))


def queued(receiver) -> Queue:
    return Queue(receiver.settings.codex_queue, connection=receiver_redis(receiver))


def receiver_redis(receiver):
    from redis import Redis

    return Redis.from_url(receiver.settings.redis_url)


def test_trigger_label_enqueues_a_fix(receiver):
    response = receiver.deliver("issues", labeled(), delivery_id="d-1")
    assert response.status_code == 202
    assert response.json() == {"task_id": "d-1"}
    jobs = queued(receiver).jobs
    assert [job.id for job in jobs] == ["d-1"]
    assert jobs[0].func_name == "workers.jobs.fix_issue"
    assert jobs[0].kwargs == {
        "repo": "octo-org/textstats",
        "issue_number": 7,
        "installation_id": 3,
        "task_id": "d-1",
        "delivery_id": "d-1",
    }


def test_repeated_delivery_enqueues_nothing_new(receiver):
    first = receiver.deliver("issues", labeled(), delivery_id="same-id")
    again = receiver.deliver("issues", labeled(), delivery_id="same-id")
    assert first.status_code == again.status_code == 202
    assert again.json()["task_id"] == "same-id"
    assert len(queued(receiver)) == 1


def test_opened_with_label_enqueues(receiver):
    payload = labeled()
    payload["action"] = "opened"
    del payload["label"]
    assert receiver.deliver("issues", payload).status_code == 202


@pytest.mark.parametrize(
    ("event", "payload"),
    [
        ("issues", labeled(label="bug")),
        ("issues", {**labeled(), "action": "closed"}),
        ("issues", labeled(pull_request={"url": "x"})),
        ("issues", labeled(state="closed")),
        ("issues", {"action": "labeled", "label": {"name": "codex"}}),  # no issue at all
        ("issues", {**labeled(), "installation": None}),
        ("star", {"action": "created"}),
        ("ping", {"zen": "Design for failure.", "hook_id": 1}),
        ("installation", {"action": "created"}),
    ],
)
def test_nothing_to_do_is_204_and_enqueues_nothing(receiver, event, payload):
    response = receiver.deliver(event, payload)
    assert response.status_code == 204, response.text
    assert len(queued(receiver)) == 0


def test_bad_or_missing_signature_is_401(receiver):
    body = json.dumps(labeled()).encode()
    headers = {
        "X-GitHub-Event": "issues",
        "X-GitHub-Delivery": "x",
        "Content-Type": "application/json",
    }
    missing = requests.post(f"{receiver.url}/webhook", data=body, headers=headers, timeout=5)
    wrong = receiver.deliver(
        "issues", labeled(), headers={"X-Hub-Signature-256": "sha256=" + "0" * 64}
    )
    other_secret = receiver.deliver(
        "issues", labeled(), headers={"X-Hub-Signature-256": receiver.sign(body, "nope")}
    )
    assert missing.status_code == wrong.status_code == other_secret.status_code == 401
    assert missing.text.strip() == "bad signature"
    assert len(queued(receiver)) == 0


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"{not json", {}, 400),
        (b"[1, 2]", {}, 400),
        (b'{"a": 1}', {"X-GitHub-Event": ""}, 400),
        (b'{"a": 1}', {"X-GitHub-Delivery": "bad id with spaces"}, 400),
        (b'{"a": 1}', {"Content-Type": "text/plain"}, 415),
        (b"payload=%7Bbroken", {"Content-Type": "application/x-www-form-urlencoded"}, 400),
        (b"other=1", {"Content-Type": "application/x-www-form-urlencoded"}, 400),
        (b"[" * 100_000 + b"]" * 100_000, {}, 400),
    ],
)
def test_malformed_deliveries_are_4xx(receiver, body, headers, status):
    response = receiver.deliver("issues", body, headers=headers)
    assert response.status_code == status, response.text


def test_form_encoded_delivery_is_verified_over_the_raw_body(receiver):
    body = urlencode({"payload": json.dumps(labeled())}).encode()
    response = receiver.deliver(
        "issues", body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 202


def test_oversized_body_is_413(receiver):
    body = b"{" + b" " * (25 * 1024 * 1024 + 10) + b"}"
    response = receiver.deliver("issues", body)
    assert response.status_code == 413


def test_rotated_secrets_both_work(redis):
    from tests.conftest import Receiver, make_settings

    served = Receiver(
        make_settings(
            github_webhook_secret="old-one, new-one", codex_queue=f"q-{uuid.uuid4().hex[:6]}"
        ),
        redis,
    )
    try:
        for secret in ("old-one", "new-one"):
            body = json.dumps(labeled()).encode()
            response = served.deliver(
                "issues", body, headers={"X-Hub-Signature-256": served.sign(body, secret)}
            )
            assert response.status_code == 202
    finally:
        served.close()


def test_healthz_checks_redis(receiver):
    response = requests.get(f"{receiver.url}/healthz", timeout=5)
    assert response.status_code == 200
    assert response.json()["redis"] == "ok"
