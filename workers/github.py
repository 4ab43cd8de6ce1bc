"""The one thin interface through which jobs touch GitHub (PyGithub underneath).

Tokens are minted per task, kept in memory, and never logged: PyGithub is given them
through its auth objects and git receives them through the environment (see checkout).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from github import Auth, Github, GithubException, GithubIntegration

# Our write volume per task is a handful of calls spread over minutes; PyGithub's default
# client-side throttle (1 s between writes) would only slow the answer a user waits for.
_CLIENT_OPTIONS: dict[str, Any] = {
    "seconds_between_requests": None,
    "seconds_between_writes": None,
    "timeout": 30,
}
TOKEN_PERMISSIONS = {"contents": "write", "issues": "write", "pull_requests": "write"}


class GitHubError(Exception):
    """A GitHub call failed; the message is safe to show a user (it holds no token)."""


@dataclass(frozen=True)
class Issue:
    number: int
    title: str
    body: str
    author: str


@dataclass(frozen=True)
class PullRequest:
    number: int
    url: str
    draft: bool


def git_base_url(api_url: str) -> str:
    """Where git smart HTTP lives for an API base URL.

    github.com serves the API from api.github.com and git from github.com; GitHub Enterprise
    Server (and the simulator) serve the API under /api/v3 on the same host as git.
    """
    parts = urlsplit(api_url.rstrip("/"))
    host = parts.netloc
    if host == "api.github.com":
        return "https://github.com"
    path = parts.path.removesuffix("/api/v3")
    return urlunsplit((parts.scheme, host, path, "", ""))


def _explain(error: GithubException, action: str) -> GitHubError:
    message = error.data.get("message") if isinstance(error.data, dict) else None
    return GitHubError(f"{action}: GitHub answered {error.status} {message or ''}".strip())


class GitHubApp:
    """The App itself: signs JWTs with its private key and mints installation tokens."""

    def __init__(self, *, app_id: int, private_key: str, api_url: str) -> None:
        self._integration = GithubIntegration(
            auth=Auth.AppAuth(app_id, private_key), base_url=api_url, **_CLIENT_OPTIONS
        )
        self.api_url = api_url

    def installation_token(self, installation_id: int) -> str:
        try:
            grant = self._integration.get_access_token(installation_id, TOKEN_PERMISSIONS)
        except GithubException as error:
            raise _explain(error, f"minting a token for installation {installation_id}") from None
        return grant.token

    def repository(self, full_name: str, token: str) -> Repository:
        return Repository(full_name, token=token, api_url=self.api_url)


class Repository:
    """One repository, seen through one installation token."""

    def __init__(self, full_name: str, *, token: str, api_url: str) -> None:
        self.full_name = full_name
        self.token = token
        self.git_url = f"{git_base_url(api_url)}/{full_name}.git"
        self._github = Github(auth=Auth.Token(token), base_url=api_url, **_CLIENT_OPTIONS)
        self._repo = None

    @property
    def _api(self):  # noqa: ANN202 - PyGithub's Repository, fetched on first use
        if self._repo is None:
            try:
                self._repo = self._github.get_repo(self.full_name)
            except GithubException as error:
                raise _explain(error, f"reading {self.full_name}") from None
        return self._repo

    @property
    def default_branch(self) -> str:
        return self._api.default_branch

    def issue(self, number: int) -> Issue:
        try:
            issue = self._api.get_issue(number)
        except GithubException as error:
            raise _explain(error, f"reading issue #{number}") from None
        return Issue(
            number=number, title=issue.title, body=issue.body or "", author=issue.user.login
        )

    def comment(self, number: int, body: str) -> str:
        try:
            return self._api.get_issue(number).create_comment(body).html_url
        except GithubException as error:
            raise _explain(error, f"commenting on #{number}") from None

    def open_pull_request(
        self, *, head: str, base: str, title: str, body: str, draft: bool
    ) -> PullRequest:
        try:
            pull = self._api.create_pull(base=base, head=head, title=title, body=body, draft=draft)
        except GithubException as error:
            raise _explain(error, f"opening a pull request from {head}") from None
        return PullRequest(number=pull.number, url=pull.html_url, draft=draft)

    def close(self) -> None:
        self._github.close()
