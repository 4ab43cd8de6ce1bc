"""Fixtures for the agent tests: the scripted model server (real HTTP) and a local shell."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from codexbot.redact import Redactor
from sim.model import ScriptedModel, load_scripts
from tests.agent.support import (
    API_KEY,
    DEMO_REPO,
    DEMO_SCRIPT,
    MODEL_NAME,
    TEST_SCRIPTS,
    LocalShell,
)
from workers.agent import OpenAIModel, Trajectory


@pytest.fixture(scope="session")
def model_server() -> Iterator[ScriptedModel]:
    """One real server for the whole session, serving every test's script side by side."""
    with ScriptedModel(load_scripts(DEMO_SCRIPT) + TEST_SCRIPTS, api_key=API_KEY) as server:
        yield server


@pytest.fixture
def model(model_server: ScriptedModel) -> Iterator[OpenAIModel]:
    client = OpenAIModel(model_server.base_url, API_KEY, MODEL_NAME, timeout=20, max_retries=2)
    yield client
    client.close()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    return path


@pytest.fixture
def local_shell(workdir: Path) -> LocalShell:
    return LocalShell(workdir)


@pytest.fixture
def trajectory(tmp_path: Path) -> Trajectory:
    return Trajectory(tmp_path / "trajectory.jsonl", Redactor([API_KEY]))


@pytest.fixture
def demo_workdir(workdir: Path) -> Path:
    """A fresh copy of the demo repository, without the issue file the lead keeps next to it."""
    shutil.rmtree(workdir)
    shutil.copytree(DEMO_REPO, workdir, ignore=shutil.ignore_patterns("issue.md", ".pytest_cache"))
    return workdir
