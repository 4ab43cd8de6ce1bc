"""The exec channel: one exec server per container, reached over one attached `docker exec`.

The server (`sandbox/execserver.py`) is sent as the first line of the exec's stdin and answers
JSON lines on stdout; Docker multiplexes stdout and stderr in frames (`FrameDecoder`). A command
costs milliseconds this way, against tens for a `docker exec` of its own.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker

from codexbot.textutil import CappedOutput
from sandbox.hardening import SANDBOX_USER
from sandbox.output import SandboxError

SERVER_READY_SECONDS = 20
READ_CHUNK = 256 * 1024
SIDE_OUTPUT_BYTES = 8_000  # stderr kept when only stdout is the result (diff, files)
STDOUT, STDERR = 1, 2
# The server and the probes it reads the container with, as one source (standalone stdlib).
EXEC_SERVER_SOURCE = "\n".join(
    (Path(__file__).parent / name).read_text() for name in ("execprobe.py", "execserver.py")
)
EXEC_SERVER_ARGV = [
    "python3",
    "-I",
    "-S",
    "-u",
    "-c",
    "import sys,json;exec(compile(json.loads(sys.stdin.buffer.readline()),'execserver','exec'))",
]


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


def read_available(sock: Any, deadline: float) -> bytes | None:
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


def pump(sock: Any, deadline: float, on_output: Callable[[int, bytes], None]) -> bool:
    """Feed the stream to `on_output` until it ends (True) or the deadline passes (False)."""
    decoder = FrameDecoder()
    while True:
        data = read_available(sock, deadline)
        if data is None:
            return False
        if not data:
            return True
        for stream, chunk in decoder.feed(data):
            on_output(stream, chunk)


def close_stream(sock: Any) -> None:
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


class ChannelLost(Exception):
    """The exec server's stream ended: the server (or the whole container) was killed."""


class ChannelStuck(Exception):
    """The exec server did not answer in time."""


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
                data = read_available(self._sock, deadline)
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
            close_stream(self._sock)
