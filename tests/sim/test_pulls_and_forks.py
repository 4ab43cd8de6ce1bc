"""Pull requests as GitHub models them: from forks, edited, filtered; and humans pushing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from github import Auth, Github, GithubException

from sim.github import GitHubSim, SimError
from tests.sim.conftest import OWNER_REPO, api, clone_url, commit_file, git
from tests.sim.test_rest import NO_THROTTLE

FORKER = "outside-contributor"
FORK = f"{FORKER}/widgets"


@pytest.fixture
def gh(github: GitHubSim, token: str) -> Iterator[Github]:
    client = Github(base_url=github.api_url, auth=Auth.Token(token), retry=None, **NO_THROTTLE)
    yield client
    client.close()


def fork_pull(github: GitHubSim, *, private: bool = True) -> dict:
    if not private:
        github.require_repo(OWNER_REPO).private = False
    github.create_fork(OWNER_REPO, FORKER)
    github.push_as(
        FORK,
        "feature",
        {"pkg/__init__.py": "def add(a, b):\n    return b + a\n"},
        "Fix add",
        author=FORKER,
    )
    return github.open_pull(OWNER_REPO, f"{FORKER}:feature", "Fix add", "From my fork", user=FORKER)


def test_pull_from_a_fork_is_shaped_like_githubs(github: GitHubSim, gh: Github) -> None:
    pull = fork_pull(github)
    assert pull["head"]["label"] == f"{FORKER}:feature"
    assert pull["head"]["repo"]["full_name"] == FORK
    assert pull["head"]["repo"]["fork"] is True
    assert pull["head"]["user"]["login"] == FORKER
    assert pull["base"]["repo"]["full_name"] == OWNER_REPO
    assert pull["base"]["label"] == "octo-org:main"
    assert pull["user"]["login"] == FORKER
    assert pull["author_association"] == "NONE"
    assert pull["commits"] == 1

    fetched = gh.get_repo(OWNER_REPO).get_pull(pull["number"])
    assert fetched.head.repo.full_name == FORK
    assert fetched.head.sha == github.branch_sha(FORK, "feature")
    assert [p.number for p in gh.get_repo(OWNER_REPO).get_pulls(head=f"{FORKER}:feature")] == [
        pull["number"]
    ]
    assert list(gh.get_repo(OWNER_REPO).get_pulls(head="octo-org:feature")) == []


def test_the_bot_reads_a_fork_pull_through_the_base_repo_but_cannot_push(
    github: GitHubSim, token: str, tmp_path: Path
) -> None:
    pull = fork_pull(github)
    work = tmp_path / "work"
    git("clone", "-q", clone_url(github), str(work), token=token)
    git("fetch", "-q", "origin", f"pull/{pull['number']}/head:pr", cwd=work, token=token)
    assert git("rev-parse", "pr", cwd=work).stdout.strip() == pull["head"]["sha"]

    # The fork is private (as its parent) and outside the installation: invisible to the bot.
    assert api(github, "GET", f"/repos/{FORK}", token).status_code == 404
    git("checkout", "-q", "pr", cwd=work)
    commit_file(work, "bot.txt", "x\n", "Bot change")
    pushed = git(
        "push", "-q", clone_url(github, FORK), "HEAD:feature", cwd=work, token=token, check=False
    )
    assert pushed.returncode != 0
    hidden = git(
        "push",
        "-q",
        "origin",
        f"HEAD:refs/pull/{pull['number']}/head",
        cwd=work,
        token=token,
        check=False,
    )
    assert hidden.returncode != 0
    assert github.branch_sha(FORK, "feature") == pull["head"]["sha"]


def test_a_public_fork_is_readable_not_writable(github: GitHubSim, token: str) -> None:
    fork_pull(github, private=False)
    assert api(github, "GET", f"/repos/{FORK}", token).json()["fork"] is True
    refused = api(github, "POST", f"/repos/{FORK}/issues/1/comments", token, {"body": "hi"})
    assert refused.status_code == 403
    assert refused.json()["message"] == "Resource not accessible by integration"


def test_a_fork_pull_follows_pushes_to_the_fork(github: GitHubSim, gh: Github) -> None:
    pull = fork_pull(github)
    new_head = github.push_as(FORK, "feature", {"NOTES.md": "more\n"}, "More", author=FORKER)
    fetched = gh.get_repo(OWNER_REPO).get_pull(pull["number"])
    assert fetched.head.sha == new_head
    assert [c.sha for c in fetched.get_commits()][-1] == new_head


def test_fork_errors(github: GitHubSim) -> None:
    github.create_fork(OWNER_REPO, FORKER)
    with pytest.raises(SimError, match="already exists"):
        github.create_fork(OWNER_REPO, FORKER)
    with pytest.raises(SimError, match="No commits"):
        github.open_pull(OWNER_REPO, f"{FORKER}:main", "nothing", user=FORKER)
    with pytest.raises(SimError):
        github.open_pull(OWNER_REPO, "stranger:main", "no such fork", user="stranger")


def test_patch_pull_updates_title_body_state_and_ignores_draft(
    github: GitHubSim, token: str
) -> None:
    github.push_as(OWNER_REPO, "codex/issue-1", {"a.txt": "a\n"}, "A", author=github.bot_login)
    number = api(
        github,
        "POST",
        f"/repos/{OWNER_REPO}/pulls",
        token,
        {"title": "t", "head": "codex/issue-1", "base": "main", "draft": True},
    ).json()["number"]
    path = f"/repos/{OWNER_REPO}/pulls/{number}"
    edited = api(github, "PATCH", path, token, {"title": "New", "body": "B", "draft": False}).json()
    assert (edited["title"], edited["body"], edited["draft"]) == ("New", "B", True)
    closed = api(github, "PATCH", path, token, {"state": "closed"}).json()
    assert closed["state"] == "closed" and closed["closed_at"]
    api(
        github,
        "POST",
        f"/repos/{OWNER_REPO}/pulls",
        token,
        {"title": "again", "head": "codex/issue-1", "base": "main"},
    )
    reopen = api(github, "PATCH", path, token, {"state": "open"})
    assert reopen.status_code == 422
    assert "already exists" in reopen.json()["errors"][0]["message"]
    assert api(github, "PATCH", path, token, {"title": 5}).status_code == 422
    assert api(github, "PATCH", path, token, {"state": "merged"}).status_code == 422


def test_head_filter_needs_the_owner_as_on_github(github: GitHubSim, gh: Github) -> None:
    for branch in ("one", "two"):
        github.push_as(OWNER_REPO, branch, {f"{branch}.txt": "x\n"}, branch)
        github.open_pull(OWNER_REPO, branch, branch, user=github.bot_login)
    repo = gh.get_repo(OWNER_REPO)
    assert [p.head.ref for p in repo.get_pulls(head="octo-org:one")] == ["one"]
    assert [p.head.ref for p in repo.get_pulls(head="OCTO-ORG:two")] == ["two"]
    # Without "owner:" GitHub ignores the filter and lists every open PR.
    assert sorted(p.head.ref for p in repo.get_pulls(head="one")) == ["one", "two"]
    with pytest.raises(GithubException) as duplicate:
        repo.create_pull(title="dup", body="", head="one", base="main")
    assert duplicate.value.status == 422


def test_push_as_moves_the_branch_like_a_human_push(
    github: GitHubSim, token: str, tmp_path: Path, gh: Github
) -> None:
    github.push_as(OWNER_REPO, "codex/issue-1", {"a.txt": "a\n"}, "Bot work", github.bot_login)
    pull = github.open_pull(OWNER_REPO, "codex/issue-1", "Fix", user=github.bot_login)
    work = tmp_path / "bot"
    git("clone", "-q", "-b", "codex/issue-1", clone_url(github), str(work), token=token)
    started_from = git("rev-parse", "HEAD", cwd=work).stdout.strip()

    human = github.push_as(
        OWNER_REPO,
        "codex/issue-1",
        {"a.txt": "a, by hand\n", "README.md": None},
        "Tweak by hand",
        author="octo-maintainer",
    )
    assert github.pushes[-1].old_sha == started_from and github.pushes[-1].new_sha == human
    assert gh.get_repo(OWNER_REPO).get_branch("codex/issue-1").commit.sha == human
    latest = list(gh.get_repo(OWNER_REPO).get_commits(sha="codex/issue-1"))[0]
    assert latest.commit.author.name == "octo-maintainer"
    assert latest.author.login == "octo-maintainer"
    assert [parent.sha for parent in latest.parents] == [started_from]
    files = git("ls-tree", "-r", "--name-only", human, cwd=github.bare_repo_path(OWNER_REPO))
    assert "README.md" not in files.stdout.split()
    assert gh.get_repo(OWNER_REPO).get_pull(pull["number"]).head.sha == human

    # The bot's clone is now behind: its push is refused, never forced.
    commit_file(work, "b.txt", "b\n", "More bot work")
    refused = git("push", "-q", "origin", "codex/issue-1", cwd=work, token=token, check=False)
    assert refused.returncode != 0
    assert github.branch_sha(OWNER_REPO, "codex/issue-1") == human


def test_push_as_starts_a_new_branch_from_the_default_one(github: GitHubSim) -> None:
    main = github.branch_sha(OWNER_REPO, "main")
    head = github.push_as(OWNER_REPO, "topic", {"t.txt": "t\n"}, "Topic")
    assert github.pushes[-1].old_sha == "0" * 40
    files = git("show", "--format=%P", "--name-only", head, cwd=github.bare_repo_path(OWNER_REPO))
    assert files.stdout.split() == [main, "t.txt"]
    with pytest.raises(SimError):
        github.push_as("octo-org/nope", "x", {}, "m")
