"""What leaves the sandbox: `git diff --binary` against the start commit, minus what we refuse.

    guard = ChangeGuard(box, base_commit, ChangePolicy.from_config(config))
    note = guard.after_command()         # "" or a note for the agent about a new refusal, at once
    result = guard.result()              # patch, new files, every refusal (for the PR body)

Refused, each with a reason the agent and the PR reader can act on:
- symlinks pointing outside the workspace (absolute, or climbing out with ..);
- files over the size cap;
- changes under .git/ (the workspace's own metadata: hooks, config; nested .git directories and
  embedded repositories);
- changes under .github/workflows/ unless `.github/codex.yml` says `allow_workflow_changes: true`
  (GitHub refuses them too without the workflows permission);
- paths matching `protected_paths` globs.

The facts (status, mode, size of the blob git will carry, link target) are gathered inside the
container by one small script; judging them is pure (`judge`) and table-tested. Refused paths
are reset to the start commit in a private index before the diff, so the patch simply does not
contain them. That script runs git by absolute path in a git directory of its own, made afresh
for each look, with an environment of its own: the agent's `$HOME`, `.git/config`, attributes,
filters and environment steer neither the facts nor the patch. Still, the container is where the
agent works: the worker judges again what it staged from the patch (`workers.checkout`), with
this same `judge`, and that verdict decides.

The script runs in a fork of the sandbox's exec server (`Sandbox.run_python`), which has Python
started and most modules imported. After a command, it gathers the facts again only when
something in the workspace changed since the last time: a walk of the workspace in that same
fork (no process to start) looks for an inode whose change time (which no one but the kernel
sets) is later than the end of that gathering; a directory it cannot read counts as a change.
Most commands an agent runs only read.
"""

from __future__ import annotations

import base64
import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from sandbox.container import Sandbox
from sandbox.hardening import BOT_SCRATCH
from sandbox.output import SandboxError

DEFAULT_MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_DIFF_BYTES = 64 * 1024 * 1024
WORKFLOWS = ".github/workflows/"
# The bot's own rules for the repository: changed by people, through review, never by the bot.
ALWAYS_PROTECTED = ".github/codex.yml"
# The guard's own git directory: a new one, under a name no one can guess, for every full look
# (HEAD, config, an index, the objects its `git add` writes; the workspace's objects are reached
# as alternates), so nothing the agent wrote between looks is read. No agent process runs during
# a look: the exec server kills what a command leaves behind.
GUARD_DIR_PREFIX = f"{BOT_SCRATCH}/guard-"  # a tmpfs of the bot's, not the agent's /tmp

# Runs inside the container, in a fork of the exec server, with git by absolute path and an
# environment of its own: no user, system or repository config, no attributes but the tree's own
# (which are content), no hooks, no filters, explicit prefixes. The agent's $HOME, .git/config,
# .git/info/attributes and environment steer nothing here.
#   look BASE [TIME] OLD: stage everything in a new git directory's index, print the changes and
#     that directory as JSON; remove OLD, the last look's. With a time, it first looks for a
#     change after it and prints nothing when there is none (the loose objects the agent's git
#     writes change no diff; an error of the walk counts as a change).
#   diff BASE B64 DIR: reset the paths listed (NUL-separated, base64) to BASE in the index of
#     DIR, the look just before, then write the binary diff of what is left.
GUARD_SCRIPT = r"""
PREFIX = "%s"
import base64, json, os, subprocess, sys, time
started = time.time()
mode, base = sys.argv[1], sys.argv[2]
work = "/workspace"
if mode == "diff":
    git_dir = sys.argv[-1]
else:
    git_dir = "%s%s" % (PREFIX, os.urandom(12).hex())
env = {"PATH": "/usr/bin:/bin", "HOME": git_dir + "/home", "XDG_CONFIG_HOME": git_dir + "/home",
       "LANG": "C", "LC_ALL": "C", "GIT_DIR": git_dir, "GIT_WORK_TREE": work,
       "GIT_INDEX_FILE": git_dir + "/index", "GIT_OBJECT_DIRECTORY": git_dir + "/objects",
       "GIT_ALTERNATE_OBJECT_DIRECTORIES": work + "/.git/objects",
       "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1", "GIT_ATTR_NOSYSTEM": "1",
       "GIT_NO_REPLACE_OBJECTS": "1", "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"}
GIT = ["/usr/bin/git", "-c", "core.quotepath=off", "-c", "core.hooksPath=/dev/null",
       "-c", "core.fsmonitor=false", "-c", "core.untrackedCache=false"]
def git(*args, **kwargs):
    done = subprocess.run(GIT + list(args), env=kwargs.pop("env", env), cwd=work,
                          stdout=kwargs.pop("stdout", subprocess.PIPE), stderr=subprocess.PIPE,
                          **kwargs)
    if done.returncode:
        sys.stderr.write(done.stderr.decode("utf-8", "replace"))
        sys.exit(done.returncode)
    return done.stdout
if mode == "diff":
    paths = base64.b64decode(sys.argv[3])
    if paths:
        git("reset", "-q", "--pathspec-from-file=-", "--pathspec-file-nul", base, "--",
            input=paths, env=dict(env, GIT_LITERAL_PATHSPECS="1"))
    sys.stdout.flush()
    git("diff", "--cached", "--binary", "--no-renames", "--no-ext-diff", "--no-textconv",
        "--no-color", "--src-prefix=a/", "--dst-prefix=b/", "--ignore-submodules=none", base,
        "--", stdout=None)
    sys.exit(0)
def changed_since(stamp):  # find . -path ./.git/objects/?? -prune -o ! -path ./.git/objects
    # -newerct @stamp -print -quit, without a process to start; an error counts as a change.
    whole, _, fraction = stamp.partition(".")
    since = int(whole) * 10**9 + int((fraction + "000000000")[:9])
    objects = work + "/.git/objects"
    try:
        if os.lstat(work).st_ctime_ns > since:
            return True
        folders = [work]
        while folders:
            folder = folders.pop()
            with os.scandir(folder) as entries:
                for entry in entries:
                    if folder == objects and len(entry.name) == 2:
                        continue
                    info = entry.stat(follow_symlinks=False)
                    if info.st_ctime_ns > since and entry.path != objects:
                        return True
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
    except OSError:
        return True
    return False
if len(sys.argv) > 4 and not changed_since(sys.argv[3]):
    sys.exit(0)
def afresh():
    old = sys.argv[-1]
    if old.startswith(PREFIX) and "/" not in old[len(PREFIX):]:
        subprocess.run(["/bin/rm", "-rf", "--", old], env=env, stderr=subprocess.DEVNULL)
    os.mkdir(git_dir, 0o755)  # fails if it exists: no one made it for us
    for name in ("home", "objects", "refs", "info"):
        os.mkdir(os.path.join(git_dir, name), 0o755)
    files = {"HEAD": b"ref: refs/heads/codexbot-guard\n",
             "config": b"[core]\n\trepositoryformatversion = 0\n\tbare = false\n"}
    exclude = os.path.join(work, ".git/info/exclude")
    if os.path.isfile(exclude):
        try:
            with open(exclude, "rb") as f:
                files["info/exclude"] = f.read(65536)
        except OSError:
            pass
    for name, data in files.items():
        with open(os.path.join(git_dir, name), "wb") as f:
            f.write(data)
try:  # the built-in hash: hashlib would load OpenSSL, 5 ms a look
    from _sha2 import sha256
except ImportError:
    try:
        from _sha256 import sha256
    except ImportError:
        from hashlib import sha256
def meta():
    digest = sha256()
    for name in ("config", "info/attributes", "info/exclude", "objects/info/alternates"):
        try:
            with open(os.path.join(work, ".git", name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read() + b"\0")
        except OSError:
            pass
    for root, dirs, files in os.walk(os.path.join(work, ".git/hooks")):
        for name in sorted(files):
            path = os.path.join(root, name)
            try:
                with open(path, "rb") as f:
                    digest.update(path.encode() + b"\0" + f.read() + b"\0")
            except OSError:
                pass
    return digest.hexdigest()
afresh()
git("read-tree", base)
git("add", "-A")
raw = git("diff", "--cached", "--raw", "-z", "--no-abbrev", "--no-renames", "--no-ext-diff",
          "--ignore-submodules=none", base, "--")
fields = raw.split(b"\0")
changes = []
blobs = []
i = 0
while i + 1 < len(fields) and fields[i].startswith(b":"):
    old_mode, new_mode, _, oid, status = fields[i][1:].decode().split()
    path = fields[i + 1].decode("utf-8", "surrogateescape")
    i += 2
    entry = {"path": path, "status": status[0], "mode": new_mode, "size": 0, "target": None}
    if status[0] != "D" and new_mode != "160000":
        blobs.append((oid, entry))
        if new_mode == "120000":
            try:
                entry["target"] = os.readlink(os.path.join(work, path))
            except OSError:
                pass
    changes.append(entry)
if blobs:  # the size git will carry, which is not always the file's (filters, encodings)
    listing = git("cat-file", "--batch-check=%(objectname) %(objectsize)",
                  input="\n".join(oid for oid, _ in blobs).encode())
    sizes = dict(line.split() for line in listing.decode().splitlines())
    for oid, entry in blobs:
        entry["size"] = int(sizes[oid])
nested = []
for root, dirs, files in os.walk(work):
    if root == work:
        dirs[:] = [d for d in dirs if d != ".git"]
    for name in dirs + files:
        if name.lower() == ".git" and root != work:
            nested.append(os.path.join(root, name)[len(work) + 1:])
digest = meta()
print(json.dumps({"changes": changes, "meta": digest, "nested_git": nested[:50],
                  "state": sha256(raw + b"\0" + "\0".join(nested).encode("utf-8", "surrogateescape")
                                  + b"\0" + digest.encode()).hexdigest(),
                  "dir": git_dir, "started": started, "finished": time.time()}))
"""
GUARD_SCRIPT = GUARD_SCRIPT.replace('PREFIX = "%s"', f"PREFIX = {GUARD_DIR_PREFIX!r}", 1)
# A change time is read from a clock that may lag the one `time.time()` reads by a tick.
CLOCK_SLACK = 0.015


@dataclass(frozen=True)
class ChangePolicy:
    allow_workflow_changes: bool = False
    protected_paths: tuple[str, ...] = ()
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> ChangePolicy:
        """From a `workers.repoconfig.RepoConfig` (anything with the two attributes)."""
        return cls(
            allow_workflow_changes=bool(config.allow_workflow_changes),
            protected_paths=(ALWAYS_PROTECTED, *config.protected_paths),
            **overrides,
        )


@dataclass(frozen=True)
class Change:
    path: str
    status: str  # A, M, D, T
    mode: str  # new mode: 100644, 100755, 120000 (symlink), 160000 (gitlink), 000000 (deleted)
    size: int = 0
    target: str | None = None  # a symlink's target


@dataclass(frozen=True)
class Refusal:
    path: str
    reason: str

    def line(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class WorkspaceResult:
    patch: bytes
    new_files: tuple[str, ...]
    refusals: tuple[Refusal, ...]
    changed_files: tuple[str, ...] = field(default=())
    state: str = ""  # `ChangeGuard.state()` of the workspace this patch was taken from


# ---------------------------------------------------------------------------- pure


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A protected_paths glob as a regex: `*` and `?` stay within one directory, `**` spans any.

    A pattern without a slash matches that name in any directory (like .gitignore); one ending in
    a slash matches everything under that directory.
    """
    pattern = pattern.strip().lstrip("/")
    if pattern.endswith("/"):
        pattern += "**"
    anywhere = "/" not in pattern
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    body = "".join(out)
    return re.compile(("(?:.*/)?" if anywhere else "") + body + "(?:/.*)?\\Z")


def symlink_escapes(path: str, target: str) -> bool:
    if target.startswith("/"):
        return True
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    return resolved == ".." or resolved.startswith("../")


def touches_workflows(change: Change) -> bool:
    """`.github/workflows` itself, anything under it, or a symlink standing in for a directory on
    its way (`.github` -> elsewhere): all of them change which workflows GitHub runs."""
    path = change.path
    if path == WORKFLOWS.rstrip("/") or path.startswith(WORKFLOWS):
        return True
    return change.mode == "120000" and WORKFLOWS.startswith(path + "/")


def judge(changes: list[Change], policy: ChangePolicy) -> list[Refusal]:
    """The refusals for these changes under this policy; one per path, the first reason found."""
    protected = [(glob, glob_regex(glob)) for glob in policy.protected_paths]
    refusals = []
    for change in changes:
        parts = change.path.split("/")
        reason = None
        if any(part.lower() == ".git" for part in parts):
            reason = "changes under .git/ are never carried over"
        elif change.mode == "160000":
            reason = "an embedded git repository (a nested .git) cannot be part of the change"
        elif change.mode == "120000" and change.target is not None:
            if symlink_escapes(change.path, change.target):
                reason = f"a symlink pointing outside the workspace (-> {change.target})"
        elif change.status != "D" and change.size > policy.max_file_bytes:
            reason = (
                f"the file is {change.size} bytes, over the {policy.max_file_bytes}-byte cap "
                "for one file"
            )
        if reason is None and touches_workflows(change) and not policy.allow_workflow_changes:
            reason = (
                "changes to .github/workflows/ are refused unless .github/codex.yml says "
                "allow_workflow_changes: true (GitHub also refuses them without the workflows "
                "permission)"
            )
        if reason is None:
            for glob, regex in protected:
                if regex.match(change.path):
                    reason = (
                        f"the path is protected by protected_paths ({glob}) in .github/codex.yml"
                    )
                    break
        if reason is not None:
            refusals.append(Refusal(change.path, reason))
    return refusals


def agent_note(refusals: list[Refusal] | tuple[Refusal, ...]) -> str:
    """What the agent is told at once, so it can take another way."""
    if not refusals:
        return ""
    lines = "\n".join(f"- {refusal.line()}" for refusal in refusals)
    return (
        "\n[refused: these changes will not be part of the pull request; undo them or take "
        f"another way]\n{lines}"
    )


# ---------------------------------------------------------------------------- in the sandbox


def _facts_if_changed(
    box: Sandbox, base_commit: str, since: float | None, old_dir: str
) -> dict[str, Any] | None:
    """The facts, or None when nothing in the workspace changed after `since` (container time)."""
    args = ["look", base_commit]
    if since is not None:
        args.append(f"{since:.6f}")
    reply = box.run_python(
        GUARD_SCRIPT, [*args, old_dir], timeout=120, workdir="/", max_output=8 * 1024 * 1024
    )
    if reply.exit_code != 0 or reply.truncated:
        raise SandboxError(
            f"could not list the changes ({reply.exit_code}): {reply.text()[-2000:]}"
        )
    lines = reply.data().decode("utf-8", "surrogateescape").strip().splitlines()
    return dict(json.loads(lines[-1])) if lines else None


def _changes(facts: dict[str, Any]) -> list[Change]:
    changes = [Change(**entry) for entry in facts["changes"]]
    listed = {change.path for change in changes}
    for path in facts.get("nested_git", []):
        if path not in listed:  # ignored by git, but still someone's attempt at a nested repo
            changes.append(Change(path=path, status="A", mode="040000"))
    return changes


def _looked(facts: dict[str, Any]) -> float:
    """A container time after which every change is newer than the look: its start (a change
    time can lag by a clock tick), or when the look was quicker than that, a tick before its end."""
    return min(float(facts["started"]), float(facts["finished"]) - CLOCK_SLACK)


class ChangeGuard:
    """Watches a workspace for refused changes; tells the agent once, the PR at the end."""

    def __init__(self, box: Sandbox, base_commit: str, policy: ChangePolicy) -> None:
        self._box = box
        self._base = base_commit
        self._policy = policy
        self._dir = ""  # the git directory of the last full look
        facts = self._look()
        self._meta = facts["meta"]
        self.start_state = str(facts["state"])  # `state()` of the untouched workspace
        self._told: set[Refusal] = set()
        # When the agent has been told of every refusal, the container time the facts were.
        self._checked: float | None = None if self._judged(facts) else _looked(facts)

    @property
    def policy(self) -> ChangePolicy:
        return self._policy

    def _look(self) -> dict[str, Any]:
        facts = self._look_since(None)
        if facts is None:
            raise SandboxError("could not list the changes: the script printed nothing")
        return facts

    def _look_since(self, since: float | None) -> dict[str, Any] | None:
        facts = _facts_if_changed(self._box, self._base, since, self._dir)
        if facts is not None:
            self._dir = str(facts["dir"])
        return facts

    def refusals(self) -> list[Refusal]:
        return self._judged(self._look())

    def state(self) -> str:
        """A digest of the workspace as a patch would carry it (every path git sees, with its
        mode and content, the nested repositories, the git metadata): equal digests, equal
        patches."""
        return str(self._look()["state"])

    def _judged(self, facts: dict[str, Any]) -> list[Refusal]:
        refusals = judge(_changes(facts), self.policy)
        if facts["meta"] != self._meta:
            refusals.append(
                Refusal(
                    ".git/",
                    "changes under .git/ (config, hooks, attributes, alternates) are never "
                    "carried over; only the working tree is",
                )
            )
        return refusals

    def after_command(self) -> str:
        """A note for the agent about refusals it has not been told of yet, or ""."""
        facts = self._look_since(self._checked)
        if facts is None:  # nothing changed since the agent was told of every refusal
            return ""
        new = [refusal for refusal in self._judged(facts) if refusal not in self._told]
        self._told.update(new)
        self._checked = _looked(facts)
        return agent_note(new)

    def catch_up(self) -> None:
        """Look now (after the bot's own commands: the tests before), so that the agent's next
        command needs only the quick look; what a refusal it must hear of stays for it."""
        facts = self._look_since(self._checked)
        if facts is not None and all(r in self._told for r in self._judged(facts)):
            self._checked = _looked(facts)

    def result(self) -> WorkspaceResult:
        facts = self._look()
        changes = _changes(facts)
        refusals = judge(changes, self.policy)
        if facts["meta"] != self._meta:
            refusals.append(Refusal(".git/", "changes under .git/ are never carried over"))
        refused = {refusal.path for refusal in refusals}
        paths = [c.path for c in changes if c.path in refused and c.mode != "040000"]
        listing = base64.b64encode("\0".join(paths).encode("utf-8", "surrogateescape")).decode()
        reply = self._box.run_python(
            GUARD_SCRIPT,
            ["diff", self._base, listing, self._dir],
            timeout=120,
            workdir="/",
            max_output=MAX_DIFF_BYTES,
        )
        if reply.exit_code != 0:
            raise SandboxError(f"git diff failed ({reply.exit_code}): {reply.text()[-2000:]}")
        if reply.truncated:
            raise SandboxError(f"the change is larger than {MAX_DIFF_BYTES} bytes")
        kept = [c for c in changes if c.path not in refused and c.mode != "040000"]
        return WorkspaceResult(
            patch=reply.data(),
            new_files=tuple(c.path for c in kept if c.status == "A"),
            refusals=tuple(refusals),
            changed_files=tuple(c.path for c in kept),
            state=str(facts["state"]),
        )
