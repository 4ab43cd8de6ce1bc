"""ensure_image against the real engine: quick and idempotent once the images exist."""

from __future__ import annotations

import time

import docker
import pytest

from sandbox.image import BASE_IMAGE, CONTEXT_DIR, CONTEXT_HASH_LABEL, context_hash, ensure_image

pytestmark = pytest.mark.docker


def test_ensure_image_is_quick_and_idempotent_when_images_exist(
    docker_client: docker.DockerClient, sandbox_image: str
) -> None:
    started = time.monotonic()
    image_id = ensure_image(docker_client, sandbox_image)
    assert time.monotonic() - started < 1
    assert ensure_image(docker_client, sandbox_image) == image_id

    image = docker_client.images.get(sandbox_image)
    base = docker_client.images.get(BASE_IMAGE)
    assert image.id == image_id
    assert image.labels[CONTEXT_HASH_LABEL] == context_hash(CONTEXT_DIR, str(base.id))


def test_image_runs_as_sandbox_user_with_the_tools(
    docker_client: docker.DockerClient, sandbox_image: str
) -> None:
    output = docker_client.containers.run(
        sandbox_image,
        [
            "bash",
            "-c",
            "id -u; stat -c %u:%g /workspace; git config user.name; python3 -m pytest --version; "
            "command -v setsid timeout pkill patch less diff find grep sed",
        ],
        network_mode="none",
        remove=True,
        stderr=True,
    ).decode()
    lines = output.splitlines()
    assert lines[:3] == ["1000", "1000:1000", "codex-sandbox"]
    assert "pytest" in output
    assert len([line for line in lines if line.startswith("/")]) == 9


def test_a_stale_sandbox_image_is_rebuilt(
    docker_client: docker.DockerClient, sandbox_image: str
) -> None:
    name = "codexbot-sandbox:test-stale"
    docker_client.images.get(BASE_IMAGE).tag(name)  # same name, but without the context label
    try:
        image_id = ensure_image(docker_client, name)
        rebuilt = docker_client.images.get(name)
        assert rebuilt.id == image_id
        assert rebuilt.id != docker_client.images.get(BASE_IMAGE).id
        assert (
            rebuilt.labels[CONTEXT_HASH_LABEL]
            == docker_client.images.get(sandbox_image).labels[CONTEXT_HASH_LABEL]
        )
    finally:
        docker_client.images.remove(name)
