"""One hardened, offline container per task, where every command of the agent runs.

    with Sandbox(client, image=DEFAULT_IMAGE, task_id="42") as box:
        box.put_workspace(checkout_dir)
        result = box.exec("python3 -m pytest -q", timeout=300)
        patch = box.diff(base_commit)

The checkout is copied in (put_archive into a per-task volume), never bind-mounted: the worker and
the Docker engine may run on different hosts. Container and volume are removed when the block
ends, also when it raises; both carry the task's label so a reaper finds strays after a crash.

Each command runs in bash as uid 1000 under our own timeout and output cap. Background jobs a
command starts are killed when it ends (they would otherwise hold its output stream open).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import select
import shlex
import socket
import struct
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any

import docker
import docker.errors
import requests
import structlog

from sandbox.hardening import (
    BASE_ENVIRONMENT,
    SANDBOX_GID,
    SANDBOX_UID,
    SANDBOX_USER,
    WORKSPACE,
    SandboxLimits,
    container_options,
)

log = structlog.get_logger(__name__)

TASK_LABEL = "codexbot.task"
CREATED_LABEL = "codexbot.created"
WORKER_LABEL = "codexbot.worker"

KILL_AFTER_SECONDS = 2  # between TERM and KILL when a command runs out of time
CLIENT_GRACE_SECONDS = 3  # beyond timeout + KILL_AFTER before we kill from outside
DRAIN_SECONDS = 5  # how long we still read after killing from outside
EXIT_CODE_WAIT_SECONDS = 5
TIMEOUT_EXIT_CODE = 124
PIDFILE_DIR = "/tmp/.codexbot-exec"  # noqa: S108 - the container's private tmpfs
READ_CHUNK = 64 * 1024
MAX_DIFF_BYTES = 64 * 1024 * 1024
SIDE_OUTPUT_BYTES = 8_000  # stderr kept when only stdout is the result (diff, files)
STDOUT, STDERR = 1, 2
GO_MODE_DIR = 1 << 31  # os.ModeDir in the `mode` of the engine's path stat
RESTART_NOTE = (
    "[the sandbox had stopped (its main process was killed) and was restarted; "
    "/workspace is intact, but /tmp, the home directory and background processes were reset]\n"
)


class SandboxError(RuntimeError):
    """The sandbox could not be created, used or removed."""


@dataclass(frozen=True)
class ExecResult:
    command: str
    exit_code: int
    output: str  # stdout and stderr interleaved, decoded, capped to head and tail
    timed_out: bool
    truncated: bool
    duration_ms: int


# ---------------------------------------------------------------------------- pure helpers


def sanitize_name(task_id: str) -> str:
    """A Docker-safe name fragment for a task id.

    >>> sanitize_name("octo/repo#42")
    'octo-repo-42'
    """
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", task_id).strip("-.")
    return cleaned[:100] or "task"


def container_name(task_id: str) -> str:
    return f"codexbot-{sanitize_name(task_id)}"


def volume_name(task_id: str) -> str:
    return f"codexbot-{sanitize_name(task_id)}-workspace"


def task_labels(
    task_id: str, extra: dict[str, str] | None, *, now: datetime, worker: str
) -> dict[str, str]:
    """Caller labels plus ours; ours win, so a caller cannot hide a container from the reaper."""
    return {
        **(extra or {}),
        TASK_LABEL: task_id,
        CREATED_LABEL: now.isoformat(timespec="seconds"),
        WORKER_LABEL: worker,
    }


def cut_marker(cut_bytes: int) -> str:
    return f"\n[... {cut_bytes} bytes cut ...]\n"


def timeout_note(timeout: float) -> str:
    return f"\n[timed out after {timeout:g} s: the command and its process group were killed]"


def wrapped_command(command: str, timeout: float, pidfile: str) -> list[str]:
    """argv running `command` in bash, in a new session, under coreutils `timeout`.

    `timeout` puts the command in its own process group; whatever is left in that group when the
    command ends (background jobs) is killed, so no stray process holds the output stream open or
    outlives its command. The session leader records its pid (= session id) so that a second exec
    can kill the whole session if the command outlives even `timeout`.
    """
    script = (
        f"mkdir -p {PIDFILE_DIR} && echo $$ > {pidfile}\n"
        f'timeout --kill-after={KILL_AFTER_SECONDS} --signal=TERM {timeout:.3f} bash -c "$0" &\n'
        "group=$!\n"
        "wait $group\n"
        "status=$?\n"
        'kill -KILL -- "-$group" 2>/dev/null\n'
        f"rm -f {pidfile}\n"
        "exit $status\n"
    )
    return ["setsid", "-w", "bash", "-c", script, command]


def kill_session_command(pidfile: str) -> list[str]:
    return ["sh", "-c", f'test -s {pidfile} && pkill -KILL -s "$(cat {pidfile})"; rm -f {pidfile}']


def too_large(path: str, max_bytes: int) -> str:
    return f"{path} is larger than the {max_bytes} bytes allowed"


def workspace_path(path: str) -> str:
    """Absolute path inside the container; relative paths are relative to the workspace."""
    return str(PurePosixPath(WORKSPACE) / path)


class CappedOutput:
    """Keeps the first and last `limit // 2` bytes of a stream and counts what falls between."""

    def __init__(self, limit: int) -> None:
        self.head_limit = max(limit, 0) // 2
        self.tail_limit = max(limit, 0) - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data and self.tail_limit:
            self.tail += data[-self.tail_limit :]
            if len(self.tail) > self.tail_limit:
                del self.tail[: len(self.tail) - self.tail_limit]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def text(self) -> str:
        if not self.truncated:
            return bytes(self.head + self.tail).decode("utf-8", errors="replace")
        cut = self.total - len(self.head) - len(self.tail)
        return (
            self.head.decode("utf-8", errors="replace")
            + cut_marker(cut)
            + self.tail.decode("utf-8", errors="replace")
        )


class FrameDecoder:
    """Splits Docker's multiplexed exec stream (8-byte header per frame) into (stream, bytes)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._stream = STDOUT
        self._left = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buffer += data
        chunks: list[tuple[int, bytes]] = []
        while self._buffer:
            if self._left == 0:
                if len(self._buffer) < 8:
                    break
                self._stream, self._left = struct.unpack(">BxxxL", self._buffer[:8])
                del self._buffer[:8]
                continue
            take = min(self._left, len(self._buffer))
            chunks.append((self._stream, bytes(self._buffer[:take])))
            del self._buffer[:take]
            self._left -= take
        return chunks


# ---------------------------------------------------------------------------- streaming


@dataclass(frozen=True)
class _Outcome:
    exit_code: int
    timed_out: bool
    duration_ms: int


def _read_available(sock: Any, deadline: float) -> bytes | None:
    """Up to READ_CHUNK bytes, b"" at end of stream, None if the deadline passes first."""
    pending = getattr(
        sock, "pending", None
    )  # TLS sockets may hold decrypted bytes select can't see
    if not (pending and pending()):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        ready, _, _ = select.select([sock], [], [], remaining)
        if not ready:
            return None
    if hasattr(sock, "recv"):
        return bytes(sock.recv(READ_CHUNK))
    return bytes(sock.read(READ_CHUNK) or b"")


def _pump(sock: Any, deadline: float, on_output: Callable[[int, bytes], None]) -> bool:
    """Feed the stream to `on_output` until it ends (True) or the deadline passes (False)."""
    decoder = FrameDecoder()
    while True:
        data = _read_available(sock, deadline)
        if data is None:
            return False
        if not data:
            return True
        for stream, chunk in decoder.feed(data):
            on_output(stream, chunk)


def _close_stream(sock: Any) -> None:
    """Close the upgraded exec connection, also when the command is still writing to it."""
    response = getattr(sock, "_response", None)
    inner = getattr(sock, "_sock", None)
    if response is not None:
        response.close()
    sock.close()
    if isinstance(inner, socket.socket):
        inner.close()


def _tar_for_sandbox_user(src_dir: Path, into: Any) -> None:
    def owned_by_sandbox(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid, info.gid = SANDBOX_UID, SANDBOX_GID
        info.uname = info.gname = "sandbox"
        return info

    with tarfile.open(fileobj=into, mode="w") as archive:
        archive.add(str(src_dir), arcname=".", filter=owned_by_sandbox)


def _worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# ---------------------------------------------------------------------------- the sandbox


class Sandbox:
    """A hardened container with the task's workspace volume; a context manager."""

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        image: str,
        task_id: str,
        labels: dict[str, str] | None = None,
        limits: SandboxLimits = SandboxLimits(),  # noqa: B008 - frozen dataclass
        env: dict[str, str] | None = None,
    ) -> None:
        self._client = client
        self._image = image
        self._task_id = task_id
        self._labels = labels
        self._limits = limits
        self._env = env or {}
        self._container: Any = None
        self._volume: Any = None
        self._log = log.bind(task_id=task_id)
        self._restarted = False  # since the last exec: its result says so

    # -- lifecycle

    def __enter__(self) -> Sandbox:
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

    def start(self) -> None:
        labels = task_labels(
            self._task_id, self._labels, now=datetime.now(UTC), worker=_worker_identity()
        )
        try:
            # Leftovers of an earlier attempt at this task (a worker that died) would otherwise
            # clash by name, and an old volume would leak its files into this workspace.
            if remove_task_containers(self._client, self._task_id):
                self._log.warning("sandbox.stale_removed")
            volume = self._client.volumes.create(name=volume_name(self._task_id), labels=labels)
            if (volume.attrs.get("Labels") or {}).get(TASK_LABEL) != self._task_id:
                raise SandboxError(f"volume {volume.name} already exists for another task")
            self._volume = volume
            self._container = self._client.containers.create(
                self._image,
                command=["sleep", "infinity"],
                name=container_name(self._task_id),
                labels=labels,
                environment={**BASE_ENVIRONMENT, **self._env},
                volumes={self._volume.name: {"bind": WORKSPACE, "mode": "rw"}},
                working_dir=WORKSPACE,
                detach=True,
                **container_options(self._limits),
            )
            self._container.start()
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
        self._log.info("sandbox.started", container=self.container_id, image=self._image)

    def remove(self) -> list[str]:
        """Remove container and volume; returns what went wrong (also logged), [] when all went."""
        problems: list[str] = []
        for kind, resource in (("container", self._container), ("volume", self._volume)):
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
        self._container = self._volume = None
        return problems

    @property
    def container_id(self) -> str:
        if self._container is None:
            raise SandboxError("the sandbox is not running; use it as a context manager")
        return str(self._container.id)

    # -- workspace

    def put_workspace(self, src_dir: Path) -> None:
        """Copy `src_dir` (with its .git) into /workspace, every entry owned by the sandbox user."""
        with tempfile.TemporaryFile() as archive:
            _tar_for_sandbox_user(src_dir, archive)
            archive.seek(0)
            try:
                copied = self._client.api.put_archive(self.container_id, WORKSPACE, archive)
            except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
                raise SandboxError(
                    f"could not copy the workspace into the sandbox: {error}"
                ) from error
        if not copied:
            raise SandboxError("the Docker engine refused to copy the workspace into the sandbox")

    def get_file(self, path: str, max_bytes: int) -> bytes:
        """The bytes of one regular file (relative paths are under /workspace); at most `max_bytes`.

        The engine copies files out of the volume and the image, but cannot see the tmpfs mounts
        (/tmp, the home directory); those are read with an exec instead.
        """
        absolute = workspace_path(path)
        try:
            return self._get_file_by_archive(absolute, max_bytes)
        except docker.errors.NotFound:
            return self._get_file_by_exec(absolute, max_bytes)

    def _get_file_by_archive(self, path: str, max_bytes: int) -> bytes:
        try:
            chunks, stat = self._client.api.get_archive(self.container_id, path)
            if stat.get("mode", 0) & GO_MODE_DIR:
                raise SandboxError(f"{path} is not a regular file")
            if stat.get("size", 0) > max_bytes:
                raise SandboxError(too_large(path, max_bytes))
            archive = io.BytesIO()
            for chunk in chunks:
                archive.write(chunk)
                if archive.tell() > max_bytes + 64 * 1024:  # tar headers and padding on top
                    raise SandboxError(too_large(path, max_bytes))
        except docker.errors.NotFound:
            raise
        except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
            raise SandboxError(f"could not read {path} from the sandbox: {error}") from error
        archive.seek(0)
        with tarfile.open(fileobj=archive) as tar:
            member = tar.next()
            extracted = tar.extractfile(member) if member is not None and member.isfile() else None
            if extracted is None:
                raise SandboxError(f"{path} is not a regular file")
            return extracted.read()

    def _get_file_by_exec(self, path: str, max_bytes: int) -> bytes:
        content = bytearray()

        def collect(stream: int, chunk: bytes) -> None:
            if stream == STDOUT:
                content.extend(chunk)

        quoted = shlex.quote(path)
        command = f"test -f {quoted} && head -c {max_bytes + 1} -- {quoted}"
        self._ensure_running()
        if self._run(command, timeout=60, workdir="/", on_output=collect).exit_code != 0:
            raise SandboxError(f"{path} does not exist in the sandbox or is not a regular file")
        if len(content) > max_bytes:
            raise SandboxError(too_large(path, max_bytes))
        return bytes(content)

    def diff(self, base_commit: str) -> bytes:
        """Everything changed since `base_commit` (new files and binaries too) as a git patch."""
        patch = bytearray()
        errors = CappedOutput(SIDE_OUTPUT_BYTES)

        def collect(stream: int, chunk: bytes) -> None:
            if stream != STDOUT:
                errors.add(chunk)
            elif len(patch) + len(chunk) > MAX_DIFF_BYTES:
                raise SandboxError(f"the change is larger than {MAX_DIFF_BYTES} bytes")
            else:
                patch.extend(chunk)

        command = f"git add -A && git diff --binary --cached {shlex.quote(base_commit)}"
        self._ensure_running()
        outcome = self._run(command, timeout=120, workdir=WORKSPACE, on_output=collect)
        if outcome.exit_code != 0:
            raise SandboxError(
                f"git diff failed with exit code {outcome.exit_code}: {errors.text()}"
            )
        return bytes(patch)

    # -- commands

    def exec(
        self,
        command: str,
        *,
        timeout: float = 120,
        workdir: str = WORKSPACE,
        max_output: int = 64_000,
    ) -> ExecResult:
        """Run `command` with bash as the sandbox user; never longer than `timeout` seconds."""
        output = CappedOutput(max_output)
        self._ensure_running()
        outcome = self._run(
            command, timeout=timeout, workdir=workdir, on_output=lambda _, chunk: output.add(chunk)
        )
        restarted, self._restarted = self._restarted, False
        text = (
            (RESTART_NOTE if restarted else "")
            + output.text()
            + (timeout_note(timeout) if outcome.timed_out else "")
        )
        self._log.info(
            "sandbox.exec",
            exit_code=outcome.exit_code,
            timed_out=outcome.timed_out,
            output_bytes=output.total,
            duration_ms=outcome.duration_ms,
        )
        return ExecResult(
            command=command,
            exit_code=outcome.exit_code,
            output=text,
            timed_out=outcome.timed_out,
            truncated=output.truncated,
            duration_ms=outcome.duration_ms,
        )

    def _run(
        self, command: str, *, timeout: float, workdir: str, on_output: Callable[[int, bytes], None]
    ) -> _Outcome:
        pidfile = f"{PIDFILE_DIR}/{uuid.uuid4().hex}"
        started = time.monotonic()
        exec_id, stream = self._start_exec(wrapped_command(command, timeout, pidfile), workdir)
        killed = False
        try:
            finished = _pump(
                stream, started + timeout + KILL_AFTER_SECONDS + CLIENT_GRACE_SECONDS, on_output
            )
            if not finished:
                killed = True
                self._kill_session(pidfile)
                _pump(stream, time.monotonic() + DRAIN_SECONDS, on_output)
        finally:
            _close_stream(stream)
        duration_ms = int((time.monotonic() - started) * 1000)
        exit_code = self._exit_code(exec_id)
        timed_out = killed or (
            exit_code in (TIMEOUT_EXIT_CODE, 128 + 9) and duration_ms >= timeout * 1000
        )
        return _Outcome(exit_code=exit_code, timed_out=timed_out, duration_ms=duration_ms)

    def _ensure_running(self) -> None:
        """Start the container again if a command killed its main process.

        The workspace is a volume, so it survives; /tmp, the home directory and background
        processes do not.
        """
        try:
            state = self._client.api.inspect_container(self.container_id)["State"]
            if state.get("Running"):
                return
            self._log.warning("sandbox.restarted", exit_code=state.get("ExitCode"))
            self._client.api.start(self.container_id)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
            raise SandboxError(
                f"the sandbox container is gone or cannot be started: {error}"
            ) from error
        self._restarted = True

    def _start_exec(self, argv: list[str], workdir: str) -> tuple[str, Any]:
        """Create and start an exec; restarts the container once if it stopped meanwhile."""
        for attempt in range(2):
            try:
                exec_id = self._client.api.exec_create(
                    self.container_id,
                    argv,
                    stdout=True,
                    stderr=True,
                    stdin=False,
                    tty=False,
                    user=SANDBOX_USER,
                    workdir=workdir,
                )["Id"]
                return exec_id, self._client.api.exec_start(exec_id, socket=True)
            except docker.errors.APIError as error:
                if attempt or "is not running" not in str(error.explanation):
                    raise SandboxError(
                        f"could not run a command in the sandbox: {error}"
                    ) from error
                self._ensure_running()
            except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
                raise SandboxError(f"could not run a command in the sandbox: {error}") from error
        raise AssertionError("unreachable")

    def _kill_session(self, pidfile: str) -> None:
        self._log.warning("sandbox.exec_killed_from_outside")
        try:
            exec_id = self._client.api.exec_create(
                self.container_id, kill_session_command(pidfile), user=SANDBOX_USER
            )["Id"]
            self._client.api.exec_start(exec_id)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
            self._log.error("sandbox.kill_failed", error=str(error))

    def _exit_code(self, exec_id: str) -> int:
        """The exec's exit code, polled briefly: the stream may end before Docker records it."""
        deadline = time.monotonic() + EXIT_CODE_WAIT_SECONDS
        while True:
            try:
                info = self._client.api.exec_inspect(exec_id)
            except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
                raise SandboxError(f"could not read the command's exit code: {error}") from error
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info["ExitCode"])
            if time.monotonic() > deadline:
                return 128 + 9  # still running after we gave up on it: report it as killed
            time.sleep(0.01)


def remove_task_containers(client: docker.DockerClient, task_id: str) -> int:
    """Remove every container and volume labelled with `task_id`; returns how many containers."""
    selector = {"label": f"{TASK_LABEL}={task_id}"}
    containers = client.containers.list(all=True, filters=selector)
    for container in containers:
        with contextlib.suppress(docker.errors.NotFound):  # removed meanwhile
            container.remove(force=True, v=True)
    for volume in client.volumes.list(filters=selector):
        with contextlib.suppress(docker.errors.NotFound):
            volume.remove(force=True)
    if containers:
        log.info("sandbox.reaped", task_id=task_id, containers=len(containers))
    return len(containers)
