"""Fixtures shared by every test: real Redis on loopback and a receiver served over real HTTP."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests
from redis import Redis
from werkzeug.serving import make_server

from codexbot.settings import Settings, load_settings
from sandbox.labels import KIND_LABEL, REDIS_LABEL, redis_identity
from sandbox.layers import TREE_KIND

FIXTURES = Path(__file__).parent / "fixtures"
# Test-only fakes shaped like real secrets, kept in one marked file (tests/fixtures).
FAKE_SECRETS: dict[str, str] = json.loads((FIXTURES / "fake_secrets.json").read_text())
# A database of its own, flushed by the tests; point it elsewhere to run two suites at once.
REDIS_URL = os.environ.get("CODEX_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except Exception as error:  # noqa: BLE001 - turned into a clear instruction
        pytest.exit(f"Redis is not reachable at {REDIS_URL} ({error}); run `make test`", 2)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    try:
        client.ping()
    except docker.errors.DockerException as error:
        pytest.exit(f"the Docker engine is not reachable ({error}); run `make test`", 2)
    yield client
    # Tests flush their Redis, so the repository trees they made are known to no registry.
    identity = redis_identity(Redis.from_url(REDIS_URL))
    selector = [f"{KIND_LABEL}={TREE_KIND}", f"{REDIS_LABEL}={identity}"]
    for volume in client.volumes.list(filters={"label": selector}):
        with contextlib.suppress(docker.errors.APIError):
            volume.remove(force=True)
    client.close()


def make_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "github_app_id": 1,
        "github_private_key": "unused by the receiver",
        "github_webhook_secret": "test-webhook-secret",
        "openai_api_key": "sk-test-not-a-real-key",
        "redis_url": REDIS_URL,
        "codex_queue": "codex-test",
    }
    values.update(overrides)
    return load_settings(**values)


class Receiver:
    """``create_app`` served on a loopback port in a thread; deliveries are signed like GitHub's."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        from app import create_app

        self.settings = settings
        self.server = make_server("127.0.0.1", 0, create_app(settings, redis), threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def sign(self, body: bytes, secret: str | None = None) -> str:
        key = (secret or self.settings.webhook_secrets()[0].decode()).encode()
        return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()

    def deliver(
        self,
        event: str,
        payload: dict | bytes,
        *,
        delivery_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        sent = {
            "Content-Type": "application/json",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
            "X-Hub-Signature-256": self.sign(body),
        }
        sent.update(headers or {})
        return requests.post(f"{self.url}/webhook", data=body, headers=sent, timeout=10)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(redis: Redis) -> Iterator[Receiver]:
    suffix = secrets.token_hex(3)
    settings = make_settings(codex_queue=f"codex-test-{suffix}", codex_fast_queue=f"fast-{suffix}")
    served = Receiver(settings, redis)
    yield served
    served.close()


def load_fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())
