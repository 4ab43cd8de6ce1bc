"""`codexbot sandbox build|ls|prune`: the pure planning, then the commands on the real engine."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import click
import docker
import pytest
from click.testing import CliRunner
from redis import Redis

from codexbot import keys
from sandbox.cli import EnvImage, parse_duration, parse_size, plan_prune, sandbox
from sandbox.labels import REPO_LABEL
from sandbox.mirror import mirror_volume_name
from sandbox.prepared import setup_secret_values

from .conftest import git

DAY = 86400
GB = 10**9


@pytest.mark.parametrize(
    ("text", "size"),
    [("20GB", 20 * GB), ("512MiB", 512 * 2**20), ("1.5gb", 1_500_000_000), ("100", 100)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "GB", "20 parsecs", "-1GB"])
def test_parse_size_refuses_nonsense(text: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_size(text)


@pytest.mark.parametrize(("text", "seconds"), [("7d", 7 * DAY), ("12h", 43200), ("2w", 14 * DAY)])
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


def image(key: str, size_gb: float, used_days_ago: float, now: float) -> EnvImage:
    return EnvImage(
        key, key, "o/r", int(size_gb * GB), now - 30 * DAY, now - used_days_ago * DAY, ()
    )


def test_plan_prune_removes_stale_then_least_recently_used_over_budget() -> None:
    now = 1_000_000_000.0
    images = [
        image("stale", 1, 10, now),
        image("old", 8, 5, now),
        image("mid", 8, 2, now),
        image("new", 8, 0.1, now),
    ]
    plan = plan_prune(images, now=now, older_than=7 * DAY, max_total=20 * GB)
    assert [(i.key, reason.split()[0]) for i, reason in plan] == [
        ("stale", "unused"),
        ("old", "least"),
    ]
    assert plan_prune(images, now=now, older_than=30 * DAY, max_total=100 * GB) == []


def test_setup_secrets_come_only_from_their_prefix() -> None:
    environ = {
        "CODEX_SETUP_SECRET_NPM_TOKEN": "n",
        "CODEX_SETUP_SECRET_NPM_TOKEN_REPOS": "octo/*",
        "OPENAI_API_KEY": "sk-x",
    }
    names = ("NPM_TOKEN", "OPENAI_API_KEY", "MISSING")
    assert setup_secret_values(names, environ, repo="octo/widgets") == {"NPM_TOKEN": "n"}


def upstream_with_config(tmp_path: Path, codex_yml: str) -> Path:
    """A one-commit repository whose .github/codex.yml holds `codex_yml`."""
    upstream = tmp_path / "upstream"
    (upstream / ".github").mkdir(parents=True)
    (upstream / ".github" / "codex.yml").write_text(codex_yml)
    git(upstream, "init", "-q", "-b", "main")
    git(upstream, "add", "-A")
    git(upstream, "commit", "-q", "-m", "initial")
    return upstream


def cli_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_url: str) -> None:
    """The settings `codexbot sandbox build --git-url` needs (no GitHub or model is reached)."""
    for name, value in {
        "GITHUB_APP_ID": "1",
        "GITHUB_PRIVATE_KEY": "unused",
        "GITHUB_WEBHOOK_SECRET": "unused",
        "OPENAI_API_KEY": "sk-unused",
        "REDIS_URL": redis_url,
        "CODEX_DATA_DIR": str(tmp_path / "data"),
    }.items():
        monkeypatch.setenv(name, value)


@pytest.mark.docker
def test_build_ls_prune_on_the_engine(
    docker_client: docker.DockerClient,
    sandbox_image: str,
    redis: Redis,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo_name = f"test/cli-{uuid.uuid4().hex[:8]}"
    upstream = upstream_with_config(tmp_path, "setup:\n  - echo prepared > .prepared\n")
    cli_settings(monkeypatch, tmp_path, redis_url)
    monkeypatch.setenv("CODEX_SANDBOX_IMAGE", sandbox_image)
    runner = CliRunner()
    try:
        args = ["build", "--repo", repo_name, "--git-url", f"file://{upstream}"]
        built = runner.invoke(sandbox, args)
        assert built.exit_code == 0, built.output
        assert "built for " + repo_name in built.output
        again = runner.invoke(sandbox, args)
        assert "already prepared for " + repo_name in again.output

        listed = runner.invoke(sandbox, ["ls", "--json"])
        ours = [json.loads(line) for line in listed.output.splitlines() if repo_name in line]
        assert len(ours) == 1 and ours[0]["size"] > 0
        table = runner.invoke(sandbox, ["ls"]).output
        assert table.startswith("KEY") and repo_name in table

        key = ours[0]["key"]
        redis.hset(keys.ENV_LAST_USED, key, "1")  # last used in 1970
        dry = runner.invoke(
            sandbox, ["prune", "--older-than", "7d", "--max-total", "1TB", "--dry-run"]
        )
        assert f"would remove {key[:16]} ({repo_name})" in dry.output
        pruned = runner.invoke(sandbox, ["prune", "--older-than", "7d", "--max-total", "1TB"])
        assert f"removed {key[:16]} ({repo_name}" in pruned.output
        assert not docker_client.images.list(filters={"label": f"{REPO_LABEL}={repo_name}"})
    finally:
        for leftover in docker_client.images.list(filters={"label": f"{REPO_LABEL}={repo_name}"}):
            docker_client.images.remove(leftover.id, force=True)
        for volume in docker_client.volumes.list(filters={"name": mirror_volume_name(repo_name)}):
            volume.remove(force=True)


def test_build_reports_an_invalid_config_with_its_line(
    tmp_path: Path,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    docker_client: docker.DockerClient,
) -> None:
    upstream = upstream_with_config(tmp_path, "test: ok\nsetpu: [x]\n")
    cli_settings(monkeypatch, tmp_path, redis_url)
    result = CliRunner().invoke(
        sandbox, ["build", "--repo", "o/bad", "--git-url", f"file://{upstream}"]
    )
    assert result.exit_code == 1
    assert "Error: .github/codex.yml, line 2: unknown key 'setpu'" in result.output
