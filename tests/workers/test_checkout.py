"""Committing and pushing the task's branch, against a real git remote (a bare repository)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sandbox.changes import ChangePolicy
from workers import checkout


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def remote(tmp_path: Path) -> Path:
    seed = tmp_path / "seed"
    seed.mkdir()
    git(seed, "init", "--quiet", "--initial-branch=main")
    (seed / "core.py").write_text("value = 1\n")
    git(seed, "add", ".")
    git(seed, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "base")
    bare = tmp_path / "origin.git"
    git(tmp_path, "clone", "--quiet", "--bare", str(seed), str(bare))
    return bare


def attempt(bare: Path, dest: Path, content: str, replace: str = "") -> str:
    """One attempt of a task: a fresh clone, its change staged, committed and pushed."""
    start = checkout.clone(str(bare), dest, token="t0ken-unused-by-file-remotes")
    (dest / "core.py").write_text(content)
    git(dest, "add", "core.py")
    return checkout.commit_and_push(
        start, branch="codex/issue-1-fix", message="Fix value", token="t0ken", replace=replace
    )


def test_a_retry_with_the_same_change_keeps_the_commit_pushed_before(tmp_path: Path) -> None:
    bare = remote(tmp_path)
    first = attempt(bare, tmp_path / "one", "value = 2\n")
    again = attempt(bare, tmp_path / "two", "value = 2\n", replace=first)
    assert again == first
    assert git(bare, "rev-list", "main..codex/issue-1-fix").split() == [first]


def test_a_retry_with_another_change_goes_on_top_without_a_force_push(tmp_path: Path) -> None:
    bare = remote(tmp_path)
    first = attempt(bare, tmp_path / "one", "value = 2\n")
    again = attempt(bare, tmp_path / "two", "value = 3\n", replace=first)
    assert git(bare, "rev-list", "main..codex/issue-1-fix").split() == [again, first]
    assert git(bare, "show", "codex/issue-1-fix:core.py") == "value = 3"


def test_a_patch_applied_ahead_is_not_applied_again_and_another_is(tmp_path: Path) -> None:
    bare = remote(tmp_path)
    start = checkout.clone(str(bare), tmp_path / "work", token="t0ken-unused-by-file-remotes")
    policy = ChangePolicy()

    def patch_to(content: str) -> bytes:
        (start.path / "core.py").write_text(content)
        diff = subprocess.run(
            ["git", "diff", "--binary"], cwd=start.path, capture_output=True, check=True
        ).stdout
        git(start.path, "checkout", "--quiet", "--", "core.py")
        return diff

    two, three = patch_to("value = 2\n"), patch_to("value = 3\n")
    branch = "codex/issue-1-fix"
    assert checkout.apply_patch(start, patch=two, branch=branch, policy=policy) == ["core.py"]
    ahead = checkout.AppliedPatch(branch, two, ["core.py"])
    git(start.path, "reset", "--quiet", "--hard", start.base_sha)  # were it applied again: seen
    assert checkout.apply_patch(start, patch=two, branch=branch, policy=policy, ahead=ahead) == [
        "core.py"
    ]
    assert git(start.path, "diff", "--cached", "--name-only") == ""
    checkout.apply_patch(start, patch=three, branch=branch, policy=policy, ahead=ahead)
    assert git(start.path, "show", ":core.py") == "value = 3"
    # Applied over another one put there before (a new file too): it starts afresh.
    (start.path / "new.py").write_text("x = 1\n")
    git(start.path, "add", "new.py")
    assert checkout.apply_patch(start, patch=two, branch=branch, policy=policy) == ["core.py"]
    assert git(start.path, "show", ":core.py") == "value = 2"
