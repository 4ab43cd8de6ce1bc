"""The pieces of the sandbox that need no engine: names, labels, output capping, stream framing."""

# ruff: noqa: S108 - /tmp here is the container's private tmpfs, not the host's

from __future__ import annotations

import socket
import struct
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from codexbot.textutil import CappedOutput, cap_output, capped_text, cut_marker
from sandbox.channel import FrameDecoder, pump
from sandbox.hardening import SandboxLimits, container_options
from sandbox.image import context_hash, debootstrap_command, mirror_from_sources
from sandbox.labels import container_name, sanitize_name, task_labels, volume_name


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


@pytest.mark.parametrize(
    ("task_id", "expected"),
    [
        ("42", "42"),
        ("octo/widgets#17", "octo-widgets-17"),
        ("--weird..", "weird"),
        ("", "task"),
        ("ü" * 10, "task"),
        ("a" * 300, "a" * 100),
    ],
)
def test_sanitize_name(task_id: str, expected: str) -> None:
    assert sanitize_name(task_id) == expected


def test_container_and_volume_names() -> None:
    assert container_name("octo/w#1") == "codexbot-octo-w-1"
    assert volume_name("octo/w#1") == "codexbot-octo-w-1-workspace"


def test_our_labels_win_over_the_callers() -> None:
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    labels = task_labels(
        "t1", {"codexbot.task": "spoofed", "codexbot.repo": "o/r"}, now=now, worker="h:1"
    )
    assert labels == {
        "codexbot.task": "t1",
        "codexbot.repo": "o/r",
        "codexbot.created": "2025-01-02T03:04:05+00:00",
        "codexbot.worker": "h:1",
    }


def test_capped_output_keeps_everything_under_the_limit() -> None:
    output = CappedOutput(10)
    output.add(b"abc")
    output.add(b"defghij")
    assert (output.text(), output.truncated, output.total) == ("abcdefghij", False, 10)


def test_capped_output_keeps_head_and_tail_and_counts_the_cut() -> None:
    output = CappedOutput(10)
    for chunk in (b"01234", b"56789", b"x" * 1000, b"ABCDE"):
        output.add(chunk)
    assert output.truncated
    assert output.text() == "01234" + cut_marker(1005) + "ABCDE"


def test_capped_output_holds_only_the_limit_in_memory() -> None:
    output = CappedOutput(100)
    for _ in range(1000):
        output.add(b"y" * 10_000)
    assert len(output.head) + len(output.tail) == 100
    assert output.total == 10_000_000


def test_capped_output_decodes_invalid_utf8_with_replacement() -> None:
    output = CappedOutput(100)
    output.add("héllo".encode() + b"\xff")
    assert output.text() == "héllo\ufffd"


def test_frame_decoder_handles_frames_split_anywhere() -> None:
    stream = frame(1, b"hello ") + frame(2, b"oops") + frame(1, b"world")
    for cut in range(1, len(stream)):
        decoder = FrameDecoder()
        chunks = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        stdout = b"".join(data for kind, data in chunks if kind == 1)
        stderr = b"".join(data for kind, data in chunks if kind == 2)
        assert (stdout, stderr) == (b"hello world", b"oops")


def test_pump_reads_until_the_stream_ends() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(frame(1, b"a" * 100_000) + frame(2, b"b"))
        theirs.close()
        seen: list[tuple[int, bytes]] = []
        assert pump(ours, time.monotonic() + 5, lambda kind, data: seen.append((kind, data)))
    assert b"".join(d for k, d in seen if k == 1) == b"a" * 100_000
    assert [d for k, d in seen if k == 2] == [b"b"]


def test_pump_gives_up_at_the_deadline_when_the_stream_stays_open() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(frame(1, b"partial"))
        started = time.monotonic()
        seen: list[bytes] = []
        assert not pump(ours, started + 0.3, lambda _, data: seen.append(data))
        assert 0.25 < time.monotonic() - started < 2
    assert seen == [b"partial"]


def test_container_options_follow_the_limits() -> None:
    options = container_options(SandboxLimits(memory="512m", pids=64, cpus=0.5, tmp_size="32m"))
    assert options["mem_limit"] == options["memswap_limit"] == "512m"
    assert options["pids_limit"] == 64
    assert options["nano_cpus"] == 500_000_000
    assert options["tmpfs"]["/tmp"] == "rw,nosuid,nodev,size=32m"
    assert options["network_mode"] == "none"
    assert options["user"] == "1000:1000"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n",
            "http://mirror.example/debian",
        ),
        (
            "URIs: http://a/debian http://b/debian\n\nURIs: http://c/debian-security\n",
            "http://a/debian",
        ),
        ("Types: deb\n", "http://deb.debian.org/debian"),
        ("", "http://deb.debian.org/debian"),
    ],
)
def test_mirror_from_sources(text: str, expected: str) -> None:
    assert mirror_from_sources(text) == expected


def test_debootstrap_command_is_minbase_with_the_packages() -> None:
    command = debootstrap_command(Path("/tmp/root"), "http://m/debian", ("python3", "git"))
    assert command == [
        "debootstrap",
        "--variant=minbase",
        "--include=python3,git",
        "bookworm",
        "/tmp/root",
        "http://m/debian",
    ]


def test_context_hash_changes_with_content_and_base(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM base\n")
    first = context_hash(tmp_path, "sha256:aaa")
    assert context_hash(tmp_path, "sha256:aaa") == first
    assert context_hash(tmp_path, "sha256:bbb") != first
    (tmp_path / "Dockerfile").write_text("FROM base\nUSER x\n")
    assert context_hash(tmp_path, "sha256:aaa") != first


def test_cap_output_fits_its_limit_and_counts_exactly_what_it_cut() -> None:
    output = "ab€cd" * 50  # 350 bytes; a cut may fall inside the euro sign
    assert cap_output(output, 350) == (output, False)
    for limit in range(40, 60):
        shown, cut = cap_output(output, limit)
        head, _, rest = shown.partition("\n[... ")
        cut_bytes, _, tail = rest.partition(" bytes cut ...]\n")
        assert cut and len(shown.encode()) <= limit and "\ufffd" not in shown
        assert len(head.encode()) + int(cut_bytes) + len(tail.encode()) == 350


def test_capped_text_counts_a_split_character_as_cut() -> None:
    data = "aé".encode() + b"x" * 10 + "éb".encode()  # a cut after 2 and before the last 2 bytes
    assert capped_text(data[:2], data[-2:], len(data)) == "a" + cut_marker(14) + "b"
