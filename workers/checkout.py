"""Git on the worker's side: clone the repository, then commit the sandbox's patch and push.

Credentials reach git only through the environment (``GIT_CONFIG_COUNT`` with an
``http.extraHeader``), never through a URL, argv or log line. The repository's own
hooks and config never run here: we only clone, apply a patch and commit.

What the sandbox sent is judged again here, on what is staged (`judge_staged`), with the same
pure `sandbox.changes.judge` and policy as the guard in the container: the container is where the
agent works, so its verdict is advice; this one decides.
"""

from __future__ import annotations

import base64
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from codexbot.redact import Redactor
from sandbox.changes import Change, ChangePolicy, Refusal, judge

GIT_TIMEOUT = 300
BOT_NAME = "codex-bot[bot]"
BOT_EMAIL = "codex-bot[bot]@users.noreply.github.com"


class GitError(Exception):
    """A git command failed; the message is redacted and safe to show."""


class RefusedChange(GitError):
    """The staged change holds what the change guard refuses: the sandbox's patch disagrees with
    the guard's verdict there, so the container cannot be trusted and nothing is pushed."""

    def __init__(self, refusals: list[Refusal]) -> None:
        self.refusals = refusals
        listed = "; ".join(f"{refusal.path!r}: {refusal.reason}" for refusal in refusals[:20])
        more = f" (and {len(refusals) - 20} more)" if len(refusals) > 20 else ""
        super().__init__(
            "the sandbox's patch holds changes the guard refuses, so nothing was pushed: "
            f"{listed}{more}"
        )


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
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_ATTR_NOSYSTEM": "1",
        "GIT_NO_REPLACE_OBJECTS": "1",
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
        """The command's output as git wrote it (paths in -z listings are bytes, not text)."""
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


@dataclass(frozen=True)
class AppliedPatch:
    """A patch `apply_patch` put on a branch already (while the model answered), and the paths
    it changed."""

    branch: str
    patch: bytes
    changed: list[str]


def apply_patch(
    checkout: Checkout,
    *,
    patch: bytes,
    branch: str,
    policy: ChangePolicy,
    ahead: AppliedPatch | None = None,
) -> list[str]:
    """Put the sandbox's patch on a new branch from the start commit; return the changed paths.

    ``git apply`` refuses paths under ``.git/`` and outside the tree, so a hostile patch
    cannot reach the worker's own repository metadata. What it staged is judged under `policy`;
    any refusal raises `RefusedChange` (the guard in the sandbox had left those paths out).
    ``ahead``: this very patch, applied and judged on this branch under this policy before
    (nothing touched the checkout since), is not applied again.
    """
    if ahead is not None and (ahead.branch, ahead.patch) == (branch, patch):
        return ahead.changed
    git = Git(checkout.path)
    # Afresh from the start commit, whatever a patch applied before left staged or written.
    git("checkout", "--quiet", "--force", "-B", branch, checkout.base_sha)
    git("apply", "--index", "--binary", "-p1", "--whitespace=nowarn", "-", input=patch)
    refusals = judge_staged(git, checkout.base_sha, policy)
    if refusals:
        raise RefusedChange(refusals)
    names = git("diff", "--cached", "--name-only", "-z")
    return [name for name in names.split("\0") if name]


def staged_changes(git: Git | Path, base: str) -> list[Change]:
    """What the index changes against `base`: path, status, new mode, the staged blob's size and
    a symlink's target, read from the objects (never from the work tree, which is not committed).
    """
    if not isinstance(git, Git):
        git = Git(git)
    listing = git.raw(
        "diff", "--cached", "--raw", "-z", "--no-abbrev", "--no-renames", "--no-ext-diff",
        "--no-textconv", "--ignore-submodules=none", base, "--",
    )  # fmt: skip
    fields = listing.split(b"\0")
    entries = []
    for i in range(0, len(fields) - 1, 2):
        if not fields[i].startswith(b":"):
            break
        _, new_mode, _, new_oid, status = fields[i][1:].decode().split()
        path = fields[i + 1].decode("utf-8", "surrogateescape")
        entries.append((path, status[0], new_mode, new_oid))
    has_blob = [status != "D" and mode != "160000" for _, status, mode, _ in entries]
    sizes = _blob_sizes(git, [e[3] for e, blob in zip(entries, has_blob, strict=True) if blob])
    changes = []
    for (path, status, mode, oid), blob in zip(entries, has_blob, strict=True):
        size = sizes[oid] if blob else 0
        target = None
        if mode == "120000" and status != "D":
            target = git.raw("cat-file", "blob", oid).decode("utf-8", "surrogateescape")
        changes.append(Change(path=path, status=status, mode=mode, size=size, target=target))
    return changes


def _blob_sizes(git: Git, oids: list[str]) -> dict[str, int]:
    if not oids:
        return {}
    listing = git(
        "cat-file", "--batch-check=%(objectname) %(objectsize)", input="\n".join(oids).encode()
    )
    sizes = {}
    for line in listing.splitlines():
        oid, _, size = line.partition(" ")
        if not size.isdigit():
            raise GitError(f"the staged object {oid} is missing")
        sizes[oid] = int(size)
    return sizes


def judge_staged(git: Git | Path, base: str, policy: ChangePolicy) -> list[Refusal]:
    """What the change guard refuses in the index against `base` (any commit: the task's start,
    or a base branch a whole fork branch is judged against after `git read-tree`)."""
    return judge(staged_changes(git, base), policy)


def commit_and_push(
    checkout: Checkout, *, branch: str, message: str, token: str, replace: str = ""
) -> str:
    """Commit what is staged as the bot, push the branch, and return the pushed commit's sha
    (`commit`, then `push`)."""
    sha = commit(checkout, message=message)
    return push(checkout, sha, branch=branch, message=message, token=token, replace=replace)


def commit(checkout: Checkout, *, message: str) -> str:
    """Commit what is staged as the bot, on the branch `apply_patch` made, and return its sha;
    nothing leaves the worker."""
    git = Git(checkout.path)
    git("commit", "--quiet", "--no-verify", "--file", "-", input=message.encode())
    return git("rev-parse", "HEAD")


def push(
    checkout: Checkout, sha: str, *, branch: str, message: str, token: str, replace: str = ""
) -> str:
    """Push `sha` (what `commit` made) to `branch` and return the sha pushed.

    ``replace``: the branch is at that commit (an earlier attempt of the same task pushed it);
    the new commit takes its place without a force push: the same tree, with that commit as its
    parent, so the push is a fast-forward (and fails if the branch moved since). When that commit
    already holds the same tree, it stays as it is: the same change is not committed twice."""
    git = Git(checkout.path, token=token)
    if replace:
        git("fetch", "--quiet", "origin", replace)
        tree = git("rev-parse", f"{sha}^{{tree}}")
        if tree == git("rev-parse", f"{replace}^{{tree}}"):
            git("reset", "--quiet", "--soft", replace)
            return replace
        sha = git("commit-tree", tree, "-p", replace, "-F", "-", input=message.encode())
        git("reset", "--quiet", "--soft", sha)
    git("push", "--quiet", "origin", f"{sha}:refs/heads/{branch}")
    return sha


def merge_base(checkout: Checkout, ref: str) -> str:
    """Where HEAD's history meets `ref` (a branch of origin, as the clone saw it)."""
    return Git(checkout.path)("merge-base", f"refs/remotes/origin/{ref}", "HEAD")
