"""The audit trail: a real run's trajectory, read back by `codexbot task show|ls` and the task
page (rendered by a real headless Chromium)."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner, Result
from redis import Redis
from werkzeug.serving import make_server

from codexbot import keys
from codexbot.redact import Redactor
from codexbot.request import TaskRequest
from tests.agent.support import API_KEY, FILE_TOOLS, LocalShell, task_titled
from tests.conftest import FAKE_SECRETS, make_settings
from workers import tasks
from workers.agent import AgentLimits, OpenAIModel, Trajectory, run_agent
from workers.agent.cli import task as task_command
from workers.trajectories import RedisTrajectories

SECRET = FAKE_SECRETS["audit_token"]
TASK_ID = "task-audit-1"


@pytest.fixture
def data_dir(tmp_path: Path, model: OpenAIModel, demo_workdir: Path, redis: Redis) -> Path:
    """One real run's trajectory, kept in Redis as a worker keeps it, and an empty data
    directory (another host's); the secret was in the workspace."""
    core = demo_workdir / "textstats" / "core.py"
    lines = core.read_text().splitlines(keepends=True)
    core.write_text("".join(lines[:4] + [f"    # token {SECRET}\n"] + lines[4:]))
    data = tmp_path / "data"
    keep = functools.partial(RedisTrajectories(redis).append, TASK_ID)
    trajectory = Trajectory(None, Redactor([API_KEY, SECRET]), keep=keep)
    limits = AgentLimits(steps=12, wall_seconds=60)
    result = run_agent(task_titled(FILE_TOOLS), LocalShell(demo_workdir), model, limits, trajectory)
    assert result.status == "finished"
    assert SECRET in (demo_workdir / "textstats" / "core.py").read_text()
    return data


def show(*args: str, data_dir: Path, redis_url: str) -> Result:
    return CliRunner().invoke(
        task_command, ["show", *args, "--data-dir", str(data_dir), "--redis-url", redis_url]
    )


def test_task_show_prints_the_steps_readably(data_dir: Path, redis_url: str) -> None:
    shown = show(TASK_ID, data_dir=data_dir, redis_url=redis_url)

    assert shown.exit_code == 0, shown.output
    out = shown.output
    assert out.startswith(f"task {TASK_ID}: octo/demo#7 [fix]")
    assert "state: finished  steps: 7" in out
    assert "step 1  (model" in out and "[read_file] textstats/core.py 4-8" in out
    assert "[apply_patch] textstats/core.py -> ERROR" in out
    assert "[shell] python3 -m pytest -q -> exit 0" in out
    assert "[finish] Count words on any whitespace" in out
    assert SECRET not in out and API_KEY not in out


def test_task_show_refuses_unknown_and_path_like_ids(data_dir: Path, redis_url: str) -> None:
    for bad in ("nope", "../trajectories/task-audit-1", "/etc/passwd"):
        shown = show(bad, data_dir=data_dir, redis_url=redis_url)
        assert shown.exit_code == 1 and "no trajectory for task" in shown.output


def test_task_show_json_prints_the_records_as_kept(data_dir: Path, redis_url: str) -> None:
    shown = show(TASK_ID, "--json", data_dir=data_dir, redis_url=redis_url)

    assert shown.exit_code == 0, shown.output
    records = [json.loads(line) for line in shown.output.splitlines()]
    assert records[0]["type"] == "start" and records[-1]["type"] == "result"
    assert SECRET not in shown.output


def test_task_show_reads_a_local_run_from_its_file(data_dir: Path, redis_url: str) -> None:
    local = Trajectory(data_dir / "trajectories" / "local-1.jsonl", Redactor([]))
    local.record("start", 0, repo="local/demo", number=0, mode="fix", title="a local run")
    local.record("result", 0, status="finished", seconds=1.0)

    shown = show("local-1", data_dir=data_dir, redis_url=redis_url)

    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith("task local-1: local/demo#0 [fix]")


def test_task_ls_merges_redis_records_and_trajectories(
    data_dir: Path, redis: Redis, redis_url: str
) -> None:
    request = TaskRequest(
        kind="fix", repo="octo/other", number=9, is_pull=False, installation_id=1,
        sender="octo", task_id="queued-2", delivery_id="queued-2",
    )  # fmt: skip
    record = tasks.TaskRecord(request, created=9999999999)
    tasks.save(redis, record)  # as the intake lane writes it
    redis.set("codexbot:task:queued-2:stop", "1")  # not a task record
    listed = CliRunner().invoke(
        task_command, ["ls", "--data-dir", str(data_dir), "--redis-url", redis_url]
    )

    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0].split() == ["TASK", "STATE", "DURATION", "STARTED", "(UTC)", "WHAT"]
    assert lines[1].split()[:2] == ["queued-2", "queued"]  # newest first
    row = lines[2].split()
    assert row[:2] == [TASK_ID, "finished"] and row[2].endswith("s") and row[-1] == "octo/demo#7"
    assert len(lines) == 3


def test_trajectories_expire_and_leave_the_list_of_recent_ones(redis: Redis) -> None:
    store = RedisTrajectories(redis, ttl=60)
    store.append("old", json.dumps({"type": "start", "step": 0}))
    redis.zadd(keys.TRAJECTORIES, {"old": time.time() - 120})  # started two minutes ago
    store.append("new", json.dumps({"type": "start", "step": 0}))

    assert 0 < redis.ttl(keys.trajectory("new")) <= 60
    assert store.recent(10) == ["new"]
    assert store.read("new") == [{"type": "start", "step": 0}]


@pytest.fixture
def page_server(data_dir: Path, redis: Redis) -> Iterator[str]:
    from app import create_app
    from app import tasks as task_pages

    flask_app = create_app(make_settings(codex_data_dir=data_dir), redis)
    if "tasks" not in flask_app.blueprints:  # until the lead registers it in create_app
        flask_app.register_blueprint(task_pages.blueprint)
    server = make_server("127.0.0.1", 0, flask_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_task_page_answers_404_for_unknown_tasks(page_server: str) -> None:
    for bad in ("nope", "..%2Fetc", "a" * 300):
        response = requests.get(f"{page_server}/tasks/{bad}", timeout=5)
        assert response.status_code == 404


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="apt package chromium is not installed")
def test_task_page_renders_the_steps_in_headless_chromium(page_server: str, tmp_path: Path) -> None:
    url = f"{page_server}/tasks/{TASK_ID}"
    raw = requests.get(url, timeout=5)
    assert raw.status_code == 200 and "default-src 'none'" in raw.headers["Content-Security-Policy"]

    dom = subprocess.run(
        [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-default-apps", "--disable-extensions", "--no-default-browser-check",
            f"--user-data-dir={tmp_path / 'chromium'}", "--dump-dom", url,
        ],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip

    assert f"<title>codex-bot task {TASK_ID}</title>" in dom
    assert '<span class="state state-finished" id="state">finished</span>' in dom
    for step in range(1, 8):
        assert f'id="step-{step}"' in dom
    assert "textstats/core.py 4-8" in dom and "python3 -m pytest -q" in dom
    assert "does not apply" in dom
    assert SECRET not in dom and API_KEY not in dom and "[REDACTED]" in dom
