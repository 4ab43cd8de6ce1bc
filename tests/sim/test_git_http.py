"""Git smart HTTP through `git http-backend`, with GitHub's Basic x-access-token auth."""

from __future__ import annotations

import base64
import gzip
from pathlib import Path

import requests

from sim.github import GitHubSim
from tests.sim.conftest import OWNER_REPO, clone_url, commit_file, git


def test_clone_push_branch_and_refuse_force(github: GitHubSim, token: str, tmp_path: Path) -> None:
    work = tmp_path / "clone"
    git("clone", "-q", clone_url(github), str(work), token=token)
    assert (work / "pkg" / "__init__.py").read_text().startswith("def add")

    git("checkout", "-q", "-b", "codex/fix-1", cwd=work)
    first = commit_file(work, "pkg/__init__.py", "def add(a, b):\n    return a + b\n", "Fix add")
    git("push", "-q", "origin", "codex/fix-1", cwd=work, token=token)
    assert github.branch_sha(OWNER_REPO, "codex/fix-1") == first
    assert github.pushes[-1].ref == "refs/heads/codex/fix-1"
    assert github.pushes[-1].new_sha == first
    assert github.pushes[-1].old_sha == "0" * 40

    git("reset", "-q", "--hard", "HEAD~1", cwd=work)
    commit_file(work, "other.txt", "rewritten\n", "Rewrite history")
    forced = git(
        "push", "-q", "--force", "origin", "codex/fix-1", cwd=work, token=token, check=False
    )
    assert forced.returncode != 0
    assert github.branch_sha(OWNER_REPO, "codex/fix-1") == first

    deleted = git("push", "-q", "origin", ":codex/fix-1", cwd=work, token=token, check=False)
    assert deleted.returncode != 0
    assert github.branch_sha(OWNER_REPO, "codex/fix-1") == first


def test_private_repo_needs_a_token(github: GitHubSim, tmp_path: Path) -> None:
    result = git("clone", "-q", clone_url(github), str(tmp_path / "anon"), check=False)
    assert result.returncode != 0
    assert not (tmp_path / "anon" / "README.md").exists()


def test_bad_token_is_refused(github: GitHubSim, tmp_path: Path) -> None:
    result = git(
        "clone",
        "-q",
        clone_url(github),
        str(tmp_path / "bad"),
        token="ghs_" + "y" * 36,
        check=False,
    )
    assert result.returncode != 0


def test_push_without_token_is_refused(github: GitHubSim, token: str, tmp_path: Path) -> None:
    work = tmp_path / "clone"
    git("clone", "-q", clone_url(github), str(work), token=token)
    git("checkout", "-q", "-b", "sneaky", cwd=work)
    commit_file(work, "x.txt", "x\n", "x")
    result = git("push", "-q", "origin", "sneaky", cwd=work, check=False)
    assert result.returncode != 0
    assert github.branch_sha(OWNER_REPO, "sneaky") is None
    assert github.pushes == []


def test_large_push_is_chunked(github: GitHubSim, token: str, tmp_path: Path) -> None:
    work = tmp_path / "clone"
    git("clone", "-q", clone_url(github), str(work), token=token)
    git("checkout", "-q", "-b", "big", cwd=work)
    # A tiny post buffer makes git stream the pack with Transfer-Encoding: chunked.
    for i in range(300):
        (work / f"f{i}.txt").write_text(f"{i}\n" * 50)
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "many files", cwd=work)
    head = git("rev-parse", "HEAD", cwd=work).stdout.strip()
    git("-c", "http.postBuffer=1024", "push", "-q", "origin", "big", cwd=work, token=token)
    assert github.branch_sha(OWNER_REPO, "big") == head
    fetched = tmp_path / "fetched"
    git("clone", "-q", "--branch", "big", clone_url(github), str(fetched), token=token)
    assert (fetched / "f299.txt").exists()
    assert any(
        r.path.endswith("git-receive-pack") and r.headers.get("Transfer-Encoding") == "chunked"
        for r in github.requests
    )


def pkt_line(text: str) -> bytes:
    return f"{len(text) + 4:04x}{text}".encode()


def test_gzip_request_body_is_understood(github: GitHubSim, token: str) -> None:
    head = github.branch_sha(OWNER_REPO, "main")
    assert head is not None
    body = pkt_line(f"want {head} ofs-delta\n") + b"0000" + pkt_line("done\n")
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    response = requests.post(
        f"{clone_url(github)}/git-upload-pack",
        data=gzip.compress(body),
        headers={
            "Authorization": f"Basic {basic}",
            "Content-Type": "application/x-git-upload-pack-request",
            "Content-Encoding": "gzip",
        },
        timeout=30,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/x-git-upload-pack-result"
    assert b"PACK" in response.content


def test_git_401_asks_for_basic_auth(github: GitHubSim) -> None:
    response = requests.get(f"{clone_url(github)}/info/refs?service=git-upload-pack", timeout=10)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="GitHub"'


def test_public_repo_clones_anonymously(
    github: GitHubSim, source_dir: Path, tmp_path: Path
) -> None:
    github.create_repo("octo-org/public", source_dir, installation_id=7, private=False)
    git("clone", "-q", clone_url(github, "octo-org/public"), str(tmp_path / "pub"))
    assert (tmp_path / "pub" / "README.md").exists()
