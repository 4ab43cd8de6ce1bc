"""``codexbot doctor`` against the whole stack on loopback (simulated GitHub, scripted model,
real Redis and Docker): all green, then a wrong key, an unreachable Redis and a missing image."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sim.github import generate_app_key
from sim.stack import Stack
from tests.conftest import REDIS_URL

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("doctor"), redis_url=REDIS_URL, run_worker=False)
    running.extra_env["CODEX_PUBLIC_URL"] = running.receiver_url
    with running:
        running.seed()  # installs the App on a repository
        yield running


def doctor(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codexbot.cli", "doctor"],
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def rows(output: str) -> dict[str, str]:
    """check name -> "ok" or "FAIL" (a name may be two words)."""
    found = {}
    for line in output.splitlines()[1:]:
        for verdict in ("  ok  ", "  FAIL  "):
            if verdict in line:
                found[line.split(verdict)[0].strip()] = verdict.strip()
    return found


def assert_no_secret(stack: Stack, output: str) -> None:
    for name, value in stack.secrets().items():
        lines = value.splitlines() or [value]
        assert not any(part in output for part in lines if len(part) > 8), name


def test_a_working_setup_is_all_green(stack: Stack):
    done = doctor(stack.env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert rows(done.stdout) == {
        "settings": "ok",
        "GitHub App key": "ok",
        "installations": "ok",
        "redis": "ok",
        "docker engine": "ok",
        "sandbox image": "ok",
        "model": "ok",
        "model tools": "ok",
        "webhook URL": "ok",
    }, done.stdout
    assert "All checks passed." in done.stdout
    assert_no_secret(stack, done.stdout + done.stderr)


def test_wrong_key_dead_redis_and_missing_image_are_named(stack: Stack, tmp_path: Path):
    other_key, _ = generate_app_key()
    key_path = tmp_path / "other.pem"
    key_path.write_bytes(other_key)
    env = stack.env()
    env.update(
        GITHUB_PRIVATE_KEY_PATH=str(key_path),
        REDIS_URL="redis://127.0.0.1:1/0",
        CODEX_SANDBOX_IMAGE="codexbot-sandbox:no-such-tag",
    )
    done = doctor(env)
    assert done.returncode == 1, done.stdout + done.stderr
    verdicts = rows(done.stdout)
    failed = {name for name, verdict in verdicts.items() if verdict == "FAIL"}
    assert failed == {"GitHub App key", "redis", "sandbox image"}, done.stdout
    assert "codexbot-sandbox:no-such-tag is not on the engine" in done.stdout
    assert "3 problem(s) found." in done.stdout
    assert_no_secret(stack, done.stdout + done.stderr)
    assert other_key.decode().splitlines()[1] not in done.stdout


def test_version():
    done = subprocess.run(
        [sys.executable, "-m", "codexbot.cli", "--version"],
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.startswith("codexbot, version ")


def test_health_probe_needs_a_live_worker_on_this_host(stack: Stack):
    from rq import Queue, Worker

    probe = [sys.executable, "-m", "codexbot.cli", "health", "--worker"]
    env = {**stack.env(), "PYTHONPATH": str(ROOT)}
    alone = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=60)
    assert alone.returncode == 1 and "no live worker" in alone.stderr
    worker = Worker([Queue(stack.queue, connection=stack.redis)], connection=stack.redis)
    worker.register_birth()
    try:
        alive = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=60)
        assert alive.returncode == 0, alive.stderr
    finally:
        worker.register_death()
