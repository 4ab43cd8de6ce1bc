"""Git on the worker's side: clone the repository, then commit the sandbox's patch and push.

Credentials reach git only through the environment (``GIT_CONFIG_COUNT`` with an
``http.extraHeader``), never through a URL, argv or log line. The repository's own
hooks and config never run here: we only clone, apply a patch and commit.
"""

from __future__ import annotations

import base64
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from codexbot.redact import Redactor
from sandbox.changes import Change

GIT_TIMEOUT = 300
BOT_NAME = "codex-bot[bot]"
BOT_EMAIL = "codex-bot[bot]@users.noreply.github.com"


class GitError(Exception):
    """A git command failed; the message is redacted and safe to show."""


@dataclass(frozen=True)
class Checkout:
    path: Path
    base_branch: str
    base_sha: str


def git_auth_env(token: str) -> dict[str, str]:
    """Environment that makes git send the token as GitHub expects, without a URL or argv."""
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
    }


def _base_env(home: Path) -> dict[str, str]:
    """A clean environment: no user or system git config, no prompts, no inherited secrets."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false",
        "GIT_AUTHOR_NAME": BOT_NAME,
        "GIT_AUTHOR_EMAIL": BOT_EMAIL,
        "GIT_COMMITTER_NAME": BOT_NAME,
        "GIT_COMMITTER_EMAIL": BOT_EMAIL,
    }


class Git:
    """Runs git in one directory with a clean environment and, when given, a token."""

    def __init__(self, cwd: Path, *, token: str | None = None) -> None:
        self.cwd = cwd
        self._env = _base_env(cwd.parent)
        if token:
            self._env.update(git_auth_env(token))
        self._redact = Redactor([token])

    def __call__(self, *args: str, input: bytes | None = None) -> str:
        return self.raw(*args, input=input).decode(errors="replace").strip()

    def raw(self, *args: str, input: bytes | None = None) -> bytes:
        """What git printed, as it printed it."""
        command = ["git", "-c", "core.hooksPath=/dev/null", "-c", "credential.helper=", *args]
        try:
            done = subprocess.run(
                command,
                cwd=self.cwd,
                env=self._env,
                input=input,
                capture_output=True,
                timeout=GIT_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise GitError(f"git {args[0]} took longer than {GIT_TIMEOUT} s") from None
        if done.returncode != 0:
            stderr = self._redact(done.stderr.decode(errors="replace").strip())
            raise GitError(f"git {args[0]} failed ({done.returncode}): {stderr[-1500:]}")
        return done.stdout


def clone(git_url: str, dest: Path, *, token: str, branch: str | None = None) -> Checkout:
    """Clone ``git_url`` into ``dest`` (which must not exist) and report where it starts."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    git = Git(dest.parent, token=token)
    args = ["clone", "--quiet", "--no-tags"]
    if branch:
        args += ["--branch", branch]
    git(*args, "--", git_url, dest.name)
    inside = Git(dest, token=token)
    return Checkout(
        path=dest,
        base_branch=inside("rev-parse", "--abbrev-ref", "HEAD"),
        base_sha=inside("rev-parse", "HEAD"),
    )


def recent_subjects(start: Checkout, count: int = 50) -> list[str]:
    """The subjects of the last ``count`` commits, to learn the repository's conventions."""
    return Git(start.path)("log", f"-{count}", "--format=%s").splitlines()


def fetch_pull_head(start: Checkout, number: int, *, token: str) -> Checkout:
    """Move a checkout to a pull request's head (GitHub keeps it at ``refs/pull/N/head``, also
    for pull requests from forks, which the App cannot push to)."""
    git = Git(start.path, token=token)
    git("fetch", "--quiet", "origin", f"refs/pull/{number}/head")
    git("checkout", "--quiet", "--detach", "FETCH_HEAD")
    return Checkout(
        path=start.path, base_branch=start.base_branch, base_sha=git("rev-parse", "HEAD")
    )


def apply_patch(checkout: Checkout, *, patch: bytes, branch: str) -> list[str]:
    """Put the sandbox's patch on a new branch from the start commit; return the changed paths.

    ``git apply`` refuses paths under ``.git/`` and outside the tree, so a hostile patch
    cannot reach the worker's own repository metadata.
    """
    git = Git(checkout.path)
    git("checkout", "--quiet", "-B", branch, checkout.base_sha)
    git("apply", "--index", "--binary", "--whitespace=nowarn", "-", input=patch)
    names = git("diff", "--cached", "--name-only", "-z")
    return [name for name in names.split("\0") if name]


def commit_and_push(checkout: Checkout, *, branch: str, message: str, token: str) -> str:
    """Commit what is staged as the bot, push the branch, and return the new commit's sha."""
    git = Git(checkout.path, token=token)
    git("commit", "--quiet", "--no-verify", "--file", "-", input=message.encode())
    git("push", "--quiet", "origin", f"HEAD:refs/heads/{branch}")
    return git("rev-parse", "HEAD")


def staged_changes(checkout: Checkout, base: str) -> list[Change]:
    """What the index changes against commit `base`, as the change guard judges changes: path,
    status, mode, the staged blob's size and a symlink's target, read from git's objects."""
    git = Git(checkout.path)
    fields = git.raw(
        "-c",
        "core.quotepath=off",
        "diff",
        "--cached",
        "--raw",
        "-z",
        "--no-renames",
        "--no-ext-diff",
        "--no-textconv",
        "--abbrev=40",
        base,
    ).split(b"\0")
    changes = []
    for meta, raw_path in zip(fields[0::2], fields[1::2], strict=False):
        if not meta.startswith(b":"):
            break
        _, new_mode, _, new_obj, status = meta[1:].decode().split()
        path = raw_path.decode("utf-8", "surrogateescape")
        size, target = 0, None
        if status[0] != "D" and new_mode != "160000":
            size = int(git("cat-file", "-s", new_obj))
            if new_mode == "120000":
                target = git.raw("cat-file", "blob", new_obj).decode("utf-8", "surrogateescape")
        changes.append(Change(path, status[0], new_mode, size, target))
    return changes


def merge_base(checkout: Checkout, ref: str) -> str:
    """Where HEAD's history meets `ref` (a branch of origin, as the clone saw it)."""
    return Git(checkout.path)("merge-base", f"refs/remotes/origin/{ref}", "HEAD")
