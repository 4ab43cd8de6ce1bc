"""``python -m sim.github`` runs the simulator in its own process, seeded over ``/_sim``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.sim.conftest import APP_ID, WEBHOOK_SECRET, WebhookReceiver, app_jwt

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def standalone(
    tmp_path: Path, app_key: tuple[bytes, bytes], webhook_receiver: WebhookReceiver
) -> Iterator[str]:
    public_key = tmp_path / "app.pub.pem"
    public_key.write_bytes(app_key[1])
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sim.github",
            "--port",
            "0",
            "--webhook-url",
            webhook_receiver.url,
            "--app-id",
            str(APP_ID),
            "--public-key",
            str(public_key),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "GITHUB_SIM_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "PYTHONPATH": str(REPO_ROOT),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())  # blocks until listening (or exit -> "")
        yield ready["url"]
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def test_seed_and_inspect_over_http(
    standalone: str,
    source_dir: Path,
    app_key: tuple[bytes, bytes],
    webhook_receiver: WebhookReceiver,
) -> None:
    created = requests.post(
        f"{standalone}/_sim/repos",
        json={"full_name": "octo-org/widgets", "source_dir": str(source_dir), "installation_id": 3},
        timeout=10,
    )
    assert created.status_code == 201
    issue = requests.post(
        f"{standalone}/_sim/issues",
        json={"full_name": "octo-org/widgets", "title": "bug", "body": "text"},
        timeout=10,
    ).json()
    delivery = requests.post(
        f"{standalone}/_sim/labels",
        json={"full_name": "octo-org/widgets", "number": issue["number"], "label": "codex"},
        timeout=30,
    ).json()
    assert delivery["status_code"] == 202
    assert json.loads(webhook_receiver.received[-1].body)["label"]["name"] == "codex"

    token = requests.post(
        f"{standalone}/api/v3/app/installations/3/access_tokens",
        headers={"Authorization": f"Bearer {app_jwt(app_key[0])}"},
        timeout=10,
    ).json()["token"]
    requests.post(
        f"{standalone}/api/v3/repos/octo-org/widgets/issues/1/comments",
        headers={"Authorization": f"token {token}"},
        json={"body": "On it"},
        timeout=10,
    )
    state = requests.get(f"{standalone}/_sim/state", timeout=10).json()
    widgets = state["repos"]["octo-org/widgets"]
    assert [c["body"] for c in widgets["comments"]] == ["On it"]
    assert list(widgets["branches"]) == ["main"]
    assert state["deliveries"][0]["event"] == "issues"
