"""App JWTs and installation tokens behave like GitHub's."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from sim.github import GitHubSim, generate_app_key
from tests.sim.conftest import APP_ID, OWNER_REPO, WEBHOOK_SECRET, api, app_jwt, mint_token


def get_app(sim: GitHubSim, jwt_token: str) -> requests.Response:
    return requests.get(
        f"{sim.api_url}/app", headers={"Authorization": f"Bearer {jwt_token}"}, timeout=10
    )


def test_valid_app_jwt_reads_the_app(github: GitHubSim, app_key: tuple[bytes, bytes]) -> None:
    response = get_app(github, app_jwt(app_key[0]))
    assert response.status_code == 200
    assert response.json()["id"] == APP_ID
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.headers["X-GitHub-Request-Id"]
    assert int(response.headers["X-RateLimit-Remaining"]) < int(
        response.headers["X-RateLimit-Limit"]
    )


def test_iss_may_be_a_string(github: GitHubSim, app_key: tuple[bytes, bytes]) -> None:
    assert get_app(github, app_jwt(app_key[0], app_id=str(APP_ID))).status_code == 200


@pytest.mark.parametrize(
    "case",
    ["expired", "too_long_lived", "wrong_issuer", "wrong_key", "garbage"],
)
def test_bad_app_jwt_is_refused(github: GitHubSim, app_key: tuple[bytes, bytes], case: str) -> None:
    now = time.time()
    jwt_token = {
        "expired": lambda: app_jwt(app_key[0], iat=now - 1200, exp=now - 600),
        "too_long_lived": lambda: app_jwt(app_key[0], exp=now + 3600),
        "wrong_issuer": lambda: app_jwt(app_key[0], app_id=APP_ID + 1),
        "wrong_key": lambda: app_jwt(generate_app_key()[0]),
        "garbage": lambda: "not-a-jwt",
    }[case]()
    response = get_app(github, jwt_token)
    assert response.status_code == 401
    assert set(response.json()) == {"message", "documentation_url"}


def test_installation_token_shape_and_use(github: GitHubSim, app_key: tuple[bytes, bytes]) -> None:
    response = requests.post(
        f"{github.api_url}/app/installations/7/access_tokens",
        headers={"Authorization": f"Bearer {app_jwt(app_key[0])}"},
        timeout=10,
    )
    assert response.status_code == 201
    body = response.json()
    assert body["token"].startswith("ghs_") and len(body["token"]) == 40
    assert body["token"][4:].isalnum()
    assert body["expires_at"].endswith("Z")
    assert api(github, "GET", f"/repos/{OWNER_REPO}", body["token"]).status_code == 200


def test_installation_token_cannot_call_app_endpoints(github: GitHubSim, token: str) -> None:
    assert get_app(github, token).status_code == 401


def test_unknown_installation_is_404(github: GitHubSim, app_key: tuple[bytes, bytes]) -> None:
    response = requests.post(
        f"{github.api_url}/app/installations/999/access_tokens",
        headers={"Authorization": f"Bearer {app_jwt(app_key[0])}"},
        timeout=10,
    )
    assert response.status_code == 404


def test_missing_and_bad_tokens_are_refused(github: GitHubSim) -> None:
    missing = api(github, "GET", f"/repos/{OWNER_REPO}", None)
    assert missing.status_code == 401
    bad = api(github, "GET", f"/repos/{OWNER_REPO}", "ghs_" + "x" * 36)
    assert bad.status_code == 401
    assert bad.json()["message"] == "Bad credentials"


def test_token_for_another_installation_sees_404(
    github: GitHubSim, app_key: tuple[bytes, bytes], source_dir: Path
) -> None:
    github.create_repo("someone/else", source_dir, installation_id=8)
    other = mint_token(github, app_key[0], installation_id=8)
    assert api(github, "GET", f"/repos/{OWNER_REPO}", other).status_code == 404
    assert api(github, "GET", "/repos/someone/else", other).status_code == 200


def test_installation_token_expires(
    tmp_path: Path, app_key: tuple[bytes, bytes], source_dir: Path
) -> None:
    sim = GitHubSim(APP_ID, app_key[1], None, WEBHOOK_SECRET, tmp_path / "d", token_ttl_seconds=1.0)
    with sim:
        sim.create_repo(OWNER_REPO, source_dir, installation_id=7)
        short_lived = mint_token(sim, app_key[0])
        assert api(sim, "GET", f"/repos/{OWNER_REPO}", short_lived).status_code == 200
        deadline = time.monotonic() + 10
        status = 200
        while status == 200 and time.monotonic() < deadline:
            status = api(sim, "GET", f"/repos/{OWNER_REPO}", short_lived).status_code
        assert status == 401


def test_repo_installation_lookup_uses_the_jwt(
    github: GitHubSim, app_key: tuple[bytes, bytes], token: str
) -> None:
    url = f"{github.api_url}/repos/{OWNER_REPO}/installation"
    ok = requests.get(url, headers={"Authorization": f"Bearer {app_jwt(app_key[0])}"}, timeout=10)
    assert ok.status_code == 200
    assert ok.json()["id"] == 7
    assert (
        requests.get(url, headers={"Authorization": f"token {token}"}, timeout=10).status_code
        == 401
    )
