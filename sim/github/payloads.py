"""Pure builders for the JSON GitHub returns and sends.

Every function takes records (and the server's URLs) and returns a dict shaped like GitHub's,
checked against GitHub's OpenAPI descriptions by ``tests/sim/test_openapi_conformance.py``.
No I/O here: git data arrives already read (``CommitInfo``).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sim.github.state import (
    CheckRun,
    Comment,
    Installation,
    Issue,
    Job,
    Label,
    Reaction,
    Repo,
    Review,
    ReviewComment,
    SentWebhook,
    User,
    WorkflowRun,
)

DOCS_URL = "https://docs.github.com/enterprise-server@3.14/rest"
APP_PERMISSIONS = {
    "checks": "write",
    "contents": "write",
    "issues": "write",
    "metadata": "read",
    "pull_requests": "write",
}
APP_EVENTS = ["issues", "issue_comment", "pull_request_review", "pull_request_review_comment"]
REACTION_CONTENTS = ("+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes")


@dataclass(frozen=True)
class Urls:
    """Where things live: ``html`` is the host root (git, web pages), ``api`` is ``html/api/v3``."""

    html: str

    @property
    def api(self) -> str:
        return self.html + "/api/v3"

    def repo_api(self, full_name: str) -> str:
        return f"{self.api}/repos/{full_name}"

    def repo_html(self, full_name: str) -> str:
        return f"{self.html}/{full_name}"


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    tree: str
    parents: tuple[str, ...]
    author_name: str
    author_email: str
    author_date: str
    committer_name: str
    committer_email: str
    committer_date: str
    message: str


@dataclass(frozen=True)
class App:
    id: int
    slug: str
    name: str
    owner: str


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def node_id(kind: str, number: int) -> str:
    return base64.b64encode(f"0:{kind}{number}".encode()).decode().rstrip("=")


def error_json(message: str, errors: list[Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"message": message, "documentation_url": DOCS_URL}
    if errors is not None:
        body["errors"] = errors
    return body


def user_json(urls: Urls, user: User) -> dict[str, Any]:
    base = f"{urls.api}/users/{user.login}"
    return {
        "login": user.login,
        "id": user.id,
        "node_id": node_id("User", user.id),
        "avatar_url": f"{urls.html}/avatars/u/{user.id}",
        "gravatar_id": "",
        "url": base,
        "html_url": f"{urls.html}/{user.login}",
        "followers_url": f"{base}/followers",
        "following_url": f"{base}/following{{/other_user}}",
        "gists_url": f"{base}/gists{{/gist_id}}",
        "starred_url": f"{base}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{base}/subscriptions",
        "organizations_url": f"{base}/orgs",
        "repos_url": f"{base}/repos",
        "events_url": f"{base}/events{{/privacy}}",
        "received_events_url": f"{base}/received_events",
        "type": user.type,
        "user_view_type": "public",
        "site_admin": False,
    }


def repo_permissions(permission: str) -> dict[str, bool]:
    order = ("read", "triage", "write", "maintain", "admin")
    rank = order.index(permission) if permission in order else -1
    return {
        "admin": rank >= 4,
        "maintain": rank >= 3,
        "push": rank >= 2,
        "triage": rank >= 1,
        "pull": rank >= 0,
    }


def repo_json(
    urls: Urls, repo: Repo, owner: User, *, open_issues: int = 0, permission: str = "write"
) -> dict[str, Any]:
    api = urls.repo_api(repo.full_name)
    html = urls.repo_html(repo.full_name)
    created = iso(repo.created_at)
    return {
        "id": repo.id,
        "node_id": node_id("Repository", repo.id),
        "name": repo.name,
        "full_name": repo.full_name,
        "private": repo.private,
        "owner": user_json(urls, owner),
        "html_url": html,
        "description": None,
        "fork": repo.fork_of is not None,
        "url": api,
        "archive_url": f"{api}/{{archive_format}}{{/ref}}",
        "assignees_url": f"{api}/assignees{{/user}}",
        "blobs_url": f"{api}/git/blobs{{/sha}}",
        "branches_url": f"{api}/branches{{/branch}}",
        "collaborators_url": f"{api}/collaborators{{/collaborator}}",
        "comments_url": f"{api}/comments{{/number}}",
        "commits_url": f"{api}/commits{{/sha}}",
        "compare_url": f"{api}/compare/{{base}}...{{head}}",
        "contents_url": f"{api}/contents/{{+path}}",
        "contributors_url": f"{api}/contributors",
        "deployments_url": f"{api}/deployments",
        "downloads_url": f"{api}/downloads",
        "events_url": f"{api}/events",
        "forks_url": f"{api}/forks",
        "git_commits_url": f"{api}/git/commits{{/sha}}",
        "git_refs_url": f"{api}/git/refs{{/sha}}",
        "git_tags_url": f"{api}/git/tags{{/sha}}",
        "git_url": f"git:{html.split(':', 1)[1]}.git",
        "issue_comment_url": f"{api}/issues/comments{{/number}}",
        "issue_events_url": f"{api}/issues/events{{/number}}",
        "issues_url": f"{api}/issues{{/number}}",
        "keys_url": f"{api}/keys{{/key_id}}",
        "labels_url": f"{api}/labels{{/name}}",
        "languages_url": f"{api}/languages",
        "merges_url": f"{api}/merges",
        "milestones_url": f"{api}/milestones{{/number}}",
        "notifications_url": f"{api}/notifications{{?since,all,participating}}",
        "pulls_url": f"{api}/pulls{{/number}}",
        "releases_url": f"{api}/releases{{/id}}",
        "ssh_url": f"git@{html.split('://', 1)[1].split('/', 1)[0]}:{repo.full_name}.git",
        "stargazers_url": f"{api}/stargazers",
        "statuses_url": f"{api}/statuses/{{sha}}",
        "subscribers_url": f"{api}/subscribers",
        "subscription_url": f"{api}/subscription",
        "tags_url": f"{api}/tags",
        "teams_url": f"{api}/teams",
        "trees_url": f"{api}/git/trees{{/sha}}",
        "clone_url": f"{html}.git",
        "mirror_url": None,
        "hooks_url": f"{api}/hooks",
        "svn_url": html,
        "homepage": None,
        "language": "Python",
        "forks_count": 0,
        "forks": 0,
        "stargazers_count": 0,
        "watchers_count": 0,
        "watchers": 0,
        "size": 1,
        "default_branch": repo.default_branch,
        "open_issues_count": open_issues,
        "open_issues": open_issues,
        "is_template": False,
        "topics": [],
        "has_issues": True,
        "has_projects": False,
        "has_wiki": False,
        "has_pages": False,
        "has_downloads": False,
        "has_discussions": False,
        "archived": False,
        "disabled": False,
        "visibility": "private" if repo.private else "public",
        "pushed_at": created,
        "created_at": created,
        "updated_at": created,
        "permissions": repo_permissions(permission),
        "allow_rebase_merge": True,
        "allow_squash_merge": True,
        "allow_merge_commit": True,
        "allow_auto_merge": False,
        "delete_branch_on_merge": False,
        "allow_forking": True,
        "web_commit_signoff_required": False,
        "license": None,
        "network_count": 0,
        "subscribers_count": 0,
    }


def label_json(urls: Urls, repo: Repo, label: Label) -> dict[str, Any]:
    return {
        "id": label.id,
        "node_id": node_id("Label", label.id),
        "url": f"{urls.repo_api(repo.full_name)}/labels/{label.name}",
        "name": label.name,
        "color": label.color,
        "default": False,
        "description": label.description,
    }


def reactions_rollup(url: str, reactions: list[Reaction]) -> dict[str, Any]:
    counts = {
        content: sum(r.content == content for r in reactions) for content in REACTION_CONTENTS
    }
    return {"url": url, "total_count": len(reactions), **counts}


def app_json(urls: Urls, app: App, owner: User) -> dict[str, Any]:
    return {
        "id": app.id,
        "slug": app.slug,
        "node_id": node_id("App", app.id),
        "client_id": f"Iv1.{app.id:016x}",
        "owner": user_json(urls, owner),
        "name": app.name,
        "description": "codex-bot (simulated GitHub App)",
        "external_url": urls.html,
        "html_url": f"{urls.html}/apps/{app.slug}",
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:00Z",
        "permissions": dict(APP_PERMISSIONS),
        "events": list(APP_EVENTS),
        "installations_count": 1,
    }


def installation_json(
    urls: Urls, app: App, installation: Installation, account: User
) -> dict[str, Any]:
    created = iso(installation.created_at)
    # GitHub's description of GET /app/installations types the account as allOf(simple-user,
    # enterprise), so the account must carry the enterprise fields too.
    account_json = {
        **user_json(urls, account),
        "name": account.login,
        "slug": account.login,
        "description": None,
        "website_url": None,
        "created_at": created,
        "updated_at": created,
    }
    return {
        "id": installation.id,
        "account": account_json,
        "repository_selection": "selected",
        "access_tokens_url": f"{urls.api}/app/installations/{installation.id}/access_tokens",
        "repositories_url": f"{urls.api}/installation/repositories",
        "html_url": f"{urls.html}/settings/installations/{installation.id}",
        "app_id": app.id,
        "app_slug": app.slug,
        "client_id": f"Iv1.{app.id:016x}",
        "target_id": account.id,
        "target_type": "Organization" if account.type == "Organization" else "User",
        "permissions": dict(APP_PERMISSIONS),
        "events": list(APP_EVENTS),
        "created_at": created,
        "updated_at": created,
        "single_file_name": None,
        "has_multiple_single_files": False,
        "single_file_paths": [],
        "suspended_by": None,
        "suspended_at": None,
    }


def installation_token_json(token: str, expires_at: datetime) -> dict[str, Any]:
    return {
        "token": token,
        "expires_at": iso(expires_at),
        "permissions": dict(APP_PERMISSIONS),
        "repository_selection": "selected",
    }


def webhook_installation_json(installation_id: int) -> dict[str, Any]:
    return {"id": installation_id, "node_id": node_id("Installation", installation_id)}


def author_association(repo: Repo, login: str) -> str:
    if login == repo.owner:
        return "OWNER"
    if repo.permissions.get(login, "none") != "none":
        return "COLLABORATOR"
    return "NONE"


def issue_json(
    urls: Urls,
    repo: Repo,
    issue: Issue,
    *,
    users: dict[str, User],
    comments: int,
    reactions: list[Reaction],
) -> dict[str, Any]:
    api = f"{urls.repo_api(repo.full_name)}/issues/{issue.number}"
    kind = "pull" if issue.pull else "issues"
    body: dict[str, Any] = {
        "url": api,
        "repository_url": urls.repo_api(repo.full_name),
        "labels_url": f"{api}/labels{{/name}}",
        "comments_url": f"{api}/comments",
        "events_url": f"{api}/events",
        "html_url": f"{urls.repo_html(repo.full_name)}/{kind}/{issue.number}",
        "id": issue.id,
        "node_id": node_id("Issue", issue.id),
        "number": issue.number,
        "title": issue.title,
        "user": user_json(urls, users[issue.user]),
        "labels": [label_json(urls, repo, repo.labels[name.lower()]) for name in issue.labels],
        "state": issue.state,
        "state_reason": None,
        "locked": False,
        "assignee": None,
        "assignees": [],
        "milestone": None,
        "comments": comments,
        "created_at": iso(issue.created_at),
        "updated_at": iso(issue.updated_at),
        "closed_at": iso(issue.closed_at),
        "author_association": author_association(repo, issue.user),
        "active_lock_reason": None,
        "body": issue.body,
        "reactions": reactions_rollup(f"{api}/reactions", reactions),
        "timeline_url": f"{api}/timeline",
        "performed_via_github_app": None,
    }
    if issue.pull:
        pull_api = f"{urls.repo_api(repo.full_name)}/pulls/{issue.number}"
        pull_html = f"{urls.repo_html(repo.full_name)}/pull/{issue.number}"
        body["draft"] = issue.pull.draft
        body["pull_request"] = {
            "url": pull_api,
            "html_url": pull_html,
            "diff_url": f"{pull_html}.diff",
            "patch_url": f"{pull_html}.patch",
            "merged_at": None,
        }
    return body


def comment_json(
    urls: Urls,
    repo: Repo,
    comment: Comment,
    *,
    user: User,
    reactions: list[Reaction],
    app: dict[str, Any] | None,
    is_pull: bool,
) -> dict[str, Any]:
    api = f"{urls.repo_api(repo.full_name)}/issues/comments/{comment.id}"
    kind = "pull" if is_pull else "issues"
    return {
        "id": comment.id,
        "node_id": node_id("IssueComment", comment.id),
        "url": api,
        "html_url": (
            f"{urls.repo_html(repo.full_name)}/{kind}/{comment.issue_number}"
            f"#issuecomment-{comment.id}"
        ),
        "body": comment.body,
        "user": user_json(urls, user),
        "created_at": iso(comment.created_at),
        "updated_at": iso(comment.updated_at),
        "issue_url": f"{urls.repo_api(repo.full_name)}/issues/{comment.issue_number}",
        "author_association": author_association(repo, comment.user),
        "performed_via_github_app": app,
        "reactions": reactions_rollup(f"{api}/reactions", reactions),
    }


def reaction_json(urls: Urls, reaction: Reaction, user: User) -> dict[str, Any]:
    return {
        "id": reaction.id,
        "node_id": node_id("Reaction", reaction.id),
        "user": user_json(urls, user),
        "content": reaction.content,
        "created_at": iso(reaction.created_at),
    }


def pull_branch_json(urls: Urls, repo: Repo, owner: User, ref: str, sha: str) -> dict[str, Any]:
    """``head`` or ``base`` of a pull request: ``repo`` is where ``ref`` lives (maybe a fork)."""
    return {
        "label": f"{repo.owner}:{ref}",
        "ref": ref,
        "sha": sha,
        "user": user_json(urls, owner),
        "repo": repo_json(urls, repo, owner),
    }


def pull_json(
    urls: Urls,
    repo: Repo,
    issue: Issue,
    *,
    head_repo: Repo,
    users: dict[str, User],
    comments: int,
    review_comments: int,
    commits: int,
    simple: bool = False,
) -> dict[str, Any]:
    """A pull request; ``simple=True`` gives the list/"pull-request-simple" shape."""
    assert issue.pull is not None
    pull = issue.pull
    api = f"{urls.repo_api(repo.full_name)}/pulls/{issue.number}"
    issue_api = f"{urls.repo_api(repo.full_name)}/issues/{issue.number}"
    html = f"{urls.repo_html(repo.full_name)}/pull/{issue.number}"
    owner = users[repo.owner]
    body: dict[str, Any] = {
        "url": api,
        "id": issue.pull_id,
        "node_id": node_id("PullRequest", issue.pull_id or 0),
        "html_url": html,
        "diff_url": f"{html}.diff",
        "patch_url": f"{html}.patch",
        "issue_url": issue_api,
        "commits_url": f"{api}/commits",
        "review_comments_url": f"{api}/comments",
        "review_comment_url": f"{urls.repo_api(repo.full_name)}/pulls/comments{{/number}}",
        "comments_url": f"{issue_api}/comments",
        "statuses_url": f"{urls.repo_api(repo.full_name)}/statuses/{pull.head_sha}",
        "number": issue.number,
        "state": issue.state,
        "locked": False,
        "title": issue.title,
        "user": user_json(urls, users[issue.user]),
        "body": issue.body,
        # A pull request's labels carry a string description (its schema, unlike an issue's,
        # has no null there).
        "labels": [
            {**label_json(urls, repo, label), "description": label.description or ""}
            for label in (repo.labels[name.lower()] for name in issue.labels)
        ],
        "milestone": None,
        "active_lock_reason": None,
        "created_at": iso(issue.created_at),
        "updated_at": iso(issue.updated_at),
        "closed_at": iso(issue.closed_at),
        "merged_at": None,
        "merge_commit_sha": None,
        "assignee": None,
        "assignees": [],
        "requested_reviewers": [user_json(urls, users[r]) for r in pull.requested_reviewers],
        "requested_teams": [],
        "head": pull_branch_json(
            urls, head_repo, users[head_repo.owner], pull.head_ref, pull.head_sha
        ),
        "base": pull_branch_json(urls, repo, owner, pull.base_ref, pull.base_sha),
        "_links": {
            "self": {"href": api},
            "html": {"href": html},
            "issue": {"href": issue_api},
            "comments": {"href": f"{issue_api}/comments"},
            "review_comments": {"href": f"{api}/comments"},
            "review_comment": {
                "href": f"{urls.repo_api(repo.full_name)}/pulls/comments{{/number}}"
            },
            "commits": {"href": f"{api}/commits"},
            "statuses": {"href": f"{urls.repo_api(repo.full_name)}/statuses/{pull.head_sha}"},
        },
        "author_association": author_association(repo, issue.user),
        "auto_merge": None,
        "draft": pull.draft,
    }
    if simple:
        return body
    body.update(
        {
            "merged": pull.merged,
            "mergeable": True,
            "rebaseable": True,
            "mergeable_state": "clean",
            "merged_by": None,
            "comments": comments,
            "review_comments": review_comments,
            "maintainer_can_modify": pull.maintainer_can_modify,
            "commits": commits,
            "additions": 0,
            "deletions": 0,
            "changed_files": 0,
        }
    )
    return body


def git_user_json(name: str, email: str, date: str) -> dict[str, str]:
    return {"name": name, "email": email, "date": date}


def commit_json(urls: Urls, repo: Repo, info: CommitInfo, users: dict[str, User]) -> dict[str, Any]:
    api = urls.repo_api(repo.full_name)
    html = urls.repo_html(repo.full_name)

    def account(email: str) -> dict[str, Any] | None:
        login = email.split("@", 1)[0]
        return user_json(urls, users[login]) if login in users else None

    return {
        "sha": info.sha,
        "node_id": node_id("Commit", int(info.sha[:8], 16)),
        "url": f"{api}/commits/{info.sha}",
        "html_url": f"{html}/commit/{info.sha}",
        "comments_url": f"{api}/commits/{info.sha}/comments",
        "commit": {
            "url": f"{api}/git/commits/{info.sha}",
            "author": git_user_json(info.author_name, info.author_email, info.author_date),
            "committer": git_user_json(
                info.committer_name, info.committer_email, info.committer_date
            ),
            "message": info.message,
            "comment_count": 0,
            "tree": {"sha": info.tree, "url": f"{api}/git/trees/{info.tree}"},
            "verification": {
                "verified": False,
                "reason": "unsigned",
                "signature": None,
                "payload": None,
                "verified_at": None,
            },
        },
        "author": account(info.author_email),
        "committer": account(info.committer_email),
        "parents": [
            {"sha": p, "url": f"{api}/commits/{p}", "html_url": f"{html}/commit/{p}"}
            for p in info.parents
        ],
    }


def branch_json(urls: Urls, repo: Repo, branch: str, head: dict[str, Any]) -> dict[str, Any]:
    api = urls.repo_api(repo.full_name)
    protected = branch in repo.protected_branches
    return {
        "name": branch,
        "commit": head,
        "_links": {
            "self": f"{api}/branches/{branch}",
            "html": f"{urls.repo_html(repo.full_name)}/tree/{branch}",
        },
        "protected": protected,
        "protection": {
            "enabled": protected,
            "required_status_checks": {
                "enforcement_level": "off",
                "contexts": [],
                "checks": [],
            },
        },
        "protection_url": f"{api}/branches/{branch}/protection",
    }


def git_ref_json(urls: Urls, repo: Repo, ref: str, sha: str) -> dict[str, Any]:
    api = urls.repo_api(repo.full_name)
    return {
        "ref": ref,
        "node_id": node_id("Ref", int(sha[:8], 16)),
        "url": f"{api}/git/{ref}",
        "object": {"sha": sha, "type": "commit", "url": f"{api}/git/commits/{sha}"},
    }


def collaborator_permission_json(urls: Urls, user: User, role: str) -> dict[str, Any]:
    """GitHub reports ``maintain`` as ``write`` and ``triage`` as ``read`` in ``permission``."""
    legacy = {
        "admin": "admin",
        "maintain": "write",
        "write": "write",
        "triage": "read",
        "read": "read",
    }
    permission = legacy.get(role, "none")
    return {
        "permission": permission,
        "role_name": role,
        "user": {
            **user_json(urls, user),
            "permissions": {
                **repo_permissions(role),
            },
            "role_name": role,
        },
    }


# ---- webhook payloads -------------------------------------------------------------------------


def webhook_issues(
    action: str,
    *,
    issue: dict[str, Any],
    repository: dict[str, Any],
    sender: dict[str, Any],
    installation_id: int,
    label: dict[str, Any] | None = None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {"action": action, "issue": issue}
    if label is not None:
        payload["label"] = label
    payload.update(
        repository=repository,
        sender=sender,
        installation=webhook_installation_json(installation_id),
    )
    return payload


def webhook_issue_comment(
    action: str,
    *,
    issue: dict[str, Any],
    comment: dict[str, Any],
    repository: dict[str, Any],
    sender: dict[str, Any],
    installation_id: int,
    previous_body: str | None = None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {"action": action, "issue": issue, "comment": comment}
    if action == "edited":
        payload["changes"] = {"body": {"from": previous_body or ""}}
    payload.update(
        repository=repository,
        sender=sender,
        installation=webhook_installation_json(installation_id),
    )
    return payload


def review_json(
    urls: Urls, repo: Repo, review: Review, *, user: User, rest: bool = False
) -> dict[str, Any]:
    """A review as webhooks carry it (``state`` lower case) or, with ``rest``, as the REST API
    answers (``state`` upper case, ``body`` never null)."""
    html = f"{urls.repo_html(repo.full_name)}/pull/{review.pull_number}"
    pull_api = f"{urls.repo_api(repo.full_name)}/pulls/{review.pull_number}"
    body: dict[str, Any] = {
        "id": review.id,
        "node_id": node_id("PullRequestReview", review.id),
        "user": user_json(urls, user),
        "body": (review.body or "") if rest else review.body,
        "commit_id": review.commit_id,
        "submitted_at": iso(review.submitted_at),
        "state": review.state.upper() if rest else review.state,
        "html_url": f"{html}#pullrequestreview-{review.id}",
        "pull_request_url": pull_api,
        "author_association": author_association(repo, user.login),
        "_links": {
            "html": {"href": f"{html}#pullrequestreview-{review.id}"},
            "pull_request": {"href": pull_api},
        },
    }
    if not rest:
        body["updated_at"] = iso(review.submitted_at)
    return body


def review_comment_json(
    urls: Urls,
    repo: Repo,
    comment: ReviewComment,
    *,
    user: User,
    reactions: list[Reaction],
) -> dict[str, Any]:
    api = f"{urls.repo_api(repo.full_name)}/pulls/comments/{comment.id}"
    pull_html = f"{urls.repo_html(repo.full_name)}/pull/{comment.pull_number}"
    html = f"{pull_html}#discussion_r{comment.id}"
    pull_api = f"{urls.repo_api(repo.full_name)}/pulls/{comment.pull_number}"
    body: dict[str, Any] = {
        "url": api,
        "pull_request_review_id": comment.review_id,
        "id": comment.id,
        "node_id": node_id("PullRequestReviewComment", comment.id),
        "diff_hunk": comment.diff_hunk,
        "path": comment.path,
        "position": comment.position,
        "original_position": comment.position,
        "commit_id": comment.commit_id,
        "original_commit_id": comment.commit_id,
        "user": user_json(urls, user),
        "body": comment.body,
        "created_at": iso(comment.created_at),
        "updated_at": iso(comment.updated_at),
        "html_url": html,
        "pull_request_url": pull_api,
        "author_association": author_association(repo, user.login),
        "_links": {
            "self": {"href": api},
            "html": {"href": html},
            "pull_request": {"href": pull_api},
        },
        "reactions": reactions_rollup(f"{api}/reactions", reactions),
        "start_line": None,
        "original_start_line": None,
        "start_side": None,
        "line": comment.line,
        "original_line": comment.line,
        "side": comment.side,
        "subject_type": "line",
    }
    if comment.in_reply_to_id is not None:
        body["in_reply_to_id"] = comment.in_reply_to_id
    return body


def webhook_pull_request_review(
    *,
    review: dict[str, Any],
    pull_request: dict[str, Any],
    repository: dict[str, Any],
    sender: dict[str, Any],
    installation_id: int,
) -> dict[str, Any]:
    return {
        "action": "submitted",
        "review": review,
        "pull_request": pull_request,
        "repository": repository,
        "sender": sender,
        "installation": webhook_installation_json(installation_id),
    }


def webhook_pull_request_review_comment(
    *,
    comment: dict[str, Any],
    pull_request: dict[str, Any],
    repository: dict[str, Any],
    sender: dict[str, Any],
    installation_id: int,
) -> dict[str, Any]:
    return {
        "action": "created",
        "comment": comment,
        "pull_request": pull_request,
        "repository": repository,
        "sender": sender,
        "installation": webhook_installation_json(installation_id),
    }


def webhook_pull_request(
    *,
    action: str,
    pull_request: dict[str, Any],
    repository: dict[str, Any],
    sender: dict[str, Any],
    installation_id: int,
) -> dict[str, Any]:
    return {
        "action": action,
        "number": pull_request["number"],
        "pull_request": pull_request,
        "repository": repository,
        "sender": sender,
        "installation": webhook_installation_json(installation_id),
    }


def webhook_ping(
    *, hook_id: int, app_id: int, hook_url: str, webhook_url: str, sender: dict[str, Any] | None
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "zen": "Keep it logically awesome.",
        "hook_id": hook_id,
        "hook": {
            "type": "App",
            "id": hook_id,
            "name": "web",
            "active": True,
            "events": list(APP_EVENTS),
            "config": {"content_type": "json", "insecure_ssl": "0", "url": webhook_url},
            "updated_at": "2024-01-01T00:00:00Z",
            "created_at": "2024-01-01T00:00:00Z",
            "app_id": app_id,
            "deliveries_url": f"{hook_url}/deliveries",
        },
    }
    if sender is not None:
        payload["sender"] = sender
    return payload


def installation_repository_json(repo: Repo) -> dict[str, Any]:
    """A repository as installation webhooks list it."""
    return {
        "id": repo.id,
        "node_id": node_id("Repository", repo.id),
        "name": repo.name,
        "full_name": repo.full_name,
        "private": repo.private,
    }


def webhook_installation_created(
    *,
    installation: dict[str, Any],
    repositories: list[dict[str, Any]],
    sender: dict[str, Any],
) -> dict[str, Any]:
    return {
        "action": "created",
        "installation": installation,
        "repositories": repositories,
        "requester": None,
        "sender": sender,
    }


def webhook_installation_repositories_added(
    *,
    installation: dict[str, Any],
    added: list[dict[str, Any]],
    sender: dict[str, Any],
) -> dict[str, Any]:
    return {
        "action": "added",
        "installation": installation,
        "repository_selection": installation["repository_selection"],
        "repositories_added": added,
        "repositories_removed": [],
        "requester": None,
        "sender": sender,
    }


def hook_delivery_json(sent: SentWebhook) -> dict[str, Any]:
    """One entry of ``GET /app/hook/deliveries`` (GitHub's "Simple webhook delivery")."""
    delivery, payload = sent.delivery, sent.payload
    installation = payload.get("installation")
    repository = payload.get("repository")
    return {
        "id": delivery.id,
        "guid": delivery.delivery_id,
        "delivered_at": iso(delivery.delivered_at),
        "redelivery": delivery.redelivery,
        "duration": round(delivery.duration_ms / 1000, 2),
        "status": delivery.status,
        "status_code": delivery.status_code,
        "event": delivery.event,
        "action": payload.get("action"),
        "installation_id": installation.get("id") if isinstance(installation, dict) else None,
        "repository_id": repository.get("id") if isinstance(repository, dict) else None,
        "throttled_at": None,
    }


def file_contents_json(urls: Urls, repo: Repo, path: str, sha: str, data: bytes) -> dict[str, Any]:
    """A file as the contents API answers for it (`type: file`, content in base64)."""
    api = f"{urls.repo_api(repo.full_name)}/contents/{path}"
    html = f"{urls.repo_html(repo.full_name)}/blob/{repo.default_branch}/{path}"
    git = f"{urls.repo_api(repo.full_name)}/git/blobs/{sha}"
    return {
        "type": "file",
        "encoding": "base64",
        "size": len(data),
        "name": path.rsplit("/", 1)[-1],
        "path": path,
        "content": base64.b64encode(data).decode(),
        "sha": sha,
        "url": api,
        "git_url": git,
        "html_url": html,
        "download_url": None,
        "_links": {"self": api, "git": git, "html": html},
    }


def check_run_json(urls: Urls, repo: Repo, run: CheckRun, app: dict[str, Any]) -> dict[str, Any]:
    api = f"{urls.repo_api(repo.full_name)}/check-runs/{run.id}"
    return {
        "id": run.id,
        "node_id": node_id("CheckRun", run.id),
        "head_sha": run.head_sha,
        "external_id": run.external_id,
        "url": api,
        "html_url": f"{urls.repo_html(repo.full_name)}/runs/{run.id}",
        "details_url": run.details_url,
        "status": run.status,
        "conclusion": run.conclusion,
        "started_at": iso(run.started_at),
        "completed_at": iso(run.completed_at),
        "output": {
            "title": run.title,
            "summary": run.summary,
            "text": run.text,
            "annotations_count": 0,
            "annotations_url": f"{api}/annotations",
        },
        "name": run.name,
        "check_suite": None if run.suite_id is None else {"id": run.suite_id},
        "app": app,
        "pull_requests": [],
    }


def job_json(urls: Urls, repo: Repo, run: WorkflowRun, job: Job) -> dict[str, Any]:
    api = urls.repo_api(repo.full_name)
    when = iso(run.created_at)
    return {
        "id": job.id,
        "node_id": node_id("Job", job.id),
        "run_id": run.id,
        "run_url": f"{api}/actions/runs/{run.id}",
        "head_sha": run.head_sha,
        "workflow_name": run.name,
        "head_branch": run.head_branch,
        "name": job.name,
        "url": f"{api}/actions/jobs/{job.id}",
        "html_url": f"{urls.repo_html(repo.full_name)}/actions/runs/{run.id}/job/{job.id}",
        "status": "completed",
        "conclusion": job.conclusion,
        "started_at": when,
        "completed_at": when,
        "check_run_url": f"{api}/check-runs/{job.id}",
        "labels": ["ubuntu-latest"],
        "runner_id": 1,
        "runner_name": "sim-runner",
        "runner_group_id": 1,
        "runner_group_name": "Default",
        "created_at": when,
        "steps": [
            {"name": job.name, "status": "completed", "conclusion": job.conclusion, "number": 1}
        ],
    }


def pull_refs(
    repo: Repo, repo_json: dict[str, Any], pulls: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Pull requests as CI events name them (number, head and base)."""
    ref = {"id": repo_json["id"], "url": repo_json["url"], "name": repo.name}
    return [
        {
            "url": pull["url"],
            "id": pull["id"],
            "number": pull["number"],
            "head": {"ref": pull["head"]["ref"], "sha": pull["head"]["sha"], "repo": ref},
            "base": {"ref": pull["base"]["ref"], "sha": pull["base"]["sha"], "repo": ref},
        }
        for pull in pulls
    ]


def simple_commit(sha: str, when: str | None) -> dict[str, Any]:
    person = {"name": "codex-bot[bot]", "email": "bot@users.noreply.github.local"}
    return {
        "id": sha,
        "tree_id": sha,
        "message": "CI",
        "timestamp": when,
        "author": person,
        "committer": person,
    }


def ci_app_json(urls: Urls, slug: str, owner: User) -> dict[str, Any]:
    """Another App (a CI service) that reports check suites."""
    number = 900_000 + sum(map(ord, slug))
    return {
        "id": number,
        "slug": slug,
        "node_id": node_id("App", number),
        "owner": user_json(urls, owner),
        "name": slug,
        "description": f"{slug} (simulated CI app)",
        "external_url": urls.html,
        "html_url": f"{urls.html}/apps/{slug}",
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:00Z",
        "permissions": {"checks": "write", "metadata": "read"},
        "events": ["check_suite"],
    }


def check_suite_json(
    urls: Urls,
    repo: Repo,
    *,
    suite_id: int,
    branch: str,
    sha: str,
    conclusion: str,
    when: str | None,
    app: dict[str, Any],
    pulls: list[dict[str, Any]],
    count: int,
) -> dict[str, Any]:
    api = f"{urls.repo_api(repo.full_name)}/check-suites/{suite_id}"
    return {
        "id": suite_id,
        "node_id": node_id("CheckSuite", suite_id),
        "head_branch": branch,
        "head_sha": sha,
        "status": "completed",
        "conclusion": conclusion,
        "url": api,
        "before": sha,
        "after": sha,
        "pull_requests": pulls,
        "app": app,
        "created_at": when,
        "updated_at": when,
        "latest_check_runs_count": count,
        "check_runs_url": f"{api}/check-runs",
        "head_commit": simple_commit(sha, when),
    }


def workflow_run_json(
    urls: Urls,
    repo: Repo,
    run: WorkflowRun,
    *,
    repo_json: dict[str, Any],
    actor: dict[str, Any],
    pulls: list[dict[str, Any]],
) -> dict[str, Any]:
    """A completed workflow run as the `workflow_run` webhook carries it."""
    api = f"{urls.repo_api(repo.full_name)}/actions/runs/{run.id}"
    html = f"{urls.repo_html(repo.full_name)}/actions/runs/{run.id}"
    when = iso(run.created_at)
    return {
        "actor": actor,
        "triggering_actor": actor,
        "artifacts_url": f"{api}/artifacts",
        "cancel_url": f"{api}/cancel",
        "rerun_url": f"{api}/rerun",
        "jobs_url": f"{api}/jobs",
        "logs_url": f"{api}/logs",
        "check_suite_id": run.id,
        "check_suite_node_id": node_id("CheckSuite", run.id),
        "check_suite_url": f"{urls.repo_api(repo.full_name)}/check-suites/{run.id}",
        "conclusion": run.conclusion,
        "created_at": when,
        "updated_at": when,
        "run_started_at": when,
        "event": "pull_request" if pulls else "push",
        "head_branch": run.head_branch,
        "head_sha": run.head_sha,
        "head_commit": simple_commit(run.head_sha, when),
        "head_repository": repo_json,
        "repository": repo_json,
        "html_url": html,
        "id": run.id,
        "node_id": node_id("WorkflowRun", run.id),
        "name": run.name,
        "path": ".github/workflows/ci.yml",
        "previous_attempt_url": None,
        "pull_requests": pull_refs(repo, repo_json, pulls),
        "run_attempt": 1,
        "run_number": run.id,
        "status": "completed",
        "url": api,
        "workflow_id": 1,
        "workflow_url": f"{urls.repo_api(repo.full_name)}/actions/workflows/1",
    }


def workflow_json(urls: Urls, repo: Repo, name: str, when: str | None) -> dict[str, Any]:
    api = f"{urls.repo_api(repo.full_name)}/actions/workflows/1"
    html = f"{urls.repo_html(repo.full_name)}/actions/workflows/ci.yml"
    return {
        "badge_url": f"{html}/badge.svg",
        "created_at": when,
        "updated_at": when,
        "html_url": html,
        "id": 1,
        "name": name,
        "node_id": node_id("Workflow", 1),
        "path": ".github/workflows/ci.yml",
        "state": "active",
        "url": api,
    }
