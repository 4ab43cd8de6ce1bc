"""One hardened, offline container per task, where every command of the agent runs.

    with Sandbox(client, image=DEFAULT_IMAGE, task_id="42") as box:
        box.put_workspace(checkout_dir)
        result = box.exec("python3 -m pytest -q", timeout=300)
        patch = box.diff(base_commit)

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
import contextlib
import io
import json
import os
import re
import select
import shlex
import socket
import struct
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
    SANDBOX_HOME,
    SANDBOX_UID,
    SANDBOX_USER,
    WORKSPACE,
    SandboxLimits,
    container_options,
    workspace_volume_options,
)

log = structlog.get_logger(__name__)

TASK_LABEL = "codexbot.task"
CREATED_LABEL = "codexbot.created"
WORKER_LABEL = "codexbot.worker"
REPO_LABEL = "codexbot.repo"
JOB_LABEL = "codexbot.job"
HOST_LABEL = "codexbot.host"
PID_LABEL = "codexbot.pid"
KIND_LABEL = "codexbot.kind"
REDIS_LABEL = "codexbot.redis"  # which Redis holds the job: a reaper judges only its own

CLIENT_GRACE_SECONDS = 10  # beyond a command's timeout before we stop waiting for the server
SERVER_READY_SECONDS = 20
TIMEOUT_EXIT_CODE = 124
SERVER_LOST_EXIT_CODE = 137
READ_CHUNK = 256 * 1024
MAX_DIFF_BYTES = 64 * 1024 * 1024
SIDE_OUTPUT_BYTES = 8_000  # stderr kept when only stdout is the result (diff, files)
STDOUT, STDERR = 1, 2
GO_MODE_DIR = 1 << 31  # os.ModeDir in the `mode` of the engine's path stat
EXEC_SERVER_SOURCE = (Path(__file__).parent / "execserver.py").read_text()
EXEC_SERVER_ARGV = [
    "python3",
    "-I",
    "-S",
    "-u",
    "-c",
    "import sys,json;exec(compile(json.loads(sys.stdin.buffer.readline()),'execserver','exec'))",
]
RESTART_NOTE = (
    "[the sandbox had stopped (its main process was killed) and was restarted; "
    "/workspace is intact, but /tmp, the home directory and background processes were reset]\n"
)
SERVER_RESTART_NOTE = (
    "[the sandbox's command server had been killed and was restarted; "
    "the working directory is back to /workspace]\n"
)
SERVER_LOST_NOTE = "\n[the command killed the sandbox's command server; it will be restarted]"


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
    cwd: str = WORKSPACE  # where the next command starts
    killed_leftovers: tuple[str, ...] = ()  # processes the command left running, now killed
    notes: tuple[str, ...] = ()  # what it ran into: killed for memory, /tmp full (also in output)


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


def capped_text(head: bytes, tail: bytes, total: int) -> str:
    """Output kept as head and tail, with the cut between them marked when bytes were dropped."""
    cut = total - len(head) - len(tail)
    if cut <= 0:
        return (head + tail).decode("utf-8", errors="replace")
    return (
        head.decode("utf-8", errors="replace")
        + cut_marker(cut)
        + tail.decode("utf-8", errors="replace")
    )


def timeout_note(timeout: float) -> str:
    return f"\n[timed out after {timeout:g} s: the command and its process group were killed]"


def leftovers_note(names: list[str] | tuple[str, ...]) -> str:
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (
        f"\n[killed {len(names)} process(es) the command left running: {shown}; "
        "background processes do not outlive their command here]"
    )


def stopped_note(reason: str) -> str:
    return f"\n[stopped: {reason}]"


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
        return capped_text(bytes(self.head), bytes(self.tail), self.total)


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


def _read_available(sock: Any, deadline: float) -> bytes | None:
    """Up to READ_CHUNK bytes, b"" at end of stream, None if the deadline passes first."""
    pending = getattr(sock, "pending", None)  # TLS sockets hold bytes select cannot see
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
    """Close the upgraded exec connection, also when the other end is still writing to it."""
    response = getattr(sock, "_response", None)
    inner = getattr(sock, "_sock", None)
    if response is not None:
        response.close()
    sock.close()
    if isinstance(inner, socket.socket):
        inner.close()


def _sendall(sock: Any, data: bytes) -> None:
    target = getattr(sock, "_sock", sock)  # docker-py wraps the raw socket in a SocketIO
    target.sendall(data)


def tar_for_sandbox_user(src_dir: Path, into: Any) -> None:
    def owned_by_sandbox(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid, info.gid = SANDBOX_UID, SANDBOX_GID
        info.uname = info.gname = "sandbox"
        return info

    with tarfile.open(fileobj=into, mode="w") as archive:
        archive.add(str(src_dir), arcname=".", filter=owned_by_sandbox)


def worker_identity() -> str:
    """The RQ worker running this code (the reaper watches its registration), or host:pid."""
    try:
        from rq import get_current_job

        job = get_current_job()
    except Exception:  # noqa: BLE001 - outside a job, or no RQ: fall back to host and pid
        job = None
    if job is not None and job.worker_name:
        return str(job.worker_name)
    return f"{socket.gethostname()}:{os.getpid()}"


def redis_identity(redis: Any) -> str:
    """host:port/db of a Redis client, so reapers on different databases leave each other be."""
    kwargs = redis.connection_pool.connection_kwargs
    where = kwargs.get("path") or f"{kwargs.get('host', '')}:{kwargs.get('port', '')}"
    return f"{where}/{kwargs.get('db', 0)}"


def _current_job() -> Any:
    try:
        from rq import get_current_job

        return get_current_job()
    except Exception:  # noqa: BLE001 - outside a job
        return None


def resource_labels(
    task_id: str, extra: dict[str, str] | None = None, *, kind: str = "task"
) -> dict[str, str]:
    """Labels for everything a task makes: container, volume, image."""
    labels = task_labels(task_id, extra, now=datetime.now(UTC), worker=worker_identity())
    labels[HOST_LABEL] = socket.gethostname()
    labels[PID_LABEL] = str(os.getpid())
    labels[KIND_LABEL] = kind
    job = _current_job()
    if job is not None:
        labels[JOB_LABEL] = str(job.id)
        labels[REDIS_LABEL] = redis_identity(job.connection)
    return labels


# ---------------------------------------------------------------------------- the exec channel


class ChannelLost(Exception):
    """The exec server's stream ended: the server (or the whole container) was killed."""


class ChannelStuck(Exception):
    """The exec server did not answer in time."""


@dataclass
class _Reply:
    exit_code: int
    timed_out: bool
    total: int
    head: bytes
    tail: bytes
    cwd: str
    duration_ms: int
    strays: list[str] = field(default_factory=list)
    stopped: str | None = None
    notes: list[str] = field(default_factory=list)  # out of memory, /tmp full
    lost: bool = False  # the command killed the exec server

    @classmethod
    def without_output(
        cls, exit_code: int, started: float, *, timed_out: bool = False, lost: bool = False
    ) -> _Reply:
        """A command the server never answered for (it was lost, or wedged); `started` monotonic."""
        return cls(
            exit_code=exit_code,
            timed_out=timed_out,
            total=0,
            head=b"",
            tail=b"",
            cwd=WORKSPACE,
            duration_ms=int((time.monotonic() - started) * 1000),
            lost=lost,
        )

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def data(self) -> bytes:
        return self.head + self.tail

    def text(self) -> str:
        return capped_text(self.head, self.tail, self.total)


class ExecChannel:
    """The attached stream of one exec server: JSON lines out, JSON lines back."""

    def __init__(self, client: docker.DockerClient, container_id: str, env: dict[str, str]):
        self._client = client
        self._exec_id = client.api.exec_create(
            container_id,
            EXEC_SERVER_ARGV,
            stdin=True,
            stdout=True,
            stderr=True,
            tty=False,
            user=SANDBOX_USER,
            workdir="/",
            environment=env,
        )["Id"]
        self._sock = client.api.exec_start(self._exec_id, socket=True)
        _sendall(self._sock, json.dumps(EXEC_SERVER_SOURCE).encode() + b"\n")
        self._decoder = FrameDecoder()
        self._lines = bytearray()
        self._stderr = CappedOutput(SIDE_OUTPUT_BYTES)
        self._next_id = 0
        self._running: int | None = None  # the id of the command the server runs now
        self._send_lock = threading.Lock()  # a cancel comes from another thread
        ready = self._read_message(time.monotonic() + SERVER_READY_SECONDS)
        if not ready.get("ready"):
            raise ChannelLost(f"the exec server did not start: {ready}")
        self.pid = int(ready["pid"])

    def call(self, request: dict[str, Any], deadline: float) -> dict[str, Any]:
        self._next_id += 1
        request = {**request, "id": self._next_id}
        try:
            with self._send_lock:
                self._send(request)
                self._running = self._next_id
            while True:
                message = self._read_message(deadline)
                if message.get("id") == self._next_id:
                    return message
                if "error" in message:
                    raise SandboxError(f"the exec server failed: {message['error']}")
        finally:
            self._running = None

    def cancel(self, reason: str) -> bool:
        """Kill the command running now, from any thread; False when none runs."""
        with self._send_lock:
            if self._running is None:
                return False
            try:
                self._send({"cancel": self._running, "reason": reason})
            except ChannelLost:
                return False  # the command's own call sees the lost server
            return True

    def _send(self, message: dict[str, Any]) -> None:
        try:
            _sendall(self._sock, json.dumps(message).encode() + b"\n")
        except OSError as error:
            raise ChannelLost(f"could not send to the exec server: {error}") from error

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while True:
            newline = self._lines.find(b"\n")
            if newline >= 0:
                line = bytes(self._lines[:newline])
                del self._lines[: newline + 1]
                return dict(json.loads(line))
            try:
                data = _read_available(self._sock, deadline)
            except OSError as error:
                raise ChannelLost(str(error)) from error
            if data is None:
                raise ChannelStuck("the exec server did not answer in time")
            if not data:
                raise ChannelLost(self._stderr.text() or "the exec server's stream ended")
            for stream, chunk in self._decoder.feed(data):
                if stream == STDOUT:
                    self._lines += chunk
                else:
                    self._stderr.add(chunk)

    def alive(self) -> bool:
        """False when the stream already ended (the server died after its last answer)."""
        raw = getattr(self._sock, "_sock", self._sock)
        if not isinstance(raw, socket.socket):
            return True  # TLS and others: a dead server shows as ChannelLost on the call
        try:
            ready, _, _ = select.select([raw], [], [], 0)
            return not ready or raw.recv(1, socket.MSG_PEEK) != b""
        except OSError:
            return False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            _close_stream(self._sock)


# ---------------------------------------------------------------------------- the sandbox


class Sandbox:
    """A hardened container with the task's workspace volume; a context manager.

    `volumes` mounts more named volumes (the engine-side mirror); `owned_volumes` (volume
    objects) are removed with the container, in their order (a layered workspace's, which the
    caller made). `read_only=False` and `home_tmpfs=False` are for the setup phase alone, whose
    result is committed as an image.
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
        self._channel: ExecChannel | None = None
        self._notes: list[str] = []  # said once, at the start of the next command's output
        # One command at a time on the one exec server, whichever thread sends it (the job runs
        # the tests before the agent's first command while the model reads the task).
        self._turn = threading.RLock()
        self._log = log.bind(task_id=task_id)

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
        labels = resource_labels(self._task_id, self._labels)
        try:
            # Leftovers of an earlier attempt at this task (a worker that died) would otherwise
            # clash by name, and an old volume would leak its files into this workspace.
            owned = frozenset(volume.name for volume in self._owned)
            if remove_task_containers(self._client, self._task_id, keep=owned):
                self._log.warning("sandbox.stale_removed")
            mounts = dict(self._volumes)
            if self._workspace_volume:
                volume = self._client.volumes.create(
                    name=volume_name(self._task_id),
                    labels=labels,
                    **workspace_volume_options(self._limits),
                )
                if (volume.attrs.get("Labels") or {}).get(TASK_LABEL) != self._task_id:
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

    def get_file(self, path: str, max_bytes: int) -> bytes:
        """The bytes of one regular file (relative paths are under /workspace); at most `max_bytes`.

        The engine copies files out of the volume and the image, but cannot see the tmpfs mounts
        (/tmp, the home directory); those are read through the exec server instead.
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
        quoted = shlex.quote(path)
        reply = self.run_raw(
            f"test -f {quoted} && head -c {max_bytes + 1} -- {quoted}",
            timeout=60,
            workdir="/",
            max_output=max_bytes + 2,
        )
        if reply.exit_code != 0:
            raise SandboxError(f"{path} does not exist in the sandbox or is not a regular file")
        if reply.total > max_bytes:
            raise SandboxError(too_large(path, max_bytes))
        return reply.data()

    def diff(self, base_commit: str) -> bytes:
        """Everything changed since `base_commit` (new files and binaries too) as a git patch.

        Staged in a private index, so the agent's own index is left as it was.
        """
        errors = "/tmp/.codexbot-diff.err"  # noqa: S108 - the container's private tmpfs
        command = (
            "export GIT_INDEX_FILE=/tmp/.codexbot-diff.index && rm -f $GIT_INDEX_FILE && "
            f"git read-tree {shlex.quote(base_commit)} 2>{errors} && git add -A 2>>{errors} && "
            f"git -c core.quotepath=off diff --no-ext-diff --no-textconv --binary --cached "
            f"{shlex.quote(base_commit)} 2>>{errors} || {{ s=$?; cat {errors} >&2; exit $s; }}"
        )
        reply = self.run_raw(command, timeout=120, workdir=WORKSPACE, max_output=MAX_DIFF_BYTES)
        if reply.exit_code != 0:
            raise SandboxError(
                f"git diff failed with exit code {reply.exit_code}: "
                f"{reply.text()[-SIDE_OUTPUT_BYTES:]}"
            )
        if reply.truncated:
            raise SandboxError(f"the change is larger than {MAX_DIFF_BYTES} bytes")
        return reply.data()

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
        text = notes + reply.text()
        if reply.timed_out:
            text += timeout_note(timeout)
        if reply.stopped:
            text += stopped_note(reply.stopped)
        if reply.strays:
            text += leftovers_note(reply.strays)
        text += "".join(f"\n[{note}]" for note in reply.notes)
        if reply.lost:
            text += SERVER_LOST_NOTE
        self._log.info(
            "sandbox.exec",
            exit_code=reply.exit_code,
            timed_out=reply.timed_out,
            output_bytes=reply.total,
            duration_ms=reply.duration_ms,
        )
        return ExecResult(
            command=command,
            exit_code=reply.exit_code,
            output=text,
            timed_out=reply.timed_out,
            truncated=reply.truncated,
            duration_ms=reply.duration_ms,
            cwd=reply.cwd or WORKSPACE,
            killed_leftovers=tuple(reply.strays),
            notes=tuple(reply.notes),
        )

    def run_raw(
        self,
        command: str,
        *,
        timeout: float,
        workdir: str | None = None,
        max_output: int = 64_000,
        env: dict[str, str] | None = None,
    ) -> _Reply:
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
    ) -> _Reply:
        """The worker's own Python `source` (never agent input), `args` as its sys.argv[1:].

        A fork of the exec server runs it, like a command otherwise (timeout, output cap, what
        it leaves running is killed), without an interpreter to start or modules to import.
        """
        with self._turn:
            return self._run_raw({"cmd": source, "python": args}, timeout, workdir, max_output)

    def _run_raw(
        self, request: dict[str, Any], timeout: float, workdir: str | None, max_output: int
    ) -> _Reply:
        started = time.monotonic()
        channel = self._ensure_channel()
        request = {**request, "timeout": timeout, "cwd": workdir, "max": max_output}
        try:
            message = channel.call(request, time.monotonic() + timeout + CLIENT_GRACE_SECONDS)
        except ChannelLost as error:
            self._log.warning("sandbox.server_lost", error=str(error)[-500:])
            self._drop_channel()
            return _Reply.without_output(SERVER_LOST_EXIT_CODE, started, lost=True)
        except ChannelStuck:
            # The server itself is wedged (starved of memory or pids): restart the container.
            self._log.error("sandbox.server_stuck")
            self._drop_channel()
            self._restart_container()
            return _Reply.without_output(TIMEOUT_EXIT_CODE, started, timed_out=True)
        return _Reply(
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
                finished = _pump(sock, time.monotonic() + timeout, lambda _s, d: output.add(d))
            finally:
                _close_stream(sock)
            if not finished:
                raise SandboxError(f"{argv[0]} took longer than {timeout:g} s")
            deadline = time.monotonic() + 5
            while True:
                info = self._client.api.exec_inspect(exec_id)
                if not info.get("Running") and info.get("ExitCode") is not None:
                    return int(info["ExitCode"]), bytes(output.head + output.tail)
                if time.monotonic() > deadline:
                    return 137, bytes(output.head + output.tail)
                time.sleep(0.005)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
            raise SandboxError(f"could not run {argv[0]} in the sandbox: {error}") from error


def remove_task_containers(
    client: docker.DockerClient, task_id: str, *, keep: frozenset[str] = frozenset()
) -> int:
    """Remove every container and volume labelled with `task_id` (but the volumes named in `keep`);
    returns how many containers."""
    selector = {"label": f"{TASK_LABEL}={task_id}"}
    containers = client.containers.list(all=True, filters=selector)
    for container in containers:
        with contextlib.suppress(docker.errors.NotFound):  # removed meanwhile
            container.remove(force=True, v=True)
    for volume in client.volumes.list(filters=selector):
        if volume.name in keep:
            continue
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            volume.remove(force=True)
    if containers:
        log.info("sandbox.reaped", task_id=task_id, containers=len(containers))
    return len(containers)
