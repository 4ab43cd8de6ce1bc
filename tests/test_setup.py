"""Creating the GitHub App from its manifest (app/setup.py), as an operator does: ``codexbot
serve`` with no App configured, a browser on /setup, GitHub (the simulator) and back."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from github import Auth, GithubIntegration

from app.setup import create_setup_app, fill_manifest, load_manifest, new_app_url
from codexbot.settings import write_settings_file
from sim.github import GitHubSim, generate_app_key
from sim.stack import free_port, wait_until
from tests.browser import CHROMIUM, Browser

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def github(tmp_path: Path):
    _, public = generate_app_key()
    with GitHubSim(4242, public, None, "unused", tmp_path / "github") as sim:
        yield sim


def setup_env(github: GitHubSim, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "CODEX_"))}
    env.update(GITHUB_API_URL=github.api_url, CODEX_DATA_DIR=str(data_dir), PYTHONPATH=str(ROOT))
    return env


@pytest.fixture
def setup_server(github: GitHubSim, tmp_path: Path):
    """``codexbot serve`` with no App credentials: the set-up server."""
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "codexbot.cli", "serve", "--port", str(port)],
        env=setup_env(github, tmp_path / "data"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(f"{url}/healthz", timeout=1).ok
        except requests.ConnectionError:
            return False

    try:
        wait_until(up, 30, "the set-up server")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()


def test_manifest_is_filled_with_this_hosts_urls():
    manifest = fill_manifest(load_manifest(), "https://bot.example.org", "acme-codex")
    assert manifest["hook_attributes"] == {"url": "https://bot.example.org/webhook", "active": True}
    assert manifest["redirect_url"] == "https://bot.example.org/setup/done"
    assert manifest["name"] == "acme-codex"
    assert manifest["default_permissions"]["contents"] == "write"
    assert load_manifest()["redirect_url"] != manifest["redirect_url"]  # the shipped one is intact


@pytest.mark.parametrize(
    ("web", "organization", "expected"),
    [
        ("https://github.com", None, "https://github.com/settings/apps/new?state=s"),
        (
            "https://github.com",
            "acme",
            "https://github.com/organizations/acme/settings/apps/new?state=s",
        ),
        ("https://ghe.example", None, "https://ghe.example/settings/apps/new?state=s"),
    ],
)
def test_new_app_url(web: str, organization: str | None, expected: str):
    assert new_app_url(web, organization, "s") == expected


def test_settings_file_is_the_owners_alone_and_loaded_behind_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from codexbot.settings import load_settings

    private, _ = generate_app_key()
    path = tmp_path / "app.env"
    write_settings_file(
        path,
        {
            "GITHUB_APP_ID": "77",
            "GITHUB_PRIVATE_KEY": private.decode(),
            "GITHUB_WEBHOOK_SECRET": 'se"cr\\et',
        },
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for name in list(os.environ):
        if name.startswith(("GITHUB_", "CODEX_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CODEX_SETTINGS_FILE", str(path))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    settings = load_settings()
    assert settings.github_app_id == 77
    assert settings.private_key_pem() == private.decode()
    assert settings.github_webhook_secret.get_secret_value() == 'se"cr\\et'
    monkeypatch.setenv("GITHUB_APP_ID", "78")
    assert load_settings().github_app_id == 78  # the environment wins


def test_a_redirect_this_setup_did_not_start_is_refused(github: GitHubSim):
    client = create_setup_app(github.api_url).test_client()
    answer = client.get("/setup/done?code=abc&state=forged")
    assert answer.status_code == 400 and b"did not come from this set-up" in answer.data


@pytest.mark.skipif(CHROMIUM is None, reason="apt package chromium is not installed")
def test_the_app_is_created_from_the_setup_page_in_headless_chromium(
    github: GitHubSim, setup_server: str, tmp_path: Path
):
    settings_file = tmp_path / "data" / "app.env"
    browser = Browser(tmp_path / "chromium")
    try:
        browser.open(f"{setup_server}/setup")
        assert browser.text("#owner") == "your own account"
        browser.type("#organization", "octo-org")
        browser.type("#name", "acme codex")
        browser.click("#choose-button")
        browser.wait_for("location.search.includes('organization=octo-org')")
        assert browser.text("#owner") == "the organisation octo-org"
        browser.click("#create-button")
        browser.wait_for("location.pathname === '/setup/done' && !!document.querySelector('h1')")
        dom = browser.evaluate("document.documentElement.outerHTML")
        install = browser.evaluate("document.querySelector('#install').href")
        app_id = int(browser.text("#app-id"))
    finally:
        browser.close()

    assert "The App acme codex is created" in dom, dom
    assert install == f"{github.url}/apps/acme-codex/installations/new"
    assert stat.S_IMODE(settings_file.stat().st_mode) == 0o600
    values = dict(line.split("=", 1) for line in settings_file.read_text().splitlines())
    assert values["GITHUB_APP_ID"] == f'"{app_id}"'
    pem = json.loads(values["GITHUB_PRIVATE_KEY"])  # a dotenv double-quoted value is JSON-like
    secret = json.loads(values["GITHUB_WEBHOOK_SECRET"])
    assert secret == github.webhook_secret
    assert github.webhook_url == f"{setup_server}/webhook"
    # The key is the new App's: GitHub (the simulator) accepts a JWT it signs.
    integration = GithubIntegration(auth=Auth.AppAuth(app_id, pem), base_url=github.api_url)
    assert integration.get_app().slug == "acme-codex"
    integration.close()
    # Secrets reach the file only: not the page, not the server's log.
    log = (tmp_path / "serve.log").read_text()
    for value in (pem, pem.splitlines()[1], secret):
        assert value not in dom and value not in log
    # Set up now: the page says so instead of offering a second App.
    again = requests.get(f"{setup_server}/setup", timeout=5)
    assert "An App is configured" in again.text
