"""The receiver over real HTTP with real Redis: what GitHub sees, and what lands in the queue."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests
from rq import Queue

from sim.stack import wait_until
from tests.conftest import REDIS_URL, load_fixture
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
    """The intake lane, where the receiver puts every request it accepts."""
    return Queue(receiver.settings.codex_fast_queue, connection=receiver_redis(receiver))


def receiver_redis(receiver):
    from redis import Redis

    return Redis.from_url(receiver.settings.redis_url)


def test_trigger_label_enqueues_a_fix(receiver):
    response = receiver.deliver("issues", labeled(), delivery_id="d-1")
    assert response.status_code == 202
    assert response.json() == {"task_id": "d-1"}
    jobs = queued(receiver).jobs
    assert [job.id for job in jobs] == ["intake-d-1"]
    assert jobs[0].func_name == "workers.intake.accept"
    assert jobs[0].kwargs["task_id"] == jobs[0].kwargs["delivery_id"] == "d-1"
    assert jobs[0].kwargs["repo"] == "octo-org/textstats"
    assert jobs[0].kwargs["number"] == 7
    assert jobs[0].kwargs["installation_id"] == 3
    assert jobs[0].kwargs["kind"] == "fix"


def test_repeated_delivery_enqueues_nothing_new(receiver):
    first = receiver.deliver("issues", labeled(), delivery_id="same-id")
    again = receiver.deliver("issues", labeled(), delivery_id="same-id")
    assert first.status_code == again.status_code == 202
    assert again.json() == {"task_id": "same-id", "duplicate": True}
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


# ---- the receiver as deployed: `codexbot serve` in a process of its own ------------------------


class Served:
    """``codexbot serve ...`` on a free loopback port; its stderr (JSON log lines) kept in a file."""

    def __init__(self, tmp_path: Path, *args: str, **settings: str) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.secret = "served-webhook-secret"
        self.fast_queue = f"served-fast-{secrets.token_hex(3)}"
        self.log_path = tmp_path / f"serve-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "OPENAI_", "CODEX"))}
        env.update(
            GITHUB_APP_ID="1",
            GITHUB_PRIVATE_KEY="unused by the receiver",
            GITHUB_WEBHOOK_SECRET=self.secret,
            OPENAI_API_KEY="sk-served-test",
            REDIS_URL=REDIS_URL,
            CODEX_QUEUE=f"served-{secrets.token_hex(3)}",
            CODEX_FAST_QUEUE=self.fast_queue,
            **settings,
        )
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).parent / "codexbot"), "serve", "--port", str(self.port), *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(self._healthy, 30, f"codexbot serve {' '.join(args)} to answer")

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"codexbot serve exited:\n{self.log_path.read_text()}")
        try:
            return requests.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def deliver(self, event: str, payload: dict | bytes, delivery_id: str | None = None) -> requests.Response:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
            "X-Hub-Signature-256": "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest(),
        }
        return requests.post(f"{self.url}/webhook", data=body, headers=headers, timeout=10)

    def log_lines(self) -> list[str]:
        return self.log_path.read_text().splitlines()

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.mark.parametrize("server", ["granian", "gunicorn"])
def test_served_receiver_logs_json_with_delivery_and_task_id(redis, tmp_path, server):
    served = Served(tmp_path, "--server", server, "--workers", "2")
    try:
        enqueued = served.deliver("issues", labeled(), delivery_id="served-1")
        ignored = served.deliver("issues", labeled(label="bug"), delivery_id="served-2")
        assert (enqueued.status_code, ignored.status_code) == (202, 204)
        assert enqueued.json() == {"task_id": "served-1"}
        assert Queue(served.fast_queue, connection=redis).job_ids == ["intake-served-1"]
        wait_until(lambda: len(served.log_lines()) >= 2, 10, "two log lines")
    finally:
        served.close()
    events = [json.loads(line) for line in served.log_lines() if line.startswith("{")]
    by_delivery = {event.get("delivery_id"): event for event in events}
    assert by_delivery["served-1"]["task_id"] == "served-1"
    assert by_delivery["served-1"]["event"] == "enqueued"
    assert by_delivery["served-2"]["event"] == "nothing to do"
    assert "task_id" not in by_delivery["served-2"]
    assert all(served.secret not in line for line in served.log_lines())


def test_serve_dev_runs_flasks_development_server(redis, tmp_path):
    served = Served(tmp_path, "--dev")
    try:
        assert served.deliver("issues", labeled(), delivery_id="dev-1").status_code == 202
        assert requests.get(f"{served.url}/healthz", timeout=5).json()["redis"] == "ok"
    finally:
        served.close()
    assert "development server" in served.log_path.read_text()
