"""The change that leaves the sandbox, and what is refused: judged purely, then on a real box."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from sandbox.changes import (
    CLOCK_SLACK,
    GUARD_DIR_PREFIX,
    Change,
    ChangeGuard,
    ChangePolicy,
    Refusal,
    agent_note,
    glob_regex,
    judge,
    symlink_escapes,
)
from sandbox.container import Sandbox
from sandbox.labels import remove_task_containers

from .conftest import git, make_repo


@pytest.mark.parametrize(
    ("glob", "path", "matches"),
    [
        ("LICENSE", "LICENSE", True),
        ("LICENSE", "docs/LICENSE", True),
        ("LICENSE", "LICENSE.md", False),
        ("migrations/**", "migrations/0001.py", True),
        ("migrations/**", "app/migrations/0001.py", False),
        ("**/migrations/*.py", "app/migrations/0001.py", True),
        ("**/migrations/*.py", "migrations/0001.py", True),
        ("src/*.py", "src/a.py", True),
        ("src/*.py", "src/pkg/a.py", False),
        ("secrets/", "secrets/key.pem", True),
        ("*.lock", "deep/dir/poetry.lock", True),
        ("a?c", "abc", True),
        ("a?c", "a/c", False),
        ("/setup.cfg", "setup.cfg", True),
    ],
)
def test_glob_regex(glob: str, path: str, matches: bool) -> None:
    assert bool(glob_regex(glob).match(path)) is matches


@pytest.mark.parametrize(
    ("path", "target", "escapes"),
    [
        ("link", "/etc/passwd", True),
        ("link", "../outside", True),
        ("a/b/link", "../../..", True),
        ("a/b/link", "../../c", False),
        ("link", "calc.py", False),
        ("a/link", "./../x", False),
    ],
)
def test_symlink_escapes(path: str, target: str, escapes: bool) -> None:
    assert symlink_escapes(path, target) is escapes


POLICY = ChangePolicy(protected_paths=("migrations/**",), max_file_bytes=100)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (Change("calc.py", "M", "100644", 10), None),
        (Change("gone.py", "D", "000000", 0), None),
        (Change("big.bin", "A", "100644", 101), "the file is 101 bytes, over the 100-byte cap"),
        (Change("big.bin", "D", "000000", 101), None),
        (
            Change("out", "A", "120000", 11, "/etc/passwd"),
            "a symlink pointing outside the workspace (-> /etc/passwd)",
        ),
        (Change("in", "A", "120000", 7, "calc.py"), None),
        (Change("vendor/x", "A", "160000"), "an embedded git repository"),
        (Change("sub/.git/config", "A", "100644", 3), "changes under .git/ are never carried over"),
        (
            Change(".github/workflows/ci.yml", "M", "100644", 5),
            "changes to .github/workflows/ are refused unless",
        ),
        (
            Change(".github/workflows", "A", "120000", 4, "evil"),
            "changes to .github/workflows/ are refused unless",
        ),
        (
            Change(".github", "T", "120000", 4, "evil"),
            "changes to .github/workflows/ are refused unless",
        ),
        (Change(".github/workflows-notes.md", "A", "100644", 5), None),
        (Change(".github/dependabot.yml", "M", "100644", 5), None),
        (
            Change("migrations/0002.py", "A", "100644", 5),
            "the path is protected by protected_paths (migrations/**)",
        ),
    ],
)
def test_judge(change: Change, reason: str | None) -> None:
    refusals = judge([change], POLICY)
    if reason is None:
        assert refusals == []
    else:
        assert len(refusals) == 1 and refusals[0].path == change.path
        assert refusals[0].reason.startswith(reason)


def test_workflows_allowed_by_config() -> None:
    change = Change(".github/workflows/ci.yml", "M", "100644", 5)
    assert judge([change], ChangePolicy(allow_workflow_changes=True)) == []


def test_text_for_the_agent() -> None:
    refusals = [Refusal("a.bin", "too big")]
    assert agent_note([]) == ""
    assert "- a.bin: too big" in agent_note(refusals)
    assert "undo them or take another way" in agent_note(refusals)


# ------------------------------------------------------------------ on a real container


@pytest.fixture
def changes_box(
    docker_client: docker.DockerClient, sandbox_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Sandbox, str, Path]]:
    """A fresh sandbox per test: each one changes its workspace."""
    repo = make_repo(tmp_path_factory.mktemp("changes") / "repo")
    (repo / ".github" / "workflows").mkdir(parents=True)
    (repo / ".github" / "workflows" / "ci.yml").write_text("on: push\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "ci")
    base = git(repo, "rev-parse", "HEAD").strip()
    task = f"test-changes-{uuid.uuid4().hex[:8]}"
    try:
        with Sandbox(docker_client, image=sandbox_image, task_id=task) as box:
            box.put_workspace(repo)
            yield box, base, repo
    finally:
        remove_task_containers(docker_client, task)


@pytest.mark.docker
def test_refused_changes_are_left_out_and_reported_at_once(
    changes_box: tuple[Sandbox, str, Path], tmp_path: Path
) -> None:
    box, base, repo = changes_box
    guard = ChangeGuard(
        box, base, ChangePolicy(protected_paths=("migrations/**",), max_file_bytes=1000)
    )
    box.exec("printf 'def add(a, b):\\n    return b + a\\n' > calc.py && echo 'X = 1' > new.py")
    assert guard.after_command() == ""

    box.exec(
        "ln -s /etc/passwd leak && ln -s calc.py fine-link && head -c 2000 /dev/zero > big.bin"
    )
    note = guard.after_command()
    assert "leak: a symlink pointing outside the workspace (-> /etc/passwd)" in note
    assert "big.bin: the file is 2000 bytes, over the 1000-byte cap" in note
    assert guard.after_command() == ""  # told once

    box.exec("echo 'on: [push, pull_request]' > .github/workflows/ci.yml")
    box.exec("mkdir -p migrations vendor/lib && echo x > migrations/0002.py")
    box.exec("cd vendor/lib && git init -q && git commit -q --allow-empty -m x")
    assert box.exec("pwd").output == "/workspace/vendor/lib\n"  # the directory is kept
    box.exec("cd /workspace && echo '#!/bin/sh' > .git/hooks/pre-commit")
    note = guard.after_command()
    assert ".github/workflows/ci.yml: changes to .github/workflows/ are refused" in note
    assert "migrations/0002.py: the path is protected" in note
    assert "vendor/lib: an embedded git repository" in note
    assert ".git/: changes under .git/" in note

    result = guard.result()
    assert sorted(result.new_files) == ["fine-link", "new.py"]
    assert {r.path for r in result.refusals} == {
        "leak",
        "big.bin",
        ".github/workflows/ci.yml",
        "migrations/0002.py",
        "vendor/lib",
        "vendor/lib/.git",
        ".git/",
    }
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    subprocess.run(["git", "apply", "--index", "-"], input=result.patch, cwd=clone, check=True)
    changed = git(clone, "diff", "--cached", "--name-only").split()
    assert sorted(changed) == ["calc.py", "fine-link", "new.py"]
    # The agent's own index is untouched by all this.
    assert box.exec("git diff --cached --name-only").output == ""


@pytest.mark.docker
def test_the_guard_looks_again_only_when_the_workspace_changed(
    changes_box: tuple[Sandbox, str, Path],
) -> None:
    box, base, _ = changes_box
    # What changed within CLOCK_SLACK of a look counts as after it (the safe side): this is no
    # wait for work, the checkout just written has to age past that.
    time.sleep(2 * CLOCK_SLACK)
    guard = ChangeGuard(box, base, ChangePolicy(max_file_bytes=1000))

    def index() -> str:  # each full look stages in a git directory of its own, under a new name
        return box.exec(f"ls -d {GUARD_DIR_PREFIX}*").output

    looked = index()
    box.exec("cat calc.py && ls -la && git log --oneline")
    assert guard.after_command() == ""
    assert index() == looked, "a command that only read needs no second look"

    # A change right after a look, and a deletion (only the directory's times move): both seen.
    box.exec("ln -s /etc/passwd leak")
    assert "leak: a symlink pointing outside the workspace" in guard.after_command()
    box.exec("rm .github/workflows/ci.yml")
    assert ".github/workflows/ci.yml: changes to .github/workflows/" in guard.after_command()

    # In a directory find cannot list, a change leaves no trace it can see: look anyway.
    box.exec("mkdir hidden && echo x > hidden/f && chmod 300 hidden")
    guard.after_command()
    looked = index()
    box.exec("echo y >> hidden/f")
    assert guard.after_command() == ""
    assert index() != looked


@pytest.mark.docker
def test_the_quick_look_skips_loose_objects_and_sees_a_deep_write(
    changes_box: tuple[Sandbox, str, Path],
) -> None:
    box, base, _ = changes_box
    box.exec("mkdir -p deep/er && echo x > deep/er/notes.txt")
    time.sleep(2 * CLOCK_SLACK)  # as above: what the guard's first look saw must age past it
    guard = ChangeGuard(box, base, ChangePolicy(max_file_bytes=1000))

    def index() -> str:
        return box.exec(f"ls -d {GUARD_DIR_PREFIX}*").output

    looked = index()
    # A loose object the agent's git writes (in a new .git/objects/?? directory) changes no diff.
    box.exec("echo never-seen-before | git hash-object -w --stdin")
    assert guard.after_command() == ""
    assert index() == looked

    # A file written in place, deep down: only its own change time moves, not its directory's.
    box.exec("echo y >> deep/er/notes.txt")
    assert guard.after_command() == ""
    assert index() != looked, "a write in place is a change, and is looked at"
    assert "deep/er/notes.txt" in guard.result().changed_files
