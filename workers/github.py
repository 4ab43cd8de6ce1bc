"""The one thin interface through which jobs touch GitHub (PyGithub underneath).

Tokens are minted per task, kept in memory, and never logged: PyGithub is given them
through its auth objects and git receives them through the environment (see checkout).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

import requests
from github import Auth, Github, GithubException
from github.Requester import Requester

from workers.text import BRANCH_PREFIX

# Our write volume per task is a handful of calls spread over minutes; PyGithub's default
# client-side throttle (1 s between writes) would only slow the answer a user waits for.
CLIENT_OPTIONS: dict[str, Any] = {
    "seconds_between_requests": None,
    "seconds_between_writes": None,
    "timeout": 30,
}


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


@dataclass(frozen=True)
class Pull:
    """A pull request as a follow-up task needs it."""

    number: int
    title: str
    body: str
    author: str
    head_ref: str
    head_sha: str
    head_repo: str
    base_ref: str
    url: str
    state: str

    def from_fork(self, repo: str) -> bool:
        return self.head_repo.lower() != repo.lower()

    def owned_by(self, bot_login: str, repo: str) -> bool:
        """Opened by this App from a branch it created: the only kind of head it pushes to."""
        return (
            not self.from_fork(repo)
            and self.author.lower() == bot_login.lower()
            and self.head_ref.startswith(BRANCH_PREFIX)
        )


@dataclass(frozen=True)
class ReviewComment:
    id: int
    path: str
    line: int | None
    diff_hunk: str
    body: str
    author: str
    review_id: int | None


@dataclass(frozen=True)
class Comment:
    id: int
    url: str


REACTIONS = {"eyes", "rocket", "confused", "+1", "-1", "laugh", "heart", "hooray"}


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


def explain(error: GithubException, action: str) -> GitHubError:
    message = error.data.get("message") if isinstance(error.data, dict) else None
    return GitHubError(f"{action}: GitHub answered {error.status} {message or ''}".strip())


class Meter(Protocol):
    """Where each GitHub answer is counted (`codexbot.fleetmetrics.WorkerMetrics`)."""

    def github_answered(
        self, account: str, *, status: str | None, remaining: int, limit: int
    ) -> None: ...


@contextmanager
def metered(meter: Meter | None, account: str, requester: Requester) -> Iterator[None]:
    """Counts the calls made inside: an error's status, and the rate limit last shown (PyGithub
    reads X-RateLimit-Remaining and -Limit from every answer into `rate_limiting`)."""
    status = None
    try:
        yield
    except GithubException as error:
        status = str(error.status)
        raise
    except requests.RequestException:
        status = "network"
        raise
    finally:
        if meter is not None:
            remaining, limit = requester.rate_limiting
            meter.github_answered(account, status=status, remaining=remaining, limit=limit)


LOG_TAIL_BYTES = 64 * 1024
LOG_SECONDS = 60.0  # to read one job's log, however slowly it comes


def _tail(answer: requests.Response, keep: int, deadline: float) -> str:
    if answer.status_code != 200:
        raise GitHubError(f"reading a job's log: GitHub answered {answer.status_code}")
    tail = b""
    for chunk in answer.iter_content(chunk_size=64 * 1024):
        tail = (tail + chunk)[-keep:]
        if time.monotonic() > deadline:
            raise GitHubError(f"reading a job's log took longer than {LOG_SECONDS:.0f} s")
    return tail.decode("utf-8", errors="replace")


class Repository:
    """One repository, seen through one installation token."""

    def __init__(
        self, full_name: str, *, token: str, api_url: str, meter: Meter | None = None
    ) -> None:
        self.full_name = full_name
        self.token = token
        self.git_url = f"{git_base_url(api_url)}/{full_name}.git"
        self.api_url = api_url.rstrip("/")
        self._github = Github(auth=Auth.Token(token), base_url=api_url, **CLIENT_OPTIONS)
        self._requester = self._github.requester
        self._path = f"/repos/{full_name}"
        self._repo: Any = None
        self._default_branch: str | None = None
        self._meter = meter
        self._account = full_name.split("/")[0]  # an installation's rate limit is its account's

    def sibling(self) -> Repository:
        """The same repository through a client of its own, for another thread (PyGithub's
        connection is not shared between threads); what this one read of the repository is
        kept. The caller closes it."""
        other = Repository(
            self.full_name, token=self.token, api_url=self.api_url, meter=self._meter
        )
        other._default_branch = self._default_branch
        return other

    def _metered(self) -> AbstractContextManager[None]:
        return metered(self._meter, self._account, self._requester)

    def _request(self, method: str, url: str, **options: Any) -> Any:
        with self._metered():
            _, data = self._requester.requestJsonAndCheck(method, url, **options)
        return data

    @property
    def _api(self) -> Any:
        """PyGithub's Repository, fetched on first use."""
        if self._repo is None:
            try:
                with self._metered():
                    self._repo = self._github.get_repo(self.full_name)
            except GithubException as error:
                raise explain(error, f"reading {self.full_name}") from None
        return self._repo

    def _call(self, method: str, path: str, action: str, body: dict | None = None) -> Any:
        """One REST call relative to the repository; errors become a GitHubError naming it."""
        try:
            data = self._request(method, self._path + path, input=body)
        except GithubException as error:
            raise explain(error, action) from None
        return data

    @property
    def default_branch(self) -> str:
        if self._default_branch is None:
            self._default_branch = str(self._api.default_branch)
        return self._default_branch

    def issue(self, number: int) -> Issue:
        data = self._call("GET", f"/issues/{number}", f"reading issue #{number}")
        return Issue(
            number=number,
            title=data.get("title") or "",
            body=data.get("body") or "",
            author=(data.get("user") or {}).get("login", ""),
        )

    def comment(self, number: int, body: str) -> Comment:
        data = self._call(
            "POST", f"/issues/{number}/comments", f"commenting on #{number}", {"body": body}
        )
        return Comment(id=int(data["id"]), url=str(data["html_url"]))

    def issue_comments(self, number: int) -> list[tuple[str, str, str]]:
        """(author, body, created_at) of each comment on an issue or PR, oldest first."""
        try:
            with self._metered():
                comments = list(self._api.get_issue(number).get_comments())
        except GithubException as error:
            raise explain(error, f"reading the comments on #{number}") from None
        return [
            (comment.user.login, comment.body or "", comment.created_at.isoformat())
            for comment in comments
        ]

    def edit_comment(self, comment_id: int, body: str) -> None:
        self._call(
            "PATCH",
            f"/issues/comments/{comment_id}",
            f"editing comment {comment_id}",
            {"body": body},
        )

    def react(
        self,
        content: str,
        *,
        number: int,
        comment_id: int | None = None,
        comment_type: str | None = None,
    ) -> None:
        """Add a reaction to an issue or PR, or to one of its comments."""
        assert content in REACTIONS, content
        if comment_id is not None and comment_type == "issue":
            path = f"/issues/comments/{comment_id}/reactions"
        elif comment_id is not None and comment_type == "review_comment":
            path = f"/pulls/comments/{comment_id}/reactions"
        else:  # GitHub has no reactions on review bodies: react on the PR itself
            path = f"/issues/{number}/reactions"
        self._call("POST", path, f"reacting on #{number}", {"content": content})

    def permission(self, user: str) -> str:
        """The user's role on this repository: admin, maintain, write, triage, read or none."""
        try:
            data = self._request(
                "GET", f"{self._path}/collaborators/{quote(user, safe='')}/permission"
            )
        except GithubException as error:
            if error.status == 404:
                return "none"
            raise explain(error, f"reading the permission of {user}") from None
        return str(data.get("role_name") or data.get("permission") or "none")

    def pull(self, number: int) -> Pull:
        data = self._call("GET", f"/pulls/{number}", f"reading pull request #{number}")
        head, base = data.get("head") or {}, data.get("base") or {}
        return Pull(
            number=number,
            title=data.get("title") or "",
            body=data.get("body") or "",
            author=(data.get("user") or {}).get("login", ""),
            head_ref=head.get("ref", ""),
            head_sha=head.get("sha", ""),
            head_repo=(head.get("repo") or {}).get("full_name", ""),
            base_ref=base.get("ref", ""),
            url=data.get("html_url", ""),
            state=data.get("state", ""),
        )

    def review_comments(self, number: int, review_id: int | None = None) -> list[ReviewComment]:
        """Inline review comments on a PR (those of one review, when given), oldest first."""
        try:
            with self._metered():
                comments = list(self._api.get_pull(number).get_review_comments())
        except GithubException as error:
            raise explain(error, f"reading review comments on #{number}") from None
        found = [
            ReviewComment(
                id=comment.id,
                path=comment.path,
                line=comment.line or comment.original_line,
                diff_hunk=comment.diff_hunk or "",
                body=comment.body or "",
                author=comment.user.login,
                review_id=comment.pull_request_review_id,
            )
            for comment in comments
        ]
        if review_id is not None:
            found = [comment for comment in found if comment.review_id == review_id]
        return found

    def reviews(self, number: int) -> list[tuple[str, str, str]]:
        """(author, body, state) of each review on a PR, oldest first."""
        data = self._call("GET", f"/pulls/{number}/reviews", f"reading the reviews of #{number}")
        return [
            (
                (review.get("user") or {}).get("login", ""),
                review.get("body") or "",
                review.get("state", ""),
            )
            for review in data
        ]

    def review_body(self, number: int, review_id: int) -> str:
        data = self._call("GET", f"/pulls/{number}/reviews/{review_id}", "reading a review")
        return str(data.get("body") or "")

    def reply_to_review_comment(self, number: int, comment_id: int, body: str) -> None:
        path = f"/pulls/{number}/comments/{comment_id}/replies"
        self._call("POST", path, f"replying to review comment {comment_id}", {"body": body})

    def branch_head(self, branch: str) -> str | None:
        try:
            data = self._request("GET", f"{self._path}/git/ref/heads/{quote(branch)}")
        except GithubException as error:
            if error.status == 404:
                return None
            raise explain(error, f"reading branch {branch}") from None
        return str(data["object"]["sha"])

    def branch_protected(self, branch: str) -> bool:
        """Whether branch protection is on for `branch` (False for a branch that does not exist)."""
        try:
            data = self._request("GET", f"{self._path}/branches/{quote(branch)}")
        except GithubException as error:
            if error.status == 404:
                return False
            raise explain(error, f"reading branch {branch}") from None
        return bool(data.get("protected"))

    def open_pull_for(self, branch: str) -> PullRequest | None:
        owner = self.full_name.split("/")[0]
        try:
            with self._metered():
                pulls = list(self._api.get_pulls(state="open", head=f"{owner}:{branch}"))
        except GithubException as error:
            raise explain(error, f"listing pull requests from {branch}") from None
        if not pulls:
            return None
        return PullRequest(number=pulls[0].number, url=pulls[0].html_url, draft=pulls[0].draft)

    def update_pull(self, number: int, *, title: str, body: str) -> None:
        self._call(
            "PATCH",
            f"/pulls/{number}",
            f"updating pull request #{number}",
            {"title": title, "body": body},
        )

    def add_labels(self, number: int, labels: list[str]) -> None:
        """Label an issue or pull request; GitHub creates a label the repository lacks."""
        self._call("POST", f"/issues/{number}/labels", f"labelling #{number}", {"labels": labels})

    def request_review(self, number: int, reviewer: str) -> None:
        self._call(
            "POST",
            f"/pulls/{number}/requested_reviewers",
            f"requesting a review from {reviewer}",
            {"reviewers": [reviewer]},
        )

    def open_pull_request(
        self, *, head: str, base: str, title: str, body: str, draft: bool
    ) -> PullRequest:
        """Open a PR from ``head``; if one is already open for it (GitHub's 422), update that."""
        request = {"title": title, "head": head, "base": base, "body": body, "draft": draft}
        try:
            data = self._request("POST", f"{self._path}/pulls", input=request)
        except GithubException as error:
            if error.status == 422 and "already exists" in str(error.data):
                existing = self.open_pull_for(head)
                if existing is not None:
                    self.update_pull(existing.number, title=title, body=body)
                    return existing
            raise explain(error, f"opening a pull request from {head}") from None
        return PullRequest(number=int(data["number"]), url=str(data["html_url"]), draft=draft)

    def file_text(self, path: str, ref: str) -> str | None:
        """A file's text at `ref` (the contents API); None when there is no such file."""
        try:
            data = self._request(
                "GET", f"{self._path}/contents/{quote(path)}", parameters={"ref": ref}
            )
        except GithubException as error:
            if error.status == 404:
                return None
            raise explain(error, f"reading {path}") from None
        if not isinstance(data, dict) or data.get("type") != "file":
            return None
        return base64.b64decode(data.get("content") or "").decode("utf-8", errors="replace")

    def failed_jobs(self, run_id: int) -> list[dict[str, Any]]:
        """The jobs of a workflow run that failed or timed out ({id, name, ...})."""
        data = self._call(
            "GET", f"/actions/runs/{run_id}/jobs?per_page=100", f"reading the jobs of run {run_id}"
        )
        jobs = data.get("jobs") if isinstance(data, dict) else None
        return [
            job
            for job in jobs or []
            if isinstance(job, dict) and job.get("conclusion") in ("failure", "timed_out")
        ]

    def failed_check_runs(self, suite_id: int) -> list[tuple[str, str]]:
        """(name, output) of each failed check run of a check suite (a CI app other than
        GitHub Actions: what it reported is its log)."""
        data = self._call(
            "GET",
            f"/check-suites/{suite_id}/check-runs?per_page=100",
            f"reading the check runs of suite {suite_id}",
        )
        runs = data.get("check_runs") if isinstance(data, dict) else None
        failed = []
        for run in runs or []:
            if not isinstance(run, dict) or run.get("conclusion") not in ("failure", "timed_out"):
                continue
            output = run.get("output") or {}
            parts = (output.get(key) for key in ("title", "summary", "text"))
            failed.append((str(run.get("name") or ""), "\n".join(p for p in parts if p)))
        return failed

    def job_log(self, job_id: int, keep: int = LOG_TAIL_BYTES) -> str:
        """The last `keep` bytes of a job's log. GitHub answers with a redirect to a signed URL
        on another host, which is fetched without the token."""
        url = f"{self.api_url}{self._path}/actions/jobs/{job_id}/logs"
        headers = {"Authorization": f"token {self.token}", "Accept": "application/vnd.github+json"}
        deadline = time.monotonic() + LOG_SECONDS
        try:
            with requests.get(url, headers=headers, allow_redirects=False, timeout=30) as first:
                if first.status_code in (301, 302, 303, 307, 308):
                    location = first.headers.get("Location", "")
                    with requests.get(location, stream=True, timeout=30) as log_answer:
                        return _tail(log_answer, keep, deadline)
                return _tail(first, keep, deadline)
        except requests.RequestException as error:
            raise GitHubError(f"reading the log of job {job_id}: {type(error).__name__}") from None

    def create_check_run(self, head_sha: str, name: str, fields: dict[str, Any]) -> int:
        """A check run on `head_sha`; `fields` as the API takes them (status, output, ...)."""
        data = self._call(
            "POST",
            "/check-runs",
            f"creating a check run on {head_sha[:12]}",
            {"name": name, "head_sha": head_sha, **fields},
        )
        return int(data["id"])

    def update_check_run(self, check_run_id: int, fields: dict[str, Any]) -> None:
        self._call("PATCH", f"/check-runs/{check_run_id}", "updating a check run", fields)

    def create_review(self, number: int, *, body: str, comments: list[dict[str, Any]]) -> int:
        """One review (``COMMENT``) with inline comments ({path, line, side, body})."""
        data = self._call(
            "POST",
            f"/pulls/{number}/reviews",
            f"reviewing pull request #{number}",
            {"event": "COMMENT", "body": body, "comments": comments},
        )
        return int(data["id"])

    def close(self) -> None:
        self._github.close()
