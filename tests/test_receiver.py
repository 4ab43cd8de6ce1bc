"""The receiver over real HTTP with real Redis: what GitHub sees, and what lands in the queue."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests
from redis import Redis
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
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "OPENAI_", "CODEX"))
        }
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
                [
                    str(Path(sys.executable).parent / "codexbot"),
                    "serve",
                    "--port",
                    str(self.port),
                    *args,
                ],
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

    def deliver(
        self, event: str, payload: dict | bytes, delivery_id: str | None = None
    ) -> requests.Response:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
            "X-Hub-Signature-256": "sha256="
            + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest(),
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


# ---- the hot path: one Redis round trip, ordinary RQ jobs, exactly once ------------------------


def remember_kwargs(**kwargs):
    """A job for a plain RQ worker to run: leaves its arguments where the test can read them."""
    from redis import Redis

    Redis.from_url(REDIS_URL).set(f"ran:{kwargs['task_id']}", json.dumps(kwargs, sort_keys=True))


def test_the_lua_enqueue_writes_what_rq_enqueue_writes(redis):
    from app.router import Delivery
    from app.webhook import Intake
    from tests.conftest import make_settings

    settings = make_settings(codex_fast_queue="lua-lane")
    delivery = Delivery(id="same", event="issues", payload={"action": "labeled"})
    intake = Intake(settings, redis)
    job = intake.job("tests.test_receiver.remember_kwargs", delivery, {"repo": "o/r", "number": 7})
    assert intake.claim_and_enqueue(delivery, job) == (True, "same")
    ours = redis.hgetall(job.key)
    redis.delete(job.key)
    Queue("lua-lane", connection=redis).enqueue(
        "tests.test_receiver.remember_kwargs",
        kwargs={"repo": "o/r", "number": 7, "task_id": "same", "delivery_id": "same"},
        job_id=job.id,
        job_timeout=job.timeout,
        result_ttl=job.result_ttl,
        failure_ttl=job.failure_ttl,
        description=job.description,
    )
    theirs = redis.hgetall(job.key)
    stamps = {b"created_at", b"enqueued_at"}
    assert {k: v for k, v in ours.items() if k not in stamps} == {
        k: v for k, v in theirs.items() if k not in stamps
    }
    assert ours.keys() == theirs.keys()
    lane = Queue("lua-lane", connection=redis)
    assert lane in Queue.all(connection=redis)
    assert lane.job_ids == [job.id] * 2


def test_a_plain_rq_worker_runs_what_the_receiver_enqueued(redis):
    from rq import SimpleWorker

    from app.router import Delivery
    from app.webhook import Intake
    from tests.conftest import make_settings

    settings = make_settings(codex_fast_queue="run-lane")
    intake = Intake(settings, redis)
    delivery = Delivery(id="runs-1", event="issues", payload={})
    intake.claim_and_enqueue(
        delivery, intake.job("tests.test_receiver.remember_kwargs", delivery, {"repo": "o/r"})
    )
    SimpleWorker([Queue("run-lane", connection=redis)], connection=redis).work(burst=True)
    assert json.loads(redis.get("ran:runs-1")) == {
        "repo": "o/r",
        "task_id": "runs-1",
        "delivery_id": "runs-1",
    }


def test_racing_copies_of_a_delivery_start_one_task(receiver):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        responses = list(
            pool.map(lambda _: receiver.deliver("issues", labeled(), delivery_id="race"), range(16))
        )
    assert {response.status_code for response in responses} == {202}
    firsts = [response for response in responses if "duplicate" not in response.json()]
    assert len(firsts) == 1
    assert len(queued(receiver)) == 1


class CountingRedis(Redis):
    """A real Redis client that counts the commands it sends (a pipeline counts once)."""

    calls: list[str]

    def execute_command(self, *args, **options):
        self.calls.append(str(args[0]))
        return super().execute_command(*args, **options)


@pytest.mark.parametrize(
    ("event", "payload", "status", "round_trips"),
    [
        ("issues", labeled(), 202, ["EVALSHA"]),
        ("issues", labeled(label="bug"), 204, []),
        ("push", {"ref": "refs/heads/main"}, 204, []),
        ("ping", {"zen": "Keep it logically awesome."}, 204, []),
    ],
)
def test_a_delivery_costs_at_most_one_redis_round_trip(
    redis_url, event, payload, status, round_trips
):
    from tests.conftest import Receiver, make_settings

    counting = CountingRedis.from_url(redis_url)
    counting.calls = []
    served = Receiver(make_settings(codex_fast_queue=f"rt-{secrets.token_hex(3)}"), counting)
    try:
        served.deliver("issues", labeled(), delivery_id=f"warm-{uuid.uuid4()}")  # loads the script
        counting.calls.clear()
        assert served.deliver(event, payload).status_code == status
        assert counting.calls == round_trips
    finally:
        served.close()
        counting.flushdb()


def test_without_redis_the_receiver_says_so_and_names_the_way_to_redeliver():
    from tests.conftest import Receiver, make_settings

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    served = Receiver(make_settings(redis_url=dead), Redis.from_url(dead))
    try:
        health = requests.get(f"{served.url}/healthz", timeout=5)
        delivery = served.deliver("issues", labeled())
        ignored = served.deliver("issues", labeled(label="bug"))  # needs no Redis at all
    finally:
        served.close()
    assert health.status_code == 503
    assert health.json()["status"] == "unhealthy"
    assert delivery.status_code == 503
    assert delivery.text == "503 queue unavailable; redeliver it (codexbot redeliver)\n"
    assert ignored.status_code == 204


def test_a_chunked_body_without_a_length_is_capped_too(receiver):
    def chunks():
        for _ in range(27):
            yield b" " * (1024 * 1024)

    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "issues",
        "X-GitHub-Delivery": "chunked",
        "X-Hub-Signature-256": "sha256=" + "0" * 64,
    }
    response = requests.post(f"{receiver.url}/webhook", data=chunks(), headers=headers, timeout=30)
    assert response.status_code == 413


def test_other_methods_on_the_webhook_are_405(receiver):
    assert requests.get(f"{receiver.url}/webhook", timeout=5).status_code == 405


# ---- bench/ingest: the payload mix and a short run ---------------------------------------------


def test_the_bench_mix_is_signed_real_shape_and_mostly_ignored():
    from bench.ingest.deliveries import build_mix, sign

    mix = build_mix("bench-secret")
    assert len(mix) == 100
    assert sum(delivery.enqueues for delivery in mix) == 20
    for delivery in mix:
        assert delivery.signature == sign(delivery.body, "bench-secret")
        payload = json.loads(delivery.body)
        if delivery.event in ("issues", "issue_comment"):
            validate_webhook(delivery.event, payload["action"], payload)
        assert 8_000 < len(delivery.body) < 14_000


def test_the_bench_mix_gets_what_the_bench_says_from_the_receiver(receiver):
    from bench.ingest.deliveries import build_mix

    mix = build_mix(receiver.settings.webhook_secrets()[0].decode())
    statuses = [
        receiver.deliver(d.event, d.body, headers={"X-Hub-Signature-256": d.signature}).status_code
        for d in mix
    ]
    assert statuses == [202 if d.enqueues else 204 for d in mix]


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (apt-get install wrk)")
def test_bench_ingest_runs_and_reports(redis_url):
    done = subprocess.run(
        [sys.executable, "-m", "bench.ingest", "--duration", "1", "--warmup", "1", "--rounds", "1"]
        + ["--targets", "granian:1x1", "--redis-url", redis_url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)["results"]["granian:1x1"]
    assert result["requests"] > 100
    assert result["non_2xx"] == 0
    assert result["jobs_queued"] > 0
    assert Redis.from_url(redis_url).keys("codexbot:delivery:bench-*") == []  # cleaned up
