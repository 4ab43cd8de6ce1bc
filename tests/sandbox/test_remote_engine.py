"""Everything works when DOCKER_HOST is a TCP address (as for a remote engine): no shared disk.

The engine is reached through a TCP proxy on loopback, so the Docker client takes its TCP code
path (the attached exec stream included); nothing the sandbox sends names a host path: the
workspace, the bundle and the patch all travel through the API.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from redis import Redis

from sandbox.changes import ChangeGuard, ChangePolicy
from sandbox.container import Sandbox
from sandbox.labels import remove_task_containers
from sandbox.mirror import mirror_volume_name
from sandbox.prepared import Prepared
from workers.repoconfig import RepoConfig
from workers.workspace import MirrorCache, task_sandbox

from .conftest import git, make_repo

pytestmark = pytest.mark.docker


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, target):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)


@pytest.fixture(scope="module")
def tcp_engine() -> Iterator[str]:
    """tcp://127.0.0.1:PORT forwarding to the local engine's unix socket."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX)
            engine.connect("/var/run/docker.sock")
            threading.Thread(target=_pipe, args=(client, engine), daemon=True).start()
            threading.Thread(target=_pipe, args=(engine, client), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield f"tcp://127.0.0.1:{port}"
    stop.set()
    listener.close()


def test_sandbox_over_tcp(tcp_engine: str, sandbox_image: str, tmp_path: Path) -> None:
    client = docker.DockerClient(base_url=tcp_engine, version="1.41")
    repo = make_repo(tmp_path / "repo")
    base = git(repo, "rev-parse", "HEAD").strip()
    task = f"test-tcp-{uuid.uuid4().hex[:8]}"
    try:
        with Sandbox(client, image=sandbox_image, task_id=task) as box:
            box.put_workspace(repo)
            assert box.exec("cd /tmp && echo hi").output == "hi\n"
            assert box.exec("pwd").output == "/tmp\n"
            assert box.exec("sleep 100", timeout=1).timed_out
            box.exec("cd /workspace && echo more >> calc.py")
            assert b"+more" in ChangeGuard(box, base, ChangePolicy()).result().patch
    finally:
        remove_task_containers(client, task)
        client.close()


def tasks_over_tcp(
    tcp_engine: str, image: str, redis: Redis, tmp_path: Path, config: RepoConfig, runs: int = 2
) -> Iterator[tuple[int, Sandbox, Prepared, str]]:
    """`runs` tasks of one new repository through the TCP engine: (run, box, prepared, sha)."""
    client = docker.DockerClient(base_url=tcp_engine, version="1.41")
    upstream = make_repo(tmp_path / "upstream")
    name = f"test/tcp-{uuid.uuid4().hex[:8]}"
    cache = MirrorCache(tmp_path / "mirrors")
    url = f"file://{upstream}"
    try:
        for run in range(runs):
            mirror = cache.update(name, url, token=None)
            start = cache.checkout(mirror, tmp_path / f"work{run}", git_url=url)
            with task_sandbox(
                client,
                redis,
                base_image=image,
                config=config,
                start=start,
                host_mirror=mirror,
                repo=name,
                task_id=f"test-tcp-{uuid.uuid4().hex[:8]}",
            ) as (box, prepared):
                yield run, box, prepared, start.base_sha
    finally:
        for image_ in client.images.list(filters={"label": f"codexbot.repo={name}"}):
            client.images.remove(image_.id, force=True)
        for volume in client.volumes.list(filters={"label": f"codexbot.repo={name}"}):
            volume.remove(force=True)
        for volume in client.volumes.list(filters={"name": mirror_volume_name(name)}):
            volume.remove(force=True)
        client.close()


def test_warm_workspace_over_tcp(
    tcp_engine: str, sandbox_image: str, redis: Redis, tmp_path: Path
) -> None:
    config = RepoConfig(setup=("echo ok > .setup-ran",))
    for run, box, prepared, sha in tasks_over_tcp(
        tcp_engine, sandbox_image, redis, tmp_path, config
    ):
        assert prepared.built is (run == 0)
        assert box.exec("cat .setup-ran; git rev-parse HEAD").output.split() == ["ok", sha]


def test_layered_workspace_over_tcp(
    tcp_engine: str, sandbox_image: str, redis: Redis, tmp_path: Path
) -> None:
    """The layers' paths come from the engine (volume Mountpoints): nothing of the worker's disk."""
    for run, box, _, sha in tasks_over_tcp(
        tcp_engine, sandbox_image, redis, tmp_path, RepoConfig(), runs=3
    ):
        # The first task's workspace is plain; the tree made meanwhile carries the others.
        filesystem, head = box.exec("stat -f -c %T .; git rev-parse HEAD").output.split()
        assert (filesystem == "overlayfs", head) == (run > 0, sha)
