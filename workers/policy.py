"""The task's policy, read from the base repository's default branch and nowhere else.

    policy = read_policy(mirror, default_branch, start, scratch, from_fork=False)
    policy.config        # .github/codex.yml: setup, env, secrets, limits, protected paths, ...
    policy.test_command  # codex.yml `test`, else AGENTS.md's Testing section, else detected

Whatever the task works on (a pull request's head, a fork, a branch the agent wrote before), the
rules it works under are the ones the maintainers merged: a contributor cannot lift
`protected_paths`, allow workflow changes, name a setup secret or change the test command by
changing those files on their branch. The files are read from the mirror at the default branch's
commit. When the task starts from that very commit (an issue fixed from the default branch) the
checkout is read directly; otherwise only the files the readers look at are written to a scratch
directory: the top level's regular files, `.github/codex.yml`, and the names (not the contents)
of `tests/test_*.py` that detection looks for. Symlinks are written as symlinks, so the readers
refuse them as they would in a checkout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from workers import repoconfig
from workers.checkout import Checkout, Git, GitError
from workers.github import Repository
from workers.testcmd import find_test_command

MAX_POLICY_FILE_BYTES = 1024 * 1024  # larger top-level files are no policy and are not written
REGULAR_MODES = ("100644", "100755")
SYMLINK_MODE = "120000"


class PolicyError(ValueError):
    """The default branch's policy cannot be read; the message is shown to the user."""


@dataclass(frozen=True)
class Policy:
    config: repoconfig.RepoConfig
    test_command: str | None
    source_sha: str  # the default branch's commit the policy was read from
    from_fork: bool = False


def _entries(git: Git, sha: str, *paths: str) -> list[tuple[str, str, str, str]]:
    """(mode, type, object, path) of `git ls-tree` at `sha`, for `paths` (the top level if none)."""
    listing = git("ls-tree", "-z", "--full-tree", sha, "--", *paths)
    entries = []
    for line in listing.split("\0"):
        if not line:
            continue
        meta, _, path = line.partition("\t")
        mode, kind, obj = meta.split()
        entries.append((mode, kind, obj, path))
    return entries


def policy_tree(mirror: Path, sha: str, dest: Path) -> Path:
    """The default branch's policy files at `sha` written under `dest` (see the module doc)."""
    git = Git(mirror)
    dest.mkdir(parents=True, exist_ok=True)
    wanted = _entries(git, sha) + _entries(git, sha, repoconfig.CONFIG_PATH)  # top level, config
    wanted += [
        (mode, kind, obj, path)
        for mode, kind, obj, path in _entries(git, sha, "tests/")
        if Path(path).name.startswith("test_") and path.endswith(".py")
    ]
    for mode, kind, obj, path in wanted:
        if kind != "blob" or ".." in Path(path).parts:
            continue
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if mode == SYMLINK_MODE:
            os.symlink(_blob(mirror, obj), target)  # read as a symlink: refused as one
        elif mode in REGULAR_MODES and path.startswith("tests/"):
            target.touch()  # detection asks only whether such a file exists
        elif mode in REGULAR_MODES and _size(git, obj) <= MAX_POLICY_FILE_BYTES:
            target.write_bytes(_blob(mirror, obj))
    return dest


def _size(git: Git, obj: str) -> int:
    return int(git("cat-file", "-s", obj))


def _blob(mirror: Path, obj: str) -> bytes:
    return Git(mirror).raw("cat-file", "blob", obj)


def default_branch_sha(mirror: Path, branch: str) -> str:
    """The branch's commit; `HEAD` is the mirror's own HEAD (a local checkout's detached HEAD)."""
    ref = "HEAD" if branch == "HEAD" else f"refs/heads/{branch}"
    try:
        return Git(mirror)("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except GitError:
        raise PolicyError(f"the default branch `{branch}` was not found") from None


def read_policy(
    mirror: Path, default_branch: str, start: Checkout, scratch: Path, *, from_fork: bool
) -> Policy:
    """The policy of the default branch, whatever `start` holds; `scratch` may be written."""
    sha = default_branch_sha(mirror, default_branch)
    root = start.path if start.base_sha == sha else policy_tree(mirror, sha, scratch)
    try:
        config = repoconfig.load(root)
    except repoconfig.RepoConfigError as error:
        raise PolicyError(f"`.github/codex.yml` is not valid: {error}") from None
    found = find_test_command(root, config.test)
    return Policy(
        config=config,
        test_command=found.command if found else None,
        source_sha=sha,
        from_fork=from_fork,
    )


def default_branch_config(repository: Repository) -> repoconfig.RepoConfig:
    """`.github/codex.yml` of the default branch, read through the API: for the fast lane,
    which decides before any task (and its mirror) exists. PolicyError when it is not valid."""
    text = repository.file_text(repoconfig.CONFIG_PATH, repository.default_branch)
    if text is None:
        return repoconfig.DEFAULT
    try:
        return repoconfig.parse(text)
    except repoconfig.RepoConfigError as error:
        raise PolicyError(f"`.github/codex.yml` is not valid: {error}") from None


# Where GitHub looks for a pull-request template, in its order.
PULL_REQUEST_TEMPLATES = (
    ".github/pull_request_template.md",
    ".github/PULL_REQUEST_TEMPLATE.md",
    "pull_request_template.md",
    "docs/pull_request_template.md",
)


def pull_request_template(repository: Repository) -> str | None:
    """The default branch's pull-request template, as the maintainers merged it; None if none."""
    for path in PULL_REQUEST_TEMPLATES:
        text = repository.file_text(path, repository.default_branch)
        if text is not None:
            return text
    return None
