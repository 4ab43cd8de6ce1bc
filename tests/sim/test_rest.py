"""The REST endpoints the bot uses, driven through PyGithub as the bot drives them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from github import Auth, Github, GithubException, GithubIntegration

from sim.github import GitHubSim
from tests.sim.conftest import APP_ID, OWNER_REPO, api, clone_url, commit_file, git

# PyGithub 2.x spaces requests 0.25 s apart (1 s for writes) to be polite to github.com.
NO_THROTTLE: dict[str, Any] = {"seconds_between_requests": 0, "seconds_between_writes": 0}


@pytest.fixture
def gh(github: GitHubSim, token: str) -> Iterator[Github]:
    client = Github(base_url=github.api_url, auth=Auth.Token(token), retry=None, **NO_THROTTLE)
    yield client
    client.close()


def push_branch(sim: GitHubSim, token: str, tmp_path: Path, branch: str, count: int = 1) -> str:
    work = tmp_path / f"work-{branch.replace('/', '-')}"
    git("clone", "-q", clone_url(sim), str(work), token=token)
    git("checkout", "-q", "-b", branch, cwd=work)
    for i in range(count):
        commit_file(work, f"change{i}.txt", f"{i}\n", f"Change {i}")
    git("push", "-q", "origin", branch, cwd=work, token=token)
    return git("rev-parse", "HEAD", cwd=work).stdout.strip()


def test_app_flow_through_pygithub(github: GitHubSim, app_key: tuple[bytes, bytes]) -> None:
    integration = GithubIntegration(
        auth=Auth.AppAuth(APP_ID, app_key[0].decode()), base_url=github.api_url, **NO_THROTTLE
    )
    installation = integration.get_repo_installation("octo-org", "widgets")
    assert installation.id == 7
    assert [i.id for i in integration.get_installations()] == [7]
    access = integration.get_access_token(installation.id)
    assert access.token.startswith("ghs_")
    assert integration.get_app().id == APP_ID
    repo = Github(base_url=github.api_url, auth=Auth.Token(access.token), **NO_THROTTLE).get_repo(
        OWNER_REPO
    )
    assert repo.default_branch == "main"
    integration.close()


def test_issue_comments_labels_reactions(github: GitHubSim, gh: Github) -> None:
    github.create_issue(OWNER_REPO, "add() subtracts", "It returns a - b.")
    repo = gh.get_repo(OWNER_REPO)
    issue = repo.get_issue(1)
    assert issue.title == "add() subtracts"
    assert issue.pull_request is None

    comment = issue.create_comment("Working on it")
    comment.edit("Working on it (step 2)")
    assert issue.get_comment(comment.id).body == "Working on it (step 2)"
    issue.create_reaction("eyes")
    comment.create_reaction("rocket")
    issue.add_to_labels("codex:working")

    assert [c["body"] for c in github.issue_comments(OWNER_REPO, 1)] == ["Working on it (step 2)"]
    assert github.issue_comments(OWNER_REPO, 1)[0]["user"]["login"] == "codex-bot[bot]"
    assert github.issue_comments(OWNER_REPO, 1)[0]["performed_via_github_app"]["id"] == APP_ID
    assert [r["content"] for r in github.reactions(OWNER_REPO, number=1)] == ["eyes"]
    assert [r["content"] for r in github.reactions(OWNER_REPO, comment_id=comment.id)] == ["rocket"]
    assert [label.name for label in issue.get_labels()] == ["codex:working"]
    assert [c.body for c in issue.get_comments()] == ["Working on it (step 2)"]


def test_repeated_reaction_is_200_not_a_duplicate(github: GitHubSim, token: str) -> None:
    github.create_issue(OWNER_REPO, "t", "b")
    first = api(
        github, "POST", f"/repos/{OWNER_REPO}/issues/1/reactions", token, {"content": "eyes"}
    )
    again = api(
        github, "POST", f"/repos/{OWNER_REPO}/issues/1/reactions", token, {"content": "eyes"}
    )
    assert (first.status_code, again.status_code) == (201, 200)
    assert len(github.reactions(OWNER_REPO, number=1)) == 1
    bad = api(
        github, "POST", f"/repos/{OWNER_REPO}/issues/1/reactions", token, {"content": "party"}
    )
    assert bad.status_code == 422


def test_pull_request_lifecycle(github: GitHubSim, gh: Github, token: str, tmp_path: Path) -> None:
    github.create_issue(OWNER_REPO, "bug", "body")
    head = push_branch(github, token, tmp_path, "codex/issue-1", count=2)
    repo = gh.get_repo(OWNER_REPO)
    pull = repo.create_pull(
        title="Fix add", body="Closes #1", head="codex/issue-1", base="main", draft=True
    )
    assert pull.number == 2  # issues and pulls share one number sequence
    assert pull.head.sha == head
    assert pull.draft is True
    assert pull.html_url == f"{github.url}/{OWNER_REPO}/pull/2"
    assert [c.commit.message for c in pull.get_commits()] == ["Change 0", "Change 1"]
    assert repo.get_issue(2).pull_request is not None

    with pytest.raises(GithubException) as duplicate:
        repo.create_pull(title="again", body="", head="octo-org:codex/issue-1", base="main")
    assert duplicate.value.status == 422
    assert duplicate.value.data["errors"][0]["message"] == (
        "A pull request already exists for octo-org:codex/issue-1."
    )

    pull.create_review_request(reviewers=["octo-maintainer"])
    pull.edit(title="Fix add()", body="Closes #1\n\nDetails.")
    fetched = repo.get_pull(2)
    assert fetched.title == "Fix add()"
    assert [u.login for u in fetched.requested_reviewers] == ["octo-maintainer"]
    assert [p.number for p in repo.get_pulls(state="open", head="octo-org:codex/issue-1")] == [2]
    assert github.pulls(OWNER_REPO)[0]["head"]["ref"] == "codex/issue-1"

    pull.edit(state="closed")
    assert [p.number for p in repo.get_pulls(state="open")] == []


def test_pull_request_validation(github: GitHubSim, token: str, tmp_path: Path) -> None:
    path = f"/repos/{OWNER_REPO}/pulls"
    missing = api(github, "POST", path, token, {"title": "t", "head": "nope", "base": "main"})
    assert missing.status_code == 422
    push_branch(github, token, tmp_path, "empty-branch", count=0)
    empty = api(github, "POST", path, token, {"title": "t", "head": "empty-branch", "base": "main"})
    assert empty.status_code == 422
    assert "No commits between" in empty.json()["errors"][0]["message"]
    stranger = api(github, "POST", path, token, {"title": "t", "head": "main", "base": "main"})
    assert stranger.status_code == 422


def test_reviewers_must_be_collaborators(github: GitHubSim, token: str, tmp_path: Path) -> None:
    push_branch(github, token, tmp_path, "feature")
    api(
        github,
        "POST",
        f"/repos/{OWNER_REPO}/pulls",
        token,
        {"title": "t", "head": "feature", "base": "main"},
    )
    github.add_user("random-person")
    response = api(
        github,
        "POST",
        f"/repos/{OWNER_REPO}/pulls/1/requested_reviewers",
        token,
        {"reviewers": ["random-person"]},
    )
    assert response.status_code == 422


def test_branches_refs_commits(github: GitHubSim, gh: Github, token: str, tmp_path: Path) -> None:
    head = push_branch(github, token, tmp_path, "topic/x", count=3)
    repo = gh.get_repo(OWNER_REPO)
    assert repo.get_branch("topic/x").commit.sha == head
    assert repo.get_git_ref("heads/topic/x").object.sha == head
    commits = list(repo.get_commits(sha="topic/x"))
    assert [c.commit.message for c in commits] == [
        "Change 2",
        "Change 1",
        "Change 0",
        "Initial commit",
    ]
    assert commits[0].sha == head
    with pytest.raises(GithubException) as missing:
        repo.get_branch("does-not-exist")
    assert missing.value.status == 404


def test_pagination_follows_link_headers(
    github: GitHubSim, gh: Github, token: str, tmp_path: Path
) -> None:
    push_branch(github, token, tmp_path, "long", count=7)
    page = api(github, "GET", f"/repos/{OWNER_REPO}/commits?sha=long&per_page=3", token)
    assert 'rel="next"' in page.headers["Link"]
    assert len(page.json()) == 3
    client = Github(base_url=github.api_url, auth=Auth.Token(token), per_page=3, **NO_THROTTLE)
    assert len(list(client.get_repo(OWNER_REPO).get_commits(sha="long"))) == 8
    client.close()


@pytest.mark.parametrize(
    ("role", "legacy"),
    [
        ("admin", "admin"),
        ("maintain", "write"),
        ("write", "write"),
        ("triage", "read"),
        ("read", "read"),
    ],
)
def test_collaborator_permission(
    github: GitHubSim, gh: Github, token: str, role: str, legacy: str
) -> None:
    github.set_permission(OWNER_REPO, "alice", role)
    repo = gh.get_repo(OWNER_REPO)
    assert repo.get_collaborator_permission("alice") == legacy
    body = api(github, "GET", f"/repos/{OWNER_REPO}/collaborators/alice/permission", token).json()
    assert body["role_name"] == role


def test_not_found_answers_like_github(github: GitHubSim, token: str) -> None:
    for path in (
        "/repos/octo-org/nope",
        f"/repos/{OWNER_REPO}/issues/99",
        f"/repos/{OWNER_REPO}/pulls/99",
        "/no/such/route",
    ):
        response = api(github, "GET", path, token)
        assert response.status_code == 404, path
        assert response.json()["message"] in ("Not Found",), path
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"


def test_requests_are_recorded_without_credentials(github: GitHubSim, gh: Github) -> None:
    gh.get_repo(OWNER_REPO)
    recorded = [r for r in github.requests if r.path == f"/api/v3/repos/{OWNER_REPO}"]
    assert recorded and recorded[-1].status == 200
    assert recorded[-1].response_json["full_name"] == OWNER_REPO
    assert all("authorization" not in (k.lower() for k in r.headers) for r in github.requests)


def test_import_keeps_history_of_a_git_source(github: GitHubSim, tmp_path: Path) -> None:
    source = tmp_path / "with-history"
    source.mkdir()
    git("init", "-q", "-b", "trunk", cwd=source)
    commit_file(source, "a.txt", "a\n", "First")
    head = commit_file(source, "b.txt", "b\n", "Second")
    github.create_repo("octo-org/history", source, installation_id=7)
    assert github.branch_sha("octo-org/history", "main") == head


def test_import_of_plain_dir_skips_caches(github: GitHubSim, tmp_path: Path, token: str) -> None:
    source = tmp_path / "plain"
    (source / "__pycache__").mkdir(parents=True)
    (source / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\0")
    (source / "m.py").write_text("x = 1\n")
    github.create_repo("octo-org/plain", source, installation_id=7)
    files = git("ls-tree", "-r", "--name-only", "main", cwd=github.bare_repo_path("octo-org/plain"))
    assert files.stdout.split() == ["m.py"]


def test_admin_errors_are_json_not_tracebacks(github: GitHubSim) -> None:
    missing_field = requests.post(f"{github.url}/_sim/repos", json={}, timeout=10)
    assert missing_field.status_code == 400
    assert "full_name" in missing_field.json()["message"]
    unknown_repo = requests.post(
        f"{github.url}/_sim/issues", json={"full_name": "no/such", "title": "t"}, timeout=10
    )
    assert unknown_repo.status_code == 422


def test_import_accepts_a_relative_source_path(
    github: GitHubSim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "rel").mkdir()
    (tmp_path / "rel" / "x.txt").write_text("x\n")
    monkeypatch.chdir(tmp_path)
    github.create_repo("octo-org/relative", Path("rel"), installation_id=7)
    assert github.branch_sha("octo-org/relative", "main") is not None
