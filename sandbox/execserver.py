# ruff: noqa: UP031, SIM105 - runs on any Python 3 in the image: plain %-formatting, no contextlib
"""The exec server: one long-lived process inside the sandbox that runs every command.

It is started once per container (`python3 -I -S -c <this file>` through one `docker exec` with
stdin attached) and then speaks JSON lines over that attached stream, so a command costs a fork
and a pipe instead of a fresh `docker exec` (milliseconds instead of tens of them).

Request, one line on stdin:
    {"id": 1, "cmd": "pytest -q", "timeout": 60, "cwd": null, "max": 64000, "env": {}}
Reply, one line on stdout:
    {"id": 1, "exit": 0, "timed_out": false, "total": 123, "head": <b64>, "tail": <b64>,
     "cwd": "/workspace/sub", "ms": 12, "strays": [], "stopped": null, "notes": []}

While a command runs, the server still reads its stdin: `{"cancel": 1, "reason": "..."}` kills
command 1 at once (its process group and whatever it left), and its reply's `stopped` says why; a
cancel for a command that already ended is ignored.

Each command runs in `bash -c` in a session and process group of its own, stdout and stderr on
one pipe; the server keeps the first and last `max // 2` bytes and counts the rest. On timeout the
whole group is killed. When the command returns, every process it left behind (also those that
left its group with setsid) is killed and named in `strays`. The working directory a command ends
in is the next command's (`cwd: null`); an explicit `cwd` runs one command elsewhere. While a
command runs, the workspace's disk use is sampled; past `workspace_max` bytes the command is
stopped (`stopped` says why). `notes` says what else the command ran into: the kernel killed
it for memory, or /tmp or the home directory is full. Nothing here reads the worker's secrets:
`env` holds only what the worker chose to pass for this one command (setup secrets, in the setup
phase alone).

A request with `"python": [args]` is the worker's own Python script (`cmd` its source, `args` its
sys.argv[1:]), run the same way by a fork of this server instead of bash: no interpreter to start,
no module to import again (tens of milliseconds for a script the worker runs after every step).

The server is not dumpable (`prctl(PR_SET_DUMPABLE, 0)`): a command runs as the same user, yet
it cannot attach to the server or read its memory, which holds the worker's requests.

Standard library only: it runs on whatever Python the image has (3.7+). Its source, after that of
its probes of the container (`execprobe.py`), arrives as the first line on stdin, so `ps` in the
sandbox shows one short line for it.
"""

import base64
import json
import os
import select
import signal
import subprocess
import sys
import time

try:  # Run alone (tests, lint): the probes from beside it. In the sandbox they come in the same
    # source, before this (`sandbox.channel`), and there is no package to import from.
    from sandbox.execprobe import (
        _alive,
        _full_mounts,
        _memory_limit,
        _name,
        _oom_kills,
        _pids,
        _ppid,
        _set_dumpable,
    )
except ImportError:
    pass

F_SETPIPE_SZ = 1031
READ_SIZE = 1 << 20
DEFAULT_CWD = os.environ.get("CODEXBOT_WORKSPACE", "/workspace")
KILL_ROUNDS = 200


def _cancel_message(line):
    """The cancel request a line holds, or None for anything else."""
    if b'"cancel"' not in line:
        return None
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) and "cancel" in message else None


class Forked:
    """Python source run by a fork of this server, shaped like the Popen the server polls."""

    def __init__(self, source, args, cwd, env, out_fd):
        self.returncode = None
        self.pid = os.fork()
        if self.pid == 0:  # the child never returns into the server
            os._exit(self._child(source, args, cwd, env, out_fd))

    @staticmethod
    def _child(source, args, cwd, env, out_fd):
        code = 1
        try:
            os.setsid()
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out_fd, 1)
            os.dup2(out_fd, 2)
            for fd in [int(name) for name in os.listdir("/proc/self/fd")]:
                if fd > 2:  # the server's stream, pipes and wakeup fd stay its own
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            os.chdir(cwd)
            os.environ.clear()
            os.environ.update(env)
            _set_dumpable(1)  # to write its own /proc file; no command runs meanwhile
            with open("/proc/self/oom_score_adj", "w") as adj:
                adj.write("1000")
            _set_dumpable(0)
            sys.argv = ["-c"] + list(args)
            exec(compile(source, "<request>", "exec"), {"__name__": "__main__"})  # noqa: S102
            code = 0
        except SystemExit as done:
            if done.code is None or isinstance(done.code, int):
                code = done.code or 0
            else:
                sys.stderr.write("%s\n" % (done.code,))
        except BaseException:  # noqa: BLE001 - shown like Python shows it, then exit 1
            import traceback

            traceback.print_exc()
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:  # noqa: S110 - the pipe may be gone; the exit code still counts
            pass
        return int(code)

    def poll(self):
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = _exit_code(status)
        return self.returncode

    def wait(self):
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = _exit_code(status)
        return self.returncode


def _exit_code(status):
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


class Server:
    def __init__(self):
        # Never swept: init, the container's main process (init's first child), this server and
        # other `docker exec` sessions (parent outside the container, ppid 0: the worker's own).
        # Anything else belongs to some command, also the leftovers of a server that was killed.
        pids = _pids()
        init_children = [pid for pid in pids if _ppid(pid) == 1]
        self.protected = {1, os.getpid()} | {pid for pid in pids if _ppid(pid) == 0}
        if init_children:
            self.protected.add(min(init_children))
        self.cwd = DEFAULT_CWD
        self.out = sys.stdout.buffer
        # Requests are read from the raw stdin (select sees it while a command runs); the
        # worker sends nothing before "ready", so the bootstrap's buffered readline kept nothing.
        self.inbox = bytearray()
        self.queued = []  # request lines that arrived while a command ran
        self.stdin_open = True
        self.workspace_max = int(os.environ.get("CODEXBOT_WORKSPACE_MAX", "0") or 0)
        # A child's exit wakes the select below at once (it would otherwise wait out its tick
        # while a background job still holds the output pipe).
        self.wakeup_read, wakeup_write = os.pipe()
        os.set_blocking(self.wakeup_read, False)
        os.set_blocking(wakeup_write, False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(wakeup_write)

    def send(self, message):
        self.out.write(json.dumps(message).encode() + b"\n")
        self.out.flush()

    def sweep(self):
        """SIGKILL every process not protected, until none is left."""
        for _ in range(KILL_ROUNDS):
            found = False
            for pid in _pids():
                if pid in self.protected or not _alive(pid):
                    continue
                try:
                    os.kill(pid, signal.SIGKILL)
                    found = True
                except (ProcessLookupError, PermissionError):
                    pass  # gone, or not ours (root processes of the worker)
            if not found:
                break
            time.sleep(0.002)

    def survey(self):
        """Names of the processes alive now that belong to commands."""
        names = (_name(pid) for pid in _pids() if pid not in self.protected and _alive(pid))
        return [name for name in names if name is not None][:20]

    def usage(self, root):
        """Bytes in use under `root`. A directory its owner made unreadable (the command's user
        is ours) is opened for the count and given its mode back once its subtree is counted."""
        total = 0
        stack = [root]
        while stack:
            path = stack.pop()
            if isinstance(path, tuple):  # a subtree is done: its directory's mode goes back
                try:
                    os.chmod(path[0], path[1])
                except OSError:
                    pass
                continue
            if os.access(path, os.R_OK | os.X_OK):
                try:
                    entries = os.scandir(path)
                except OSError:
                    continue
            else:  # listed but not entered (mode 0600) hides the sizes as well as 0300 does
                entries = self._opened(path, stack)
                if entries is None:
                    continue
            with entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        else:
                            total += entry.stat(follow_symlinks=False).st_blocks * 512
                    except OSError:
                        pass
        return total

    def _opened(self, path, stack):
        try:
            mode = os.lstat(path).st_mode & 0o7777
            os.chmod(path, mode | 0o500)
        except OSError:
            return None
        stack.append((path, mode))
        try:
            return os.scandir(path)
        except OSError:
            return None

    def run(self, request):
        started = time.monotonic()
        limit = max(int(request.get("max", 64000)), 0)
        head_limit = limit // 2
        tail_limit = limit - head_limit
        head, tail, total = bytearray(), bytearray(), 0
        cwd = request.get("cwd") or self.cwd
        note = None
        if not os.path.isdir(cwd):
            note = "the working directory %s is gone; ran in %s" % (cwd, DEFAULT_CWD)
            cwd = DEFAULT_CWD
        env = dict(os.environ)
        env.pop("CODEXBOT_WORKSPACE_MAX", None)
        env.update(request.get("env") or {})
        read_fd, write_fd = os.pipe()
        cwd_read, cwd_write = os.pipe()
        try:
            import fcntl

            fcntl.fcntl(read_fd, F_SETPIPE_SZ, READ_SIZE)
        except OSError:
            pass
        # Commands are the OOM killer's first choice, so a memory hog never takes the server down.
        script = "trap 'pwd -P >&%d 2>/dev/null' EXIT; echo 1000 >/proc/self/oom_score_adj\n%s" % (
            cwd_write,
            request["cmd"],
        )
        oom_before = _oom_kills()
        try:
            if request.get("python") is not None:
                process = Forked(request["cmd"], request["python"], cwd, env, write_fd)
            else:
                process = subprocess.Popen(
                    ["bash", "-c", script],
                    stdin=subprocess.DEVNULL,
                    stdout=write_fd,
                    stderr=write_fd,
                    cwd=cwd,
                    env=env,
                    pass_fds=(cwd_write,),
                    start_new_session=True,
                )
        except OSError as error:  # fork failed: the pids limit is reached
            for fd in (read_fd, write_fd, cwd_read, cwd_write):
                os.close(fd)
            strays = self.survey()
            self.sweep()
            message = ("could not start the command: %s\n" % error).encode()
            return self.reply(
                request, 126, False, message, b"", len(message), started, strays, None
            )
        os.close(write_fd)
        os.close(cwd_write)
        deadline = started + float(request.get("timeout", 120))
        timed_out = False
        stopped = None
        ended_at = None
        leftovers = []
        next_usage = started + 1.0
        usage_cost = 0.0
        open_fd = True
        while open_fd:
            now = time.monotonic()
            if process.poll() is not None and ended_at is None:
                ended_at = now
                leftovers = self.survey()
                # Whatever the command left in its group would hold the pipe open: end it now.
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            if not timed_out and ended_at is None and now >= deadline:
                timed_out = True
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            if ended_at is not None and now - ended_at > 0.2:
                # Escaped the group (setsid, nohup ... &) and still holding the pipe.
                self.sweep()
            if self.workspace_max and ended_at is None and not timed_out and now >= next_usage:
                measured = time.monotonic()
                used = self.usage(DEFAULT_CWD)
                usage_cost = time.monotonic() - measured
                next_usage = time.monotonic() + max(1.0, usage_cost * 10)
                if used > self.workspace_max:
                    stopped = "the workspace grew past %d bytes (%d used)" % (
                        self.workspace_max,
                        used,
                    )
                    try:
                        os.killpg(process.pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
            watched = [read_fd, self.wakeup_read] + ([0] if self.stdin_open else [])
            ready, _, _ = select.select(watched, [], [], 0.05)
            if 0 in ready and self.receive() and ended_at is None and stopped is None:
                reason = self.cancel_requested(request.get("id"))
                if reason is not None:
                    stopped = "%s; the command and its processes were killed" % reason
                    try:
                        os.killpg(process.pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                    self.sweep()
            if self.wakeup_read in ready:
                try:
                    os.read(self.wakeup_read, 4096)
                except OSError:
                    pass
            if read_fd not in ready:
                continue
            data = os.read(read_fd, READ_SIZE)
            if not data:
                open_fd = False
                break
            total += len(data)
            room = head_limit - len(head)
            if room > 0:
                head += data[:room]
                data = data[room:]
            if data and tail_limit:
                tail += data[-tail_limit:]
                if len(tail) > tail_limit:
                    del tail[: len(tail) - tail_limit]
        os.close(read_fd)
        exit_code = process.wait()
        if ended_at is None and not timed_out:
            leftovers = self.survey()  # the output ended first: nothing held the pipe
        if exit_code < 0:
            exit_code = 128 - exit_code
        if timed_out:
            exit_code = 124
        self.sweep()
        oom_after = _oom_kills()
        notes = _full_mounts()
        out_of_memory = oom_before is not None and oom_after is not None and oom_after > oom_before
        if out_of_memory:
            limit = _memory_limit()
            notes.insert(
                0,
                "killed: out of memory: the kernel killed %d process(es) of the command%s"
                % (
                    oom_after - oom_before,
                    "; the sandbox has %d MiB of memory, files in /tmp included" % (limit >> 20)
                    if limit
                    else "",
                ),
            )
        strays = [] if timed_out or stopped or out_of_memory else leftovers
        end_cwd = None
        try:
            ready, _, _ = select.select([cwd_read], [], [], 0)
            if ready:
                end_cwd = os.read(cwd_read, 4096).decode("utf-8", "replace").strip() or None
        finally:
            os.close(cwd_read)
        if not request.get("cwd") and end_cwd and os.path.isdir(end_cwd):
            self.cwd = end_cwd
        if note:
            stopped = note if stopped is None else stopped + "; " + note
        reply = self.reply(
            request, exit_code, timed_out, head, tail, total, started, strays, stopped
        )
        reply["notes"] = notes
        reply["ended_in"] = end_cwd  # where the command itself ended (kept or not)
        return reply

    def reply(self, request, exit_code, timed_out, head, tail, total, started, strays, stopped):
        return {
            "id": request.get("id"),
            "exit": exit_code,
            "timed_out": timed_out,
            "total": total,
            "head": base64.b64encode(bytes(head)).decode(),
            "tail": base64.b64encode(bytes(tail)).decode(),
            "cwd": self.cwd,
            "ms": int((time.monotonic() - started) * 1000),
            "strays": strays,
            "stopped": stopped,
        }

    def receive(self):
        """Reads what stdin holds now into complete lines; False at its end."""
        data = os.read(0, READ_SIZE)
        if not data:
            self.stdin_open = False
            return False
        self.inbox += data
        while b"\n" in self.inbox:
            line, _, rest = bytes(self.inbox).partition(b"\n")
            self.inbox = bytearray(rest)
            if line.strip():
                self.queued.append(line)
        return True

    def cancel_requested(self, request_id):
        """The reason of a cancel for `request_id` among the lines read so far, or None."""
        reason = None
        kept = []
        for line in self.queued:
            message = _cancel_message(line)
            if message is None:
                kept.append(line)
            elif message.get("cancel") == request_id:
                reason = str(message.get("reason") or "stopped")
        self.queued = kept
        return reason

    def serve(self):
        _set_dumpable(0)
        self.sweep()
        self.send({"ready": True, "pid": os.getpid()})
        while self.queued or (self.stdin_open and self.receive()):
            if not self.queued:
                continue
            line = self.queued.pop(0)
            if _cancel_message(line) is not None:
                continue  # for a command that already ended
            try:
                request = json.loads(line)
                reply = self.run(request)
            except Exception as error:  # noqa: BLE001 - reported back, never fatal to the server
                reply = {"id": None, "error": "%s: %s" % (type(error).__name__, error)}
            self.send(reply)


if __name__ == "__main__":
    Server().serve()
