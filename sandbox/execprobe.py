# ruff: noqa: UP031, SIM105 - runs on any Python 3 in the image: plain %-formatting, no contextlib
"""What the exec server reads of the container: processes in /proc, memory in the cgroup, free
room on the scratch file systems.

Standard library only, like the exec server: the worker sends this file's source and the
server's as one (`sandbox.channel.EXEC_SERVER_SOURCE`), this one first.
"""

import os
import time

NAME_TRIES = 20
TRAP_PREFIX = "bash -c trap 'pwd -P"
PR_SET_DUMPABLE = 4
FULL_WATCH = ("/tmp", os.environ.get("HOME") or "/home/sandbox")  # noqa: S108
FULL_BELOW = 1 << 20  # free bytes under which a scratch file system counts as full


def _pids():
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _alive(pid):
    """False for a gone or zombie process (a zombie cannot be killed and holds nothing)."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def _ppid(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as stat:
            return int(stat.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _oom_kills():
    """How many processes the kernel has killed for memory in this container so far."""
    for path, key in (
        ("/sys/fs/cgroup/memory.events", "oom_kill"),  # cgroup v2
        ("/sys/fs/cgroup/memory/memory.oom_control", "oom_kill"),  # cgroup v1
    ):
        try:
            with open(path) as events:
                for line in events:
                    name, _, value = line.partition(" ")
                    if name == key:
                        return int(value)
        except (OSError, ValueError):
            continue
    return None


def _set_dumpable(value):
    """Whether processes of the same user may inspect this one (ptrace, /proc/PID/mem); True
    when set. A non-dumpable process's /proc files belong to root, also for itself."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, value, 0, 0, 0) == 0
    except (ImportError, OSError, AttributeError):
        return False


def _memory_limit():
    """The container's memory limit in bytes, None when unlimited or unknown."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as limit:
                value = int(limit.read().strip())
        except (OSError, ValueError):
            continue
        return value if value < 1 << 60 else None
    return None


def _full_mounts():
    """Notes for the scratch file systems (/tmp, the home directory) that have no room left."""
    notes = []
    for path in FULL_WATCH:
        try:
            info = os.statvfs(path)
        except OSError:
            continue
        size = info.f_blocks * info.f_frsize
        if size and info.f_bavail * info.f_frsize < FULL_BELOW:
            notes.append(
                '%s is full (%d MiB): writing there fails with "No space left on device" '
                "until you delete files in it" % (path, size >> 20)
            )
    return notes


def _name(pid):
    # The command line reads empty for a moment while a process execs or exits: look again, then
    # fall back to the short name the kernel keeps (as `ps` shows it, in brackets).
    name = ""
    try:
        for _ in range(NAME_TRIES):
            with open("/proc/%d/cmdline" % pid, "rb") as cmdline:
                words = cmdline.read().split(b"\0")
            name = b" ".join(w for w in words if w).decode("utf-8", "replace")
            if name:
                break
            time.sleep(0.001)
        else:
            with open("/proc/%d/comm" % pid, "rb") as comm:
                name = "[%s]" % comm.read().strip().decode("utf-8", "replace")
    except OSError:
        return None  # gone meanwhile
    if name.startswith(TRAP_PREFIX):  # a command's own shell: show the command
        name = name.split("\n", 1)[-1]
    return name[:200]
