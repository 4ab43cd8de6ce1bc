"""The README's main job: ``python -m sim.demo`` as a user runs it."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests

from sim.stack import DEMO_REPO, ROOT, free_port, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def run_demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "sim.demo",
            "--no-bootstrap",
            "--redis-url",
            "redis://127.0.0.1:6379/14",
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env or dict(os.environ),
    )


def test_demo_json_reports_the_pull_request():
    done = run_demo("--json")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert Path(result["logs"]).is_dir()
    shutil.rmtree(result["logs"])
    assert result["pr_url"].endswith("/octo-org/textstats/pull/2")
    assert result["branch"].startswith("codex/issue-1-")
    assert result["commit_message"].rstrip().endswith("Fixes #1")
    assert result["tests_before"] == {"command": "python3 -m pytest -q", "exit_code": 1}
    assert result["tests_after"] == {"command": "python3 -m pytest -q", "exit_code": 0}
    stages = {"ack", "enqueue_to_start", "checkout", "container_start", "agent", "publish", "total"}
    assert stages <= set(result["timings_ms"])
    assert result["patch"].startswith("diff --git a/textstats/core.py b/textstats/core.py")


def test_demo_prose_shows_the_stages_and_ends_with_the_pr_line():
    done = run_demo()
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.rstrip().splitlines()[-1].startswith("PR: http://127.0.0.1:")
    said = done.stderr.splitlines()
    stages = [line.strip() for line in said if line.startswith("  ")]
    # Polled: a short stage may pass unseen, but what is shown comes in order, each once.
    order = ["queued", "preparing", "running", "testing", "publishing"]
    seen = [order.index(stage.split(" (step ")[0]) for stage in stages]
    assert seen == sorted(seen) and len(stages) == len(set(stages))
    assert any(stage.startswith("running (step ") for stage in stages)
    printed = said + done.stdout.splitlines()
    assert not [line for line in printed if line.lstrip().startswith("{")]  # no log lines
    logs = Path(done.stdout.rstrip().splitlines()[-2].removeprefix("logs: "))
    assert {"receiver.log", "worker.log", "stand-ins.log"} <= {p.name for p in logs.iterdir()}
    assert "POST /v1/chat/completions" in (logs / "stand-ins.log").read_text()
    shutil.rmtree(logs)


def test_demo_on_a_local_repository_with_another_model_endpoint(tmp_path):
    repo = tmp_path / "mine"
    shutil.copytree(DEMO_REPO, repo, ignore=shutil.ignore_patterns("issue.md"))
    for command in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "Start"]):
        subprocess.run(
            ["git", "-c", "user.name=me", "-c", "user.email=me@example.com", *command],
            cwd=repo,
            check=True,
        )
    issue = tmp_path / "bug.md"
    shutil.copy(DEMO_REPO / "issue.md", issue)
    port = free_port()
    env = {
        **os.environ,
        "SIM_MODEL_API_KEY": "sk-local-model-key",
        "OPENAI_API_KEY": "sk-local-model-key",
    }
    model = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sim.model",
            "--port",
            str(port),
            "--model",
            "local-model",
            "--script",
            str(ROOT / "sim" / "scripts" / "demo_fix.json"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}/v1"
        wait_until(lambda: _answers(f"{base}/models"), 30, "the model server")
        done = run_demo(
            "--json",
            "--repo",
            str(repo),
            "--issue",
            str(issue),
            "--model-base-url",
            base,
            "--model",
            "local-model",
            env=env,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout)
        assert result["tests_after"]["exit_code"] == 0
        asked = requests.get(f"http://127.0.0.1:{port}/_sim/requests", timeout=5).json()
        assert any(r["body"].get("model") == "local-model" for r in asked if "body" in r)
    finally:
        model.terminate()
        model.wait(timeout=10)


def test_bad_arguments_are_refused_clearly(tmp_path):
    done = run_demo("--repo", str(tmp_path))
    assert done.returncode == 2
    assert "--repo and --issue go together" in done.stderr


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code < 500
    except requests.RequestException:
        return False


class StalledModel(http.server.BaseHTTPRequestHandler):
    """A model endpoint that answers nothing until released: the task is mid-agent meanwhile."""

    release = threading.Event()

    def do_POST(self) -> None:  # noqa: N802 - the http.server protocol
        self.release.wait(60)
        self.send_error(503)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stalled_model() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StalledModel)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    StalledModel.release.set()
    server.shutdown()
    server.server_close()


def test_ctrl_c_stops_everything_the_demo_started(tmp_path, stalled_model):
    client = docker.from_env()
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sim.demo",
            "--no-bootstrap",
            "--verbose",
            "--redis-url",
            "redis://127.0.0.1:6379/14",
            "--model-base-url",
            stalled_model,  # so the worker is surely busy with the task when Ctrl-C comes
            "--model",
            "stalled",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OPENAI_API_KEY": "sk-test-stalled"},
    )
    try:
        # Interrupt once the receiver has answered: the worker is busy with the task then, its
        # agent waiting on the model.
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = demo.stderr.readline()
            lines.append(line)
            if "labelled it" in line or not line:
                break
        assert any("labelled it" in line for line in lines), "".join(lines)
        demo.send_signal(signal.SIGINT)
        demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 130
    ours = subprocess.run(
        ["pgrep", "-f", "codexbot (serve|worker).*"], capture_output=True, text=True
    )
    leftover = [pid for pid in ours.stdout.split() if _started_by(pid, demo.pid)]
    assert leftover == []
    wait_until(
        lambda: (
            not client.containers.list(
                all=True, filters={"label": "codexbot.task"}, ignore_removed=True
            )
        ),
        30,
        "the demo's containers to go",
    )
    client.close()


def _started_by(pid: str, parent: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return f"PPid:\t{parent}\n" in status
