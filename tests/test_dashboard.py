"""/tasks, /tasks/ID and /metrics: open without CODEX_DASHBOARD_TOKEN, behind it with one."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from redis import Redis

from app import dashboard
from codexbot.request import TaskRequest
from tests.browser import CHROMIUM, Browser
from tests.conftest import Receiver, make_settings
from workers import tasks
from workers.trajectories import RedisTrajectories

TOKEN = "dashboard-token-" + "x" * 16
PAGES = ("/tasks", "/tasks/task-done", "/metrics")
HTML = {"Accept": "text/html,application/xhtml+xml"}


def seed(redis: Redis) -> None:
    """A finished task with a trajectory and a PR, and one still queued (a record alone)."""
    done = tasks.TaskRecord(
        TaskRequest("fix", "octo-org/textstats", 7, 1, "alice", False, "task-done", "d-1"),
        state="done",
        pr_url="https://github.example/octo-org/textstats/pull/8",
        created=time.time() - 60,
    )
    tasks.save(redis, done)
    store = RedisTrajectories(redis)
    start = {"type": "start", "time": time.time() - 59, "repo": "octo-org/textstats", "number": 7}
    store.append("task-done", json.dumps(start))
    result = {
        "type": "result",
        "time": time.time(),
        "status": "finished",
        "step": 3,
        "seconds": 42.0,
    }
    store.append("task-done", json.dumps(result))
    queued = TaskRequest("code_review", "octo-org/app", 12, 1, "bob", True, "task-queued", "d-2")
    tasks.save(redis, tasks.TaskRecord(queued))


@pytest.fixture
def guarded(redis: Redis) -> Iterator[Receiver]:
    suffix = secrets.token_hex(3)
    settings = make_settings(
        codex_queue=f"codex-test-{suffix}",
        codex_fast_queue=f"fast-{suffix}",
        codex_dashboard_token=TOKEN,
    )
    served = Receiver(settings, redis)
    seed(redis)
    yield served
    served.close()


def test_without_a_token_setting_the_pages_are_open(receiver, redis):
    seed(redis)
    listing = requests.get(f"{receiver.url}/tasks", timeout=5)
    assert listing.status_code == 200
    rows = listing.text
    assert rows.index("task-queued") < rows.index("task-done")  # newest first
    assert "octo-org/textstats#7" in rows and "42.0 s" in rows and ">done<" in rows
    assert "code_review" in rows and "https://github.example/octo-org/textstats/pull/8" in rows
    assert 'href="/tasks/task-done"' in rows
    queued = requests.get(f"{receiver.url}/tasks/task-queued", timeout=5)
    assert queued.status_code == 200 and "octo-org/app#12" in queued.text
    assert requests.get(f"{receiver.url}/tasks/unknown", timeout=5).status_code == 404
    assert requests.get(f"{receiver.url}/metrics", timeout=5).status_code == 200


@pytest.mark.parametrize("path", PAGES)
def test_with_the_token_each_page_answers(guarded, path):
    response = requests.get(
        guarded.url + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
    )
    assert response.status_code == 200
    assert "task-done" in response.text or path == "/metrics"


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize("authorization", [None, f"Bearer {TOKEN}x", "Bearer ", f"Basic {TOKEN}"])
def test_without_the_token_a_client_is_refused(guarded, path, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = requests.get(guarded.url + path, headers=headers, timeout=5)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "task-done" not in response.text and "codexbot_" not in response.text


def test_a_browser_logs_in_with_the_form_and_keeps_a_cookie(guarded):
    session = requests.Session()
    form = session.get(f"{guarded.url}/tasks/task-done", headers=HTML, timeout=5)
    assert form.status_code == 401 and 'name="token"' in form.text
    assert 'value="/tasks/task-done"' in form.text and "task-done</" not in form.text

    wrong = session.post(f"{guarded.url}/login", data={"token": "guess", "next": "/tasks"})
    assert wrong.status_code == 401 and "not the token" in wrong.text
    assert not session.cookies

    login = {"token": TOKEN, "next": "/tasks/task-done"}
    answer = session.post(f"{guarded.url}/login", data=login, allow_redirects=False, timeout=5)
    assert answer.status_code == 303 and answer.headers["Location"] == "/tasks/task-done"
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # plain HTTP here; behind TLS it is Secure
    assert TOKEN not in cookie and dashboard.cookie_value(TOKEN) in cookie
    for path in PAGES:
        assert session.get(guarded.url + path, headers=HTML, timeout=5).status_code == 200

    forged = {dashboard.COOKIE: dashboard.cookie_value("another token")}
    assert requests.get(f"{guarded.url}/tasks", cookies=forged, timeout=5).status_code == 401


def test_login_behind_tls_sets_a_secure_cookie_and_stays_on_this_host(guarded):
    login = {"token": TOKEN, "next": "https://evil.example/"}
    answer = requests.post(
        f"{guarded.url}/login",
        data=login,
        headers={"X-Forwarded-Proto": "https"},
        allow_redirects=False,
        timeout=5,
    )
    assert answer.status_code == 303 and answer.headers["Location"] == "/tasks"
    assert "Secure" in answer.headers["Set-Cookie"]


@pytest.mark.skipif(CHROMIUM is None, reason="apt package chromium is not installed")
def test_the_list_page_in_a_browser(guarded, tmp_path: Path):
    browser = Browser(tmp_path / "profile")
    try:
        browser.open(f"{guarded.url}/tasks")
        browser.type("#token", TOKEN)
        browser.click("#log-in")
        browser.wait_for("document.querySelector('#tasks') !== null")
        assert "octo-org/textstats#7" in browser.text("#tasks")
    finally:
        browser.close()
