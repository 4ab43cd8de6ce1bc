"""Prepared environments: setup once per key, reuse, rebuild on a changed lockfile, secrets."""

# ruff: noqa: S108 - /tmp here is the container's private tmpfs, not the host's

from __future__ import annotations

import base64
import hashlib
import threading
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from redis import Redis

from codexbot import keys
from sandbox.labels import REPO_LABEL, remove_task_containers
from sandbox.mirror import mirror_volume_name
from sandbox.prepared import (
    EnvSpec,
    SetupFailed,
    env_key,
    is_lockfile,
    setup_failure_text,
)
from workers.repoconfig import RepoConfig
from workers.workspace import MirrorCache, task_sandbox

from .conftest import git

SECRET_VALUE = "s3cr3t-INDEX-token-5b1f0c"
SETUP = (
    "python3 -m pip install -q --no-index --find-links wheels --target .deps -r requirements.txt",
    'test "$INDEX_TOKEN" = ' + SECRET_VALUE + " && echo token-was-seen",
)


# ------------------------------------------------------------------ pure


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("requirements.txt", True),
        ("requirements-dev.txt", True),
        ("sub/dir/poetry.lock", True),
        ("uv.lock", True),
        ("Pipfile.lock", True),
        ("web/package-lock.json", True),
        ("pnpm-lock.yaml", True),
        ("yarn.lock", True),
        ("go.sum", True),
        ("Cargo.lock", True),
        ("Gemfile.lock", True),
        ("requirements.in", False),
        ("package.json", False),
        ("notes/requirements.md", False),
    ],
)
def test_is_lockfile(path: str, expected: bool) -> None:
    assert is_lockfile(path) is expected


def test_env_key_depends_on_exactly_its_inputs() -> None:
    spec = EnvSpec.build(("make deps",), {"A": "1"}, {"requirements.txt": b"x==1\n"})
    key = env_key("sha256:base", spec, "o/r")
    assert key != env_key("sha256:base", spec, "o/other")
    assert key == env_key(
        "sha256:base",
        EnvSpec.build(("make deps",), {"A": "1"}, {"requirements.txt": b"x==1\n"}),
        "o/r",
    )
    assert key != env_key("sha256:other", spec, "o/r")
    assert key != env_key(
        "sha256:base",
        EnvSpec.build(("make deps2",), {"A": "1"}, {"requirements.txt": b"x==1\n"}),
        "o/r",
    )
    assert key != env_key(
        "sha256:base",
        EnvSpec.build(("make deps",), {"A": "2"}, {"requirements.txt": b"x==1\n"}),
        "o/r",
    )
    assert key != env_key(
        "sha256:base",
        EnvSpec.build(("make deps",), {"A": "1"}, {"requirements.txt": b"x==2\n"}),
        "o/r",
    )
    assert key != env_key(
        "sha256:base",
        EnvSpec.build(("make deps",), {"A": "1"}, {"r/requirements.txt": b"x==1\n"}),
        "o/r",
    )


def test_setup_failure_text_names_command_reason_and_tail() -> None:
    text = setup_failure_text("npm ci", "exited with code 1", "npm ERR! missing lockfile\n")
    assert text == (
        "setup failed: `npm ci` exited with code 1; the agent was not started.\n\n"
        "Last lines of its output:\n\n```\nnpm ERR! missing lockfile\n```"
    )
    assert "````\n```evil\n````" in setup_failure_text("x", "y", "```evil")


# ------------------------------------------------------------------ on the engine


def make_wheel(directory: Path, name: str, version: str) -> None:
    """A minimal pure-Python wheel, built by hand (no network, no build backend)."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": f"VERSION = {version!r}\n".encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = ""
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += f"{path},sha256={digest},{len(data)}\n"
    record += f"{dist}/RECORD,,\n"
    files[f"{dist}/RECORD"] = record.encode()
    with zipfile.ZipFile(directory / f"{name}-{version}-py3-none-any.whl", "w") as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)


def make_project(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "wheels").mkdir()
    for name in ("alpha", "beta", "gamma"):
        make_wheel(path / "wheels", name, "1.0")
    make_wheel(path / "wheels", "alpha", "2.0")
    (path / "requirements.txt").write_text("alpha==1.0\nbeta==1.0\ngamma==1.0\n")
    (path / ".gitignore").write_text(".deps/\n")
    (path / "app.py").write_text("import alpha\nprint(alpha.VERSION)\n")
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


@pytest.fixture
def project(
    tmp_path: Path, docker_client: docker.DockerClient
) -> Iterator[tuple[str, Path, MirrorCache]]:
    repo = f"test/prepared-{uuid.uuid4().hex[:8]}"
    yield repo, make_project(tmp_path / "upstream"), MirrorCache(tmp_path / "mirrors")
    for image in docker_client.images.list(filters={"label": f"{REPO_LABEL}={repo}"}):
        docker_client.images.remove(image.id, force=True)
    for volume in docker_client.volumes.list(filters={"name": mirror_volume_name(repo)}):
        volume.remove(force=True)


def run(
    client: docker.DockerClient,
    redis: Redis,
    image: str,
    project: tuple[str, Path, MirrorCache],
    tmp_path: Path,
    config: RepoConfig,
    check: str = "true",
    secrets: dict[str, str] | None = None,
) -> tuple[dict, str]:
    repo, upstream, cache = project
    url = f"file://{upstream}"
    mirror = cache.update(repo, url, token=None)
    start = cache.checkout(mirror, tmp_path / f"work-{uuid.uuid4().hex[:6]}", git_url=url)
    task = f"test-prep-{uuid.uuid4().hex[:8]}"
    timings: dict = {}
    try:
        with task_sandbox(
            client,
            redis,
            base_image=image,
            config=config,
            start=start,
            host_mirror=mirror,
            repo=repo,
            task_id=task,
            setup_secrets=secrets if secrets is not None else {"INDEX_TOKEN": SECRET_VALUE},
            timings=timings,
        ) as (box, prepared):
            timings["built"] = prepared.built
            timings["key"] = prepared.key
            output = box.exec(check, timeout=60).output
    finally:
        remove_task_containers(client, task)
        remove_task_containers(client, f"{task}-setup")
    return timings, output


@pytest.mark.docker
def test_setup_once_then_reuse_then_rebuild_on_a_changed_lockfile(
    docker_client: docker.DockerClient, sandbox_image: str, redis: Redis, project, tmp_path: Path
) -> None:
    config = RepoConfig(setup=SETUP, env=(("APP_MODE", "test"), ("PYTHONPATH", ".deps")))
    check = "python3 app.py; echo $APP_MODE; git status --porcelain; echo end"
    first, output = run(docker_client, redis, sandbox_image, project, tmp_path, config, check)
    assert first["built"] is True and first["setup"] > 0
    assert output == "1.0\ntest\nend\n"  # deps installed, env set, setup leftovers not a change

    second, output = run(docker_client, redis, sandbox_image, project, tmp_path, config, check)
    assert second["built"] is False and second["key"] == first["key"]
    assert output == "1.0\ntest\nend\n"
    assert redis.hget(keys.ENV_LAST_USED, first["key"])

    _, upstream, _ = project
    (upstream / "requirements.txt").write_text("alpha==2.0\nbeta==1.0\ngamma==1.0\n")
    git(upstream, "commit", "-q", "-am", "bump alpha")
    third, output = run(docker_client, redis, sandbox_image, project, tmp_path, config, check)
    assert third["built"] is True and third["key"] != first["key"]
    assert output.startswith("2.0\n")


@pytest.mark.docker
def test_the_setup_secret_is_nowhere_in_the_agent_phase(
    docker_client: docker.DockerClient, sandbox_image: str, redis: Redis, project, tmp_path: Path
) -> None:
    config = RepoConfig(setup=SETUP[1:], setup_secrets=("INDEX_TOKEN",))
    check = (
        "env; cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n'; "
        "ps -eo args; "
        "grep -rlsF -e s3cr3t-INDEX /workspace /home /tmp /etc /usr/local /opt /var /mirror; "
        "echo searched"
    )
    _, output = run(docker_client, redis, sandbox_image, project, tmp_path, config, check)
    assert output.rstrip().endswith("searched")
    assert "INDEX_TOKEN" not in output
    assert SECRET_VALUE not in output and "s3cr3t" not in output.replace("s3cr3t-INDEX /", "")
    images = docker_client.images.list(filters={"label": f"{REPO_LABEL}={project[0]}"})
    for image in images:
        assert SECRET_VALUE not in str(image.attrs)


@pytest.mark.docker
def test_failing_setup_names_the_command_and_its_output_with_secrets_masked(
    docker_client: docker.DockerClient, sandbox_image: str, redis: Redis, project, tmp_path: Path
) -> None:
    config = RepoConfig(
        setup=(
            "echo preparing",
            'echo "using $INDEX_TOKEN"; echo "no such wheel: omega" >&2; exit 3',
        )
    )
    with pytest.raises(SetupFailed) as failure:
        run(docker_client, redis, sandbox_image, project, tmp_path, config)
    message = str(failure.value)
    assert message.startswith(
        'setup failed: `echo "using $INDEX_TOKEN"; echo "no such wheel: omega" >&2; exit 3` '
        "exited with code 3; the agent was not started."
    )
    assert "no such wheel: omega" in message
    assert "using ********" in message and SECRET_VALUE not in message
    assert not docker_client.images.list(filters={"label": f"{REPO_LABEL}={project[0]}"})


@pytest.mark.docker
def test_a_secret_stored_by_setup_fails_setup_and_no_image_is_made(
    docker_client: docker.DockerClient, sandbox_image: str, redis: Redis, project, tmp_path: Path
) -> None:
    config = RepoConfig(setup=('echo "token=$INDEX_TOKEN" > ~/.indexrc',))
    with pytest.raises(SetupFailed, match=r"setup secret INDEX_TOKEN was left in: /home/sandbox"):
        run(docker_client, redis, sandbox_image, project, tmp_path, config)
    assert not docker_client.images.list(filters={"label": f"{REPO_LABEL}={project[0]}"})


ENCODED_BY_SETUP = {
    "base64": 'printf %s "$INDEX_TOKEN" | base64 > ~/.indexrc',
    "base64 inside a longer text": 'printf "auth=%s" "$INDEX_TOKEN" | base64 -w0 > ~/.npmrc',
    "hex": 'printf %s "$INDEX_TOKEN" | od -An -tx1 | tr -d " \\n" > ~/.indexrc',
    "reversed": 'printf %s "$INDEX_TOKEN" | rev > ~/.indexrc',
    "URL-encoded": (
        "python3 -c 'import os, urllib.parse as u; "
        'print(u.quote(os.environ["INDEX_TOKEN"], safe=""))\' > ~/.indexrc'
    ),
}
ENCODED_SECRET = "s3cr3t/INDEX+token=5b1f0c"  # URL-encoding changes it


@pytest.mark.docker
@pytest.mark.parametrize("command", ENCODED_BY_SETUP.values(), ids=ENCODED_BY_SETUP.keys())
def test_a_secret_stored_encoded_by_setup_fails_setup_too(
    docker_client: docker.DockerClient,
    sandbox_image: str,
    redis: Redis,
    project,
    tmp_path: Path,
    command: str,
) -> None:
    config = RepoConfig(setup=(command,))
    secrets = {"INDEX_TOKEN": ENCODED_SECRET}
    with pytest.raises(SetupFailed, match=r"setup secret INDEX_TOKEN was left in: /home/sandbox"):
        run(docker_client, redis, sandbox_image, project, tmp_path, config, secrets=secrets)
    assert not docker_client.images.list(filters={"label": f"{REPO_LABEL}={project[0]}"})


@pytest.mark.docker
def test_concurrent_tasks_with_one_key_build_it_once(
    docker_client: docker.DockerClient, sandbox_image: str, redis: Redis, project, tmp_path: Path
) -> None:
    config = RepoConfig(setup=("sleep 1; echo built > /workspace/.built",))
    results: list[dict] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            results.append(
                run(docker_client, redis, sandbox_image, project, tmp_path, config, "cat .built")[0]
            )
        except BaseException as error:  # noqa: BLE001 - re-raised by the test below
            errors.append(error)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert sorted(r["built"] for r in results) == [False, False, True]
    assert len({r["key"] for r in results}) == 1
