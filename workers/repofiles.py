"""Reading a file of the checkout that the bot itself reads (codex.yml, AGENTS.md, pyproject.toml).

The checkout is hostile: any of those names may be a symlink (to /proc/self/environ, to a file
of the worker, to a huge file), a FIFO (a plain read would wait forever), a directory, or a file
of gigabytes. Only a regular file inside the checkout, reached without following any symlink,
and at most `max_bytes` long, is read; anything else is refused with a message a user can act on.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath

NOT_REGULAR = "the bot reads only regular files inside the checkout"


class RepoFileError(ValueError):
    """Something is at the path, but not a regular file the bot will read; says what and why."""


def read_repo_file(root: Path, relpath: str, max_bytes: int, *, cut: bool = False) -> bytes | None:
    """The bytes of `relpath` (forward slashes, relative to `root`); None when nothing is there.

    RepoFileError when the path or one of its directories is a symlink, when it is not a regular
    file, or when it is larger than `max_bytes` (with ``cut``, its first `max_bytes` instead).
    """
    parts = PurePosixPath(relpath).parts
    if not parts or PurePosixPath(relpath).is_absolute() or ".." in parts:
        raise RepoFileError(f"`{relpath}` is not a path inside the checkout")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        directory = os.open(root, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECTORY)  # ours: trusted
    except FileNotFoundError:
        return None
    # One component at a time, each opened inside the one before without following a symlink.
    for index, part in enumerate(parts[:-1]):
        directory = _step(directory, part, "/".join(parts[: index + 1]), flags | os.O_DIRECTORY)
        if directory < 0:
            return None
    # O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer.
    fd = _step(directory, parts[-1], relpath, flags | os.O_NONBLOCK)
    if fd < 0:
        return None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise RepoFileError(f"`{relpath}` is {_kind(mode)}; {NOT_REGULAR}")
    with os.fdopen(fd, "rb") as file:
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes and not cut:
        raise RepoFileError(f"`{relpath}` is larger than the {max_bytes} bytes the bot reads")
    return data[:max_bytes]


def _step(directory: int, name: str, relpath: str, flags: int) -> int:
    """Opens `name` in `directory`, which it closes; -1 when nothing is there."""
    try:
        return os.open(name, flags, dir_fd=directory)
    except FileNotFoundError:
        return -1
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):  # O_NOFOLLOW met a link, or not a dir
            mode = os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode
            kind = "a symbolic link" if stat.S_ISLNK(mode) else _kind(mode)
            raise RepoFileError(f"`{relpath}` is {kind}; {NOT_REGULAR}") from None
        raise RepoFileError(f"`{relpath}` cannot be read: {error.strerror}") from None
    finally:
        os.close(directory)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "a file, not a directory" if stat.S_ISREG(mode) else "a special file"
