"""Red team: the change guard, attacked from inside the sandbox and from a lying container.

Each attack below once carried a refused change past the guard (issue 10). The worker applies
what the guard in the sandbox sent and judges it again on what it staged; the container's word is
advice. What must hold: no workflow file, protected path or oversized blob reaches the branch,
and the exec server cannot be inspected or outgrown by an agent command.
"""

# ruff: noqa: S108 - /tmp here is the container's private tmpfs, not the host's

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from sandbox.changes import ChangeGuard, ChangePolicy
from sandbox.container import Sandbox
from sandbox.hardening import SandboxLimits
from sandbox.image import DEFAULT_IMAGE, ensure_image
from sandbox.labels import remove_task_containers
from tests.sandbox.conftest import git, make_repo
from workers.checkout import Checkout, RefusedChange, apply_patch, judge_staged

CAP = 5 * 1024 * 1024
POLICY = ChangePolicy(protected_paths=("LICENSE",), max_file_bytes=CAP)
EVIL = "on: push\njobs: {x: {runs-on: ubuntu-latest, steps: [{run: env}]}}\n"


@pytest.fixture
def repo(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A project with a LICENSE and, unless the test asks for none, a workflow."""
    repo = make_repo(tmp_path / "repo")
    if getattr(request, "param", "workflow") == "workflow":
        (repo / ".github" / "workflows").mkdir(parents=True)
        (repo / ".github" / "workflows" / "ci.yml").write_text("on: push\n")
    (repo / "LICENSE").write_text("MIT\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "ci")
    return repo


def worker_checkout(repo: Path, dest: Path) -> Checkout:
    subprocess.run(["git", "clone", "-q", str(repo), str(dest)], check=True)
    return Checkout(path=dest, base_branch="main", base_sha=git(dest, "rev-parse", "HEAD").strip())


Box = Callable[..., Sandbox]


@pytest.fixture
def make_box(docker_client: docker.DockerClient, repo: Path) -> Iterator[Box]:
    """A fresh sandbox holding `repo`, with the environment and limits a test asks for."""
    ensure_image(docker_client, DEFAULT_IMAGE)
    tasks: list[str] = []
    boxes: list[Sandbox] = []

    def make(env: dict[str, str] | None = None, limits: SandboxLimits | None = None) -> Sandbox:
        tasks.append(f"test-guard-{uuid.uuid4().hex[:8]}")
        box = Sandbox(
            docker_client,
            image=DEFAULT_IMAGE,
            task_id=tasks[-1],
            env=env,
            limits=limits or SandboxLimits(),
        )
        boxes.append(box)
        box.start()
        box.put_workspace(repo)
        return box

    try:
        yield make
    finally:
        for box in boxes:
            box.remove()
        for task in tasks:
            remove_task_containers(docker_client, task)


def published(box: Sandbox, repo: Path, tmp_path: Path, attack: str) -> list[str]:
    """Run `attack` as the agent would, then do what the job does with the guard's result."""
    base = git(repo, "rev-parse", "HEAD").strip()
    guard = ChangeGuard(box, base, POLICY)
    done = box.exec(attack)
    assert done.exit_code == 0, done.output
    guard.after_command()
    result = guard.result()
    start = worker_checkout(repo, tmp_path / "worker")
    return apply_patch(start, patch=result.patch, branch="codex/attack", policy=POLICY)


def staged_workflows(changed: list[str]) -> list[str]:
    return [path for path in changed if path == ".github" or path.startswith(".github/workflows")]


# ------------------------------------------------------------------ attacks from the sandbox

NOPREFIX_FILE = (
    "mkdir -p x/.github/workflows && printf %s '" + EVIL + "' > x/.github/workflows/e.yml"
)


@pytest.mark.docker
@pytest.mark.parametrize(
    "config", ["git config --global diff.noprefix true", "git config diff.noprefix true"]
)
def test_noprefix_cannot_move_a_file_into_workflows(
    make_box: Box, repo: Path, tmp_path: Path, config: str
) -> None:
    changed = published(make_box(), repo, tmp_path, f"{config} && {NOPREFIX_FILE}")
    assert staged_workflows(changed) == []
    assert "x/.github/workflows/e.yml" in changed  # the file keeps its own path


@pytest.mark.docker
@pytest.mark.parametrize("repo", ["workflow", "none"], indirect=True)
def test_workflows_replaced_by_a_symlink_is_refused(
    make_box: Box, repo: Path, tmp_path: Path
) -> None:
    attack = (
        f"mkdir -p evil .github && printf %s '{EVIL}' > evil/e.yml && rm -rf .github/workflows && "
        "ln -s ../evil .github/workflows"
    )
    changed = published(make_box(), repo, tmp_path, attack)
    assert staged_workflows(changed) == []
    assert changed == ["evil/e.yml"]


@pytest.mark.docker
def test_a_clean_filter_cannot_grow_a_blob_past_the_cap(
    make_box: Box, repo: Path, tmp_path: Path
) -> None:
    attack = (
        "git config --global filter.big.clean 'cat; head -c 7340032 /dev/zero' && "
        "echo '*.dat filter=big' > .git/info/attributes && echo small > data.dat"
    )
    changed = published(make_box(), repo, tmp_path, attack)
    assert changed == ["data.dat"]
    assert (tmp_path / "worker" / "data.dat").read_bytes() == b"small\n"
    staged = git(tmp_path / "worker", "cat-file", "-s", ":data.dat").strip()
    assert int(staged) == len(b"small\n")


FORGED_PATCH = f"""diff --git a/.github/workflows/e.yml b/.github/workflows/e.yml
new file mode 100644
--- /dev/null
+++ b/.github/workflows/e.yml
@@ -0,0 +1 @@
+{EVIL.splitlines()[0]}
"""


@pytest.mark.docker
def test_the_environment_cannot_steer_the_diff(make_box: Box, repo: Path, tmp_path: Path) -> None:
    """A `git` shell function through BASH_ENV and git config through GIT_CONFIG_* (had env: let
    them through) forge nothing: the guard runs no shell and reads no inherited environment."""
    forged = FORGED_PATCH.replace("'", "'\\''")
    env = {
        "BASH_ENV": "/workspace/.bashenv",
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "diff.noprefix",
        "GIT_CONFIG_VALUE_0": "true",
    }
    box = make_box(env=env)
    box.exec(f"printf '%s\\n' 'git() {{ printf %s '\\''{forged}'\\''; }}' > /workspace/.bashenv")
    changed = published(box, repo, tmp_path, f"true && {NOPREFIX_FILE}")
    assert staged_workflows(changed) == []
    assert sorted(changed) == [".bashenv", "x/.github/workflows/e.yml"]


# ------------------------------------------------------------------ a container that lies


def patch_from(repo: Path, tmp_path: Path, change: str) -> bytes:
    """The patch a lying container could send: made on a clone by `change` (a shell command)."""
    work = worker_checkout(repo, tmp_path / "liar").path
    subprocess.run(["sh", "-c", change], cwd=work, check=True)
    git(work, "add", "-A")
    return git(work, "diff", "--cached", "--binary").encode()


@pytest.mark.parametrize(
    ("change", "refused"),
    [
        (f"printf %s '{EVIL}' > .github/workflows/e.yml", ".github/workflows/e.yml"),
        ("rm -r .github/workflows && ln -s ../evil .github/workflows", ".github/workflows"),
        (
            "mkdir evil && mv .github/workflows evil/ && rm -r .github && ln -s evil .github",
            ".github",
        ),
        ("head -c 7340032 /dev/zero > big.bin", "big.bin"),
        ("echo GPL > LICENSE", "LICENSE"),
        ("ln -s /etc/passwd leak", "leak"),
    ],
)
def test_the_worker_refuses_what_the_guard_refuses(
    repo: Path, tmp_path: Path, change: str, refused: str
) -> None:
    patch = patch_from(repo, tmp_path, change)
    start = worker_checkout(repo, tmp_path / "worker")
    with pytest.raises(RefusedChange) as error:
        apply_patch(start, patch=patch, branch="codex/lie", policy=POLICY)
    assert refused in {refusal.path for refusal in error.value.refusals}
    assert repr(refused) in str(error.value)


def test_judge_staged_judges_against_any_base(repo: Path, tmp_path: Path) -> None:
    """A whole branch judged against the base branch: every commit on it, not the last one."""
    work = worker_checkout(repo, tmp_path / "fork").path
    base = git(work, "rev-parse", "HEAD").strip()
    (work / ".github" / "workflows" / "fork.yml").write_text(EVIL)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "fork's workflow")
    (work / "fine.py").write_text("X = 1\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "harmless")
    refusals = judge_staged(work, base, POLICY)
    assert [refusal.path for refusal in refusals] == [".github/workflows/fork.yml"]
    assert judge_staged(work, "HEAD~1", POLICY) == []


# ------------------------------------------------------------------ the exec server

PEEK = r"""
import ctypes, os
me = os.getpid()
for name in os.listdir("/proc"):
    if not name.isdigit() or int(name) == me:
        continue
    try:
        with open("/proc/%s/cmdline" % name, "rb") as f:
            if b"'execserver'" not in f.read():
                continue
    except OSError:
        continue
    try:
        with open("/proc/%s/mem" % name, "rb") as mem:
            mem.seek(0x400000)
            mem.read(1)
        print("mem: read")
    except OSError as error:
        print("mem: %s" % error.strerror)
    libc = ctypes.CDLL(None, use_errno=True)
    attached = libc.ptrace(16, int(name), None, None)  # PTRACE_ATTACH
    print("ptrace: %s" % ("attached" if attached == 0 else os.strerror(ctypes.get_errno())))
    if attached == 0:  # let it go on, or the server stays stopped
        os.waitpid(int(name), 0x40000000)  # __WALL
        libc.ptrace(17, int(name), None, None)  # PTRACE_DETACH
"""


@pytest.mark.docker
def test_a_command_cannot_inspect_the_exec_server(make_box: Box) -> None:
    box = make_box()
    box.exec(f"cat > /tmp/peek.py <<'EOF'\n{PEEK}\nEOF")
    output = box.exec("python3 /tmp/peek.py").output
    assert "ptrace: Operation not permitted" in output, output
    assert "mem: Permission denied" in output or "mem: Operation not permitted" in output, output
    assert box.exec("echo alive").output == "alive\n"


@pytest.mark.docker
def test_an_unreadable_directory_does_not_hide_bytes_from_the_workspace_limit(
    make_box: Box,
) -> None:
    box = make_box(limits=SandboxLimits(workspace_bytes=16 * 1024**2))
    # The command lingers after writing so that the sampler (once a second) sees the bytes.
    result = box.exec(
        "mkdir hidden && chmod 300 hidden && head -c 50331648 /dev/zero > hidden/fill && "
        "chmod 000 hidden && exec sleep 30",
        timeout=60,
    )
    assert "the workspace grew past 16777216 bytes" in result.output, result.output
    assert box.exec("stat -c %a hidden").output == "0\n"  # the agent's mode is left as it was


@pytest.mark.docker
def test_a_full_tmp_and_home_do_not_stop_the_guard(
    make_box: Box, repo: Path, tmp_path: Path
) -> None:
    """The guard keeps its git directories in a tmpfs of the bot's own, not in /tmp."""
    box = make_box(limits=SandboxLimits(tmp_size="8m", home_size="8m"))
    changed = published(
        box,
        repo,
        tmp_path,
        "dd if=/dev/zero of=/tmp/fill bs=1M count=16 2>/dev/null;"
        " dd if=/dev/zero of=$HOME/fill bs=1M count=16 2>/dev/null;"
        " echo kept > kept.txt; df --output=avail /tmp | tail -1 | grep -qx ' *0'",
    )
    assert changed == ["kept.txt"]
