"""One hardened, offline container per task, where every command of the agent runs.

    with Sandbox(client, image=DEFAULT_IMAGE, task_id="42") as box:
        box.put_workspace(checkout_dir)
        result = box.exec("python3 -m pytest -q", timeout=300)

What leaves it is the change guard's patch (`sandbox.changes.ChangeGuard.result`).

The checkout is copied in (put_archive into a per-task volume) or made inside from the engine-side
mirror (`sandbox.mirror`), never bind-mounted: the worker and the Docker engine may run on
different hosts. Container and volume are removed when the block ends, also when it raises; both
carry the task's labels so a reaper finds strays after a crash (`sandbox.reaper`).

Commands go to the exec server (`sandbox/execserver.py`), one process per container started with
one `docker exec` whose stdin stays attached: a command costs milliseconds. The server enforces
the timeout (killing the command's whole process group), keeps head and tail of the output, keeps
the working directory between commands and kills whatever a command leaves running.
"""

from __future__ import annotations

import base64
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import docker
import docker.errors
import requests
import structlog

from codexbot.textutil import CappedOutput
from sandbox.channel import (
    SIDE_OUTPUT_BYTES,
    ChannelLost,
    ChannelStuck,
    ExecChannel,
    close_stream,
    pump,
)
from sandbox.hardening import (
    BASE_ENVIRONMENT,
    SANDBOX_GID,
    SANDBOX_HOME,
    SANDBOX_UID,
    WORKSPACE,
    SandboxLimits,
    container_options,
    workspace_volume_options,
)
from sandbox.labels import (
    TASK_LABEL,
    container_name,
    remove_task_containers,
    resource_labels,
    volume_name,
)
from sandbox.output import (
    RESTART_NOTE,
    SERVER_RESTART_NOTE,
    ExecResult,
    Reply,
    SandboxError,
    exec_result,
)

__all__ = ["ExecResult", "Reply", "Sandbox", "SandboxError"]

log = structlog.get_logger(__name__)

CLIENT_GRACE_SECONDS = 10  # beyond a command's timeout before we stop waiting for the server
TIMEOUT_EXIT_CODE = 124
SERVER_LOST_EXIT_CODE = 137


def tar_for_sandbox_user(src_dir: Path, into: Any) -> None:
    def owned_by_sandbox(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid, info.gid = SANDBOX_UID, SANDBOX_GID
        info.uname = info.gname = "sandbox"
        return info

    with tarfile.open(fileobj=into, mode="w") as archive:
        archive.add(str(src_dir), arcname=".", filter=owned_by_sandbox)


class Sandbox:
    """A hardened container with the task's workspace volume; a context manager.

    `volumes` mounts more named volumes (the engine-side mirror); `owned_volumes` (volume
    objects) are removed with the container, in their order (a layered workspace's, which the
    caller made). `read_only=False` and `home_tmpfs=False` are for the setup phase alone, whose
    result is committed as an image.

    `idle` makes an idle sandbox of the warm pool (`sandbox.pool`): `task_id` is the pool's own
    name for it, and it is labelled `idle` alone (no task label: nothing of a task is in it), left
    running when the object is dropped; a task then takes it with `Sandbox.taken`.
    """

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        image: str,
        task_id: str,
        labels: dict[str, str] | None = None,
        limits: SandboxLimits = SandboxLimits(),  # noqa: B008 - frozen dataclass
        env: dict[str, str] | None = None,
        volumes: dict[str, dict[str, str]] | None = None,
        workspace_volume: bool = True,
        setup_phase: bool = False,
        home_volume: bool = False,
        owned_volumes: tuple[Any, ...] = (),
        idle: dict[str, str] | None = None,
    ) -> None:
        self._client = client
        self._image = image
        self._task_id = task_id
        self._labels = labels
        self._limits = limits
        self._env = env or {}
        self._volumes = volumes or {}
        self._workspace_volume = workspace_volume
        self._setup_phase = setup_phase
        self._home_volume = home_volume
        self._container: Any = None
        self._volume: Any = None
        self._home: Any = None
        self._owned = owned_volumes
        self._idle = idle
        self._channel: ExecChannel | None = None
        self._notes: list[str] = []  # said once, at the start of the next command's output
        # One command at a time on the one exec server, whichever thread sends it (the job runs
        # the tests before the agent's first command while the model reads the task).
        self._turn = threading.RLock()
        self._log = log.bind(task_id=task_id)

    # -- lifecycle

    def __enter__(self) -> Sandbox:
        if self._container is None:  # else taken from the pool, already started
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        problems = self.remove()
        # Never mask the body's own exception with a cleanup failure; it is logged either way.
        if problems and exc_type is None:
            raise SandboxError(
                f"could not remove the sandbox of task {self._task_id}: {'; '.join(problems)}"
            )

    @classmethod
    def taken(
        cls,
        client: docker.DockerClient,
        container: Any,
        *,
        task_id: str,
        limits: SandboxLimits,
        owned_volumes: tuple[Any, ...],
    ) -> Sandbox:
        """A task's sandbox in an idle container of the pool, already started; it and
        `owned_volumes` (its workspace's) are removed when the task's block ends."""
        box = cls(client, image=str(container.attrs["Image"]), task_id=task_id, limits=limits)
        box._container, box._owned = container, owned_volumes
        try:
            box._channel = box._open_channel()
        except (ChannelLost, ChannelStuck, docker.errors.DockerException) as error:
            box.remove()
            raise SandboxError(f"the pooled sandbox's server did not start: {error}") from error
        box._log.info("sandbox.taken", container=box.container_id)
        return box

    def start(self) -> None:
        labels = self._idle or resource_labels(self._task_id, self._labels)
        try:
            # Leftovers of an earlier attempt at this task (a worker that died) would otherwise
            # clash by name, and an old volume would leak its files into this workspace.
            owned = frozenset(volume.name for volume in self._owned)
            if self._idle is None and remove_task_containers(
                self._client, self._task_id, keep=owned
            ):
                self._log.warning("sandbox.stale_removed")
            mounts = dict(self._volumes)
            if self._workspace_volume:
                volume = self._client.volumes.create(
                    name=volume_name(self._task_id),
                    labels=labels,
                    **workspace_volume_options(self._limits),
                )
                if (volume.attrs.get("Labels") or {}).get(TASK_LABEL) != labels.get(TASK_LABEL):
                    raise SandboxError(f"volume {volume.name} already exists for another task")
                self._volume = volume
                mounts[volume.name] = {"bind": WORKSPACE, "mode": "rw"}
            if self._home_volume:
                # A prepared image's home (what setup installed there) is copied up into it.
                self._home = self._client.volumes.create(
                    name=volume_name(self._task_id).replace("-workspace", "-home"), labels=labels
                )
                mounts[self._home.name] = {"bind": SANDBOX_HOME, "mode": "rw"}
            options = container_options(
                self._limits, setup_phase=self._setup_phase, home_tmpfs=not self._home_volume
            )
            self._container = self._client.containers.create(
                self._image,
                command=["sleep", "infinity"],
                name=container_name(self._task_id),
                labels=labels,
                environment={**BASE_ENVIRONMENT, **self._env},
                volumes=mounts,
                working_dir=WORKSPACE,
                detach=True,
                **options,
            )
            self._container.start()
            self._channel = self._open_channel()
        except docker.errors.ImageNotFound as error:
            self.remove()
            raise SandboxError(
                f"sandbox image {self._image!r} not found; "
                "build it with `python -m sandbox.image ensure`"
            ) from error
        except docker.errors.APIError as error:
            self.remove()
            raise SandboxError(
                f"could not create the sandbox container: {error.explanation or error}"
            ) from error
        except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
            self.remove()
            raise SandboxError(f"the Docker engine is unreachable: {error}") from error
        except (ChannelLost, ChannelStuck) as error:
            self.remove()
            raise SandboxError(f"the sandbox's command server did not start: {error}") from error
        self._log.info("sandbox.started", container=self.container_id, image=self._image)

    def leave_running(self) -> None:
        """Forget the container and its volumes, which go on running: an idle one of the pool."""
        self._drop_channel()
        self._container = self._volume = self._home = None
        self._owned = ()

    def remove(self) -> list[str]:
        """Remove container and volume; returns what went wrong (also logged), [] when all went."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        problems: list[str] = []
        resources = (
            ("container", self._container),
            ("volume", self._volume),
            ("volume", self._home),
            *(("volume", volume) for volume in self._owned),
        )
        for kind, resource in resources:
            if resource is None:
                continue
            try:
                if kind == "container":
                    resource.remove(force=True, v=True)
                else:
                    resource.remove(force=True)
            except docker.errors.NotFound:
                pass  # already gone, which is what we want
            except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
                problems.append(f"{kind}: {error}")
                self._log.error("sandbox.remove_failed", kind=kind, error=str(error))
        if self._container is not None and not problems:
            self._log.info("sandbox.removed", container=self._container.id)
        self._container = self._volume = self._home = None
        self._owned = ()
        return problems

    @property
    def container_id(self) -> str:
        if self._container is None:
            raise SandboxError("the sandbox is not running; use it as a context manager")
        return str(self._container.id)

    @property
    def client(self) -> docker.DockerClient:
        return self._client

    # -- workspace

    def put_workspace(self, src_dir: Path) -> None:
        """Copy `src_dir` (with its .git) into /workspace, every entry owned by the sandbox user."""
        with tempfile.TemporaryFile() as archive:
            tar_for_sandbox_user(src_dir, archive)
            archive.seek(0)
            self.put_archive(WORKSPACE, archive)

    def put_archive(self, path: str, archive: Any) -> None:
        """Unpack a tar stream (file or bytes) at `path` in the container."""
        try:
            copied = self._client.api.put_archive(self.container_id, path, archive)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
            raise SandboxError(f"could not copy files into the sandbox: {error}") from error
        if not copied:
            raise SandboxError("the Docker engine refused to copy files into the sandbox")

    # -- commands

    def exec(
        self,
        command: str,
        *,
        timeout: float = 120,
        workdir: str | None = None,
        max_output: int = 64_000,
        env: dict[str, str] | None = None,
    ) -> ExecResult:
        """Run `command` with bash as the sandbox user; never longer than `timeout` seconds.

        It starts in the directory the previous command ended in (at first /workspace), unless
        `workdir` names another for this one command. `env` adds variables for this command only.
        """
        with self._turn:  # the notes belong to this command
            notes = "".join(self._notes)
            reply = self.run_raw(
                command, timeout=timeout, workdir=workdir, max_output=max_output, env=env
            )
            notes += "".join(self._notes)
            self._notes.clear()
        self._log.info(
            "sandbox.exec",
            exit_code=reply.exit_code,
            timed_out=reply.timed_out,
            output_bytes=reply.total,
            duration_ms=reply.duration_ms,
        )
        return exec_result(command, reply, timeout=timeout, before=notes)

    def run_raw(
        self,
        command: str,
        *,
        timeout: float,
        workdir: str | None = None,
        max_output: int = 64_000,
        env: dict[str, str] | None = None,
    ) -> Reply:
        """One command through the exec server; output as bytes (head and tail)."""
        with self._turn:
            return self._run_raw({"cmd": command, "env": env or {}}, timeout, workdir, max_output)

    def cancel(self, reason: str) -> bool:
        """Stop the command running now (from another thread than the one that runs it): its
        process group and whatever it left are killed at once, and its output ends with
        ``[stopped: <reason>; ...]``. False when no command runs."""
        channel = self._channel
        return channel.cancel(reason) if channel is not None else False

    def run_python(
        self,
        source: str,
        args: list[str],
        *,
        timeout: float,
        workdir: str | None = None,
        max_output: int = 64_000,
    ) -> Reply:
        """The worker's own Python `source` (never agent input), `args` as its sys.argv[1:].

        A fork of the exec server runs it, like a command otherwise (timeout, output cap, what
        it leaves running is killed), without an interpreter to start or modules to import.
        """
        with self._turn:
            return self._run_raw({"cmd": source, "python": args}, timeout, workdir, max_output)

    def _run_raw(
        self, request: dict[str, Any], timeout: float, workdir: str | None, max_output: int
    ) -> Reply:
        started = time.monotonic()
        channel = self._ensure_channel()
        request = {**request, "timeout": timeout, "cwd": workdir, "max": max_output}
        try:
            message = channel.call(request, time.monotonic() + timeout + CLIENT_GRACE_SECONDS)
        except ChannelLost as error:
            self._log.warning("sandbox.server_lost", error=str(error)[-500:])
            self._drop_channel()
            return Reply.without_output(SERVER_LOST_EXIT_CODE, started, lost=True)
        except ChannelStuck:
            # The server itself is wedged (starved of memory or pids): restart the container.
            self._log.error("sandbox.server_stuck")
            self._drop_channel()
            self._restart_container()
            return Reply.without_output(TIMEOUT_EXIT_CODE, started, timed_out=True)
        return Reply(
            exit_code=int(message["exit"]),
            timed_out=bool(message["timed_out"]),
            total=int(message["total"]),
            head=base64.b64decode(message["head"]),
            tail=base64.b64decode(message["tail"]),
            cwd=str(message.get("cwd") or WORKSPACE),
            duration_ms=int(message["ms"]),
            strays=list(message.get("strays") or []),
            stopped=message.get("stopped"),
            notes=[str(note) for note in message.get("notes") or []],
            ended_in=message.get("ended_in"),
        )

    def _open_channel(self) -> ExecChannel:
        env = {"CODEXBOT_WORKSPACE": WORKSPACE}
        if self._limits.workspace_bytes:
            env["CODEXBOT_WORKSPACE_MAX"] = str(self._limits.workspace_bytes)
        return ExecChannel(self._client, self.container_id, env)

    def _drop_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def _ensure_channel(self) -> ExecChannel:
        if self._channel is not None and not self._channel.alive():
            self._drop_channel()  # died after its last answer: the next command gets a new one
        if self._channel is not None:
            return self._channel
        restarted = self._ensure_running()
        try:
            self._channel = self._open_channel()
        except (ChannelLost, ChannelStuck, docker.errors.APIError):
            # The container died between the check and the exec: once more, from a restart.
            self._restart_container()
            restarted = True
            try:
                self._channel = self._open_channel()
            except (ChannelLost, ChannelStuck, docker.errors.DockerException) as error:
                raise SandboxError(f"the sandbox's command server cannot start: {error}") from error
        self._notes.append(RESTART_NOTE if restarted else SERVER_RESTART_NOTE)
        return self._channel

    def _ensure_running(self) -> bool:
        """Start the container again if a command killed its main process; True if it did.

        The workspace is a volume, so it survives; /tmp, the home directory and background
        processes do not.
        """
        try:
            state = self._client.api.inspect_container(self.container_id)["State"]
            if state.get("Running"):
                return False
            self._log.warning("sandbox.restarted", exit_code=state.get("ExitCode"))
            self._client.api.start(self.container_id)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
            raise SandboxError(
                f"the sandbox container is gone or cannot be started: {error}"
            ) from error
        return True

    def _restart_container(self) -> None:
        try:
            self._client.api.restart(self.container_id, timeout=1)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
            raise SandboxError(f"the sandbox container cannot be restarted: {error}") from error

    def exec_as_root(self, argv: list[str], *, timeout: float = 300) -> tuple[int, bytes]:
        """A worker-owned step (never agent input) run as root with a plain `docker exec`.

        Root here has no capabilities: it can write only what root owns (the engine-side mirror),
        which the sandbox user cannot. Returns exit code and output (capped).
        """
        output = CappedOutput(SIDE_OUTPUT_BYTES * 4)
        try:
            exec_id = self._client.api.exec_create(
                self.container_id, argv, stdout=True, stderr=True, user="0:0", workdir="/"
            )["Id"]
            sock = self._client.api.exec_start(exec_id, socket=True)
            try:
                finished = pump(sock, time.monotonic() + timeout, lambda _s, d: output.add(d))
            finally:
                close_stream(sock)
            if not finished:
                raise SandboxError(f"{argv[0]} took longer than {timeout:g} s")
            deadline = time.monotonic() + 5
            while True:
                info = self._client.api.exec_inspect(exec_id)
                if not info.get("Running") and info.get("ExitCode") is not None:
                    return int(info["ExitCode"]), output.data()
                if time.monotonic() > deadline:
                    return 137, output.data()
                time.sleep(0.005)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
            raise SandboxError(f"could not run {argv[0]} in the sandbox: {error}") from error
