"""Shared fixtures: a started GitHubSim on loopback, a webhook receiver, app credentials."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from werkzeug.datastructures import Headers
from werkzeug.wrappers import Request, Response

from sim.github import GitHubSim, generate_app_key
from sim.github.simulator import QuietRequestHandler
from sim.serving import serve_in_thread

APP_ID = 4242
WEBHOOK_SECRET = "sim-webhook-secret"
OWNER_REPO = "octo-org/widgets"


@dataclass
class ReceivedHook:
    headers: Headers  # case-insensitive, like HTTP
    body: bytes


@dataclass
class WebhookReceiver:
    """A real HTTP endpoint on loopback that records what the simulator delivers."""

    url: str = ""
    received: list[ReceivedHook] = field(default_factory=list)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        self.received.append(
            ReceivedHook(headers=Headers(request.headers), body=request.get_data())
        )
        return Response("accepted", status=202)(environ, start_response)


@pytest.fixture(scope="session")
def app_key() -> tuple[bytes, bytes]:
    return generate_app_key()


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    server, thread = serve_in_thread(
        receiver, name="webhook-receiver", request_handler=QuietRequestHandler
    )
    receiver.url = f"http://127.0.0.1:{server.server_port}/webhook"
    yield receiver
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture
def source_dir(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    (source / "pkg").mkdir(parents=True)
    (source / "README.md").write_text("# widgets\n")
    (source / "pkg" / "__init__.py").write_text("def add(a, b):\n    return a - b\n")
    return source


@pytest.fixture
def github(
    tmp_path: Path,
    app_key: tuple[bytes, bytes],
    webhook_receiver: WebhookReceiver,
    source_dir: Path,
) -> Iterator[GitHubSim]:
    sim = GitHubSim(
        app_id=APP_ID,
        app_public_key_pem=app_key[1],
        webhook_url=webhook_receiver.url,
        webhook_secret=WEBHOOK_SECRET,
        data_dir=tmp_path / "sim-data",
    )
    with sim:
        sim.create_repo(OWNER_REPO, source_dir, installation_id=7)
        sim.add_user("octo-maintainer")
        sim.set_permission(OWNER_REPO, "octo-maintainer", "maintain")
        yield sim


def app_jwt(
    private_pem: bytes,
    *,
    app_id: int | str = APP_ID,
    iat: float | None = None,
    exp: float | None = None,
) -> str:
    now = time.time()
    claims = {
        "iat": int(now - 60 if iat is None else iat),
        "exp": int(now + 300 if exp is None else exp),
        "iss": app_id,
    }
    # PyJWT refuses a non-string iss when encoding; GitHub (and PyGithub) use the integer app id.
    return jwt.api_jws.PyJWS().encode(json.dumps(claims).encode(), private_pem, algorithm="RS256")


def mint_token(sim: GitHubSim, private_pem: bytes, installation_id: int = 7) -> str:
    response = requests.post(
        f"{sim.api_url}/app/installations/{installation_id}/access_tokens",
        headers={
            "Authorization": f"Bearer {app_jwt(private_pem)}",
            "Accept": "application/vnd.github+json",
        },
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()["token"]


@pytest.fixture
def token(github: GitHubSim, app_key: tuple[bytes, bytes]) -> str:
    return mint_token(github, app_key[0])


def api(
    sim: GitHubSim, method: str, path: str, token: str | None, body: Any = None
) -> requests.Response:
    headers = {"Accept": "application/vnd.github+json"}
    if token is not None:
        headers["Authorization"] = f"token {token}"
    return requests.request(method, f"{sim.api_url}{path}", headers=headers, json=body, timeout=10)


def git_env(token: str | None) -> dict[str, str]:
    """Credentials the way the bot passes them: an extra header via environment, never in argv."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "codex-bot",
        "GIT_AUTHOR_EMAIL": "codex-bot@users.noreply.github.local",
        "GIT_COMMITTER_NAME": "codex-bot",
        "GIT_COMMITTER_EMAIL": "codex-bot@users.noreply.github.local",
    }
    if token is not None:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        env.update(
            GIT_CONFIG_COUNT="1",
            GIT_CONFIG_KEY_0="http.extraHeader",
            GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}",
        )
    return env


def git(
    *args: str, cwd: Path | None = None, token: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=git_env(token),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {result.stderr}")
    return result


def clone_url(sim: GitHubSim, full_name: str = OWNER_REPO) -> str:
    return f"{sim.url}/{full_name}.git"


def commit_file(workdir: Path, name: str, text: str, message: str) -> str:
    (workdir / name).write_text(text)
    git("add", name, cwd=workdir)
    git("commit", "-q", "-m", message, cwd=workdir)
    return git("rev-parse", "HEAD", cwd=workdir).stdout.strip()


def json_lines(hooks: list[ReceivedHook]) -> list[dict[str, Any]]:
    return [json.loads(h.body) for h in hooks]
